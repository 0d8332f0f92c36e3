//! Cgroup-v1 `cpu` groups (this machine kind mounts the `cpu` controller as v1; the cgroup-v2 files
//! are `cpu.weight`/`cpu.max`/`cpu.idle` with the same meaning): the "one group per request class"
//! alternative to per-thread policies. A thread moves by writing its id to the group's `tasks`.

use std::{fs, io, path::PathBuf};

/// Where the v1 `cpu` controller is mounted here.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";

/// One `cpu` group under [`CPU_ROOT`], removed on drop once its threads are moved out.
#[derive(Debug)]
pub struct CpuGroup {
    pub path: PathBuf,
}

impl CpuGroup {
    /// Creates (or reuses) `CPU_ROOT/name`.
    pub fn create(name: &str) -> io::Result<CpuGroup> {
        let path = PathBuf::from(CPU_ROOT).join(name);
        if !path.exists() {
            fs::create_dir(&path)?;
        }
        Ok(CpuGroup { path })
    }

    /// Writes one of the group's files (`cpu.shares`, `cpu.cfs_quota_us`, `cpu.idle`, ...).
    pub fn set(&self, file: &str, value: &str) -> io::Result<()> {
        fs::write(self.path.join(file), value)
    }

    /// Moves thread `tid` into this group.
    pub fn add_thread(&self, tid: i32) -> io::Result<()> {
        fs::write(self.path.join("tasks"), tid.to_string())
    }
}

/// Moves thread `tid` back to the root `cpu` group.
pub fn to_root(tid: i32) -> io::Result<()> {
    fs::write(PathBuf::from(CPU_ROOT).join("tasks"), tid.to_string())
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        if let Ok(tasks) = fs::read_to_string(self.path.join("tasks")) {
            for tid in tasks.lines().filter_map(|l| l.parse().ok()) {
                let _ = to_root(tid);
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_moves_in_and_the_group_goes_away_on_drop() {
        // SAFETY: geteuid has no failure mode.
        let root = unsafe { libc::geteuid() } == 0;
        if !root || !std::path::Path::new(CPU_ROOT).join("tasks").exists() {
            eprintln!("skipped: needs root and the cgroup-v1 cpu controller at {CPU_ROOT}");
            return;
        }
        let name = format!("tailspike-test-{}", std::process::id());
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            tx.send(crate::sched::gettid()).unwrap();
            done_rx.recv().ok();
        });
        let tid = rx.recv().unwrap();
        let group = CpuGroup::create(&name).unwrap();
        group.add_thread(tid).unwrap();
        let tasks = fs::read_to_string(group.path.join("tasks")).unwrap();
        assert!(tasks.lines().any(|l| l == tid.to_string()), "{tasks}");
        let path = group.path.clone();
        drop(group);
        assert!(!path.exists(), "the group was not removed");
        done_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}

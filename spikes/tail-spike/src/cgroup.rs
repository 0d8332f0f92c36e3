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

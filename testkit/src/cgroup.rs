//! Scratch cgroup v2 directories for tests: created under the cgroup2 mount (`/sys/fs/cgroup`
//! on a pure v2 node, `/sys/fs/cgroup/unified` on a hybrid one) and removed on drop, on every
//! exit path, with their processes moved back to the root first.

use std::path::{Path, PathBuf};

/// Where cgroup2 is mounted, from /proc/mounts; None on a pure cgroup v1 node.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
}

/// A cgroup v2 directory this test created (and the sub-cgroups made with [`child`]). Drop
/// moves every process left in them back to the root cgroup and removes the directories.
///
/// [`child`]: ScratchCgroup::child
pub struct ScratchCgroup {
    root: PathBuf,
    /// This directory and its children, parents first.
    dirs: Vec<PathBuf>,
}

impl ScratchCgroup {
    /// A fresh cgroup named after `tag` and this process directly under the cgroup2 root
    /// (needs root).
    pub fn new(tag: &str) -> ScratchCgroup {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = cgroup2_mount().expect("no cgroup2 mount on this node (see /proc/mounts)");
        let dir = root.join(format!("slowpoke-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {} (run as root): {e}", dir.display()));
        ScratchCgroup {
            root,
            dirs: vec![dir],
        }
    }

    pub fn path(&self) -> &Path {
        &self.dirs[0]
    }

    /// Creates a sub-cgroup `name` (removed with this one) and returns its path.
    pub fn child(&mut self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        self.dirs.push(dir.clone());
        dir
    }

    /// Moves process `pid` (all its threads) into the cgroup at `dir` (this one or a child).
    pub fn add(&self, dir: &Path, pid: u32) {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        // Children first: a cgroup with sub-cgroups cannot be removed.
        for dir in self.dirs.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("warning: removing scratch cgroup {}: {e}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_cgroup_holds_a_process_and_is_removed_on_drop() {
        let Some(_) = cgroup2_mount() else {
            return; // pure cgroup v1 node
        };
        let sleeper = crate::Proc {
            child: std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
            port: 0,
            home: None,
        };
        let pid = sleeper.pid();
        let (dir, sub) = {
            let mut cgroup = ScratchCgroup::new("kit");
            let sub = cgroup.child("leaf");
            cgroup.add(&sub, pid);
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
            let rel = sub.strip_prefix(cgroup2_mount().unwrap()).unwrap();
            assert!(
                own.lines()
                    .any(|l| l.starts_with("0::") && l.ends_with(&*rel.to_string_lossy())),
                "{own}"
            );
            (cgroup.path().to_owned(), sub)
        };
        assert!(
            !sub.exists() && !dir.exists(),
            "{} left behind",
            dir.display()
        );
    }
}

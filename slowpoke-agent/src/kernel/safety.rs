//! What keeps the kernel's own actuators (in-kernel SIGSTOP, spin) from harming the node:
//!
//! - **Protected processes**: the kernel checks two deny maps right before every SIGSTOP and
//!   every spin — thread-group ids, and cgroup v2 ids that cover their whole subtree (so the
//!   agent's own cgroup protects processes the agent never listed). tgid 0 and 1 are never
//!   stopped whatever the maps say.
//! - **Heartbeat**: the kernel stops nothing once the agent's last beat is older than a maximum
//!   age (or was never written), so an agent that is stopped, hung or dead cannot leave the
//!   kernel stopping processes nobody will resume, and kernel and guardian never fight.
//!
//! A refused stop is counted (`denied_stops`, `stale_stops`); the pause request still reaches
//! the agent, with no stopped process, so the debt is paid (or dropped) the user-space way.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::Path,
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use aya::{
    Pod,
    maps::{Array, HashMap, MapData},
};

use super::{KernelError, ebpf_error};
use crate::sys::clock::monotonic_ns;

/// Most tgids [`Protected::set_pids`] accepts (size of the kernel's deny map).
pub const MAX_PROTECTED_PIDS: usize = slowpoke_common::MAX_PROTECTED_TGIDS as usize;
/// Most cgroups [`Protected::set_cgroups`] accepts (size of the kernel's deny map).
pub const MAX_PROTECTED_CGROUPS: usize = slowpoke_common::MAX_PROTECTED_CGROUPS as usize;
/// Cgroups deeper than this below a protected one are not covered by it (its own id still is).
pub const MAX_CGROUP_DEPTH: u32 = slowpoke_common::MAX_CGROUP_DEPTH;
/// Default maximum age of the heartbeat: the kernel stops nothing once the agent's last beat is
/// older (beat every ~50 ms).
pub const DEFAULT_HEARTBEAT_MAX_AGE_NS: u64 = slowpoke_common::DEFAULT_HEARTBEAT_MAX_AGE_NS;

/// `statfs.f_type` of a cgroup v2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The kernel's deny maps and what the agent wrote to them.
pub(super) struct Protected {
    tgids: HashMap<MapData, u32, u8>,
    cgroups: HashMap<MapData, u64, u8>,
    tgid_set: BTreeSet<u32>,
    cgroup_set: BTreeSet<u64>,
}

impl Protected {
    pub(super) fn new(
        tgids: HashMap<MapData, u32, u8>,
        cgroups: HashMap<MapData, u64, u8>,
    ) -> Self {
        Protected {
            tgids,
            cgroups,
            tgid_set: BTreeSet::new(),
            cgroup_set: BTreeSet::new(),
        }
    }

    pub(super) fn set_pids(&mut self, tgids: &[u32]) -> Result<(), KernelError> {
        replace_set(
            &mut self.tgids,
            &mut self.tgid_set,
            tgids,
            MAX_PROTECTED_PIDS,
            "PROTECTED_TGIDS",
        )
    }

    pub(super) fn set_cgroups(&mut self, cgroup_ids: &[u64]) -> Result<(), KernelError> {
        replace_set(
            &mut self.cgroups,
            &mut self.cgroup_set,
            cgroup_ids,
            MAX_PROTECTED_CGROUPS,
            "PROTECTED_CGROUPS",
        )
    }
}

/// Replaces the keys of a deny map with `new`: adds first, then removes what is gone, so a key
/// present in both sets is never missing from the map, not even for an instant.
fn replace_set<K: Pod + Ord>(
    map: &mut HashMap<MapData, K, u8>,
    old: &mut BTreeSet<K>,
    new: &[K],
    max: usize,
    name: &str,
) -> Result<(), KernelError> {
    let new: BTreeSet<K> = new.iter().copied().collect();
    if new.len() > max {
        return Err(KernelError::Invalid(format!(
            "{} entries for {name}, at most {max}: protect whole cgroups instead of their \
             processes one by one",
            new.len()
        )));
    }
    for key in new.difference(old) {
        map.insert(key, 1, 0).map_err(ebpf_error(name))?;
    }
    for key in old.difference(&new) {
        let _ = map.remove(key);
    }
    *old = new;
    Ok(())
}

/// The agent's heartbeat: a handle on the kernel's one-word `HEARTBEAT` map that a thread can
/// own apart from the [`Kernel`](super::Kernel) (clone it; it is `Send + Sync`).
#[derive(Clone)]
pub struct Heartbeat {
    map: Arc<Mutex<Array<MapData, u64>>>,
}

impl Heartbeat {
    pub(super) fn new(map: Array<MapData, u64>) -> Heartbeat {
        Heartbeat {
            map: Arc::new(Mutex::new(map)),
        }
    }

    /// Tells the kernel the agent is alive now: writes `CLOCK_MONOTONIC` (the clock of
    /// `bpf_ktime_get_ns`). One uncontended lock and one map update, no allocation.
    pub fn beat(&self) -> Result<(), KernelError> {
        let now = monotonic_ns();
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(0, now, 0)
            .map_err(ebpf_error("HEARTBEAT"))
    }

    /// Beats once now, then starts a thread that beats every `period` while `alive()` says the
    /// agent is making progress (e.g. its actuator loop ticked recently); dropping the
    /// [`Beater`] stops the beats. An agent that is stopped stops its beater with it; one that
    /// is hung makes `alive()` false.
    pub fn beat_every(
        &self,
        period: Duration,
        alive: impl Fn() -> bool + Send + 'static,
    ) -> Result<Beater, KernelError> {
        if alive() {
            self.beat()?;
        }
        let heartbeat = self.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("slowpoke-heartbeat".into())
            .spawn(move || {
                let mut warned = false;
                loop {
                    // The period is the rhythm of the beats; a drop of the sender ends at once.
                    if !matches!(
                        stopped.recv_timeout(period),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    ) {
                        return;
                    }
                    if alive()
                        && let Err(e) = heartbeat.beat()
                        && !warned
                    {
                        // Safe direction: without beats the kernel stops nothing.
                        tracing::warn!("heartbeat: {e}; the kernel stops nothing until it works");
                        warned = true;
                    }
                }
            })
            .map_err(|e| KernelError::Ebpf(format!("starting the heartbeat thread: {e}")))?;
        Ok(Beater {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The thread started by [`Heartbeat::beat_every`]; dropping it stops the beats and joins it.
pub struct Beater {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Beater {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The id the kernel gives a cgroup v2 directory (what `bpf_get_current_cgroup_id` returns for
/// its processes): the directory's inode number on the cgroup2 filesystem.
///
/// Only cgroup v2 ids exist for the kernel programs. On a hybrid hierarchy (cgroup2 mounted
/// next to v1 controllers, e.g. at `/sys/fs/cgroup/unified`) pass the directory under the
/// cgroup2 mount; a v1 directory is refused. On a node without cgroup2 every process sits in the
/// v2 root (id 1), so protect processes by tgid there.
pub fn cgroup_v2_id(dir: &Path) -> Result<u64, KernelError> {
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        KernelError::Invalid(format!("cgroup path {} contains a NUL byte", dir.display()))
    })?;
    // SAFETY: statfs fills a zeroed struct we own from a NUL-terminated path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &raw mut fs) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(KernelError::Invalid(format!(
            "cgroup {}: {e}; give a directory under the cgroup2 mount (see /proc/mounts)",
            dir.display()
        )));
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, not on every target
    if fs.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(KernelError::Invalid(format!(
            "{} is not a cgroup v2 directory: the kernel programs know cgroups by their v2 id \
             only; use the directory under the cgroup2 mount (e.g. /sys/fs/cgroup/unified on a \
             hybrid hierarchy), or protect the processes by tgid where no cgroup2 is mounted",
            dir.display()
        )));
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| KernelError::Invalid(format!("cgroup {}: {e}", dir.display())))?;
    Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_id_refuses_what_is_not_cgroup2() {
        let e = cgroup_v2_id(Path::new("/tmp")).unwrap_err().to_string();
        assert!(e.contains("not a cgroup v2 directory"), "{e}");
        let e = cgroup_v2_id(Path::new("/nonexistent/cgroup"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cgroup2 mount"), "{e}");
    }

    #[test]
    fn cgroup_v2_id_of_the_cgroup2_root_is_1() {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let Some(root) = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"cgroup2"))
            .map(|f| f[1].to_owned())
        else {
            return; // pure cgroup v1 node: nothing to check
        };
        // The root cgroup's id is 1 (what bpf_get_current_cgroup_id returns on a pure v1 node).
        assert_eq!(cgroup_v2_id(Path::new(&root)).unwrap(), 1);
    }
}

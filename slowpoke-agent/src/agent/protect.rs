//! Protected processes as the agent applies them (the rules are `safety::protect`'s): the
//! registry's [`Guard`] at every resolution, and the kernel's deny maps kept current.

use std::{collections::BTreeSet, path::Path};

use super::{Agent, State, lock};
use crate::{
    kernel::{MAX_PROTECTED_CGROUPS, MAX_PROTECTED_PIDS, cgroup_v2_id},
    registry::Guard,
    safety::{guardian::Guardian, protect::Protection},
};

impl Guard for Protection<'_> {
    fn refuse(&self, pid: u32) -> Option<String> {
        self.why(pid)
    }
    fn may_track_cgroup(&self, dir: &Path) -> bool {
        Protection::may_track_cgroup(self, dir)
    }
}

impl Agent {
    /// The protection rules applied to the node now (the agent is this process: the daemon or
    /// the program embedding the library, e.g. an in-process coordinator).
    pub(super) fn protection(&self) -> Protection<'_> {
        let guardian = lock(&self.inner.guardian).as_ref().map(Guardian::pid);
        Protection::now(&self.inner.cfg.protect, std::process::id(), guardian)
    }

    /// Fills the kernel's deny maps: pid 1, the agent, its guardian, every process a resolution
    /// left out, and the agent's cgroup subtree. Called at start, after each registration and
    /// after each resolver pass; the kernel checks them right before every in-kernel stop.
    pub(super) fn protect_in_kernel(&self, st: &State, p: &Protection<'_>) {
        let mut pids: Vec<u32> = p.kernel_pids();
        let mut seen: BTreeSet<u32> = pids.iter().copied().collect();
        for e in st.services.values().flat_map(|s| &s.resolved.excluded) {
            if seen.len() >= MAX_PROTECTED_PIDS {
                // The rest are not members and their cgroups are not tracked as a whole: the
                // kernel has no reason to see them; the map is defence in depth.
                tracing::warn!(
                    "more than {MAX_PROTECTED_PIDS} protected processes matched: the kernel's \
                     deny map holds the first ones"
                );
                break;
            }
            if seen.insert(e.pid) {
                pids.push(e.pid);
            }
        }
        let mut cgroups = Vec::new();
        for dir in p.kernel_cgroups() {
            match cgroup_v2_id(&dir) {
                Ok(id) => cgroups.push(id),
                Err(e) => tracing::warn!("protecting the agent's cgroup in the kernel: {e}"),
            }
        }
        cgroups.truncate(MAX_PROTECTED_CGROUPS);
        if let Some(k) = lock(&self.inner.kernel).as_mut() {
            if let Err(e) = k.set_protected_pids(&pids) {
                tracing::error!("filling the kernel's deny map of processes: {e}");
            }
            if let Err(e) = k.set_protected_cgroups(&cgroups) {
                tracing::error!("filling the kernel's deny map of cgroups: {e}");
            }
        }
    }
}

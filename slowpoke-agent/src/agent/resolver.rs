//! The resolver thread: re-resolves every selector periodically (processes come and go), applies
//! the protection rules anew at every pass, lists the members in the state file and then pushes
//! them and the deny maps to the kernel and the actuators, measures cores, restarts a dead
//! guardian, and stamps the progress that both the kernel heartbeat and the guardian's watchdog
//! vouch for.

use std::{path::PathBuf, sync::atomic::Ordering, time::Duration};

use super::{Agent, Service, SharedKernel, lock};
use crate::{
    error::AgentError,
    registry::{self, Resolved, Selector},
    safety::guardian::Guardian,
    sys::{clock::monotonic_ns, procfs},
};

impl Agent {
    pub(super) fn resolve_loop(&self) {
        let interval = self.inner.cfg.resolve_interval;
        while !self.inner.stopping.load(Ordering::SeqCst) {
            let next = std::time::Instant::now() + interval;
            self.resolve_once();
            self.watch_guardian();
            self.inner.progress.resolver_tick();
            while std::time::Instant::now() < next && !self.inner.stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10).min(interval));
                self.inner.progress.resolver_tick();
            }
        }
    }

    /// One pass: re-resolve every selector (outside the lock), then apply what changed.
    pub fn resolve_once(&self) {
        let work: Vec<(String, u64, Selector, Option<Vec<u16>>)> = {
            let st = lock(&self.inner.state);
            st.services
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        s.generation,
                        s.selector.clone(),
                        s.spec.listen_ports.clone(),
                    )
                })
                .collect()
        };
        let protection = self.protection();
        let since = monotonic_ns().saturating_sub(self.inner.cfg.serving_window.as_nanos() as u64);
        // One index of the sockets' owners for the whole pass, kept across passes
        // (`registry::listeners`): the port selectors and every service's ports read it.
        let mut index = lock(&self.inner.listeners);
        if !work.is_empty() {
            let wanted: Vec<u16> = work
                .iter()
                .filter_map(|(_, _, selector, _)| match selector {
                    Selector::Ports(p) => Some(p.iter().copied()),
                    _ => None,
                })
                .flatten()
                .collect();
            index.refresh(&wanted);
        }
        for (name, generation, selector, ports) in work {
            let Ok(resolved) = selector.resolve(ports.as_deref(), &protection, Some(&index)) else {
                continue;
            };
            let usable = registry::usable_cpus(&resolved.pids);
            let threads = registry::thread_count(&resolved.pids);
            let mut st = lock(&self.inner.state);
            let Some(svc) = st.services.get_mut(&name) else {
                continue;
            };
            if svc.generation != generation {
                continue;
            }
            if svc.spec.cores.is_none() {
                let serving = lock(&self.inner.kernel)
                    .as_ref()
                    .map_or(0, |k| k.serving_threads(svc.id, since));
                svc.cores = registry::effective_cores(usable, serving, threads);
            }
            if svc.resolved == resolved {
                continue;
            }
            // New members are listed before the kernel learns them: it may stop them at once.
            let cgroups = listed_cgroups(&selector);
            if let Err(e) = self.record_members(&name, &svc.resolved.pids, &resolved.pids, &cgroups)
            {
                tracing::error!("{e}; membership of {name} not updated");
                continue;
            }
            tracing::debug!(service = %name, pids = ?resolved.pids, "membership changed");
            if let Err(e) = apply_resolution(&self.inner.kernel, svc, resolved) {
                tracing::warn!(service = %name, "updating the kernel membership: {e}");
            }
            let pids = svc.resolved.pids.clone();
            if let Err(e) = self.record_members(&name, &[], &pids, &cgroups) {
                tracing::error!("{e}");
            }
        }
        let st = lock(&self.inner.state);
        self.protect_in_kernel(&st, &protection);
        self.sync_schedule_members(&st);
    }

    fn watch_guardian(&self) {
        let mut g = lock(&self.inner.guardian);
        if g.as_ref().is_some_and(Guardian::alive) || self.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::warn!("the guardian process is gone; starting a new one");
        match Guardian::spawn_with(self.inner.state_file.path(), self.inner.page.clone()) {
            Ok(n) => *g = Some(n),
            Err(e) => tracing::error!("cannot fork a new guardian: {e}"),
        }
    }
}

/// Stores a resolution and pushes it to the kernel and the actuator.
pub(super) fn apply_resolution(
    kernel: &SharedKernel,
    svc: &mut Service,
    resolved: Resolved,
) -> Result<(), AgentError> {
    if let Some(k) = lock(kernel).as_mut() {
        k.set_members(svc.id, &resolved.pids)?;
        k.set_cgroup_members(svc.id, &resolved.cgroup_ids)?;
        k.set_server_ports(svc.id, &resolved.listen_ports, &resolved.other_ports)?;
    }
    svc.actuator.set_pids(&resolved.pids);
    svc.resolved = resolved;
    Ok(())
}

/// The cgroup directories whose processes the guardian resumes for a service: a cgroup
/// selector's directory and every cgroup below it now, and so for the pods' (or their
/// containers') cgroups (the kernel knows the service by those cgroups, so it may stop a
/// process that joined one after the last resolution).
pub(super) fn listed_cgroups(selector: &Selector) -> Vec<PathBuf> {
    match selector {
        Selector::Cgroup(dir) => procfs::cgroup_tree(dir),
        Selector::Pods(pods) if pods.ports.is_none() => registry::pods::dirs(pods)
            .0
            .iter()
            .flat_map(|d| procfs::cgroup_tree(d))
            .collect(),
        _ => Vec::new(),
    }
}

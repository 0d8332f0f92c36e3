//! The counters snapshot (`GET /v1/stats`, `/metrics`): kernel counters, actuator counters,
//! CPU time and cores of every service, the node's CPU, dependencies nobody registered, the
//! peer-sync datagrams and, when asked, each service's last pauses.

use std::collections::{BTreeMap, HashMap};

use super::{Agent, Service, lock};
use crate::{
    actuator::{PauseKind, PauseRecord, RECENT_PAUSES},
    api,
    kernel::{Kernel, KernelCounters, ServiceId},
    sys::{clock::monotonic_ns, procfs},
};

impl Agent {
    /// The node's CPUs (`--node-cpus`) and their busy time: everything on them (/proc/stat) or,
    /// with `--node-cgroup`, the node's own processes' (its `cpu.stat`). Counters: only their
    /// differences between two snapshots mean anything.
    fn node_stats(&self) -> Option<api::NodeStats> {
        let (cpus, busy, total) = procfs::node_cpu(self.inner.cfg.node_cpus.as_deref())?;
        let cpu_busy_ns = match &self.inner.cfg.node_cgroup {
            Some(dir) => procfs::cgroup_cpu_ns(dir)?,
            None => busy,
        };
        Some(api::NodeStats {
            cpus,
            cpu_busy_ns,
            cpu_total_ns: total,
        })
    }

    /// A snapshot of every service's counters.
    pub fn stats(&self) -> api::Stats {
        self.stats_with_pauses(0)
    }

    /// [`Agent::stats`] with each service's last `recent_pauses` pauses (at most
    /// [`RECENT_PAUSES`]).
    pub fn stats_with_pauses(&self, recent_pauses: usize) -> api::Stats {
        let mut st = lock(&self.inner.state);
        let share = st.max_stopped_share;
        let window = self.inner.cfg.stop_window;
        // Hold the kernel lock only for the map reads (pause threads re-arm through it).
        let (counters, unregistered_dependencies) = {
            let kernel = lock(&self.inner.kernel);
            let counters: HashMap<ServiceId, KernelCounters> = st
                .services
                .values()
                .filter_map(|s| Some((s.id, kernel.as_ref()?.counters(s.id).ok()?)))
                .collect();
            let deps = kernel
                .as_ref()
                .map(|k| unregistered_dependencies(k, &st.services))
                .unwrap_or_default();
            (counters, deps)
        };
        let mut services = BTreeMap::new();
        for (name, svc) in &mut st.services {
            let kc = counters.get(&svc.id).copied().unwrap_or_default();
            let a = svc.actuator.stats();
            let mut warnings = Vec::new();
            if a.dropped_ns > 0 {
                warnings.push(format!(
                    "safety cap reached: {:.1} ms of pause debt dropped (a service may be stopped at \
                     most {:.0} % of any {} ms); lower the delays, or let the plan ask for more (its max_stopped_share, up to \
                     --max-plan-stopped-share) or raise --max-stopped-share",
                    a.dropped_ns as f64 / 1e6,
                    share * 100.0,
                    window.as_millis()
                ));
            }
            if kc.visits_approximate {
                warnings.push(
                    "multiplexed or pipelined traffic seen (e.g. HTTP/2): visit counts are approximate".into(),
                );
            }
            if a.refused_stops > 0 {
                warnings.push(format!(
                    "{} stops of this service's processes were refused (EPERM): the agent lacks CAP_KILL for them, so they were not paused; run the agent as root with CAP_KILL (docs/security.md)",
                    a.refused_stops
                ));
            }
            if let Some(why) = &a.realtime_off
                && a.pauses > 0
            {
                warnings.push(why.clone());
            }
            let pids = svc.resolved.pids.clone();
            let sched = svc.sched.update(&pids);
            services.insert(
                name.clone(),
                api::ServiceStats {
                    visits: kc.visits,
                    bytes_in: kc.bytes_in,
                    bytes_out: kc.bytes_out,
                    pause_ns: a.pause_ns,
                    cpu_ns: svc.cpu.update(&pids),
                    wait_ns: sched.wait_ns,
                    timeslices: sched.timeslices,
                    cores: svc.cores,
                    pids,
                    calls_out: kc.calls_out,
                    pauses: a.pauses,
                    owed_ns: kc.owed_ns.max(a.owed_ns),
                    dropped_ns: a.dropped_ns,
                    spin_ns: kc.spin_ns,
                    denied_stops: kc.denied_stops,
                    stale_stops: kc.stale_stops,
                    refused_stops: a.refused_stops,
                    visits_approximate: kc.visits_approximate,
                    warnings,
                    recent_pauses: if recent_pauses == 0 {
                        Vec::new()
                    } else {
                        last_pauses(&svc.actuator.recent_pauses(), recent_pauses)
                    },
                },
            );
        }
        api::Stats {
            timestamp_ns: monotonic_ns(),
            services,
            unregistered_dependencies,
            stop_cap: Some(api::StopCap {
                max_stopped_share: self.inner.cfg.max_stopped_share,
                max_plan_stopped_share: self.inner.cfg.plan_ceiling(),
                in_force: share,
            }),
            peer_sync: self.inner.peer_sync.as_ref().map(|p| p.stats()),
            scheduling: self.scheduling_stats_in(&st),
            instance: self.inner.instance.clone(),
            node: self.node_stats(),
        }
    }
}

/// The last `n` of `records` (oldest first), as the wire shows them.
fn last_pauses(records: &[PauseRecord], n: usize) -> Vec<api::PauseInfo> {
    records[records.len().saturating_sub(n.min(RECENT_PAUSES))..]
        .iter()
        .map(|r| api::PauseInfo {
            kind: match r.kind {
                PauseKind::Kernel => "kernel",
                PauseKind::Synchronized => "synchronized",
                PauseKind::Idle => "idle",
                PauseKind::Flush => "flush",
                PauseKind::Manual => "manual",
            }
            .into(),
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            requested_ns: r.requested_ns,
        })
        .collect()
}

/// Outgoing endpoints that belong to no registered service (an unpaused hidden dependency).
fn unregistered_dependencies(
    kernel: &Kernel,
    services: &BTreeMap<String, Service>,
) -> Vec<api::UnregisteredDependency> {
    let names: HashMap<ServiceId, &str> =
        services.iter().map(|(n, s)| (s.id, n.as_str())).collect();
    let mut agg: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
    for ep in kernel.outgoing_endpoints() {
        let registered = services.values().any(|s| {
            s.resolved.listen_ports.contains(&ep.port)
                && (ep.addr.is_loopback() || ep.addr.is_unspecified())
        });
        if registered {
            continue;
        }
        let Some(from) = names.get(&ep.service) else {
            continue;
        };
        *agg.entry(((*from).to_string(), ep.addr.to_string(), ep.port))
            .or_default() += ep.calls;
    }
    agg.into_iter()
        .map(|((from, addr, port), calls)| {
            let local = addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            let pid = if local {
                procfs::pids_listening_on(&[port]).into_iter().next()
            } else {
                None
            };
            api::UnregisteredDependency {
                from,
                addr,
                port,
                pid,
                comm: pid.and_then(procfs::comm),
                calls,
            }
        })
        .collect()
}

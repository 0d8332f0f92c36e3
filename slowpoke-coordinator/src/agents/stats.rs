//! Stats snapshots of every agent and what happened between two of them (a measurement
//! window), per service summed over the agents.

use std::collections::BTreeMap;

use slowpoke_api::agent as api;

use super::clock::{ClockOffset, ClockSample, estimate};
use super::{AgentClient, AgentError, SharedAgent};
use crate::model::ServiceSample;

/// One snapshot of every agent's stats, in agent order.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub agents: Vec<api::Stats>,
}

/// This process's `CLOCK_MONOTONIC`, ns: the clock the agents stamp their stats with.
fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; a zero would only make the sample unusable.
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

/// `agent`'s clock against this process's, from `calls` timed `GET /v1/stats`
/// (`clock.rs`); None when no call gave a usable sample.
pub fn clock_offset(
    agent: &dyn AgentClient,
    calls: usize,
) -> Result<Option<ClockOffset>, AgentError> {
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let sent_ns = monotonic_ns();
        let stats = agent.stats()?;
        let received_ns = monotonic_ns();
        samples.push(ClockSample {
            sent_ns,
            agent_ns: stats.timestamp_ns,
            received_ns,
        });
    }
    Ok(estimate(&samples))
}

/// Takes a snapshot of every agent, all at once: each agent's window then starts and ends
/// within one call's latency of the others' (asked one after another, the last agent's window
/// would lag the first's by every earlier call's round trip).
pub fn snapshot(agents: &[SharedAgent]) -> Result<StatsSnapshot, AgentError> {
    on_every_agent(agents, |a| a.stats())
}

/// `call` on every agent in parallel (one thread each; in order; the first error wins).
fn on_every_agent(
    agents: &[SharedAgent],
    call: impl Fn(&SharedAgent) -> Result<api::Stats, AgentError> + Sync,
) -> Result<StatsSnapshot, AgentError> {
    if let [one] = agents {
        return call(one).map(|s| StatsSnapshot { agents: vec![s] });
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| (a, scope.spawn(|| call(a))))
            .collect();
        handles
            .into_iter()
            .map(|(a, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(AgentError::Failed {
                        agent: a.name(),
                        message: "the stats call panicked".into(),
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map(|agents| StatsSnapshot { agents })
}

/// Why `after` cannot follow `before` (two stats of one agent): the agent restarted in
/// between, so its counters started again. Told by its `instance` id changing, and, for agents
/// too old to report one, by a registered service vanishing or its visits going backwards
/// (visits are the kernel's monotonic counters while the agent runs).
pub fn restart_between(before: &api::Stats, after: &api::Stats) -> Option<String> {
    if before.instance != after.instance {
        return Some(format!(
            "its instance id changed from `{}` to `{}`",
            before.instance, after.instance
        ));
    }
    before
        .services
        .iter()
        .find_map(|(name, b)| match after.services.get(name) {
            None => Some(format!("service `{name}` is no longer registered there")),
            Some(a) if a.visits < b.visits => Some(format!(
                "the visits of `{name}` went back from {} to {}",
                b.visits, a.visits
            )),
            Some(_) => None,
        })
}

/// Like [`snapshot`], trying an agent that does not answer again until `grace` has passed
/// since the first try. An agent that restarts (a crash and its service manager's restart, a
/// redeploy) is away for a moment: with the grace, the coordinator sees it come back as another
/// instance and can say that it restarted, instead of calling it lost.
pub fn snapshot_within(
    agents: &[SharedAgent],
    grace: std::time::Duration,
) -> Result<StatsSnapshot, AgentError> {
    let deadline = std::time::Instant::now() + grace;
    on_every_agent(agents, |a| {
        loop {
            match a.stats() {
                Err(AgentError::Unreachable { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                r => break r,
            }
        }
    })
}

/// What happened between two snapshots, per service summed over agents.
#[derive(Debug, Clone, Default)]
pub struct StatsWindow {
    /// Visits and CPU per second of the window; cores as now.
    pub samples: BTreeMap<String, ServiceSample>,
    /// Pause debt owed (ns) during the window, per service.
    pub owed_ns: BTreeMap<String, u64>,
    /// Debt the agents' safety cap dropped (ns) during the window, per service.
    pub dropped_ns: BTreeMap<String, u64>,
    /// Achieved pause time (ns) during the window, per service.
    pub pause_ns: BTreeMap<String, u64>,
    /// Services whose visits are approximate (HTTP/2, pipelining).
    pub approximate: Vec<String>,
    /// Agents' warnings, prefixed with the service.
    pub warnings: Vec<String>,
    /// Unregistered dependencies the agents saw (`from -> addr:port (comm)`).
    pub unregistered: Vec<String>,
    /// Share of each agent's node CPUs that was busy (agents that report `node`), in order.
    pub node_busy: Vec<f64>,
    /// The same nodes with their CPUs and the visits per second each served per service.
    pub nodes: Vec<NodeWindow>,
}

impl StatsWindow {
    /// Leaves out the unregistered dependencies that are calls to `served` endpoints
    /// (`host:port` of registered services on other nodes, [`super::Registration::served_endpoints`]).
    pub fn forget_served(&mut self, served: &[String]) {
        self.unregistered.retain(|line| {
            !served.iter().any(|e| {
                let to = format!("-> {e}");
                line.ends_with(&to) || line.contains(&format!("{to} "))
            })
        });
    }
}

/// One agent's node during a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeWindow {
    pub cpus: f64,
    /// Share of the node's CPUs that was busy (0..1).
    pub busy_share: f64,
    /// Visits per second of each service on this node.
    pub visits: BTreeMap<String, f64>,
    /// CPU-seconds per second of each registered service on this node.
    pub cpu: BTreeMap<String, f64>,
}

impl NodeWindow {
    /// CPUs the registered services on this node used (CPU-seconds per second).
    pub fn app_cores(&self) -> f64 {
        self.cpu.values().sum()
    }
}

/// Differences of two snapshots. Each agent's counters are divided by its own clock's window
/// (`timestamp_ns`), so agents sampled a few ms apart still give consistent rates.
pub fn window(before: &StatsSnapshot, after: &StatsSnapshot) -> StatsWindow {
    let mut w = StatsWindow::default();
    for (b, a) in before.agents.iter().zip(&after.agents) {
        let secs = a.timestamp_ns.saturating_sub(b.timestamp_ns) as f64 / 1e9;
        // This agent's own rates, for its node's record below.
        let mut node_visits = BTreeMap::new();
        let mut node_cpu = BTreeMap::new();
        for (name, sa) in &a.services {
            let sb = b.services.get(name).cloned().unwrap_or_default();
            let dv = sa.visits.saturating_sub(sb.visits) as f64;
            let dc = sa.cpu_ns.saturating_sub(sb.cpu_ns) as f64;
            let dw = sa.wait_ns.saturating_sub(sb.wait_ns) as f64;
            let dt = sa.timeslices.saturating_sub(sb.timeslices) as f64;
            let (visits, cpu_ns, wait_ns, timeslices) = if secs > 0.0 {
                (dv / secs, dc / secs, dw / secs, dt / secs)
            } else {
                (0.0, 0.0, 0.0, 0.0)
            };
            node_visits.insert(name.clone(), visits);
            node_cpu.insert(name.clone(), cpu_ns / 1e9);
            let cores = if sa.pids.is_empty() { 0.0 } else { sa.cores };
            let sample = ServiceSample {
                visits,
                cpu_ns,
                wait_ns,
                timeslices,
                cores,
            };
            let e = w.samples.entry(name.clone()).or_default();
            *e = e.merged(sample);
            *w.owed_ns.entry(name.clone()).or_default() += sa.owed_ns.saturating_sub(sb.owed_ns);
            *w.dropped_ns.entry(name.clone()).or_default() +=
                sa.dropped_ns.saturating_sub(sb.dropped_ns);
            *w.pause_ns.entry(name.clone()).or_default() += sa.pause_ns.saturating_sub(sb.pause_ns);
            if sa.visits_approximate && !w.approximate.contains(name) {
                w.approximate.push(name.clone());
            }
            for warn in &sa.warnings {
                let line = format!("{name}: {warn}");
                if !w.warnings.contains(&line) {
                    w.warnings.push(line);
                }
            }
        }
        if let (Some(nb), Some(na)) = (&b.node, &a.node) {
            let total = na.cpu_total_ns.saturating_sub(nb.cpu_total_ns);
            if total > 0 {
                let busy = na.cpu_busy_ns.saturating_sub(nb.cpu_busy_ns);
                let busy_share = busy as f64 / total as f64;
                w.node_busy.push(busy_share);
                w.nodes.push(NodeWindow {
                    cpus: f64::from(na.cpus),
                    busy_share,
                    visits: node_visits,
                    cpu: node_cpu,
                });
            }
        }
        for d in &a.unregistered_dependencies {
            // A loopback endpoint nobody listens on is a client's ephemeral port (the other end
            // of an accepted connection), not a dependency.
            let loopback = d
                .addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if loopback && d.pid.is_none() {
                continue;
            }
            let line = match &d.comm {
                Some(c) => format!("{} -> {}:{} ({c})", d.from, d.addr, d.port),
                None => format!("{} -> {}:{}", d.from, d.addr, d.port),
            };
            if !w.unregistered.contains(&line) {
                w.unregistered.push(line);
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_to_registered_services_on_other_nodes_are_not_unregistered_dependencies() {
        let mut w = StatsWindow {
            unregistered: vec![
                "s0 -> 10.77.0.12:7301".into(),
                "s1 -> 10.77.0.11:7302 (emu)".into(),
                "s1 -> 10.77.0.11:73020".into(),
                "s2 -> 10.0.0.9:7301".into(),
            ],
            ..StatsWindow::default()
        };
        w.forget_served(&["10.77.0.12:7301".into(), "10.77.0.11:7302".into()]);
        assert_eq!(
            w.unregistered,
            vec![
                "s1 -> 10.77.0.11:73020".to_owned(),
                "s2 -> 10.0.0.9:7301".to_owned()
            ]
        );
    }

    #[test]
    fn window_reports_the_busy_share_of_each_node() {
        let stats = |busy: u64, total: u64| api::Stats {
            timestamp_ns: total,
            node: Some(api::NodeStats {
                cpus: 2,
                cpu_busy_ns: busy,
                cpu_total_ns: total,
            }),
            ..Default::default()
        };
        let before = StatsSnapshot {
            agents: vec![stats(1_000, 2_000), api::Stats::default()],
        };
        let after = StatsSnapshot {
            agents: vec![stats(1_900, 3_000), api::Stats::default()],
        };
        // 900 of 1000 ns busy on the first node; the second reports no node counters.
        let w = window(&before, &after);
        assert_eq!(w.node_busy, vec![0.9]);
    }

    #[test]
    fn window_sums_replicas_and_uses_each_agents_clock() {
        let stats = |ts: u64, visits: u64, cpu: u64, pids: Vec<u32>| api::Stats {
            timestamp_ns: ts,
            services: [(
                "cart".to_owned(),
                api::ServiceStats {
                    visits,
                    cpu_ns: cpu,
                    cores: 2.0,
                    pids,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let before = StatsSnapshot {
            agents: vec![stats(0, 0, 0, vec![1]), stats(10, 0, 0, vec![])],
        };
        let after = StatsSnapshot {
            agents: vec![
                stats(2_000_000_000, 2000, 400_000_000, vec![1]),
                stats(1_000_000_010, 500, 0, vec![]),
            ],
        };
        let w = window(&before, &after);
        let s = w.samples["cart"];
        // 1000/s on agent 0 plus 500/s on agent 1; cores only where the service has processes.
        assert!((s.visits - 1500.0).abs() < 1e-9);
        assert!((s.cpu_ns - 200_000_000.0).abs() < 1e-6);
        assert!((s.cores - 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_restart_is_told_by_the_instance_or_by_counters_going_back() {
        let stats = |instance: &str, visits: Option<u64>| api::Stats {
            instance: instance.to_owned(),
            services: visits
                .map(|v| {
                    let s = api::ServiceStats {
                        visits: v,
                        ..Default::default()
                    };
                    [("cart".to_owned(), s)].into()
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        assert_eq!(
            restart_between(&stats("a", Some(5)), &stats("a", Some(9))),
            None
        );
        let e = restart_between(&stats("a", Some(5)), &stats("b", Some(9))).unwrap();
        assert!(e.contains("instance id changed from `a` to `b`"), "{e}");
        // An agent without instance ids: its counters say it.
        let e = restart_between(&stats("", Some(5)), &stats("", Some(2))).unwrap();
        assert!(e.contains("went back from 5 to 2"), "{e}");
        let e = restart_between(&stats("", Some(5)), &stats("", None)).unwrap();
        assert!(e.contains("`cart` is no longer registered"), "{e}");
    }
}

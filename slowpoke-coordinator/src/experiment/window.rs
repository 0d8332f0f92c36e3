//! One measurement window, after the fact: what the load saw and the agents counted
//! ([`Measured`]), the record the result keeps of it, the warnings it gives and the safety
//! limits it must stay within.

use std::collections::BTreeMap;

use crate::agents::{NodeWindow, StatsSnapshot, StatsWindow};
use crate::model::{self, ServiceLoad, TargetUse};

use super::app::LoadWindow;
use super::error::RunError;
use super::result::{ServiceWindowRecord, WindowRecord};
use super::spec::Safety;
use super::warnings::Warnings;

/// Share of a node's CPUs busy in the baseline above which the result warns that the node may
/// be the real limit after the optimization.
pub const NODE_SATURATED: f64 = 0.9;

/// How the warning about a busy node in a baseline window begins (a what-if that finds the node
/// limiting replaces it with its own, more specific one).
pub(super) const NODE_BUSY_WARNING: &str = "a node's CPUs were over";

/// One measured window.
pub(super) struct Measured {
    pub load: LoadWindow,
    pub agents: StatsWindow,
}

impl Measured {
    /// A service's cores in use and run-queue wait during the window (None when no agent
    /// reports it): the ran-dry / crowded-out check compares them between kinds of window.
    pub(super) fn target_use(&self, service: &str) -> Option<TargetUse> {
        self.agents.samples.get(service).map(|x| TargetUse {
            cores: x.cpu_ns / 1e9,
            wait: x.wait_ns / 1e9,
            per_visit_us: if x.visits > 0.0 {
                x.cpu_ns / x.visits / 1e3
            } else {
                0.0
            },
        })
    }

    /// Every service's cores on a CPU and waiting for one, and its parallelism: what decides
    /// the regime ([`model::classify`]).
    pub(super) fn service_loads(&self) -> BTreeMap<String, ServiceLoad> {
        self.agents
            .samples
            .iter()
            .map(|(name, x)| {
                let load = ServiceLoad {
                    busy: x.cpu_ns / 1e9,
                    wait: x.wait_ns / 1e9,
                    cores: x.cores,
                };
                (name.clone(), load)
            })
            .collect()
    }

    /// What the node bound needs of this window (a baseline's, or the others' cost of a
    /// slowed-down one), kept until every window of the experiment is in.
    pub(super) fn nodes(&self) -> NodesWindow {
        NodesWindow {
            rps: self.load.rps,
            nodes: self.agents.nodes.clone(),
        }
    }

    /// The window as the result records it. `secs` is the agents' own length of the window.
    pub(super) fn record(
        &self,
        phase: &str,
        repetition: usize,
        entry: &str,
        secs: f64,
    ) -> WindowRecord {
        WindowRecord {
            phase: phase.to_owned(),
            repetition,
            rps: self.load.rps,
            error_ratio: self.load.error_ratio,
            p99_us: self.load.p99_us,
            owed_per_request_us: self.owed_per_request_us(entry, secs),
            node_busy: self.agents.node_busy.clone(),
            app_cores: self
                .agents
                .nodes
                .iter()
                .map(NodeWindow::app_cores)
                .collect(),
            services: self
                .agents
                .samples
                .iter()
                .map(|(name, x)| {
                    let record = ServiceWindowRecord {
                        visits: x.visits,
                        cpu: x.cpu_ns / 1e9,
                        wait: x.wait_ns / 1e9,
                        timeslices: x.timeslices,
                    };
                    (name.clone(), record)
                })
                .collect(),
        }
    }

    /// Each paused service should owe δ per end-to-end request: the mean over the services that
    /// owed anything, µs (None without pauses or without entry visits).
    fn owed_per_request_us(&self, entry: &str, secs: f64) -> Option<f64> {
        let entry_visits = self.agents.samples.get(entry).map_or(0.0, |s| s.visits);
        let owing: Vec<u64> = self
            .agents
            .owed_ns
            .values()
            .copied()
            .filter(|&o| o > 0)
            .collect();
        (!owing.is_empty() && entry_visits > 0.0).then(|| {
            let mean = owing.iter().sum::<u64>() as f64 / owing.len() as f64;
            mean / (entry_visits * secs) / 1e3
        })
    }

    /// What the window tells about the measurement's quality: the agents' own warnings,
    /// unregistered dependencies, approximate visit counts, a saturated node in a baseline, a
    /// CPU-bound load generator.
    pub(super) fn note_warnings(&self, phase: &str, warnings: &mut Warnings) {
        for w in &self.agents.warnings {
            warnings.once(w.clone());
        }
        warnings.unregistered(self.agents.unregistered.iter().cloned());
        for s in &self.agents.approximate {
            warnings.once(format!(
                "visits of `{s}` are approximate (HTTP/2 or pipelining): r and d for it are estimates"
            ));
        }
        if phase == "base" && self.agents.node_busy.iter().any(|&b| b > NODE_SATURATED) {
            warnings.once(format!(
                "{NODE_BUSY_WARNING} {:.0} % busy during the baseline: the node, not one \
                 service, may limit the optimized app, which pausing cannot reproduce; a what-if \
                 then predicts from the node's CPU per request (its result's `regime`; \
                 docs/model.md, \"Which limit binds\")",
                NODE_SATURATED * 100.0
            ));
        }
        if self.load.generator_bound {
            warnings.once("the load generator was CPU-bound in some windows: throughput may be the generator's, not the app's".to_owned());
        }
    }

    /// The safety limits: too many load errors abort; pause debt dropped by an agent's safety
    /// cap aborts too, or is a warning when `safety` allows it.
    pub(super) fn check_safety(
        &self,
        phase: &str,
        safety: &Safety,
        warnings: &mut Warnings,
    ) -> Result<(), RunError> {
        if self.load.error_ratio > safety.max_error_ratio {
            return Err(RunError::LoadErrors {
                phase: phase.to_owned(),
                pct: self.load.error_ratio * 100.0,
                limit_pct: safety.max_error_ratio * 100.0,
            });
        }
        let capped: Vec<String> = self
            .agents
            .dropped_ns
            .iter()
            .filter(|&(_, &d)| d > 0)
            .map(|(n, _)| format!("`{n}`"))
            .collect();
        if capped.is_empty() {
            return Ok(());
        }
        let services = capped.join(", ");
        if safety.abort_on_cap {
            return Err(RunError::CapHit {
                phase: phase.to_owned(),
                services,
            });
        }
        warnings.cap_dropped(services, phase);
        Ok(())
    }
}

/// A window's throughput and nodes: the node bound's input.
#[derive(Debug, Clone)]
pub(super) struct NodesWindow {
    rps: f64,
    nodes: Vec<NodeWindow>,
}

impl NodesWindow {
    /// Per node (in the agents' order), the CPU-seconds per end-to-end request of every
    /// registered service but `target`: in a slowed-down window, what they spend per request
    /// at the faster target's throughput (docs/model.md). NaN without throughput.
    pub(super) fn others_per_request(&self, target: &str) -> Vec<f64> {
        self.nodes
            .iter()
            .map(|n| {
                let others: f64 = n
                    .cpu
                    .iter()
                    .filter(|(s, _)| s.as_str() != target)
                    .map(|(_, c)| c)
                    .sum();
                if self.rps > 0.0 {
                    others / self.rps
                } else {
                    f64::NAN
                }
            })
            .collect()
    }

    /// The node-CPU bound of a baseline window for removing `delta_ns` of CPU per visit of
    /// `target` (None when no agent reports its node), with each node busy at most
    /// `max(max_busy, its baseline busy share)`: [`model::NODE_MAX_BUSY`] for a node that may get
    /// busier, 0 for one known saturated at its baseline share (the node regime; a node the
    /// regime would not find limiting still may get busier then). `others`: per node, the other
    /// services' CPU per request measured in the slowed-down windows
    /// ([`NodesWindow::others_per_request`]), taken with the target's own from this window as the
    /// app's CPU per request; None (or a node without a finite figure): this window's.
    pub(super) fn node_bound(
        &self,
        target: &str,
        r_target: f64,
        delta_ns: f64,
        max_busy: f64,
        others: Option<&[f64]>,
    ) -> Option<f64> {
        let total_t: f64 = self
            .nodes
            .iter()
            .map(|n| n.visits.get(target).copied().unwrap_or(0.0))
            .sum();
        let others = others.filter(|o| o.len() == self.nodes.len());
        let nodes: Vec<model::NodeLoad> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| model::NodeLoad {
                cpus: n.cpus,
                busy_share: n.busy_share,
                app_cores: n.app_cores(),
                target_share: if total_t > 0.0 {
                    n.visits.get(target).copied().unwrap_or(0.0) / total_t
                } else {
                    0.0
                },
                per_request_s: others
                    .map(|o| o[i])
                    .filter(|o| o.is_finite() && self.rps > 0.0)
                    .map(|o| o + n.cpu.get(target).copied().unwrap_or(0.0) / self.rps),
            })
            .collect();
        // Known saturated (`max_busy` 0) applies to the nodes the regime can find limiting
        // only, as [`model::classify`] finds them: a node at least
        // [`model::NODE_SATURATED_BUSY`] busy, or the busiest node from
        // [`model::NODE_CONTENDED_BUSY`] (its services queueing for its CPUs). Such a node
        // sustains its baseline share for this app, not more. With services spread over several
        // nodes, one node's CPUs may bind while another's stay less busy, and that one can get
        // busier like any node ([`model::NODE_MAX_BUSY`]).
        let busiest = nodes.iter().map(|n| n.busy_share).fold(0.0, f64::max);
        nodes
            .iter()
            .filter_map(|n| {
                let limiting = n.busy_share >= model::NODE_SATURATED_BUSY
                    || (n.busy_share >= busiest && n.busy_share >= model::NODE_CONTENDED_BUSY);
                let cap = if max_busy == 0.0 && !limiting {
                    model::NODE_MAX_BUSY
                } else {
                    max_busy
                };
                model::node_bound(self.rps, std::slice::from_ref(n), r_target, delta_ns, cap)
            })
            .min_by(f64::total_cmp)
    }
}

/// The window's length by the first agent's clock, seconds.
pub(super) fn window_secs(before: &StatsSnapshot, after: &StatsSnapshot) -> f64 {
    before
        .agents
        .first()
        .zip(after.agents.first())
        .map_or(0.0, |(b, a)| {
            a.timestamp_ns.saturating_sub(b.timestamp_ns) as f64 / 1e9
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first cluster evaluation's baseline: the target's node saturated, the other node
    /// 29 % busy. Known saturated (cap 0) must hold the first node at its share only; the
    /// second may get busier, or it would bound the app at its baseline rate.
    #[test]
    fn a_saturated_node_does_not_freeze_an_idle_one() {
        let node = |busy: f64, app: f64, target: f64| NodeWindow {
            cpus: 1.0,
            busy_share: busy,
            visits: [("t".to_owned(), target)].into_iter().collect(),
            cpu: [("t".to_owned(), app)].into_iter().collect(),
        };
        let m = Measured {
            load: LoadWindow {
                rps: 452.0,
                ..LoadWindow::default()
            },
            agents: StatsWindow {
                nodes: vec![node(1.0, 0.98, 452.0), node(0.289, 0.261, 0.0)],
                ..StatsWindow::default()
            },
        };
        // Node 1: 2168 µs per request, 1038 µs of it removed: 0.98 / 1130 µs = 867 req/s.
        let b = m
            .nodes()
            .node_bound("t", 1.0, 1_038_000.0, 0.0, None)
            .unwrap();
        assert!((b - 867.0).abs() < 5.0, "{b}");
        // One node (the single-node case): its own share, as before.
        let one = Measured {
            agents: StatsWindow {
                nodes: vec![node(1.0, 0.98, 452.0)],
                ..StatsWindow::default()
            },
            ..m
        };
        assert!(
            (one.nodes()
                .node_bound("t", 1.0, 1_038_000.0, 0.0, None)
                .unwrap()
                - b)
                .abs()
                < 1e-9
        );
        // A node the regime found limiting through its run queue (92 % busy, services waiting
        // for its CPUs: quick suite, dag-cross async unshaped) keeps its 92 %, not 97 %: all of its
        // busy CPU the app's, 2035 µs per request, 997 µs left: 0.92 / 997 µs = 923 req/s, where
        // 0.97 would have said 973.
        let contended = Measured {
            agents: StatsWindow {
                nodes: vec![node(0.92, 0.92, 452.0)],
                ..StatsWindow::default()
            },
            ..one
        };
        let c = contended
            .nodes()
            .node_bound("t", 1.0, 1_038_000.0, 0.0, None)
            .unwrap();
        assert!((c - 923.0).abs() < 3.0, "{c}");
        let may = contended
            .nodes()
            .node_bound("t", 1.0, 1_038_000.0, 0.97, None)
            .unwrap();
        assert!((may - 973.0).abs() < 3.0, "{may}");
        // Beside a saturated node, a 92 %-busy one without the target is not the limit: held at
        // 92 % it would cap the app at its baseline rate, 452 req/s. It may reach 97 %:
        // (0.97 − 0.02) / (0.9 / 452) = 477 req/s (below the saturated node's 867, so it binds).
        let two = Measured {
            agents: StatsWindow {
                nodes: vec![node(1.0, 0.98, 452.0), node(0.92, 0.9, 0.0)],
                ..StatsWindow::default()
            },
            ..contended
        };
        let b2 = two
            .nodes()
            .node_bound("t", 1.0, 1_038_000.0, 0.0, None)
            .unwrap();
        assert!((b2 - 477.0).abs() < 2.0, "{b2}");
    }

    /// The others' CPU per request from a slowed-down window replaces the baseline's: at the
    /// faster target's throughput they find more work per wake-up (docs/model.md).
    #[test]
    fn the_others_cost_comes_from_the_slowed_down_windows() {
        let window = |rps: f64, busy: f64, t: f64, o: f64| Measured {
            load: LoadWindow {
                rps,
                ..LoadWindow::default()
            },
            agents: StatsWindow {
                nodes: vec![NodeWindow {
                    cpus: 2.0,
                    busy_share: busy,
                    visits: [("t".to_owned(), rps), ("o".to_owned(), rps)].into(),
                    cpu: [("t".to_owned(), t), ("o".to_owned(), o)].into(),
                }],
                ..StatsWindow::default()
            },
        };
        // Baseline: 600 req/s, T 1.5 ms and the others 1.2 ms per request, 0.18 CPUs of
        // something else: room 0.97·2 − 0.18 = 1.76 CPUs. Slowed down: the others 1.0 ms.
        let base = window(600.0, 0.9, 0.9, 0.72);
        let slow = window(500.0, 0.8, 0.75, 0.5);
        let others = slow.nodes().others_per_request("t");
        assert_eq!(others.len(), 1);
        assert!((others[0] - 1.0e-3).abs() < 1e-12, "{others:?}");
        // Δ = 1 ms: 1.76 / (2.7 − 1.0 ms) = 1035 req/s from the baseline alone,
        // 1.76 / (1.0 + 1.5 − 1.0 ms) = 1173 req/s with the others' cost slowed down.
        let nodes = base.nodes();
        let alone = nodes.node_bound("t", 1.0, 1e6, 0.97, None).unwrap();
        assert!((alone - 1035.29).abs() < 0.1, "{alone}");
        let with = nodes
            .node_bound("t", 1.0, 1e6, 0.97, Some(&others))
            .unwrap();
        assert!((with - 1173.33).abs() < 0.1, "{with}");
        // A figure for another number of nodes, or not finite, is not used.
        let two = [1.0e-3, 1.0e-3];
        assert_eq!(
            nodes.node_bound("t", 1.0, 1e6, 0.97, Some(&two)),
            Some(alone)
        );
        assert_eq!(
            nodes.node_bound("t", 1.0, 1e6, 0.97, Some(&[f64::NAN])),
            Some(alone)
        );
    }
}

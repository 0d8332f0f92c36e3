//! Which limit binds the app, from the baseline windows, and what that makes the prediction of
//! a point (docs/model.md, "Which limit binds"): shared by what-ifs and profiles.

use std::collections::BTreeMap;

use crate::model::{self, Regime, ServiceLoad, TargetUse};
use crate::stats::{self, Estimate};

use super::result::{Limit, PredictedBy, RegimeRecord};
use super::window::{Measured, NodesWindow};

/// What the baseline windows say about the limits: every service's load and the busiest node's
/// busy share, per window.
#[derive(Debug, Default)]
pub(super) struct Baselines {
    loads: Vec<BTreeMap<String, ServiceLoad>>,
    node_busy: Vec<f64>,
}

impl Baselines {
    /// Adds one baseline window.
    pub(super) fn add(&mut self, b: &Measured) {
        self.loads.push(b.service_loads());
        self.node_busy
            .extend(b.agents.node_busy.iter().copied().reduce(f64::max));
    }

    /// The regime of the medians over the windows so far.
    pub(super) fn regime(&self) -> Regime {
        model::classify(&median_loads(&self.loads), &self.node_busy_median())
    }

    /// The busiest node's busy share, median over the windows (empty without nodes).
    fn node_busy_median(&self) -> Vec<f64> {
        stats::median(&self.node_busy).into_iter().collect()
    }

    /// The regime as a result records it, for optimizing `target` (None in a profile: then a
    /// limiting service is named as such).
    pub(super) fn record(
        &self,
        regime: &Regime,
        target: Option<&str>,
        predicted_by: PredictedBy,
    ) -> RegimeRecord {
        let (limit, service, utilization) = match regime {
            Regime::Service { name, utilization } => {
                let limit = match target {
                    Some(t) if t == name => Limit::Target,
                    Some(_) => Limit::OtherService,
                    None => Limit::Service,
                };
                (limit, Some(name.clone()), *utilization)
            }
            Regime::Node { .. } => (Limit::Node, None, 0.0),
            Regime::Unsaturated {
                busiest,
                utilization,
                ..
            } => (
                Limit::Unsaturated,
                (!busiest.is_empty()).then(|| busiest.clone()),
                *utilization,
            ),
        };
        RegimeRecord {
            limit,
            service,
            utilization,
            node_busy: self.node_busy_median().first().copied().unwrap_or(0.0),
            predicted_by,
        }
    }
}

/// The node-CPU bound of one optimization from each baseline window, two ways: with each node
/// at most [`model::NODE_MAX_BUSY`] busy (or its baseline share if higher) — a node that may get
/// busier — and with each node at its own baseline share — a node the regime found saturated,
/// whose baseline share is what it sustains for this app. The app's CPU per request is the
/// other services' in the slowed-down windows (median per node) plus the target's in the
/// baseline window, or the baseline window's before any slowed-down window (docs/model.md).
#[derive(Debug, Default)]
pub(super) struct NodeBounds {
    /// The optimization: the target, its visits per request, the CPU removed per visit.
    target: String,
    r: f64,
    delta_ns: f64,
    base: Vec<NodesWindow>,
    slow: Vec<NodesWindow>,
}

impl NodeBounds {
    /// Adds baseline window `b` for removing `delta_ns` of CPU per visit of `target` (visited
    /// `r` times per request).
    pub(super) fn add(&mut self, b: &Measured, target: &str, r: f64, delta_ns: f64) {
        target.clone_into(&mut self.target);
        (self.r, self.delta_ns) = (r, delta_ns);
        self.base.push(b.nodes());
    }

    /// Adds a slowed-down window of the same optimization.
    pub(super) fn add_slow(&mut self, s: &Measured) {
        self.slow.push(s.nodes());
    }

    /// Per node, the median over the slowed-down windows of the others' CPU per request (None
    /// without slowed-down windows, or when they saw different numbers of nodes).
    fn others(&self) -> Option<Vec<f64>> {
        let per_window: Vec<Vec<f64>> = self
            .slow
            .iter()
            .map(|w| w.others_per_request(&self.target))
            .collect();
        let n = per_window.first()?.len();
        if n == 0 || per_window.iter().any(|w| w.len() != n) {
            return None;
        }
        Some(
            (0..n)
                .map(|i| {
                    let v: Vec<f64> = per_window
                        .iter()
                        .map(|w| w[i])
                        .filter(|x| x.is_finite())
                        .collect();
                    stats::median(&v).unwrap_or(f64::NAN)
                })
                .collect(),
        )
    }

    /// The bound the `regime` calls for: median over the baseline windows, their spread as its
    /// interval.
    pub(super) fn estimate(&self, regime: &Regime) -> Option<Estimate> {
        let cap = match regime {
            Regime::Node { .. } => 0.0,
            _ => model::NODE_MAX_BUSY,
        };
        let others = self.others();
        let bounds: Vec<f64> = self
            .base
            .iter()
            .filter_map(|b| {
                b.node_bound(&self.target, self.r, self.delta_ns, cap, others.as_deref())
            })
            .collect();
        stats::median_with_spread(&bounds)
    }
}

/// Each service's load, median over the windows.
fn median_loads(windows: &[BTreeMap<String, ServiceLoad>]) -> BTreeMap<String, ServiceLoad> {
    let mut names: Vec<&String> = windows.iter().flat_map(|w| w.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let med = |f: fn(&ServiceLoad) -> f64| {
                let v: Vec<f64> = windows.iter().filter_map(|w| w.get(name)).map(f).collect();
                stats::median(&v).unwrap_or(0.0)
            };
            let load = ServiceLoad {
                busy: med(|l| l.busy),
                wait: med(|l| l.wait),
                cores: med(|l| l.cores),
            };
            (name.clone(), load)
        })
        .collect()
}

/// The target's own saving under the pauses, ns per request, to take off δ — only while the
/// target is the service that limits the app (None otherwise: no correction). `base` and `slow`
/// are its uses of its cores in the baseline and slowed-down windows, `r`, `c` its parameters.
pub(super) fn cost_correction(
    regime: &Regime,
    target: &str,
    base: &[TargetUse],
    slow: &[TargetUse],
    r: f64,
    c: f64,
) -> Option<f64> {
    let limits = matches!(regime, Regime::Service { name, .. } if name == target);
    limits.then(|| {
        let p = |w: &[TargetUse]| {
            let v: Vec<f64> = w.iter().map(|u| u.per_visit_us * 1e3).collect();
            stats::median(&v).unwrap_or(0.0)
        };
        model::target_cost_correction_ns(r, c, p(base), p(slow))
    })
}

/// The prediction of one point by regime: while the node's CPUs limit the app, the lower of the
/// node bound and the bottleneck law (pausing cannot show the gain there); otherwise the pause
/// prediction, capped by the node bound. Each bound is a median over the baseline windows with
/// its spread as the interval.
pub(super) fn decide(
    regime: &Regime,
    pause: Estimate,
    node: Option<Estimate>,
    law: Option<Estimate>,
) -> (Estimate, PredictedBy) {
    match (regime, node, law) {
        (Regime::Node { .. }, Some(n), Some(l)) if l.value < n.value => {
            (l, PredictedBy::BottleneckLaw)
        }
        (Regime::Node { .. }, Some(n), _) => (n, PredictedBy::NodeBound),
        (Regime::Node { .. }, None, Some(l)) => (l, PredictedBy::BottleneckLaw),
        (_, Some(n), _) if n.value < pause.value => (pause.min(n), PredictedBy::NodeBound),
        _ => (pause, PredictedBy::Pauses),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(value: f64) -> Estimate {
        Estimate {
            value,
            ci_low: value * 0.95,
            ci_high: value * 1.05,
            n: 5,
            kept: 3,
        }
    }

    #[test]
    fn each_regime_picks_its_prediction() {
        let node = Regime::Node { busy: 0.99 };
        let target = Regime::Service {
            name: "t".into(),
            utilization: 0.95,
        };
        // Node-limited: the pauses (barely above the baseline) are not used.
        let (p, by) = decide(&node, est(1010.0), Some(est(1300.0)), Some(est(2000.0)));
        assert_eq!((p.value, by), (1300.0, PredictedBy::NodeBound));
        let (p, by) = decide(&node, est(1010.0), Some(est(1300.0)), Some(est(1200.0)));
        assert_eq!((p.value, by), (1200.0, PredictedBy::BottleneckLaw));
        // Without node counters the bottleneck law alone; without either, the pauses.
        let (p, by) = decide(&node, est(1010.0), None, Some(est(1200.0)));
        assert_eq!((p.value, by), (1200.0, PredictedBy::BottleneckLaw));
        let (_, by) = decide(&node, est(1010.0), None, None);
        assert_eq!(by, PredictedBy::Pauses);
        // Service-limited: the pauses, capped by the node bound.
        let (p, by) = decide(&target, est(1500.0), Some(est(1800.0)), Some(est(900.0)));
        assert_eq!((p.value, by), (1500.0, PredictedBy::Pauses));
        let (p, by) = decide(&target, est(1500.0), Some(est(1400.0)), None);
        assert_eq!((p.value, by), (1400.0, PredictedBy::NodeBound));
    }

    #[test]
    fn the_cost_correction_applies_only_to_the_limiting_target() {
        let u = |per_visit_us| TargetUse {
            cores: 0.95,
            wait: 0.0,
            per_visit_us,
        };
        let target = Regime::Service {
            name: "t".into(),
            utilization: 0.95,
        };
        let c = cost_correction(&target, "t", &[u(500.0)], &[u(480.0)], 1.0, 1.0).unwrap();
        assert!((c - 20_000.0).abs() < 1e-6);
        assert_eq!(
            cost_correction(&target, "other", &[u(500.0)], &[u(480.0)], 1.0, 1.0),
            None
        );
        let node = Regime::Node { busy: 0.99 };
        assert_eq!(
            cost_correction(&node, "t", &[u(500.0)], &[u(480.0)], 1.0, 1.0),
            None
        );
    }
}

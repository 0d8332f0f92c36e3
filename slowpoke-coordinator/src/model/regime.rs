//! Which limit binds the app in the baseline, and how each regime predicts (docs/model.md, "Which
//! limit binds"). Pausing the other services reproduces a faster target only while a service's
//! own cores limit the app; when the node's CPUs do, a stopped service simply hands its CPU to
//! the others and the slowed-down run cannot show the gain, so the node-limited regime predicts
//! from the CPU each request costs instead.

use std::collections::BTreeMap;

/// Share of its usable cores a service's threads must spend on a CPU for the service to be at
/// its own limit. A single-threaded bottleneck measures 0.93–0.97 here (the rest are wake-ups
/// and the gaps between requests); a service below 0.9 has headroom of its own.
pub const SERVICE_SATURATED: f64 = 0.9;

/// Busy share of a node's CPUs at which the node itself limits the app: saturated closed-loop
/// apps keep these nodes 0.97–0.99 busy, unsaturated ones stay below 0.9.
pub const NODE_SATURATED_BUSY: f64 = 0.95;

/// Busy share of a node above which a service that waits for a CPU longer than it runs is taken
/// to contend for the node's CPUs rather than to be limited by its own threads.
pub const NODE_CONTENDED_BUSY: f64 = 0.9;

/// How one service used its cores over the baseline (cores' worth, i.e. CPU-seconds per
/// second): on a CPU (`busy`), runnable but waiting for one (`wait`), and how many it can use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceLoad {
    pub busy: f64,
    pub wait: f64,
    pub cores: f64,
}

impl ServiceLoad {
    /// Share of its cores on a CPU (0 when it can use none).
    pub fn utilization(&self) -> f64 {
        if self.cores > 0.0 {
            self.busy / self.cores
        } else {
            0.0
        }
    }

    /// Share of its cores runnable: on a CPU or waiting for one.
    pub fn runnable(&self) -> f64 {
        if self.cores > 0.0 {
            (self.busy + self.wait) / self.cores
        } else {
            0.0
        }
    }
}

/// What limited the app in the baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Regime {
    /// A service's own cores: its threads were on a CPU at least [`SERVICE_SATURATED`] of the
    /// time (or runnable that long on a node that was not saturated). Pausing the others
    /// emulates a faster target; the node may bind once the target is faster.
    Service { name: String, utilization: f64 },
    /// The node's CPUs: at least [`NODE_SATURATED_BUSY`] busy while no service was at its own
    /// limit. Throughput follows the CPU each request costs on the node.
    Node { busy: f64 },
    /// Nothing the agents measure as CPU was saturated: a lock, I/O, sleeps or the load limit
    /// the app. The pauses emulate those too (they stretch every other service's time).
    Unsaturated {
        busiest: String,
        utilization: f64,
        node_busy: f64,
    },
}

/// Decides the regime from the baseline's per-service loads and each node's busy share.
pub fn classify(services: &BTreeMap<String, ServiceLoad>, node_busy: &[f64]) -> Regime {
    let busiest_by = |f: fn(&ServiceLoad) -> f64| {
        services
            .iter()
            .map(|(n, l)| (n, f(l)))
            .filter(|(_, u)| u.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, u)| (n.clone(), u))
    };
    let node = node_busy
        .iter()
        .copied()
        .filter(|b| b.is_finite())
        .fold(0.0, f64::max);
    if let Some((name, utilization)) = busiest_by(ServiceLoad::utilization)
        && utilization >= SERVICE_SATURATED
    {
        return Regime::Service { name, utilization };
    }
    if node >= NODE_SATURATED_BUSY {
        return Regime::Node { busy: node };
    }
    // Not on a CPU long enough, but runnable all the time. Mostly waiting for a CPU on a busy
    // node: the services contend for the node's CPUs, which is the node's limit showing through
    // the run queue (a node can stay a few % short of fully busy while threads queue: wake-up
    // latency). Mostly on a CPU, or on a node with CPU to spare: its own threads are the limit
    // (e.g. a CPU quota the node's accounting puts in the run queue).
    if let Some((name, runnable)) = busiest_by(ServiceLoad::runnable)
        && runnable >= SERVICE_SATURATED
    {
        let l = services[&name];
        if l.wait >= l.busy && node >= NODE_CONTENDED_BUSY {
            return Regime::Node { busy: node };
        }
        return Regime::Service {
            name,
            utilization: runnable,
        };
    }
    let (busiest, utilization) = busiest_by(ServiceLoad::utilization).unwrap_or_default();
    Regime::Unsaturated {
        busiest,
        utilization,
        node_busy: node,
    }
}

/// The bottleneck law's bound on the optimized app, from the baseline's measured loads: service
/// `s` served `X_base` at `busy_s` of its `cores_s`, so it cannot serve more than
/// `X_base·cores_s/busy_s`; the target's bound grows by `target_speedup` (p_T/(p_T − Δ) for less
/// work per visit, N/c_T for N cores). The tightest service and its bound; None when no service
/// was busy. An upper bound: queueing keeps real apps below it.
pub fn bottleneck_bound(
    x_base_rps: f64,
    services: &BTreeMap<String, ServiceLoad>,
    target: &str,
    target_speedup: f64,
) -> Option<(String, f64)> {
    if !(x_base_rps.is_finite() && x_base_rps > 0.0) {
        return None;
    }
    services
        .iter()
        .filter(|(_, l)| l.busy > 0.0 && l.cores > 0.0)
        .map(|(n, l)| {
            let own = x_base_rps * l.cores / l.busy;
            let bound = if n == target {
                own * target_speedup
            } else {
                own
            };
            (n.clone(), bound)
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The target's own per-visit cost changed under the pauses: it spent `p_slow_ns` of CPU per
/// visit in the slowed-down runs against `p_base_ns` in the baseline (less contention, more work
/// per wake-up while the others are stopped). While the target limits the slowed-down run, that
/// difference is a speedup the experiment applied on top of Δ: `1/X_slow` is lower by
/// `r_T·(p_base − p_slow)/c_T`. Returns that amount, ns per end-to-end request, to be taken off δ
/// in `1/(1/X_slow − δ)` (negative when the target got slower under the pauses).
pub fn target_cost_correction_ns(r_t: f64, c_t: f64, p_base_ns: f64, p_slow_ns: f64) -> f64 {
    let usable = [r_t, c_t, p_base_ns, p_slow_ns]
        .iter()
        .all(|x| x.is_finite() && *x > 0.0);
    if usable {
        r_t * (p_base_ns - p_slow_ns) / c_t
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::NS_PER_S;
    use super::*;

    fn load(busy: f64, wait: f64, cores: f64) -> ServiceLoad {
        ServiceLoad { busy, wait, cores }
    }

    fn map(v: &[(&str, ServiceLoad)]) -> BTreeMap<String, ServiceLoad> {
        v.iter().map(|(n, l)| ((*n).to_owned(), *l)).collect()
    }

    #[test]
    fn the_regime_follows_what_is_saturated() {
        // A shaped app: the one-threaded target on a CPU 95 % of the time, node 82 % busy.
        let shaped = map(&[("t", load(0.95, 0.03, 1.0)), ("a", load(0.3, 0.05, 2.0))]);
        assert_eq!(
            classify(&shaped, &[0.82]),
            Regime::Service {
                name: "t".into(),
                utilization: 0.95
            }
        );
        // The same target at its limit on a saturated node: still the service's regime (the
        // node bound then caps the pause prediction).
        assert!(matches!(classify(&shaped, &[0.99]), Regime::Service { .. }));
        // Services of similar work, two threads each on two CPUs, node 99 % busy: the node.
        let unshaped = map(&[
            ("a", load(0.5, 0.4, 2.0)),
            ("b", load(0.7, 0.6, 2.0)),
            ("c", load(0.25, 0.2, 1.0)),
        ]);
        assert_eq!(classify(&unshaped, &[0.99]), Regime::Node { busy: 0.99 });
        // Nothing saturated: a lock or the load limits the app.
        assert_eq!(
            classify(&unshaped, &[0.6]),
            Regime::Unsaturated {
                busiest: "b".into(),
                utilization: 0.35,
                node_busy: 0.6
            }
        );
        // Runnable all the time with CPUs to spare (a CPU quota): its own limit.
        let quota = map(&[("q", load(0.5, 0.45, 1.0)), ("a", load(0.2, 0.0, 2.0))]);
        assert!(matches!(
            classify(&quota, &[0.5]),
            Regime::Service { name, .. } if name == "q"
        ));
        // Runnable all the time but mostly waiting for a CPU on a node 92 % busy (measured on
        // dag-cross async, unshaped: 0.38 of 2 cores on a CPU, 1.7 waiting): the node.
        let contended = map(&[("s3", load(0.38, 1.7, 2.0)), ("s0", load(0.43, 0.3, 1.0))]);
        assert_eq!(classify(&contended, &[0.92]), Regime::Node { busy: 0.92 });
        assert!(matches!(
            classify(&BTreeMap::new(), &[]),
            Regime::Unsaturated { .. }
        ));
    }

    #[test]
    fn bounds_by_hand() {
        // 1000 req/s; `a` used 0.5 of its 2 cores (bound 4000), the target 0.8 of 1 (1250),
        // made twice as fast (2500); `idle` never ran.
        let s = map(&[
            ("a", load(0.5, 0.0, 2.0)),
            ("t", load(0.8, 0.0, 1.0)),
            ("idle", load(0.0, 0.0, 1.0)),
        ]);
        let (name, b) = bottleneck_bound(1000.0, &s, "t", 2.0).unwrap();
        assert_eq!(name, "t");
        assert!((b - 2500.0).abs() < 1e-9);
        // Four times as fast: `a` binds at 4000.
        let (name, b) = bottleneck_bound(1000.0, &s, "t", 4.0).unwrap();
        assert_eq!((name.as_str(), b), ("a", 4000.0));
        assert_eq!(bottleneck_bound(0.0, &s, "t", 2.0), None);
    }

    #[test]
    fn a_target_cheaper_under_the_pauses_gives_back_its_own_saving() {
        // r_T = 1, c_T = 1: 500 µs per visit in the baseline, 475 µs in the slowed-down runs.
        // While it binds the slowed run, 1/X_slow was 25 µs lower than the plan: δ shrinks by it.
        let c = target_cost_correction_ns(1.0, 1.0, 500_000.0, 475_000.0);
        assert!((c - 25_000.0).abs() < 1e-6);
        // Prediction with δ = 250 µs from X_slow = 2000 req/s (500 µs): 1/(500 − 225) µs.
        let x = NS_PER_S / (NS_PER_S / 2000.0 - (250_000.0 - c));
        assert!((x - NS_PER_S / 275_000.0).abs() < 1e-6);
        // Two cores halve it; unknown inputs give no correction.
        assert!(
            (target_cost_correction_ns(1.0, 2.0, 500_000.0, 475_000.0) - 12_500.0).abs() < 1e-6
        );
        assert!(target_cost_correction_ns(1.0, 1.0, 0.0, 475_000.0).abs() < f64::EPSILON);
        assert!(target_cost_correction_ns(1.0, 1.0, f64::NAN, 1.0).abs() < f64::EPSILON);
    }
}

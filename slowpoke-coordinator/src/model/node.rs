//! The node-CPU bound (docs/model.md, "Co-located services"): services that share a node's
//! CPUs cannot, together, use more of them than the node sustains.

use serde::{Deserialize, Serialize};

use super::NS_PER_S;

/// One node's CPU during a baseline window (co-located services; docs/model.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// CPUs of the node.
    pub cpus: f64,
    /// Share of those CPUs that was busy (0..1), whatever ran on them.
    pub busy_share: f64,
    /// CPUs the app's services on this node used (CPU-seconds per second).
    pub app_cores: f64,
    /// Share of the target's visits this node served (0..1; 0 when T runs elsewhere).
    pub target_share: f64,
    /// The app's CPU-seconds per request on this node before the optimization removes anything;
    /// None: the baseline's, `app_cores / X_base`. The coordinator gives the other services'
    /// CPU per request in the slowed-down windows plus the target's in the baseline: pausing
    /// the others reproduces how much work they find per wake-up at the faster target's
    /// throughput (docs/model.md, "The others' CPU per request, from the slowed-down windows").
    #[serde(default)]
    pub per_request_s: Option<f64>,
}

/// The share of a node's CPUs a saturated closed-loop app reaches here, for a node that was not
/// saturated in the baseline (a saturated node's own baseline busy share is used instead): the
/// optimized app is bounded by this share of the node, not by 100 % (idle gaps between requests,
/// wake-ups). The node-limited baselines of the evaluation measure it (docs/model.md).
pub const NODE_MAX_BUSY: f64 = 0.97;

/// The node-CPU bound on the optimized throughput, req/s: when services share a node's CPUs,
/// the optimized app cannot use more than `max(max_busy, busy_share)` of them — what the node
/// is known to sustain: the default, or more when the baseline measured more. Per node, the app's services
/// spend `b` CPU-seconds per request (`per_request_s`, else the baseline's `app_cores/X_base`) and the optimization
/// removes `r_T·share·Δ` of that; everything else that kept the node busy (load generator,
/// agent, kernel threads, other programs) is taken as a constant `busy − app_cores`:
/// `X ≤ (U·cpus − other) / (b − r_T·share·Δ)`. The tightest node wins; None when no
/// node reports.
pub fn node_bound(
    x_base_rps: f64,
    nodes: &[NodeLoad],
    r_target: f64,
    delta_ns: f64,
    max_busy: f64,
) -> Option<f64> {
    if x_base_rps.is_nan() || x_base_rps <= 0.0 {
        return None;
    }
    nodes
        .iter()
        .filter(|n| n.cpus > 0.0 && n.app_cores > 0.0)
        .map(|n| {
            let other = (n.busy_share * n.cpus - n.app_cores).max(0.0);
            let per_request_s = n.per_request_s.unwrap_or(n.app_cores / x_base_rps);
            let left = per_request_s - r_target * n.target_share * delta_ns / NS_PER_S;
            let room = (max_busy.max(n.busy_share) * n.cpus - other).max(0.0);
            if left > 0.0 {
                room / left
            } else {
                f64::INFINITY
            }
        })
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_bound_by_hand() {
        // 2 CPUs 80 % busy at 1000 req/s, 1.4 of them the app's (1.4 ms of CPU per request),
        // 0.2 something else. T (r = 1, all here) loses 0.4 ms per visit: 1.0 ms per request
        // left, room 0.97·2 − 0.2 = 1.74 CPUs: at most 1740 req/s.
        let n = NodeLoad {
            cpus: 2.0,
            busy_share: 0.8,
            app_cores: 1.4,
            target_share: 1.0,
            per_request_s: None,
        };
        close(
            node_bound(1000.0, &[n], 1.0, 400_000.0, 0.97).unwrap(),
            1740.0,
            1e-6,
        );
        // T elsewhere: the node still caps the app at its own rate, (2 − 0.2)/1.4 ms.
        let other = NodeLoad {
            target_share: 0.0,
            ..n
        };
        close(
            node_bound(1000.0, &[other], 1.0, 400_000.0, 1.0).unwrap(),
            1285.714,
            1e-3,
        );
        // The tightest node wins; a node without the app's services does not bound.
        let idle = NodeLoad {
            cpus: 4.0,
            busy_share: 0.5,
            app_cores: 0.0,
            target_share: 0.0,
            per_request_s: None,
        };
        let b = node_bound(1000.0, &[n, other, idle], 1.0, 400_000.0, 1.0).unwrap();
        close(b, 1285.714, 1e-3);
        assert_eq!(node_bound(1000.0, &[idle], 1.0, 1.0, 1.0), None);
        assert_eq!(node_bound(0.0, &[n], 1.0, 1.0, 1.0), None);
        // The app's CPU per request given (the others' from the slowed-down windows, 1.2 ms
        // with the target's): 0.8 ms left, 1.74 / 0.8 ms = 2175 req/s; the room still from the
        // baseline's busy CPUs.
        let measured = NodeLoad {
            per_request_s: Some(1.2e-3),
            ..n
        };
        close(
            node_bound(1000.0, &[measured], 1.0, 400_000.0, 0.97).unwrap(),
            2175.0,
            1e-6,
        );
        // Removing all of the node's app work leaves no bound.
        assert_eq!(
            node_bound(1000.0, &[n], 1.0, 1_400_000.0, 1.0),
            Some(f64::INFINITY)
        );
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (±{tol})");
    }
}

//! The results of experiments: what `slowpoke what-if --json` / `profile --json` print, what the
//! results directory stores and what `GET /v1/experiments/{id}` answers. Field names are a stable
//! interface. How the numbers are computed stays in the coordinator (its model and runner).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How the user states the optimization of the target T.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Optimization {
    /// Δ in µs per visit of T.
    DeltaUs(f64),
    /// Δ as a percentage of T's measured per-visit time p_T.
    Percent(f64),
    /// T becomes k times as fast: Δ = p_T·(1 − 1/k).
    Speedup(f64),
    /// T's capacity goes from `old_rps` (default: the measured c_T/p_T) to `new_rps`:
    /// Δ = c_T·(1/X_old − 1/X_new).
    Capacity { old_rps: Option<f64>, new_rps: f64 },
    /// T gets `N` cores in total: δ = r_T·p_T·(1/c_T − 1/N).
    Cores(f64),
}

impl std::fmt::Display for Optimization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Optimization::DeltaUs(d) => write!(f, "-{d} µs per visit"),
            Optimization::Percent(p) => write!(f, "-{p} % per visit"),
            Optimization::Speedup(k) => write!(f, "{k}x speedup"),
            Optimization::Capacity {
                old_rps: Some(o),
                new_rps,
            } => write!(f, "capacity {o} -> {new_rps} req/s"),
            Optimization::Capacity {
                old_rps: None,
                new_rps,
            } => write!(f, "capacity -> {new_rps} req/s"),
            Optimization::Cores(n) => write!(f, "{n} cores"),
        }
    }
}

/// How the target spent its time over a window: cores in use (CPU-seconds per second) and cores'
/// worth of run-queue wait (runnable, waiting for a CPU), both summed over its threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetUse {
    pub cores: f64,
    pub wait: f64,
    /// CPU time per visit, µs (0 when the window saw no visit of the target): a target that costs
    /// less per visit while the others are paused gets a speedup the plan did not ask for.
    #[serde(default)]
    pub per_visit_us: f64,
}

/// What limited the app in the baseline (docs/model.md, "Which limit binds").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The target's own cores: pausing the others emulates the optimization.
    Target,
    /// Another service's own cores: the target's optimization gains little until that changes.
    OtherService,
    /// A service's own cores (a profile, which has no single target: `service` names it).
    Service,
    /// The node's CPUs, shared by services none of which was at its own limit: the prediction
    /// follows the CPU each request costs on the node.
    Node,
    /// Nothing measured as CPU was saturated (a lock, I/O, sleeps, the load): the pauses
    /// emulate the optimization.
    Unsaturated,
}

/// What made the prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PredictedBy {
    /// The virtual speedup: 1/(1/X_slow − δ).
    Pauses,
    /// The node-CPU bound: the optimized app runs out of the node's CPUs first.
    NodeBound,
    /// The bottleneck law from the baseline's loads: a service's own cores bind first.
    BottleneckLaw,
}

/// The regime found in the baseline and how the prediction was made from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegimeRecord {
    pub limit: Limit,
    /// The service at its limit (target, other_service) or the busiest one (node, unsaturated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// That service's share of its cores on a CPU in the baseline (0..1).
    pub utilization: f64,
    /// The busiest node's busy share in the baseline (0..1; 0 when no agent reports nodes).
    pub node_busy: f64,
    pub predicted_by: PredictedBy,
}

/// The target's use of its cores in the baseline and slowed-down runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetUseRecord {
    pub baseline: TargetUse,
    pub slowed: TargetUse,
}

impl TargetUseRecord {
    /// The slowed-down runs' CPU use as % of the baseline's (None without baseline use).
    pub fn kept_pct(&self) -> Option<f64> {
        (self.baseline.cores > 0.0).then(|| self.slowed.cores / self.baseline.cores * 100.0)
    }
}

/// Why the repetitions stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The configured repetitions ran (no precision target).
    Repetitions,
    /// The prediction's CI half-width reached the precision target.
    PrecisionReached,
    /// The time budget (or the repetition cap) ran out before the precision target was reached.
    BudgetExhausted,
}

/// One service's row in a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceRow {
    pub name: String,
    /// Visits per end-to-end request.
    pub r: f64,
    /// CPU µs per visit.
    pub p_us: f64,
    /// Cores.
    pub c: f64,
    /// Pause per visit in the plan, µs (None for the target and unvisited services).
    pub d_us: Option<f64>,
    pub is_target: bool,
    pub is_entry: bool,
    /// Agents where the service resolved to processes.
    pub agents: Vec<String>,
}

/// One measured window, in the order it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowRecord {
    /// `calibration`, `base`, `slow`, `truth`, or `slow:<service>:<percent>` in a profile.
    pub phase: String,
    pub repetition: usize,
    pub rps: f64,
    pub error_ratio: f64,
    pub p99_us: f64,
    /// Measured pause debt per end-to-end request during the window, µs (slow windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owed_per_request_us: Option<f64>,
    /// Share of each node's CPUs that was busy (agents that report it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_busy: Vec<f64>,
    /// CPUs the registered services used on each of those nodes (CPU-seconds per second).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_cores: Vec<f64>,
    /// What each registered service did during the window, summed over its agents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServiceWindowRecord>,
}

/// One service during one window, per second of the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceWindowRecord {
    /// Visits per second.
    pub visits: f64,
    /// CPUs used (CPU-seconds per second).
    pub cpu: f64,
    /// CPUs' worth of run-queue wait (runnable, waiting for a CPU).
    pub wait: f64,
    /// Timeslices on a CPU per second (mostly wake-ups).
    pub timeslices: f64,
}

/// Non-finite numbers (an interval of one repetition, an unbounded top) are written as JSON
/// `null`; reading a stored result back maps `null` to NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Like [`nan_if_null`], for an interval's top: `null` means unbounded.
fn infinite_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The answer to one what-if. Field names are a stable interface (`--json`, the HTTP API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhatIfResult {
    pub id: String,
    pub created: String,
    pub target: String,
    pub optimization: Optimization,
    pub entry: String,
    pub entry_url: String,
    /// Δ: per-visit time removed from T, µs.
    pub delta_us: f64,
    /// δ = Δ·r_T/c_T, ns per end-to-end request.
    pub delta_ns_per_request: f64,
    pub baseline_rps: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub baseline_ci_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub baseline_ci_high: f64,
    pub slow_rps: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub slow_ci_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub slow_ci_high: f64,
    pub predicted_rps: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub predicted_ci_low: f64,
    /// `null` in JSON when the interval's top is beyond what the experiment resolves.
    #[serde(deserialize_with = "infinite_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub predicted_ci_high: f64,
    /// Predicted gain over the baseline, %.
    pub predicted_gain_pct: f64,
    /// The pause experiment's own prediction, before the node-CPU bound (req/s).
    #[serde(default, deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub pause_predicted_rps: f64,
    /// The node-CPU bound on the optimized throughput (co-located services; docs/model.md),
    /// when the agents report their nodes. `predicted_rps` is the lower of the two.
    #[serde(default)]
    pub node_bound_rps: Option<f64>,
    /// The target's cores in use and run-queue wait (medians over windows) in the baseline and
    /// slowed-down runs, when an agent reports it: a target that works less while the others are
    /// paused makes the prediction too low (docs/model.md, "Requests in flight", "Shared cores").
    #[serde(default)]
    pub target_use: Option<TargetUseRecord>,
    /// Which limit bound the app in the baseline and what made the prediction.
    #[serde(default)]
    pub regime: Option<RegimeRecord>,
    /// The target's own saving under the pauses taken off δ, ns per end-to-end request
    /// (r_T·(p_base − p_slow)/c_T; 0 unless the target limited the app; docs/model.md).
    #[serde(default)]
    pub target_cost_correction_ns: f64,
    pub truth_rps: Option<f64>,
    pub truth_ci_low: Option<f64>,
    pub truth_ci_high: Option<f64>,
    /// (predicted − truth)/truth·100.
    pub error_pct: Option<f64>,
    /// (baseline − truth)/truth·100: what "nothing changes" would have missed by.
    pub baseline_error_pct: Option<f64>,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub p50_latency_us: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub p99_latency_us: f64,
    pub services: Vec<ServiceRow>,
    pub repetitions: usize,
    pub kept: usize,
    pub stop_reason: StopReason,
    pub precision_pct: Option<f64>,
    /// Achieved CI half-width of the prediction, %.
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub achieved_precision_pct: f64,
    pub warnings: Vec<String>,
    pub windows: Vec<WindowRecord>,
    pub duration_s: f64,
}

/// One point of a profile curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfilePoint {
    /// Optimization as % of the service's p_s.
    pub percent: f64,
    pub delta_us: f64,
    pub delta_ns_per_request: f64,
    pub slow_rps: Option<f64>,
    pub predicted_rps: Option<f64>,
    pub predicted_ci_low: Option<f64>,
    pub predicted_ci_high: Option<f64>,
    /// Predicted gain over the baseline, %.
    pub gain_pct: Option<f64>,
    /// Why there is no number (unresolvable, cap hit).
    pub error: Option<String>,
    /// The node-CPU bound (co-located services); `predicted_rps` is at most this.
    #[serde(default)]
    pub node_bound_rps: Option<f64>,
    /// 95 % CI half-width of the pause prediction, %.
    #[serde(default)]
    pub achieved_precision_pct: Option<f64>,
    /// What made `predicted_rps` (by the profile's `regime`).
    #[serde(default)]
    pub predicted_by: Option<PredictedBy>,
}

/// The profile curve of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileCurve {
    pub service: String,
    pub p_us: f64,
    pub points: Vec<ProfilePoint>,
    /// Best predicted gain over the sweep, %.
    pub max_gain_pct: Option<f64>,
}

/// A causal profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProfileResult {
    pub id: String,
    pub created: String,
    pub entry: String,
    pub entry_url: String,
    pub baseline_rps: f64,
    /// `null` in JSON when there was a single baseline window (no interval).
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub baseline_ci_low: f64,
    #[serde(deserialize_with = "nan_if_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub baseline_ci_high: f64,
    pub services: Vec<ServiceRow>,
    /// Ranked by `max_gain_pct`, best first.
    pub curves: Vec<ProfileCurve>,
    /// Which limit bound the app in the baseline windows (`limit` is `service`, not `target`:
    /// a profile has no single target) and what made most points' predictions.
    #[serde(default)]
    pub regime: Option<RegimeRecord>,
    pub repetitions: usize,
    pub warnings: Vec<String>,
    pub windows: Vec<WindowRecord>,
    pub duration_s: f64,
}

//! The JSON report: per what-if point, the profile sweep, the load's CPU, and the whole run's
//! summary against the goal of 15 s per point.

use std::path::Path;

use serde_json::{Value, json};
use slowpoke_coordinator::experiment::{
    self, LoadConfig, ProfileResult, ProfileSpec, Repeat, Timing, WhatIfResult, WhatIfSpec,
};
use slowpoke_stats::round4 as r;

use crate::load::WindowCpu;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

/// Generator and node CPU over some windows.
pub(crate) fn cpu_json(windows: &[WindowCpu]) -> Value {
    let col = |f: fn(&WindowCpu) -> f64| -> Vec<f64> { windows.iter().map(f).collect() };
    let gen_share = col(|w| w.generator_cpu_share);
    let gen_cores = col(|w| w.generator_cores);
    let wait = col(|w| w.generator_wait_share);
    let per_req = col(|w| w.generator_cpu_us_per_request);
    let node = col(|w| w.node_busy_share);
    json!({
        "windows": windows.len(),
        "generator_cpu_share": {"mean": r(mean(&gen_share)), "max": r(max(&gen_share))},
        "generator_cores": {"mean": r(mean(&gen_cores)), "max": r(max(&gen_cores))},
        "generator_wait_share": {"mean": r(mean(&wait)), "max": r(max(&wait))},
        "generator_cpu_us_per_request": {"mean": r(mean(&per_req)), "max": r(max(&per_req))},
        "generator_bound_windows": windows.iter().filter(|w| w.generator_bound).count(),
        "node_busy_share": {"mean": r(mean(&node)), "max": r(max(&node))},
    })
}

/// Where a what-if's time went, by the knobs of `Timing`, from the windows it measured.
fn time_split(spec_timing: &Timing, res: &WhatIfResult, wall_s: f64) -> Value {
    let windows = res.windows.len() as f64;
    let slow = res.windows.iter().filter(|w| w.phase == "slow").count() as f64;
    let warmup = spec_timing.warmup_s;
    let win = windows * spec_timing.window_s;
    let settle = slow * spec_timing.settle_s;
    let other = wall_s - warmup - win - settle;
    json!({
        "warmup_s": r(warmup),
        "windows_s": r(win),
        "windows": windows,
        "settle_s": r(settle),
        "other_s": r(other),
        "dominant": if win >= warmup.max(settle).max(other) { "windows" }
                    else if warmup >= settle.max(other) { "warmup" }
                    else if settle >= other { "settle" } else { "other" },
    })
}

pub(crate) fn what_if_point(
    pct: f64,
    delta_us: f64,
    wall_s: f64,
    spec: &WhatIfSpec,
    result: Result<WhatIfResult, experiment::RunError>,
    windows: &[WindowCpu],
) -> Value {
    match result {
        Ok(res) => {
            let floor = spec.timing.warmup_s
                + spec.timing.window_s
                + spec.repeat.repetitions as f64
                    * (2.0 * spec.timing.window_s + spec.timing.settle_s);
            json!({
                "percent": pct,
                "delta_us": r(delta_us),
                "wall_s": r(wall_s),
                "runner_duration_s": r(res.duration_s),
                "repetitions": res.repetitions,
                "kept": res.kept,
                "stop_reason": res.stop_reason,
                "precision_pct": res.precision_pct,
                "achieved_precision_pct": r(res.achieved_precision_pct),
                "baseline_rps": r(res.baseline_rps),
                "slow_rps": r(res.slow_rps),
                "predicted_rps": r(res.predicted_rps),
                "predicted_ci": [r(res.predicted_ci_low), r(res.predicted_ci_high)],
                "predicted_gain_pct": r(res.predicted_gain_pct),
                "delta_ns_per_request": r(res.delta_ns_per_request),
                "target_p_us": res.services.iter().find(|s| s.is_target).map(|s| r(s.p_us)),
                "time_split": time_split(&spec.timing, &res, wall_s),
                "floor_s": r(floor),
                "cpu": cpu_json(windows),
                "warnings": res.warnings,
            })
        }
        Err(e) => json!({
            "percent": pct,
            "delta_us": r(delta_us),
            "wall_s": r(wall_s),
            "error": e.to_string(),
            "cpu": cpu_json(windows),
        }),
    }
}

pub(crate) fn profile_json(
    spec: &ProfileSpec,
    res: Result<ProfileResult, experiment::RunError>,
    wall_s: f64,
    windows: &[WindowCpu],
) -> Value {
    let config = json!({
        "repetitions": spec.repetitions,
        "precision_pct": spec.precision_pct,
        "budget_s": spec.budget_s,
        "warmup_s": spec.timing.warmup_s,
        "window_s": spec.timing.window_s,
        "settle_s": spec.timing.settle_s,
        "percents_of": "measured p_T",
    });
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            return json!({"config": config, "wall_s": r(wall_s), "error": e.to_string(), "cpu": cpu_json(windows)});
        }
    };
    let n = spec.percents.len().max(1) as f64;
    let points: Vec<Value> = res
        .curves
        .first()
        .map(|c| {
            c.points
                .iter()
                .map(|p| {
                    // The pause prediction's own precision (a node bound clips the interval).
                    let hw = p.achieved_precision_pct.unwrap_or(f64::INFINITY);
                    json!({
                        "percent": p.percent,
                        "delta_us": r(p.delta_us),
                        "slow_rps": p.slow_rps.map(r),
                        "predicted_rps": p.predicted_rps.map(r),
                        "node_bound_rps": p.node_bound_rps.map(r),
                        "predicted_ci": [p.predicted_ci_low.map(r), p.predicted_ci_high.map(r)],
                        "achieved_precision_pct": r(hw),
                        "predicted_gain_pct": p.gain_pct.map(r),
                        "error": p.error,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "config": config,
        "wall_s": r(wall_s),
        "per_point_s": r(wall_s / n),
        "sweeps": res.repetitions,
        "goal_met": wall_s / n <= 15.0
            && points.iter().all(|p| p["achieved_precision_pct"].as_f64().is_some_and(|h| h <= 3.0)),
        "runner_duration_s": r(res.duration_s),
        "baseline_rps": r(res.baseline_rps),
        "target_p_us": res.curves.first().map(|c| r(c.p_us)),
        "windows": res.windows.len(),
        "points": points,
        "cpu": cpu_json(windows),
        "warnings": res.warnings,
    })
}

/// The goal for one what-if without ground truth, seconds (issue #15).
pub(crate) const GOAL_PER_POINT_S: f64 = 15.0;

/// A [`Timing`] as the report shows it.
pub(crate) fn timing_json(t: &Timing) -> Value {
    json!({"warmup_s": t.warmup_s, "window_s": t.window_s, "settle_s": t.settle_s, "quantum_us": t.quantum_us})
}

/// A [`Repeat`] as the report shows it.
pub(crate) fn repeat_json(rp: &Repeat) -> Value {
    json!({"repetitions": rp.repetitions, "precision_pct": rp.precision_pct,
           "budget_s": rp.budget_s, "max_repetitions": rp.max_repetitions})
}

/// Everything the report says, gathered by the protocol.
pub(crate) struct Report<'a> {
    pub(crate) date_utc: String,
    pub(crate) runtime_s: f64,
    pub(crate) topology: &'a Path,
    pub(crate) services: usize,
    pub(crate) target: &'a str,
    pub(crate) configured_cpu_us: f64,
    pub(crate) quick: bool,
    pub(crate) timing: Timing,
    pub(crate) repeat: Repeat,
    pub(crate) agent_start_s: f64,
    pub(crate) app_start_s: f64,
    pub(crate) points: Vec<Value>,
    /// The default protocol against the thorough one ([`crate::compare`]).
    pub(crate) comparison: Value,
    pub(crate) whatif_total_s: f64,
    pub(crate) whatif_load: Value,
    pub(crate) profile: Value,
    pub(crate) agent_overhead: Value,
    pub(crate) loadavg: (Value, Value),
    pub(crate) uptime: (String, String),
}

pub(crate) fn build_report(rep: Report<'_>) -> Value {
    let walls: Vec<f64> = rep
        .points
        .iter()
        .filter_map(|p| p["wall_s"].as_f64())
        .collect();
    let n = walls.len().max(1) as f64;
    let per_point = rep.whatif_total_s / n;
    let goal_s = GOAL_PER_POINT_S;
    let slow_points: Vec<Value> = rep
        .points
        .iter()
        .filter(|p| p["wall_s"].as_f64().is_some_and(|w| w > goal_s))
        .map(|p| {
            json!({
                "percent": p["percent"],
                "wall_s": p["wall_s"],
                "stop_reason": p["stop_reason"],
                "repetitions": p["repetitions"],
                "achieved_precision_pct": p["achieved_precision_pct"],
                "dominant": p["time_split"]["dominant"],
            })
        })
        .collect();
    let floor = rep.timing.warmup_s
        + rep.timing.window_s
        + rep.repeat.repetitions as f64 * (2.0 * rep.timing.window_s + rep.timing.settle_s);
    let mut whatif = json!({
        "points": rep.points,
        "total_s": r(rep.whatif_total_s),
        "per_point_mean_s": r(per_point),
        "goal_per_point_s": goal_s,
        "published_per_point_s": 120.0,
        "goal_met": walls.iter().all(|&w| w <= goal_s),
        "points_over_goal": slow_points,
        "floor_per_point_s": r(floor),
        "floor_formula": "warmup + calibration window + repetitions × (base window + settle + slow window)",
    });
    whatif["load"] = rep.whatif_load;
    json!({
        "date_utc": rep.date_utc,
        "runtime_s": r(rep.runtime_s),
        "online_cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "loadavg_start": rep.loadavg.0,
        "loadavg_end": rep.loadavg.1,
        "uptime_start": rep.uptime.0,
        "uptime_end": rep.uptime.1,
        "config": {
            "topology": rep.topology.display().to_string(),
            "services": rep.services,
            "target": rep.target,
            "target_configured_cpu_us": rep.configured_cpu_us,
            "quick": rep.quick,
            "timing": timing_json(&rep.timing),
            "repeat": repeat_json(&rep.repeat),
            "connections": LoadConfig::default().connections,
            "truth": "per round, a separate ground-truth what-if (comparison.truth)",
            "agent": "in-process (real::InProcessAgent)",
        },
        "setup": {"agent_start_s": r(rep.agent_start_s), "app_start_s": r(rep.app_start_s)},
        "whatif": whatif,
        "comparison": rep.comparison,
        "profile": rep.profile,
        "agent_overhead": rep.agent_overhead,
    })
}

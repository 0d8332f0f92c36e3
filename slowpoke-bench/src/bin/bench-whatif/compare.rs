//! The coordinator's default protocol side by side with the one before it ([`Timing::THOROUGH`],
//! [`Repeat::THOROUGH`]): time per what-if and error against a ground truth measured in the same
//! round, so that "faster" and "as accurate" come from one run.
//!
//! Each round visits every Δ; at each, the two protocols run one what-if each (no ground truth,
//! as a user runs them), in an order that alternates between Δs and rounds so that neither
//! protocol always runs first, then a ground-truth what-if (Δ really applied, its own baseline
//! windows interleaved with truth windows). Errors compare gains, not throughputs: a protocol's
//! predicted `X_opt/X_base` against the truth run's measured `X_opt/X_base`, so the app's slow drift
//! between the runs of a round cancels.

use serde_json::{Value, json};
use slowpoke_coordinator::experiment::{Repeat, Timing, WhatIfResult};
use slowpoke_stats::{round4 as r, trimmed};

/// One way of running a what-if.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Protocol {
    pub(crate) name: &'static str,
    pub(crate) timing: Timing,
    pub(crate) repeat: Repeat,
}

/// The two protocols compared: the defaults first (their runs make up `whatif.points`).
pub(crate) fn protocols(quick: bool) -> [Protocol; 2] {
    if quick {
        // Smoke test of the program: both cut to one short repetition.
        let timing = Timing {
            warmup_s: 0.5,
            window_s: 0.5,
            ..Timing::default()
        };
        return [
            Protocol {
                name: "default",
                timing,
                repeat: Repeat::fixed(1),
            },
            Protocol {
                name: "thorough",
                timing,
                repeat: Repeat::fixed(1),
            },
        ];
    }
    [
        Protocol {
            name: "default",
            timing: Timing::default(),
            repeat: Repeat::default(),
        },
        Protocol {
            name: "thorough",
            timing: Timing::THOROUGH,
            repeat: Repeat::THOROUGH,
        },
    ]
}

/// Which protocol runs first at Δ number `index` of round `round`: they alternate.
pub(crate) fn order(round: usize, index: usize) -> [usize; 2] {
    if (round + index).is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// The ground-truth run's windows: the thorough protocol's, three fixed repetitions.
pub(crate) fn truth_protocol(quick: bool) -> (Timing, Repeat) {
    if quick {
        (protocols(true)[0].timing, Repeat::fixed(1))
    } else {
        (Timing::THOROUGH, Repeat::fixed(3))
    }
}

/// What a ground-truth what-if measured: its baseline and its truth, and their ratio.
pub(crate) fn truth_json(res: &WhatIfResult, wall_s: f64) -> Value {
    let gain = res.truth_rps.map(|t| t / res.baseline_rps);
    json!({
        "baseline_rps": r(res.baseline_rps),
        "truth_rps": res.truth_rps.map(r),
        "truth_ci": [res.truth_ci_low.map(r), res.truth_ci_high.map(r)],
        "true_ratio": gain.map(r),
        "wall_s": r(wall_s),
    })
}

/// Adds `error_pct` to a protocol's point: its predicted `X_opt/X_base` against the truth run's
/// `X_opt/X_base`, in %.
pub(crate) fn attach_error(point: &mut Value, truth: &Value) {
    let predicted = point["predicted_rps"].as_f64();
    let base = point["baseline_rps"].as_f64();
    let true_ratio = truth["true_ratio"].as_f64();
    if let (Some(p), Some(b), Some(t)) = (predicted, base, true_ratio)
        && b > 0.0
        && t > 0.0
    {
        point["predicted_ratio"] = json!(r(p / b));
        point["error_pct"] = json!(r(((p / b) / t - 1.0) * 100.0));
    }
}

fn rmse(xs: &[f64]) -> f64 {
    (xs.iter().map(|x| x * x).sum::<f64>() / xs.len().max(1) as f64).sqrt()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

fn estimate(xs: &[f64]) -> Value {
    trimmed(xs).map_or(Value::Null, |e| {
        json!({"value": r(e.value), "ci95": [r(e.ci_low), r(e.ci_high)], "n": e.n, "kept": e.kept})
    })
}

/// Per protocol: time and error over its runs; then the two paired by (Δ, round): the ratio of
/// their times and the difference of their absolute errors, with 95 % intervals (trimmed means).
pub(crate) fn summary(points: &[Value], goal_s: f64) -> Value {
    let of =
        |name: &str| -> Vec<&Value> { points.iter().filter(|p| p["protocol"] == name).collect() };
    let per = |name: &str| -> Value {
        let runs = of(name);
        let walls: Vec<f64> = runs.iter().filter_map(|p| p["wall_s"].as_f64()).collect();
        let errs: Vec<f64> = runs
            .iter()
            .filter_map(|p| p["error_pct"].as_f64())
            .collect();
        let abs: Vec<f64> = errs.iter().map(|e| e.abs()).collect();
        let precision: Vec<f64> = runs
            .iter()
            .filter_map(|p| p["achieved_precision_pct"].as_f64())
            .collect();
        json!({
            "runs": runs.len(),
            "failed": runs.iter().filter(|p| p.get("error").is_some()).count(),
            "wall_s": {"mean": r(mean(&walls)), "max": r(walls.iter().copied().fold(0.0, f64::max))},
            "within_goal": walls.iter().filter(|&&w| w <= goal_s).count(),
            "error_pct": {
                "rmse": r(rmse(&errs)),
                "mean_abs": r(mean(&abs)),
                "max_abs": r(abs.iter().copied().fold(0.0, f64::max)),
                "mean": r(mean(&errs)),
                "points": errs.len(),
            },
            "achieved_precision_pct_mean": r(mean(&precision)),
        })
    };
    let (a, b) = (of("default"), of("thorough"));
    let mut wall_ratio = Vec::new();
    let mut abs_err_diff = Vec::new();
    for p in &a {
        let Some(q) = b
            .iter()
            .find(|q| q["percent"] == p["percent"] && q["round"] == p["round"])
        else {
            continue;
        };
        if let (Some(x), Some(y)) = (p["wall_s"].as_f64(), q["wall_s"].as_f64()) {
            wall_ratio.push(x / y);
        }
        if let (Some(x), Some(y)) = (p["error_pct"].as_f64(), q["error_pct"].as_f64()) {
            abs_err_diff.push(x.abs() - y.abs());
        }
    }
    json!({
        "goal_per_point_s": goal_s,
        "default": per("default"),
        "thorough": per("thorough"),
        "paired": {
            "wall_ratio_default_over_thorough": estimate(&wall_ratio),
            "abs_error_default_minus_thorough_pct": estimate(&abs_err_diff),
        },
        "error_definition": "(predicted_rps / baseline_rps) / (truth_rps / truth run's baseline_rps) − 1, in %",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_alternates() {
        assert_eq!(order(0, 0), [0, 1]);
        assert_eq!(order(0, 1), [1, 0]);
        assert_eq!(order(1, 0), [1, 0]);
    }

    #[test]
    fn error_compares_ratios_and_summary_pairs_runs() {
        let truth = json!({"true_ratio": 1.5});
        let mut a = json!({"protocol": "default", "percent": 50.0, "round": 0,
                           "wall_s": 15.0, "predicted_rps": 330.0, "baseline_rps": 200.0});
        let mut b = json!({"protocol": "thorough", "percent": 50.0, "round": 0,
                           "wall_s": 60.0, "predicted_rps": 600.0, "baseline_rps": 400.0});
        attach_error(&mut a, &truth);
        attach_error(&mut b, &truth);
        // 330/200 = 1.65 against 1.5: +10 %; 600/400 = 1.5: 0 %.
        assert!((a["error_pct"].as_f64().unwrap() - 10.0).abs() < 1e-9);
        assert!(b["error_pct"].as_f64().unwrap().abs() < 1e-9);
        let s = summary(&[a, b], 15.0);
        assert_eq!(s["default"]["within_goal"], 1);
        assert_eq!(s["thorough"]["within_goal"], 0);
        let ratio = &s["paired"]["wall_ratio_default_over_thorough"]["value"];
        assert!((ratio.as_f64().unwrap() - 0.25).abs() < 1e-9);
    }
}

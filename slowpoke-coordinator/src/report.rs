//! Human-readable tables of results (the CLI's default output).

use std::fmt::Write as _;

use crate::experiment::{ProfileResult, StopReason, WhatIfResult};
use slowpoke_api::coordinator::{
    Interval, Limit, PredictedBy, RegimeRecord, TailArmResult, TailResult,
};

fn rps(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "∞".into()
    }
}

fn ci(lo: f64, hi: f64) -> String {
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) => format!("[{}, {}]", rps(lo), rps(hi)),
        (true, false) => format!("[{}, unbounded]", rps(lo)),
        _ => "n/a (too few repetitions)".into(),
    }
}

/// The what-if answer as a table.
pub fn what_if_table(r: &WhatIfResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "What if `{}` got a {} (Δ = {:.1} µs per visit, δ = {:.1} µs per request)?",
        r.target,
        r.optimization,
        r.delta_us,
        r.delta_ns_per_request / 1e3
    );
    let _ = writeln!(
        s,
        "  baseline     {:>9} req/s  95% CI {:<22} p50 {:.2} ms, p99 {:.2} ms",
        rps(r.baseline_rps),
        ci(r.baseline_ci_low, r.baseline_ci_high),
        r.p50_latency_us / 1e3,
        r.p99_latency_us / 1e3
    );
    let _ = writeln!(
        s,
        "  slowed down  {:>9} req/s  95% CI {}",
        rps(r.slow_rps),
        ci(r.slow_ci_low, r.slow_ci_high)
    );
    let _ = writeln!(
        s,
        "  predicted    {:>9} req/s  95% CI {:<22} {:+.1} % vs baseline",
        rps(r.predicted_rps),
        ci(r.predicted_ci_low, r.predicted_ci_high),
        r.predicted_gain_pct
    );
    if let (Some(t), Some(e)) = (r.truth_rps, r.error_pct) {
        let _ = writeln!(
            s,
            "  truth        {:>9} req/s  95% CI {:<22} prediction error {e:+.1} % (the baseline would miss by {:+.1} %)",
            rps(t),
            ci(
                r.truth_ci_low.unwrap_or(f64::NAN),
                r.truth_ci_high.unwrap_or(f64::NAN)
            ),
            r.baseline_error_pct.unwrap_or(f64::NAN)
        );
    }
    if let Some(g) = &r.regime {
        let _ = writeln!(s, "  limit        {}", regime_line(g));
    }
    let stop = match r.stop_reason {
        StopReason::Repetitions => "the configured repetitions ran".to_owned(),
        StopReason::PrecisionReached => format!(
            "precision reached (±{:.1} % ≤ {:.1} %)",
            r.achieved_precision_pct,
            r.precision_pct.unwrap_or(0.0)
        ),
        StopReason::BudgetExhausted => format!(
            "time budget exhausted before the precision target (±{:.1} %, wanted {:.1} %)",
            r.achieved_precision_pct,
            r.precision_pct.unwrap_or(0.0)
        ),
    };
    let _ = writeln!(
        s,
        "  stop: {stop}; {} repetitions, {} kept; {:.0} s",
        r.repetitions, r.kept, r.duration_s
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  {:<20} {:>8} {:>10} {:>6} {:>10}",
        "service", "r", "p (µs)", "c", "d (µs)"
    );
    for row in &r.services {
        let mark = match (row.is_target, row.is_entry) {
            (true, _) => " (target)",
            (_, true) => " (entry)",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  {:<20} {:>8.3} {:>10.1} {:>6.2} {:>10}",
            format!("{}{mark}", row.name),
            row.r,
            row.p_us,
            row.c,
            row.d_us.map_or_else(|| "-".into(), |d| format!("{d:.1}"))
        );
    }
    warnings(&mut s, &r.warnings);
    s
}

/// The causal profile as a ranked table.
/// What limited the app in the baseline and what made the prediction, in one line.
fn regime_line(g: &RegimeRecord) -> String {
    let service = g.service.as_deref().unwrap_or("?");
    let limit = match g.limit {
        Limit::Target => format!(
            "the target's own cores ({:.0} % busy)",
            g.utilization * 100.0
        ),
        Limit::Service => format!(
            "`{service}`'s own cores ({:.0} % busy)",
            g.utilization * 100.0
        ),
        Limit::OtherService => format!(
            "`{service}`'s own cores ({:.0} % busy), not the target's",
            g.utilization * 100.0
        ),
        Limit::Node => format!("the node's CPUs ({:.0} % busy)", g.node_busy * 100.0),
        Limit::Unsaturated => format!(
            "nothing CPU-saturated (busiest `{service}` {:.0} %, node {:.0} %): a lock, I/O or the load",
            g.utilization * 100.0,
            g.node_busy * 100.0
        ),
    };
    let by = match g.predicted_by {
        PredictedBy::Pauses => "the pauses",
        PredictedBy::NodeBound => "the node bound",
        PredictedBy::BottleneckLaw => "the bottleneck law",
    };
    format!("{limit}; predicted by {by}")
}

pub fn profile_table(r: &ProfileResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Causal profile of {} (entry `{}`), baseline {} req/s 95% CI {}",
        r.entry_url,
        r.entry,
        rps(r.baseline_rps),
        ci(r.baseline_ci_low, r.baseline_ci_high)
    );
    if let Some(g) = &r.regime {
        let _ = writeln!(s, "  limit: {}", regime_line(g));
    }
    let percents: Vec<f64> = r
        .curves
        .first()
        .map(|c| c.points.iter().map(|p| p.percent).collect())
        .unwrap_or_default();
    let mut header = format!(
        "  {:<4} {:<20} {:>9} {:>9}",
        "rank", "service", "p (µs)", "best"
    );
    for p in &percents {
        let _ = write!(header, " {:>9}", format!("-{p}%"));
    }
    let _ = writeln!(s, "{header}");
    for (i, c) in r.curves.iter().enumerate() {
        let mut line = format!(
            "  {:<4} {:<20} {:>9.1} {:>9}",
            i + 1,
            c.service,
            c.p_us,
            c.max_gain_pct
                .map_or_else(|| "-".into(), |g| format!("{g:+.1}%"))
        );
        for p in &c.points {
            let cell = p
                .gain_pct
                .map_or_else(|| "n/a".into(), |g| format!("{g:+.1}%"));
            let _ = write!(line, " {cell:>9}");
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "  (cells: predicted end-to-end throughput gain when the service's per-visit time drops by that share)"
    );
    let errors: Vec<String> = r
        .curves
        .iter()
        .flat_map(|c| {
            c.points.iter().filter_map(move |p| {
                p.error
                    .as_ref()
                    .map(|e| format!("{} -{}%: {e}", c.service, p.percent))
            })
        })
        .collect();
    warnings(&mut s, &r.warnings);
    if !errors.is_empty() {
        let _ = writeln!(s, "points without a number:");
        for e in errors {
            let _ = writeln!(s, "  - {e}");
        }
    }
    s
}

fn warnings(s: &mut String, w: &[String]) {
    if w.is_empty() {
        return;
    }
    let _ = writeln!(s, "warnings:");
    for line in w {
        let _ = writeln!(s, "  - {line}");
    }
}

/// A figure over repetitions with its interval, scaled by `scale` and printed with `prec`
/// decimals: `8.40 [7.90, 8.90]`.
fn interval(i: Option<&Interval>, scale: f64, prec: usize) -> String {
    match i {
        None => "-".into(),
        Some(i) => match (i.ci_low, i.ci_high) {
            (Some(lo), Some(hi)) => format!(
                "{:.prec$} [{:.prec$}, {:.prec$}]",
                i.value * scale,
                lo * scale,
                hi * scale
            ),
            _ => format!("{:.prec$}", i.value * scale),
        },
    }
}

/// A figure without its interval (the table keeps one interval per row: the p99's).
fn value(i: Option<&Interval>, scale: f64, prec: usize) -> String {
    i.map_or_else(|| "-".into(), |i| format!("{:.prec$}", i.value * scale))
}

/// A ratio against `default` as a change: `-42 % [-50, -35]`.
fn change(i: Option<&Interval>) -> String {
    match i {
        None => "-".into(),
        Some(i) => {
            let pct = |x: f64| (x - 1.0) * 100.0;
            match (i.ci_low, i.ci_high) {
                (Some(lo), Some(hi)) => {
                    format!("{:+.0} % [{:+.0}, {:+.0}]", pct(i.value), pct(lo), pct(hi))
                }
                _ => format!("{:+.0} %", pct(i.value)),
            }
        }
    }
}

fn tail_rows(s: &mut String, arms: &[TailArmResult]) {
    let _ = writeln!(
        s,
        "  {:<17} {:>8} {:>26} {:>12} {:>8} {:>9}  {:<22} mean vs default",
        "arm", "p50 ms", "p99 ms [95% CI]", "p99.9 ms", "mean ms", "req/s", "p99 vs default"
    );
    for a in arms {
        if !a.ran {
            let _ = writeln!(
                s,
                "  {:<17} not run: {}",
                a.arm.as_str(),
                a.error.as_deref().unwrap_or("?")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "  {:<17} {:>8} {:>26} {:>12} {:>8} {:>9}  {:<22} {}",
            a.arm.as_str(),
            value(a.p50_us.as_ref(), 1e-3, 2),
            interval(a.p99_us.as_ref(), 1e-3, 2),
            value(a.p999_us.as_ref(), 1e-3, 2),
            value(a.mean_us.as_ref(), 1e-3, 2),
            value(a.rps.as_ref(), 1.0, 0),
            change(a.p99_vs_default.as_ref()),
            change(a.mean_vs_default.as_ref()),
        );
    }
}

/// How the load generator's threads ran (`TailResult::load_priority`).
pub fn load_priority(p: Option<u8>) -> String {
    p.map_or_else(
        || "normal priority".to_owned(),
        |p| format!("real-time priority {p}"),
    )
}

/// A tail comparison as a table: per arm the percentiles, mean and throughput, and the
/// changes against `default` with their intervals; with a sweep, each arm's highest rate
/// under the p99 target.
pub fn tail_table(r: &TailResult) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Tail comparison at {:.0} req/s (Poisson, open loop), {} repetitions x {:.1} s per arm, {} scheduled on {}; load generator at {}",
        r.rate_rps,
        r.repetitions,
        r.window_s,
        r.services.join(", "),
        r.agents.join(", "),
        load_priority(r.load_priority)
    );
    tail_rows(&mut s, &r.arms);
    for p in &r.sweep {
        let _ = writeln!(s, "at {:.0} req/s:", p.rate_rps);
        tail_rows(&mut s, &p.arms);
    }
    if let Some(target) = r.p99_target_us {
        let _ = writeln!(s, "highest rate with p99 under {:.2} ms:", target / 1e3);
        for c in &r.capacity {
            let _ = match (c.max_rate_rps, c.rps) {
                (Some(rate), Some(rps)) => writeln!(
                    s,
                    "  {:<17} {rate:.0} req/s offered, {rps:.0} req/s served",
                    c.arm.as_str()
                ),
                _ => writeln!(s, "  {:<17} none of the rates", c.arm.as_str()),
            };
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

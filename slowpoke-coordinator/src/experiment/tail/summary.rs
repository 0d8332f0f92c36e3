//! From windows to an arm's figures (pure): percentiles, mean and throughput over the
//! repetitions with their intervals, ratios against `default` taken within each repetition,
//! the latency CDF of all the arm's requests, and a sweep's highest rate under a p99 target.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use slowpoke_api::coordinator::{
    CdfPoint, Interval, TailArm, TailArmResult, TailCapacity, TailSweepPoint, TailWindow,
};

use super::load::LatencyWindow;

/// A window's figures for the result (µs, req/s): percentiles and the maximum over every
/// request, a failed one counted as the load's timeout (`ranked`: [`LatencyWindow::ranked`],
/// which the caller also merges); the mean over the answers.
pub fn window_record(
    arm: TailArm,
    repetition: usize,
    rate_rps: f64,
    w: &LatencyWindow,
    ranked: &Histogram<u64>,
) -> TailWindow {
    let h = ranked;
    let answers = &w.latency_us;
    let q = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(p) as f64
        }
    };
    TailWindow {
        arm,
        repetition,
        rate_rps,
        secs: w.secs,
        completed_ok: w.completed_ok,
        errors: w.errors,
        rps: w.rps(),
        p50_us: q(0.5),
        p99_us: q(0.99),
        p999_us: q(0.999),
        mean_us: if answers.is_empty() {
            0.0
        } else {
            answers.mean()
        },
        max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
        scheduler_cores: None,
        scheduler_wakeups_per_s: None,
        scheduler_counts: None,
    }
}

/// The trimmed mean of `values` with its 95 % interval (none without values; open bounds
/// with one).
pub fn interval(values: &[f64]) -> Option<Interval> {
    let e = slowpoke_stats::trimmed(values)?;
    let finite = |x: f64| x.is_finite().then_some(x);
    Some(Interval {
        value: e.value,
        ci_low: finite(e.ci_low),
        ci_high: finite(e.ci_high),
        n: e.n,
    })
}

/// Fractions the CDF is given at: every percent, then finer towards the tail, where the arms
/// differ.
fn cdf_fractions() -> Vec<f64> {
    let mut f: Vec<f64> = (1..=99).map(|i| f64::from(i) / 100.0).collect();
    f.extend((991..=999).map(|i| f64::from(i) / 1000.0));
    f.extend([0.9995, 0.9999, 1.0]);
    f
}

/// The latency distribution of `h` (µs), increasing in both coordinates.
pub fn cdf(h: &Histogram<u64>) -> Vec<CdfPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    cdf_fractions()
        .into_iter()
        .map(|fraction| CdfPoint {
            latency_us: h.value_at_quantile(fraction) as f64,
            fraction,
        })
        .collect()
}

/// An arm that did not run: why.
pub fn not_run(arm: TailArm, error: String) -> TailArmResult {
    TailArmResult {
        arm,
        ran: false,
        error: Some(error),
        p50_us: None,
        p99_us: None,
        p999_us: None,
        mean_us: None,
        rps: None,
        p99_vs_default: None,
        mean_vs_default: None,
        rps_vs_default: None,
        cdf: Vec::new(),
    }
}

/// `arm`'s figures from its windows (one per repetition, with the histograms of all its
/// requests merged in `merged`); `default` is the default arm's windows by repetition, for
/// the ratios (each repetition's ratio, then their interval: the arms of a repetition ran back
/// to back, so the pairs share the drift).
pub fn arm_result(
    arm: TailArm,
    windows: &[TailWindow],
    merged: &Histogram<u64>,
    default: &BTreeMap<usize, TailWindow>,
) -> TailArmResult {
    let of = |f: fn(&TailWindow) -> f64| interval(&windows.iter().map(f).collect::<Vec<_>>());
    let ratio = |f: fn(&TailWindow) -> f64| {
        if arm == TailArm::Default {
            return None;
        }
        let ratios: Vec<f64> = windows
            .iter()
            .filter_map(|w| {
                let d = default.get(&w.repetition)?;
                (f(d) > 0.0).then(|| f(w) / f(d))
            })
            .collect();
        interval(&ratios)
    };
    TailArmResult {
        arm,
        ran: true,
        error: None,
        p50_us: of(|w| w.p50_us),
        p99_us: of(|w| w.p99_us),
        p999_us: of(|w| w.p999_us),
        mean_us: of(|w| w.mean_us),
        rps: of(|w| w.rps),
        p99_vs_default: ratio(|w| w.p99_us),
        mean_vs_default: ratio(|w| w.mean_us),
        rps_vs_default: ratio(|w| w.rps),
        cdf: cdf(merged),
    }
}

/// Per arm, the highest rate of the sweep whose p99 stayed under `target_us`, with the
/// throughput achieved there. Rates are taken in increasing order and the search stops at the
/// first rate over the target: a lucky window above the knee does not count.
pub fn capacity(sweep: &[TailSweepPoint], arms: &[TailArm], target_us: f64) -> Vec<TailCapacity> {
    let mut points: Vec<&TailSweepPoint> = sweep.iter().collect();
    points.sort_by(|a, b| a.rate_rps.total_cmp(&b.rate_rps));
    arms.iter()
        .map(|&arm| {
            let mut best = TailCapacity {
                arm,
                max_rate_rps: None,
                rps: None,
            };
            for p in &points {
                let Some(r) = p.arms.iter().find(|r| r.arm == arm && r.ran) else {
                    break;
                };
                match (&r.p99_us, &r.rps) {
                    (Some(p99), Some(rps)) if p99.value <= target_us => {
                        best.max_rate_rps = Some(p.rate_rps);
                        best.rps = Some(rps.value);
                    }
                    _ => break,
                }
            }
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(arm: TailArm, repetition: usize, p99_us: f64, rps: f64) -> TailWindow {
        TailWindow {
            arm,
            repetition,
            rate_rps: 100.0,
            secs: 1.0,
            completed_ok: rps as u64,
            errors: 0,
            rps,
            p50_us: p99_us / 4.0,
            p99_us,
            p999_us: p99_us * 2.0,
            mean_us: p99_us / 3.0,
            max_us: p99_us * 3.0,
            scheduler_cores: None,
            scheduler_wakeups_per_s: None,
            scheduler_counts: None,
        }
    }

    #[test]
    fn ratios_pair_the_repetitions() {
        // Default p99 1000, 2000, 4000 (drifting); the arm is exactly half each time: the
        // paired ratio is 0.5 with a zero-width interval, however much the level drifts.
        let default: BTreeMap<usize, TailWindow> = [1000.0, 2000.0, 4000.0]
            .iter()
            .enumerate()
            .map(|(i, &p)| (i, window(TailArm::Default, i, p, 100.0)))
            .collect();
        let arm: Vec<TailWindow> = [500.0, 1000.0, 2000.0]
            .iter()
            .enumerate()
            .map(|(i, &p)| window(TailArm::OldestFirst, i, p, 100.0))
            .collect();
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        h.record(500).unwrap();
        let r = arm_result(TailArm::OldestFirst, &arm, &h, &default);
        let ratio = r.p99_vs_default.expect("a ratio");
        assert!((ratio.value - 0.5).abs() < 1e-12, "{ratio:?}");
        assert_eq!((ratio.ci_low, ratio.ci_high), (Some(0.5), Some(0.5)));
        assert_eq!(ratio.n, 3);
        // p99: the trimmed mean of 500, 1000, 2000 (n = 3 trims nothing).
        let p99 = r.p99_us.expect("p99");
        assert!((p99.value - 3500.0 / 3.0).abs() < 1e-9, "{p99:?}");
        assert!((r.rps_vs_default.unwrap().value - 1.0).abs() < 1e-12);
        // The default arm has no ratio to itself.
        let d: Vec<TailWindow> = default.values().cloned().collect();
        assert_eq!(
            arm_result(TailArm::Default, &d, &h, &default).p99_vs_default,
            None
        );
    }

    #[test]
    fn one_repetition_has_no_interval() {
        let i = interval(&[42.0]).unwrap();
        assert_eq!((i.value, i.ci_low, i.ci_high, i.n), (42.0, None, None, 1));
        assert_eq!(interval(&[]), None);
    }

    #[test]
    fn the_cdf_rises_to_the_maximum() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let c = cdf(&h);
        assert!(
            c.windows(2)
                .all(|w| w[0].latency_us <= w[1].latency_us && w[0].fraction < w[1].fraction)
        );
        let last = c.last().unwrap();
        assert_eq!((last.fraction, last.latency_us), (1.0, 1000.0));
        // The median of 1..=1000 is 500 (hdrhistogram: 3 significant digits).
        let median = c.iter().find(|p| (p.fraction - 0.5).abs() < 1e-12).unwrap();
        assert!((median.latency_us - 500.0).abs() < 1e-9, "{median:?}");
        assert!(cdf(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }

    #[test]
    fn failed_requests_rank_behind_every_answer_but_not_in_the_mean() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 1..=980u64 {
            h.record(v).unwrap();
        }
        let mut w = LatencyWindow {
            secs: 1.0,
            completed_ok: 980,
            errors: 0,
            latency_us: h,
            failed_as_us: 5_000_000,
        };
        let served = window_record(TailArm::Default, 0, 1000.0, &w, &w.ranked());
        assert!(served.p99_us < 1000.0, "{served:?}");
        // 2 % failed: the p99 is a failure, at the load's timeout (3 significant digits).
        w.errors = 20;
        let r = window_record(TailArm::Default, 0, 1000.0, &w, &w.ranked());
        assert!((r.p99_us - 5_000_000.0).abs() <= 5_000.0, "{r:?}");
        assert!((r.max_us - 5_000_000.0).abs() <= 5_000.0, "{r:?}");
        // The median and the mean are the answers'.
        assert!((r.p50_us - served.p50_us).abs() <= 10.0, "{r:?}");
        assert!((r.mean_us - served.mean_us).abs() < 1e-9, "{r:?}");
        assert_eq!(w.ranked().len(), 1000);
        assert_eq!(w.latency_us.len(), 980);
    }

    #[test]
    fn capacity_is_the_last_rate_before_the_knee() {
        let point = |rate: f64, p99s: [f64; 2]| TailSweepPoint {
            rate_rps: rate,
            arms: [TailArm::Default, TailArm::OldestFirst]
                .iter()
                .zip(p99s)
                .map(|(&arm, p99)| {
                    let w = [window(arm, 0, p99, rate * 0.99)];
                    let h = Histogram::<u64>::new(3).unwrap();
                    arm_result(arm, &w, &h, &BTreeMap::new())
                })
                .collect(),
        };
        // Given out of order; default crosses 10 ms at 300/s, oldest-first at 400/s (a lucky
        // window at 500/s after its knee does not count).
        let sweep = vec![
            point(300.0, [12_000.0, 8_000.0]),
            point(100.0, [2_000.0, 2_000.0]),
            point(500.0, [50_000.0, 9_000.0]),
            point(200.0, [5_000.0, 4_000.0]),
            point(400.0, [30_000.0, 11_000.0]),
        ];
        let c = capacity(&sweep, &[TailArm::Default, TailArm::OldestFirst], 10_000.0);
        assert_eq!(c[0].max_rate_rps, Some(200.0));
        assert_eq!(c[0].rps, Some(198.0));
        assert_eq!(c[1].max_rate_rps, Some(300.0));
        let none = capacity(&sweep, &[TailArm::PerServiceFifo], 10_000.0);
        assert_eq!(none[0].max_rate_rps, None);
    }
}

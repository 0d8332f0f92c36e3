//! Robust statistics over repetitions: median, MAD filtering, trimmed means and their 95 %
//! confidence intervals; and the plain summaries the benchmarks (`slowpoke-bench`) print
//! ([`summarize`], [`rounded_summary`], [`nearest_rank`], [`round4`]). Pure, no I/O, and the
//! workspace's one Student-t quantile ([`t975`], from statrs). The coordinator re-exports it as
//! `slowpoke_coordinator::stats`.
//!
//! The original artifact keeps the middle 3 of 5 repetitions and filters baselines to
//! median ± 3·MAD. We generalize both: [`trimmed`] drops ⌊n/5⌋ values at each end (the middle 3
//! of 5, the middle 6 of 10, ...) and gives the Tukey–McLaughlin interval of that trimmed mean;
//! [`mad_filtered`] keeps median ± 3·MAD and gives a Student-t interval of the kept mean.

// Formulas in the docs use maths notation, not code.
#![allow(clippy::doc_markdown)]

mod summary;

use serde::{Deserialize, Serialize};

pub use summary::{RoundedSummary, Summary, nearest_rank, round4, rounded_summary, summarize};

/// A robust estimate with its 95 % confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// Repetitions measured.
    pub n: usize,
    /// Repetitions the estimate rests on.
    pub kept: usize,
}

impl Estimate {
    /// A single value with no interval (n = 1).
    pub fn exact(value: f64) -> Estimate {
        Estimate {
            value,
            ci_low: value,
            ci_high: value,
            n: 1,
            kept: 1,
        }
    }

    /// Half the interval's width as a percentage of the value (infinite for an open interval).
    pub fn half_width_pct(&self) -> f64 {
        if self.value == 0.0 || !self.ci_low.is_finite() || !self.ci_high.is_finite() {
            return f64::INFINITY;
        }
        (self.ci_high - self.ci_low) / 2.0 / self.value.abs() * 100.0
    }

    /// The smaller of two estimates, endpoint by endpoint (the prediction when either of two
    /// limits may bind: each end of the interval is the tighter limit's; the counts are those
    /// of the limit that binds).
    #[must_use]
    pub fn min(self, other: Estimate) -> Estimate {
        let lower = if other.value < self.value {
            other
        } else {
            self
        };
        Estimate {
            value: self.value.min(other.value),
            ci_low: self.ci_low.min(other.ci_low),
            ci_high: self.ci_high.min(other.ci_high),
            ..lower
        }
    }

    /// Maps the estimate through an increasing function; an endpoint the function cannot map
    /// (`None`) becomes unbounded.
    pub fn map_increasing(&self, f: impl Fn(f64) -> Option<f64>) -> Option<Estimate> {
        Some(Estimate {
            value: f(self.value)?,
            ci_low: f(self.ci_low).unwrap_or(0.0),
            ci_high: f(self.ci_high).unwrap_or(f64::INFINITY),
            n: self.n,
            kept: self.kept,
        })
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Median of the finite values (`None` when there are none).
pub fn median(values: &[f64]) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(f64::midpoint(v[n / 2 - 1], v[n / 2])),
    }
}

/// Median absolute deviation from the median (raw, not scaled to σ).
pub fn mad(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let dev: Vec<f64> = values.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// The values within median ± k·MAD. When MAD is 0 (most values equal) every value is kept:
/// a zero-width band would throw away honest measurements.
pub fn within_mad(values: &[f64], k: f64) -> Vec<f64> {
    let (Some(m), Some(d)) = (median(values), mad(values)) else {
        return Vec::new();
    };
    if d == 0.0 {
        return sorted(values);
    }
    sorted(values)
        .into_iter()
        .filter(|x| (x - m).abs() <= k * d)
        .collect()
}

/// The middle `keep` of the sorted values (the middle 3 of 5).
pub fn middle(values: &[f64], keep: usize) -> Vec<f64> {
    let v = sorted(values);
    if keep >= v.len() {
        return v;
    }
    let drop = (v.len() - keep) / 2;
    v[drop..drop + keep].to_vec()
}

/// Two-sided 95 % Student-t quantile t_{0.975, df} (infinite for df = 0: no interval), from
/// statrs's Student-t distribution.
pub fn t975(df: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF as _, StudentsT};
    if df == 0 {
        return f64::INFINITY;
    }
    StudentsT::new(0.0, 1.0, df as f64).map_or(1.96, |t| t.inverse_cdf(0.975))
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn sample_var(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64
}

/// Trimmed mean dropping g = ⌊n/5⌋ values at each end (the middle 3 of 5), with the
/// Tukey–McLaughlin 95 % interval: SE = s_w / ((1 − 2γ)·√n) where s_w is the standard
/// deviation of the winsorized sample and γ = g/n; df = n − 2g − 1.
pub fn trimmed(values: &[f64]) -> Option<Estimate> {
    let v = sorted(values);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let g = n / 5;
    let kept = &v[g..n - g];
    let value = mean(kept);
    if n == 1 || kept.len() < 2 {
        return Some(Estimate {
            value,
            ci_low: f64::NEG_INFINITY,
            ci_high: f64::INFINITY,
            n,
            kept: kept.len(),
        });
    }
    let winsorized: Vec<f64> = v.iter().map(|&x| x.clamp(v[g], v[n - g - 1])).collect();
    let s_w = sample_var(&winsorized).sqrt();
    let gamma = g as f64 / n as f64;
    let se = s_w / ((1.0 - 2.0 * gamma) * (n as f64).sqrt());
    let half = t975(n - 2 * g - 1) * se;
    Some(Estimate {
        value,
        ci_low: value - half,
        ci_high: value + half,
        n,
        kept: kept.len(),
    })
}

/// The median of the values with the interval [`mad_filtered`] gives their filtered mean, moved
/// to the median (a bound computed per window: its typical value and how much it varies).
pub fn median_with_spread(values: &[f64]) -> Option<Estimate> {
    let m = median(values)?;
    let f = mad_filtered(values)?;
    let half = (f.ci_high - f.ci_low) / 2.0;
    Some(Estimate {
        value: m,
        ci_low: m - half,
        ci_high: m + half,
        ..f
    })
}

/// Mean of the values within median ± 3·MAD with a Student-t 95 % interval.
pub fn mad_filtered(values: &[f64]) -> Option<Estimate> {
    let n = values.iter().filter(|x| x.is_finite()).count();
    let kept = within_mad(values, 3.0);
    if kept.is_empty() {
        return None;
    }
    let value = mean(&kept);
    let half = if kept.len() < 2 {
        f64::INFINITY
    } else {
        t975(kept.len() - 1) * (sample_var(&kept) / kept.len() as f64).sqrt()
    };
    Some(Estimate {
        value,
        ci_low: value - half,
        ci_high: value + half,
        n,
        kept: kept.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (±{tol})");
    }

    #[test]
    fn min_of_two_estimates_and_median_with_spread() {
        let pause = Estimate {
            value: 1000.0,
            ci_low: 950.0,
            ci_high: 1050.0,
            n: 5,
            kept: 3,
        };
        let bound = Estimate {
            value: 980.0,
            ci_low: 970.0,
            ci_high: 990.0,
            n: 5,
            kept: 5,
        };
        let m = pause.min(bound);
        assert_eq!((m.value, m.ci_low, m.ci_high), (980.0, 950.0, 990.0));
        assert_eq!((m.n, m.kept), (5, 5), "counts follow the binding limit");
        assert_eq!(bound.min(pause), m);
        // An unbounded limit never binds.
        let open = Estimate::exact(f64::INFINITY);
        assert_eq!(pause.min(open), pause);

        // Median 3; the mean of 1..5 is 3 too, its t interval: 2.776·√(2.5/5) = 1.963.
        let e = median_with_spread(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        close(e.value, 3.0, 0.0);
        close(e.ci_high - e.value, 2.776 * (0.5f64).sqrt(), 1e-3);
        close(e.value - e.ci_low, 2.776 * (0.5f64).sqrt(), 1e-3);
        // Skewed: the interval is centred on the median, not the mean.
        let e = median_with_spread(&[10.0, 10.0, 11.0, 12.0, 14.0]).unwrap();
        close(e.value, 11.0, 0.0);
        close(e.ci_high - 11.0, 11.0 - e.ci_low, 1e-9);
        assert_eq!(median_with_spread(&[]), None);
    }

    #[test]
    fn median_and_mad() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        // |x − 2| = 1, 0, 1, 98 ⇒ MAD = median(0, 1, 1, 98) = 1.
        assert_eq!(mad(&[1.0, 2.0, 3.0, 100.0]), Some(1.0));
    }

    #[test]
    fn mad_filter_drops_outliers() {
        // median 10, deviations 0,1,1,2,90 ⇒ MAD 1 ⇒ keep 10 ± 3.
        let kept = within_mad(&[10.0, 9.0, 11.0, 12.0, 100.0], 3.0);
        assert_eq!(kept, vec![9.0, 10.0, 11.0, 12.0]);
        // All equal but one: MAD = 0 keeps everything.
        assert_eq!(within_mad(&[5.0, 5.0, 5.0, 7.0], 3.0).len(), 4);
        let e = mad_filtered(&[10.0, 9.0, 11.0, 12.0, 100.0]).unwrap();
        assert_eq!((e.n, e.kept), (5, 4));
        close(e.value, 10.5, 1e-12);
        // s² = (2.25+0.25+0.25+2.25)/3 = 5/3; SE = √(5/12) = 0.6455; t(3) = 3.182 ⇒ ±2.054.
        close(e.ci_high - e.value, 3.182 * (5.0_f64 / 12.0).sqrt(), 1e-3);
    }

    #[test]
    fn middle_three_of_five() {
        assert_eq!(middle(&[5.0, 1.0, 4.0, 2.0, 3.0], 3), vec![2.0, 3.0, 4.0]);
        let e = trimmed(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((e.n, e.kept), (5, 3));
        close(e.value, 3.0, 1e-12);
        // Winsorized: 2,2,3,4,4: mean 3, s² = (1+1+0+1+1)/4 = 1; γ = 0.2;
        // SE = 1/(0.6·√5) = 0.74536; df = 5 − 2 − 1 = 2, t = 4.303 ⇒ ±3.2073.
        close(e.ci_high - e.value, 4.303 / (0.6 * 5.0_f64.sqrt()), 1e-3);
        close(
            e.half_width_pct(),
            4.303 / (0.6 * 5.0_f64.sqrt()) / 3.0 * 100.0,
            1e-1,
        );
    }

    #[test]
    fn t_quantiles_match_the_printed_table() {
        // t_{0.975} for df = 1..5, 10, 30 and the normal limit, to the table's 3 decimals.
        for (df, t) in [
            (1, 12.706),
            (2, 4.303),
            (3, 3.182),
            (4, 2.776),
            (5, 2.571),
            (10, 2.228),
            (30, 2.042),
            (100_000, 1.960),
        ] {
            close(t975(df), t, 5e-4);
        }
        assert!(t975(0).is_infinite());
    }

    #[test]
    fn trimmed_small_samples() {
        let one = trimmed(&[7.0]).unwrap();
        close(one.value, 7.0, 0.0);
        assert!(one.half_width_pct().is_infinite());
        // n = 2: no trimming, t(1) = 12.706, s = √2/... values 1, 3: s = √2, SE = 1.
        let two = trimmed(&[1.0, 3.0]).unwrap();
        close(two.value, 2.0, 1e-12);
        close(two.ci_high, 2.0 + 12.706, 1e-3);
        assert!(trimmed(&[]).is_none());
    }

    #[test]
    fn interval_maps_through_increasing_function() {
        let e = Estimate {
            value: 2.0,
            ci_low: 1.0,
            ci_high: 3.0,
            n: 5,
            kept: 3,
        };
        let m = e
            .map_increasing(|x| if x < 2.5 { Some(x * 10.0) } else { None })
            .unwrap();
        assert_eq!((m.value, m.ci_low), (20.0, 10.0));
        assert!(m.ci_high.is_infinite());
        assert!(e.map_increasing(|_| None).is_none());
    }
}

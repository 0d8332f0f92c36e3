//! Plain summaries of a benchmark's rounds: mean, median, standard deviation, the Student-t 95 %
//! interval of the mean, nearest-rank quantiles, and the 4-significant-digit rounding the
//! benchmarks print. Unlike the robust estimates of the crate root nothing is filtered out but
//! non-finite values: a benchmark reports every round it ran, outliers included, and says how
//! much they spread.

use serde::Serialize;

use crate::{mean, median, sample_var, sorted, t975};

/// Mean, median and sample standard deviation of the finite values, with the 95 % interval of
/// the mean `[lo, hi]` (NaN where it is undefined: no values, or one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Summary {
    /// Half the interval's width (NaN below two values).
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// The [`Summary`] of the finite values: mean ± t_{0.975, n−1}·s/√n.
pub fn summarize(values: &[f64]) -> Summary {
    let v = sorted(values);
    let n = v.len();
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            median: f64::NAN,
            sd: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let mean = mean(&v);
    let sd = if n > 1 {
        sample_var(&v).sqrt()
    } else {
        f64::NAN
    };
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Summary {
        n,
        mean,
        median: median(&v).unwrap_or(f64::NAN),
        sd,
        lo: mean - half,
        hi: mean + half,
    }
}

/// The nearest-rank `q` quantile of the finite values: the smallest value with at least a share
/// `q` of the values at or below it (element ⌈q·n⌉ of the sorted values, counted from 1; `q = 1`
/// is the maximum, `q = 0` the minimum). `None` when there are none.
pub fn nearest_rank(values: &[f64], q: f64) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as usize).clamp(1, n);
    Some(v[rank - 1])
}

/// `x` rounded to 4 significant digits for a report; `None` (null in JSON) when it is NaN or
/// infinite, which JSON cannot carry.
pub fn round4(x: f64) -> Option<f64> {
    if !x.is_finite() {
        return None;
    }
    if x == 0.0 {
        return Some(0.0);
    }
    let digits = 3 - x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    Some((x * scale).round() / scale)
}

/// How the benchmarks print a measured quantity: its [`Summary`] and every round's value, all
/// rounded by [`round4`]. Serializes as `{"mean","median","ci95":[lo,hi],"sd","n","values"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundedSummary {
    pub mean: Option<f64>,
    pub median: Option<f64>,
    /// The 95 % interval of the mean, `[lo, hi]`.
    pub ci95: [Option<f64>; 2],
    pub sd: Option<f64>,
    /// Finite values the summary rests on.
    pub n: usize,
    /// Every value as measured (non-finite ones as `None`), in order.
    pub values: Vec<Option<f64>>,
}

/// The [`RoundedSummary`] of `values`.
pub fn rounded_summary(values: &[f64]) -> RoundedSummary {
    let s = summarize(values);
    RoundedSummary {
        mean: round4(s.mean),
        median: round4(s.median),
        ci95: [round4(s.lo), round4(s.hi)],
        sd: round4(s.sd),
        n: s.n,
        values: values.iter().map(|&x| round4(x)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (±{tol})");
    }

    #[test]
    fn summary_by_hand() {
        // 1..5 (the NaN is left out): mean 3, median 3, s² = (4+1+0+1+4)/4 = 2.5,
        // half-width t(4)·s/√n = 2.776·√2.5/√5 = 2.776·√0.5 = 1.963.
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]);
        assert_eq!(s.n, 5);
        close(s.mean, 3.0, 1e-12);
        close(s.median, 3.0, 0.0);
        close(s.sd, 2.5f64.sqrt(), 1e-12);
        close(s.half_width(), 2.776 * 0.5f64.sqrt(), 1e-3);
        close(s.lo, 3.0 - 2.776 * 0.5f64.sqrt(), 1e-3);
        // Even count: the median is the midpoint of the middle two.
        close(summarize(&[4.0, 1.0, 2.0, 3.0]).median, 2.5, 0.0);
        // One value: a mean, no spread, no interval.
        let one = summarize(&[7.0]);
        assert_eq!(one.n, 1);
        close(one.mean, 7.0, 0.0);
        assert!(one.sd.is_nan() && one.lo.is_nan() && one.hi.is_nan());
        let none = summarize(&[]);
        assert_eq!(none.n, 0);
        assert!(none.mean.is_nan() && none.median.is_nan());
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [7.0, 1.0, 5.0, 3.0, 9.0, 2.0, 8.0, 4.0, 6.0, 10.0];
        // n = 10: p90 is element ⌈9⌉ = 9, p99 element ⌈9.9⌉ = 10, p50 element 5.
        assert_eq!(nearest_rank(&v, 0.9), Some(9.0));
        assert_eq!(nearest_rank(&v, 0.99), Some(10.0));
        assert_eq!(nearest_rank(&v, 0.5), Some(5.0));
        assert_eq!(nearest_rank(&v, 1.0), Some(10.0));
        assert_eq!(nearest_rank(&v, 0.0), Some(1.0));
        // n = 7: p90 is element ⌈6.3⌉ = 7.
        assert_eq!(
            nearest_rank(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0.9),
            Some(7.0)
        );
        assert_eq!(nearest_rank(&[f64::NAN], 0.5), None);
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        let near = |v: Option<f64>, x: f64| (v.unwrap() - x).abs() <= x.abs() * 1e-12;
        assert!(near(round4(123_456.0), 123_500.0));
        assert!(near(round4(0.012_345_6), 0.01235));
        assert!(near(round4(-2.5), -2.5));
        assert_eq!(round4(0.0), Some(0.0));
        assert_eq!(round4(f64::NAN), None);
        assert_eq!(round4(f64::INFINITY), None);
    }

    #[test]
    fn rounded_summary_has_the_report_shape() {
        // 1, 3: mean 2, s = √2, half-width t(1)·√2/√2 = 12.706.
        let r = rounded_summary(&[1.0, 3.0, f64::NAN]);
        assert_eq!(r.n, 2);
        let [lo, hi] = r.ci95.map(Option::unwrap);
        // round4: four significant digits.
        assert!((lo - (2.0 - 12.706)).abs() < 1e-2 && (hi - (2.0 + 12.706)).abs() < 1e-2);
        assert_eq!(r.values, vec![Some(1.0), Some(3.0), None]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "mean": 2.0, "median": 2.0, "ci95": [-10.71, 14.71],
                "sd": round4(2f64.sqrt()), "n": 2, "values": [1.0, 3.0, null],
            })
        );
        // Nothing measured: nulls, not NaN (which JSON cannot carry).
        let empty = serde_json::to_value(rounded_summary(&[])).unwrap();
        assert_eq!(empty["mean"], serde_json::Value::Null);
        assert_eq!(empty["ci95"], serde_json::json!([null, null]));
    }
}

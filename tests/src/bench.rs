//! Statistics the benchmark programs (`cargo xtask bench ...`) share: Student-t 95 % intervals
//! of a mean, and their JSON shape. Pure, no I/O.

use serde_json::{Value, json};
use slowpoke_stats::t975;

/// Mean, median and standard deviation of the finite values, with the 95 % interval of the
/// mean `[lo, hi]` (NaN where it is undefined: no values, or one).
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Summary {
    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

pub fn summarize(values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
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
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    v.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    };
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Summary {
        n,
        mean,
        median,
        sd,
        lo: mean - half,
        hi: mean + half,
    }
}

/// Rounds to 4 significant digits for a report (NaN and infinities become null).
pub fn round4(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    if x == 0.0 {
        return json!(0.0);
    }
    let digits = 3 - x.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits);
    json!((x * scale).round() / scale)
}

/// `{"mean","median","ci95":[lo,hi],"sd","n","values"}`, rounded.
pub fn stat_json(values: &[f64]) -> Value {
    let s = summarize(values);
    json!({
        "mean": round4(s.mean),
        "median": round4(s.median),
        "ci95": [round4(s.lo), round4(s.hi)],
        "sd": round4(s.sd),
        "n": s.n,
        "values": values.iter().map(|&x| round4(x)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_by_hand() {
        // 1..5: mean 3, sd √2.5, half-width 2.776·√2.5/√5 = 1.963.
        let s = summarize(&[5.0, 1.0, 3.0, 2.0, 4.0, f64::NAN]);
        assert_eq!(s.n, 5);
        assert!((s.mean - 3.0).abs() < 1e-12 && (s.median - 3.0).abs() < 1e-12);
        assert!((s.half_width() - 2.776 * 0.5f64.sqrt()).abs() < 1e-9);
        let one = summarize(&[7.0]);
        assert!((one.mean - 7.0).abs() < 1e-12 && one.lo.is_nan());
        assert!(summarize(&[]).mean.is_nan());
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        let near = |v: Value, x: f64| (v.as_f64().unwrap() - x).abs() <= x.abs() * 1e-12;
        assert!(near(round4(123_456.0), 123_500.0));
        assert!(near(round4(0.012_345_6), 0.01235));
        assert!(near(round4(-2.5), -2.5));
        assert_eq!(round4(f64::NAN), Value::Null);
        assert_eq!(stat_json(&[1.0, 3.0])["ci95"][0], round4(2.0 - 12.706));
    }
}

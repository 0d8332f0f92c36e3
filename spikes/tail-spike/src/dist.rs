//! Latency summaries for the spike's JSON: median and tail quantiles (nearest rank), the maximum,
//! and a distribution-free 95 % interval of the median (order statistics), so one slow outlier
//! neither hides nor dominates.

use serde_json::{Value, json};
use slowpoke_stats::{nearest_rank, round4};

/// The 95 % interval of the median of `n` sorted values as 1-based ranks `(lo, hi)`: the
/// normal approximation of the binomial, n/2 ∓ 1.96·√n/2, clamped to the sample.
pub fn median_ci_ranks(n: usize) -> (usize, usize) {
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let mid = n as f64 / 2.0;
    let lo = ((mid - half).floor() as usize).max(1);
    let hi = ((mid + half).ceil() as usize + 1).min(n);
    (lo.min(n), hi.max(1))
}

/// `{"n","median","median_ci95":[lo,hi],"p90","p99","max","mean"}` of the finite values.
pub fn summary(values: &[f64]) -> Value {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return json!({ "n": 0 });
    }
    let (lo, hi) = median_ci_ranks(n);
    let q = |p| nearest_rank(&v, p).and_then(round4);
    json!({
        "n": n,
        "median": q(0.5),
        "median_ci95": [round4(v[lo - 1]), round4(v[hi - 1])],
        "p90": q(0.9),
        "p99": q(0.99),
        "max": round4(v[n - 1]),
        "mean": round4(v.iter().sum::<f64>() / n as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_the_median_interval() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summary(&v);
        assert_eq!(s["median"], 50.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
        let (lo, hi) = median_ci_ranks(100);
        assert!(lo < 50 && hi > 51 && lo >= 39 && hi <= 62, "{lo}..{hi}");
        assert_eq!(summary(&[f64::NAN])["n"], 0);
        assert_eq!(median_ci_ranks(1), (1, 1));
    }
}

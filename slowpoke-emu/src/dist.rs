//! A visit's CPU time drawn from its endpoint's [`CpuDist`]: `cpu_us × factor`, the factor with mean 1,
//! so the file's `cpu_us` stays the mean (and the demands and bottleneck computed from it stay right).

use rand::Rng;
use rand_distr::{Distribution, Exp1, LogNormal, Pareto};

use crate::topology::CpuDist;

impl CpuDist {
    /// One visit's factor (mean 1). Parameters are checked by the topology's validation; a value that
    /// slipped through (a live change) falls back to 1.
    pub fn factor<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match *self {
            CpuDist::Fixed => 1.0,
            CpuDist::Exponential => Exp1.sample(rng),
            // E[e^X] = e^(μ + σ²/2) = 1 for μ = −σ²/2.
            CpuDist::Lognormal { sigma } => {
                LogNormal::new(-sigma * sigma / 2.0, sigma).map_or(1.0, |d| d.sample(rng))
            }
            // Mean α·xₘ/(α − 1) = 1 for xₘ = (α − 1)/α.
            CpuDist::Pareto { alpha } => {
                Pareto::new((alpha - 1.0) / alpha, alpha).map_or(1.0, |d| d.sample(rng))
            }
        }
    }

    /// Why these parameters are not usable (None when they are).
    pub fn problem(&self) -> Option<&'static str> {
        match *self {
            CpuDist::Lognormal { sigma } if !(sigma.is_finite() && sigma > 0.0 && sigma <= 3.0) => {
                Some("lognormal sigma must be in (0, 3] (3 already gives a CV of 90)")
            }
            CpuDist::Pareto { alpha } if !(alpha.is_finite() && alpha > 1.0 && alpha <= 100.0) => {
                Some("pareto alpha must be in (1, 100] (at 1 or below the mean is infinite)")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn draws(d: CpuDist, n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        (0..n).map(|_| d.factor(&mut rng)).collect()
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    #[test]
    fn every_distribution_keeps_the_mean() {
        for (d, tol) in [
            (CpuDist::Fixed, 1e-12),
            (CpuDist::Exponential, 0.01),
            (CpuDist::Lognormal { sigma: 1.0 }, 0.03),
            (CpuDist::Pareto { alpha: 2.5 }, 0.03),
        ] {
            let m = mean(&draws(d, 200_000));
            assert!((m - 1.0).abs() < tol, "{d:?}: mean {m}");
        }
    }

    #[test]
    fn heavy_tails_are_heavy() {
        // Share of the CPU time in the top 1 % of visits: 1 % for fixed work, ≈ 5.6 % for the exponential
        // ((1 + ln 100)/100), far more for log-normal σ = 1.5 and Pareto α = 1.5.
        let top1 = |d| {
            let mut v = draws(d, 100_000);
            v.sort_by(f64::total_cmp);
            v[v.len() * 99 / 100..].iter().sum::<f64>() / v.iter().sum::<f64>()
        };
        let exp = top1(CpuDist::Exponential);
        assert!((exp - 0.056).abs() < 0.005, "exponential top 1 %: {exp}");
        assert!(top1(CpuDist::Lognormal { sigma: 1.5 }) > 0.15);
        assert!(top1(CpuDist::Pareto { alpha: 1.5 }) > 0.15);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(
            CpuDist::Pareto { alpha: 1.0 }
                .problem()
                .unwrap()
                .contains("alpha")
        );
        assert!(
            CpuDist::Lognormal { sigma: -1.0 }
                .problem()
                .unwrap()
                .contains("sigma")
        );
        assert!(CpuDist::Lognormal { sigma: f64::NAN }.problem().is_some());
        assert!(CpuDist::Pareto { alpha: 1.5 }.problem().is_none());
    }
}

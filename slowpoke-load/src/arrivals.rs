//! When requests are due in an open loop: a Poisson process, evenly spaced arrivals, or a recorded trace.
//!
//! In a closed loop the generator waits for each response before sending the next request, so a slow server
//! slows the generator down and the requests it would have sent meanwhile are never sent — their latency is
//! never seen ("coordinated omission"). An open loop sends each request at its own due time whatever the
//! responses, and latency is measured from that due time, so queueing anywhere (in the server, in the
//! network, or waiting for one of the generator's connections) is part of it. Tail-latency work (issue #18)
//! needs that. Pure: no I/O beyond reading a trace file's text handed in.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::LoadError;

/// How requests arrive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Arrivals {
    /// Closed loop: each connection sends its next request as soon as the previous response arrived.
    #[default]
    Closed,
    /// Open loop: requests are due on this schedule, whatever the responses; the spec's `connections` is the
    /// most requests in flight at once (a due request that finds them all busy waits, and that wait counts in
    /// its latency).
    Open(Schedule),
}

/// The due times of an open loop, as gaps between consecutive requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A Poisson process: exponentially distributed gaps with this mean (= 1 / rate).
    Poisson { mean_gap: Duration },
    /// Evenly spaced: one request every `gap`.
    Uniform { gap: Duration },
    /// The gaps of a recorded trace, replayed in order and from the start again when they run out.
    Trace { gaps: Arc<[Duration]> },
}

impl Schedule {
    /// A Poisson process at `rate` requests per second.
    pub fn poisson(rate: f64) -> Result<Schedule, LoadError> {
        Ok(Schedule::Poisson {
            mean_gap: gap_of(rate)?,
        })
    }

    /// Evenly spaced arrivals at `rate` requests per second.
    pub fn uniform(rate: f64) -> Result<Schedule, LoadError> {
        Ok(Schedule::Uniform { gap: gap_of(rate)? })
    }

    /// A trace: one arrival time per line, in seconds from any origin, non-decreasing (blank lines and lines
    /// starting with `#` are skipped). With `rate`, the gaps are scaled so that the trace's mean rate becomes
    /// `rate` (its burstiness is kept).
    pub fn trace(text: &str, rate: Option<f64>) -> Result<Schedule, LoadError> {
        let mut times = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let t: f64 = line.parse().map_err(|_| {
                LoadError::Invalid(format!(
                    "trace line {}: `{line}` is not a time in seconds",
                    i + 1
                ))
            })?;
            if !t.is_finite() || t < 0.0 {
                return Err(LoadError::Invalid(format!(
                    "trace line {}: `{line}` is not a time ≥ 0",
                    i + 1
                )));
            }
            if times.last().is_some_and(|&prev| t < prev) {
                return Err(LoadError::Invalid(format!(
                    "trace line {}: {t} s comes before the previous arrival: times must not decrease",
                    i + 1
                )));
            }
            times.push(t);
        }
        if times.len() < 2 {
            return Err(LoadError::Invalid(
                "a trace needs at least two arrival times".into(),
            ));
        }
        let span = times[times.len() - 1] - times[0];
        if span <= 0.0 {
            return Err(LoadError::Invalid(
                "every arrival of the trace is at the same time: it has no rate".into(),
            ));
        }
        let gaps = times.len() - 1;
        let scale = match rate {
            None => 1.0,
            Some(r) => {
                gap_of(r)?;
                (gaps as f64 / span) / r
            }
        };
        let gaps: Vec<Duration> = times
            .windows(2)
            .map(|w| Duration::from_secs_f64((w[1] - w[0]) * scale))
            .collect();
        Ok(Schedule::Trace { gaps: gaps.into() })
    }

    /// The mean rate, requests per second.
    pub fn rate(&self) -> f64 {
        match self {
            Schedule::Poisson { mean_gap } => 1.0 / mean_gap.as_secs_f64(),
            Schedule::Uniform { gap } => 1.0 / gap.as_secs_f64(),
            Schedule::Trace { gaps } => {
                let total: Duration = gaps.iter().sum();
                gaps.len() as f64 / total.as_secs_f64().max(1e-9)
            }
        }
    }

    /// A short name for reports: `poisson`, `uniform` or `trace`.
    pub fn kind(&self) -> &'static str {
        match self {
            Schedule::Poisson { .. } => "poisson",
            Schedule::Uniform { .. } => "uniform",
            Schedule::Trace { .. } => "trace",
        }
    }

    /// An endless sequence of gaps drawn with `rng` (only the Poisson process draws).
    pub(crate) fn gaps<'a, R: Rng + 'a>(
        &'a self,
        mut rng: R,
    ) -> impl Iterator<Item = Duration> + 'a {
        let mut next_in_trace = 0;
        std::iter::from_fn(move || {
            Some(match self {
                Schedule::Poisson { mean_gap } => {
                    // Inverse transform: -ln(U) is exponential with mean 1; U in (0, 1] avoids ln(0).
                    let u: f64 = 1.0 - rng.r#gen::<f64>();
                    mean_gap.mul_f64(-u.ln())
                }
                Schedule::Uniform { gap } => *gap,
                Schedule::Trace { gaps } => {
                    let g = gaps[next_in_trace % gaps.len()];
                    next_in_trace += 1;
                    g
                }
            })
        })
    }
}

/// The mean gap of `rate` requests per second, or why that rate cannot be kept.
fn gap_of(rate: f64) -> Result<Duration, LoadError> {
    if !rate.is_finite() || rate <= 0.0 {
        return Err(LoadError::Invalid(format!(
            "the rate must be a positive number of requests per second, not {rate}"
        )));
    }
    let gap = Duration::from_secs_f64(1.0 / rate);
    if gap < Duration::from_micros(1) {
        return Err(LoadError::Invalid(format!(
            "{rate} requests/s is above what one pacing thread can time (1 000 000/s): lower --rate"
        )));
    }
    Ok(gap)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn mean_secs(s: &Schedule, n: usize) -> f64 {
        let sum: Duration = s.gaps(ChaCha8Rng::seed_from_u64(7)).take(n).sum();
        sum.as_secs_f64() / n as f64
    }

    #[test]
    fn poisson_gaps_have_the_mean_and_the_spread_of_an_exponential() {
        let s = Schedule::poisson(1000.0).unwrap();
        let gaps: Vec<f64> = s
            .gaps(ChaCha8Rng::seed_from_u64(1))
            .take(100_000)
            .map(|g| g.as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        // Mean 1 ms; an exponential's standard deviation equals its mean (CV = 1).
        assert!((mean - 1e-3).abs() < 2e-5, "mean {mean}");
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.02,
            "cv {}",
            var.sqrt() / mean
        );
        // P(gap > 3 mean) = e^-3 ≈ 4.98 %.
        let over = gaps.iter().filter(|&&g| g > 3e-3).count() as f64 / gaps.len() as f64;
        assert!((over - (-3.0f64).exp()).abs() < 0.005, "tail share {over}");
        assert!((s.rate() - 1000.0).abs() < 1e-6);
    }

    #[test]
    fn uniform_gaps_are_exact() {
        let s = Schedule::uniform(250.0).unwrap();
        assert!(
            s.gaps(ChaCha8Rng::seed_from_u64(1))
                .take(10)
                .all(|g| g == Duration::from_millis(4))
        );
        assert_eq!(s.kind(), "uniform");
    }

    #[test]
    fn a_trace_replays_its_gaps_and_can_be_scaled_to_a_rate() {
        let text = "# arrivals, s\n0.0\n0.001\n0.003\n\n0.004\n";
        let s = Schedule::trace(text, None).unwrap();
        let gaps: Vec<Duration> = s.gaps(ChaCha8Rng::seed_from_u64(1)).take(5).collect();
        let ms = Duration::from_millis;
        assert_eq!(gaps, vec![ms(1), ms(2), ms(1), ms(1), ms(2)]);
        assert!((s.rate() - 750.0).abs() < 1e-6, "3 gaps over 4 ms");
        let scaled = Schedule::trace(text, Some(1500.0)).unwrap();
        assert!((scaled.rate() - 1500.0).abs() < 1e-3);
        assert!((mean_secs(&scaled, 3) - 1.0 / 1500.0).abs() < 1e-9);
    }

    #[test]
    fn bad_rates_and_traces_say_what_to_fix() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            assert!(Schedule::poisson(rate).is_err(), "{rate}");
        }
        let err = |t: &str| Schedule::trace(t, None).unwrap_err().to_string();
        assert!(err("0\nx\n").contains("line 2"));
        assert!(err("0.2\n0.1\n").contains("must not decrease"));
        assert!(err("0.2\n").contains("at least two"));
        assert!(err("1\n1\n").contains("no rate"));
        assert!(err("-1\n2\n").contains("≥ 0"));
    }
}

//! What a tail comparison runs ([`TailSpec`]) and the checks that need no app.

use slowpoke_api::coordinator::{TailArm, TailSchedule};

use super::LoadPriority;
use crate::experiment::LoadConfig;

/// A tail comparison: the app under an open loop at `rate_rps`, each arm in turn, `repetitions`
/// times (arms interleaved: a repetition runs every arm back to back, so drift over minutes
/// spreads evenly over the arms), and optionally a sweep of rates for the highest one whose p99
/// stays under a target.
#[derive(Clone, Debug, PartialEq)]
pub struct TailSpec {
    /// The arms, in the order a repetition runs them; `default` is added first when missing
    /// (every ratio is taken against it).
    pub arms: Vec<TailArm>,
    /// Poisson arrivals at this rate, requests/s.
    pub rate_rps: f64,
    /// One measured window, seconds.
    pub window_s: f64,
    /// Open loop before each window, seconds, after the arm's schedule is in force: the queues
    /// the previous arm left drain, and the new order takes over.
    pub warmup_s: f64,
    pub repetitions: usize,
    /// The schedules' parameters (the policy is each arm's).
    pub schedule: TailSchedule,
    /// The services to schedule (default: every service of the app).
    pub services: Option<Vec<String>>,
    /// The requests: method, URL (empty: the app's entry), headers, body; `connections` is the
    /// most requests in flight at once, `timeout_s` the per-request limit.
    pub load: LoadConfig,
    /// Abort when a window sees more than this share of errors.
    pub max_error_ratio: f64,
    pub sweep: Option<Sweep>,
    /// The load generator's scheduling ([`LoadPriority`]; by default real-time when permitted).
    pub load_priority: LoadPriority,
}

/// A rate sweep: each rate measured with every arm (`repetitions` times, interleaved), and
/// per arm the highest rate whose p99 stayed under `p99_target_us`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub rates_rps: Vec<f64>,
    pub p99_target_us: f64,
}

/// The most requests in flight at once (the open loop's connections) by default. A
/// thread-per-request entry holds one connection per worker; with many more connections than
/// workers, the connections take turns (a worker frees one only after its idle close, 50 ms in
/// the emulator, as Apache's `KeepAliveTimeout`) and that caps the throughput far below the
/// app's: 256 connections on 4 workers served 62 of 150 req/s. So: about the entry's workers
/// (the suite's topologies have 32); a request that finds them all busy waits in the
/// generator, and that wait is counted in its latency.
pub const DEFAULT_IN_FLIGHT: usize = 32;

impl Default for TailSpec {
    fn default() -> TailSpec {
        TailSpec {
            arms: TailArm::ALL.to_vec(),
            rate_rps: 0.0,
            window_s: 5.0,
            warmup_s: 1.0,
            repetitions: 3,
            schedule: TailSchedule::default(),
            services: None,
            load: LoadConfig {
                connections: DEFAULT_IN_FLIGHT,
                ..LoadConfig::default()
            },
            max_error_ratio: 0.05,
            sweep: None,
            load_priority: LoadPriority::Auto,
        }
    }
}

/// A bad spec, in the quantities' own words (callers name their flags or fields).
fn bad(what: &str) -> Result<(), String> {
    Err(what.to_owned())
}

impl TailSpec {
    /// The arms in run order, `default` first.
    pub fn arms_in_order(&self) -> Vec<TailArm> {
        let mut arms = vec![TailArm::Default];
        for a in &self.arms {
            if !arms.contains(a) {
                arms.push(*a);
            }
        }
        arms
    }

    /// Everything that can be refused before an app starts.
    pub fn check(&self) -> Result<(), String> {
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 1e6;
        if !rate_ok(self.rate_rps) {
            return bad("the rate must be above 0 and at most 1000000 requests/s");
        }
        if !(self.window_s.is_finite() && (0.1..=600.0).contains(&self.window_s)) {
            return bad("the window must be 0.1 to 600 s");
        }
        if !(self.warmup_s.is_finite() && (0.0..=600.0).contains(&self.warmup_s)) {
            return bad("the warm-up must be 0 to 600 s");
        }
        if !(1..=100).contains(&self.repetitions) {
            return bad("the repetitions must be 1 to 100");
        }
        if !(1..=65536).contains(&self.load.connections) {
            return bad("the requests in flight (connections) must be 1 to 65536");
        }
        if !(self.max_error_ratio.is_finite() && (0.0..=1.0).contains(&self.max_error_ratio)) {
            return bad("the error limit must be 0 to 100 %");
        }
        check_schedule(&self.schedule)?;
        if let LoadPriority::Fifo(p) = self.load_priority
            && !(1..=99).contains(&p)
        {
            return bad("the load generator's real-time priority must be 1 to 99 (0: normal)");
        }
        if let Some(s) = &self.services
            && s.is_empty()
        {
            return bad("name at least one service to schedule");
        }
        if let Some(sweep) = &self.sweep {
            if sweep.rates_rps.is_empty() || sweep.rates_rps.len() > 50 {
                return bad("a sweep has 1 to 50 rates");
            }
            if let Some(r) = sweep.rates_rps.iter().find(|r| !rate_ok(**r)) {
                return Err(format!(
                    "the sweep's rate {r} must be above 0 and at most 1000000 requests/s"
                ));
            }
            if !(sweep.p99_target_us.is_finite() && sweep.p99_target_us > 0.0) {
                return bad("the p99 target must be above 0 µs");
            }
        }
        Ok(())
    }
}

/// The schedule's parameters within the agents' bounds (docs/api.md, `/v1/scheduling`), so that
/// a comparison is refused before it starts rather than at its first scheduled arm.
pub fn check_schedule(s: &TailSchedule) -> Result<(), String> {
    if let Some(k) = s.k
        && !(1..=64).contains(&k)
    {
        return bad("k (requests run first at once) must be 1 to 64");
    }
    if let Some(p) = s.priority
        && !(1..=19).contains(&p)
    {
        return bad("the priority must be 1 to 19 (below the agent's own 20)");
    }
    if let Some(c) = s.age_cap_ms
        && !(1..=60_000).contains(&c)
    {
        return bad("the age cap must be 1 ms to 60 s");
    }
    if let Some(m) = s.max_share
        && !(m.is_finite() && m > 0.0 && m <= 0.9)
    {
        return bad(
            "the share of each CPU promoted threads may hold must be above 0 and at most 0.9",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TailSpec {
        TailSpec {
            rate_rps: 100.0,
            ..TailSpec::default()
        }
    }

    #[test]
    fn default_runs_first_and_once() {
        let s = TailSpec {
            arms: vec![
                TailArm::PerServiceFifo,
                TailArm::Default,
                TailArm::PerServiceFifo,
            ],
            ..spec()
        };
        assert_eq!(
            s.arms_in_order(),
            vec![TailArm::Default, TailArm::PerServiceFifo]
        );
    }

    #[test]
    fn bad_numbers_are_refused_naming_the_quantity() {
        assert_eq!(spec().check(), Ok(()));
        let refused = |s: TailSpec, word: &str| {
            let e = s.check().expect_err("refused");
            assert!(e.contains(word), "{e}");
        };
        refused(
            TailSpec {
                rate_rps: 0.0,
                ..spec()
            },
            "rate",
        );
        refused(
            TailSpec {
                rate_rps: f64::NAN,
                ..spec()
            },
            "rate",
        );
        refused(
            TailSpec {
                repetitions: 0,
                ..spec()
            },
            "repetitions",
        );
        refused(
            TailSpec {
                window_s: 0.0,
                ..spec()
            },
            "window",
        );
        let sched = |schedule| TailSpec { schedule, ..spec() };
        refused(
            sched(TailSchedule {
                k: Some(0),
                ..TailSchedule::default()
            }),
            "k ",
        );
        refused(
            sched(TailSchedule {
                priority: Some(20),
                ..TailSchedule::default()
            }),
            "priority",
        );
        refused(
            sched(TailSchedule {
                max_share: Some(1.0),
                ..TailSchedule::default()
            }),
            "share",
        );
        refused(
            sched(TailSchedule {
                age_cap_ms: Some(0),
                ..TailSchedule::default()
            }),
            "age cap",
        );
        let sweep = |rates: Vec<f64>, target| TailSpec {
            sweep: Some(Sweep {
                rates_rps: rates,
                p99_target_us: target,
            }),
            ..spec()
        };
        refused(sweep(vec![], 1000.0), "sweep");
        refused(sweep(vec![-1.0], 1000.0), "sweep's rate");
        refused(sweep(vec![10.0], 0.0), "p99 target");
        refused(
            TailSpec {
                services: Some(vec![]),
                ..spec()
            },
            "service",
        );
    }
}

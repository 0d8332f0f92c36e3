//! Cumulative counters ([`Snapshot`]) and what a measurement window between two of them says ([`Window`]).
//! Pure arithmetic, no I/O: unit-tested with hand-computed numbers.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A generator is flagged as the bottleneck when its own threads were busy at least this share of the time
/// (CPU time of its threads / (window length × its worker threads)). A closed loop whose generator threads are
/// saturated measures the generator, not the system under test.
pub const GENERATOR_BOUND_BUSY: f64 = 0.8;

/// Latency histogram range: 1 µs .. 1 h, 3 significant digits (values above saturate).
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// Cumulative counters of a generator since it started (every counter only grows).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the counters were read.
    pub at: Instant,
    /// Responses with a 2xx status: the only ones that count as throughput.
    pub completed_ok: u64,
    /// Responses with any other status (e.g. 5xx from an overloaded or paused upstream).
    pub non_2xx: u64,
    /// Requests that got no complete response within the timeout (their connection is replaced).
    pub timeouts: u64,
    /// Failed connects, resets and connections closed mid-request (the connection is replaced).
    pub conn_errors: u64,
    /// Latency in µs of the 2xx responses (request start to last body byte, including a reconnect if any).
    pub latency_us: Histogram<u64>,
    /// CPU time used by the generator's own threads (workers and driver), in ns.
    pub cpu_ns: u64,
    /// Time the generator's threads were runnable but waited for a CPU, in ns (0 where the kernel keeps no
    /// schedstats).
    pub sched_wait_ns: u64,
    /// Worker threads of the generator's runtime.
    pub threads: usize,
    /// Online CPUs of the machine.
    pub online_cpus: usize,
}

impl Snapshot {
    pub(crate) fn empty(at: Instant, cpu_ns: u64, threads: usize) -> Snapshot {
        Snapshot {
            at,
            completed_ok: 0,
            non_2xx: 0,
            timeouts: 0,
            conn_errors: 0,
            latency_us: new_histogram(),
            cpu_ns,
            sched_wait_ns: 0,
            threads,
            online_cpus: online_cpus(),
        }
    }

    /// Every request that got an outcome (success, non-2xx, timeout or connection error).
    pub fn attempts(&self) -> u64 {
        self.completed_ok + self.non_2xx + self.timeouts + self.conn_errors
    }

    /// What happened between `earlier` and `self` (both from the same generator).
    pub fn window_since(&self, earlier: &Snapshot) -> Window {
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        let mut latency = self.latency_us.clone();
        if latency.subtract(&earlier.latency_us).is_err() {
            // Not from the same generator (or not earlier): fall back to the later cumulative histogram.
            latency = self.latency_us.clone();
        }
        let mut w = Window::compute(
            secs,
            Counts {
                completed_ok: self.completed_ok.saturating_sub(earlier.completed_ok),
                non_2xx: self.non_2xx.saturating_sub(earlier.non_2xx),
                timeouts: self.timeouts.saturating_sub(earlier.timeouts),
                conn_errors: self.conn_errors.saturating_sub(earlier.conn_errors),
            },
            latency,
            self.cpu_ns.saturating_sub(earlier.cpu_ns),
            self.threads,
            self.online_cpus,
        );
        w.set_sched_wait(self.sched_wait_ns.saturating_sub(earlier.sched_wait_ns));
        w
    }
}

/// Outcome counts of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub completed_ok: u64,
    pub non_2xx: u64,
    pub timeouts: u64,
    pub conn_errors: u64,
}

/// What a measurement window says. `rps` (2xx completions / window length) is the throughput the model uses.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub secs: f64,
    pub completed_ok: u64,
    /// `completed_ok / secs`.
    pub rps: f64,
    pub non_2xx: u64,
    pub timeouts: u64,
    pub conn_errors: u64,
    /// `(non_2xx + timeouts + conn_errors) / all outcomes` (0 when there were none).
    pub error_ratio: f64,
    /// Latency percentiles of the 2xx responses, µs (0 when there were none).
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Generator CPU time in the window, ns.
    pub cpu_ns: u64,
    /// Generator CPU time / (secs × online CPUs): its share of the whole machine.
    pub cpu_share: f64,
    /// Generator CPU time / secs: cores the generator kept busy.
    pub generator_cores: f64,
    /// Generator CPU time per outcome (any kind), ns.
    pub cpu_ns_per_request: f64,
    /// Worker threads of the generator.
    pub generator_threads: usize,
    pub online_cpus: usize,
    /// Run-queue wait of the generator's threads in the window, ns.
    pub sched_wait_ns: u64,
    /// `sched_wait_ns / secs`: thread-seconds per second the generator was runnable but waited for a CPU
    /// (informational: a busy shared machine delays the generator's requests without raising its CPU time).
    pub generator_wait_share: f64,
    /// `generator_cores >= GENERATOR_BOUND_BUSY × generator_threads`: the generator's own threads were
    /// (nearly) saturated, so the window may measure the generator rather than the system.
    pub generator_bound: bool,
    #[serde(skip)]
    pub latency_us: Histogram<u64>,
}

impl Window {
    /// The window arithmetic, separated from the clocks so it can be tested with fixed numbers.
    pub fn compute(
        secs: f64,
        counts: Counts,
        latency_us: Histogram<u64>,
        cpu_ns: u64,
        threads: usize,
        online_cpus: usize,
    ) -> Window {
        let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
        let errors = counts.non_2xx + counts.timeouts + counts.conn_errors;
        let outcomes = counts.completed_ok + errors;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let q = |quantile: f64| {
            if latency_us.is_empty() {
                0.0
            } else {
                latency_us.value_at_quantile(quantile) as f64
            }
        };
        let generator_cores = per_sec(cpu_ns as f64 / 1e9);
        Window {
            secs,
            completed_ok: counts.completed_ok,
            rps: per_sec(counts.completed_ok as f64),
            non_2xx: counts.non_2xx,
            timeouts: counts.timeouts,
            conn_errors: counts.conn_errors,
            error_ratio: ratio(errors, outcomes),
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if latency_us.is_empty() {
                0.0
            } else {
                latency_us.max() as f64
            },
            mean_us: if latency_us.is_empty() {
                0.0
            } else {
                latency_us.mean()
            },
            cpu_ns,
            cpu_share: if online_cpus == 0 {
                0.0
            } else {
                generator_cores / online_cpus as f64
            },
            generator_cores,
            cpu_ns_per_request: if outcomes == 0 {
                0.0
            } else {
                cpu_ns as f64 / outcomes as f64
            },
            generator_threads: threads,
            online_cpus,
            generator_bound: threads > 0
                && generator_cores >= GENERATOR_BOUND_BUSY * threads as f64,
            sched_wait_ns: 0,
            generator_wait_share: 0.0,
            latency_us,
        }
    }

    /// Adds the generator's run-queue wait over the window.
    pub fn set_sched_wait(&mut self, wait_ns: u64) {
        self.sched_wait_ns = wait_ns;
        self.generator_wait_share = if self.secs > 0.0 {
            wait_ns as f64 / 1e9 / self.secs
        } else {
            0.0
        };
    }
}

/// Online CPUs (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn snap(
        at: Instant,
        ok: u64,
        non: u64,
        to: u64,
        ce: u64,
        lat: &[u64],
        cpu_ns: u64,
    ) -> Snapshot {
        let mut s = Snapshot::empty(at, cpu_ns, 1);
        s.online_cpus = 2;
        s.completed_ok = ok;
        s.non_2xx = non;
        s.timeouts = to;
        s.conn_errors = ce;
        for &v in lat {
            s.latency_us.record(v).unwrap();
        }
        s
    }

    #[test]
    fn window_arithmetic() {
        let t0 = Instant::now();
        // Earlier: 100 ok (latency 5000 µs each), 1 non-2xx, 0.5 s of CPU.
        let earlier = snap(t0, 100, 1, 0, 0, &[5000; 100], 500_000_000);
        // Later, 2 s on: 1000 more ok with latencies 1..=1000 µs, 6 more non-2xx, 2 timeouts, 2 conn errors,
        // 1.5 s more CPU.
        let mut lat: Vec<u64> = vec![5000; 100];
        lat.extend(1..=1000);
        let later = snap(
            t0 + Duration::from_secs(2),
            1100,
            7,
            2,
            2,
            &lat,
            2_000_000_000,
        );
        let w = later.window_since(&earlier);
        assert!((w.secs - 2.0).abs() < 1e-9);
        assert_eq!(w.completed_ok, 1000);
        assert!((w.rps - 500.0).abs() < 1e-9);
        assert_eq!((w.non_2xx, w.timeouts, w.conn_errors), (6, 2, 2));
        // 10 errors out of 1010 outcomes.
        assert!((w.error_ratio - 10.0 / 1010.0).abs() < 1e-12);
        // Values below 2048 are exact at 3 significant digits.
        assert!((w.p50_us - 500.0).abs() < 1e-9);
        assert!((w.p90_us - 900.0).abs() < 1e-9);
        assert!((w.p99_us - 990.0).abs() < 1e-9);
        assert!((w.p999_us - 999.0).abs() < 1e-9);
        assert!((w.max_us - 1000.0).abs() < 1e-9);
        assert!((w.mean_us - 500.5).abs() < 1e-9);
        assert_eq!(w.latency_us.len(), 1000);
        // 1.5 s CPU over 2 s = 0.75 cores; of 2 CPUs = 0.375; 1.5e9 ns / 1010 outcomes.
        assert!((w.generator_cores - 0.75).abs() < 1e-12);
        assert!((w.cpu_share - 0.375).abs() < 1e-12);
        assert!((w.cpu_ns_per_request - 1.5e9 / 1010.0).abs() < 1e-6);
        // 0.75 cores < 0.8 × 1 thread.
        assert!(!w.generator_bound);
        assert_eq!(w.sched_wait_ns, 0);
        let mut later = later;
        later.sched_wait_ns = 500_000_000;
        let w = later.window_since(&earlier);
        // 0.5 s of run-queue wait over 2 s.
        assert!((w.generator_wait_share - 0.25).abs() < 1e-12);
    }

    #[test]
    fn generator_bound_rule() {
        let w = Window::compute(1.0, Counts::default(), new_histogram(), 850_000_000, 1, 2);
        assert!(w.generator_bound);
        let w = Window::compute(1.0, Counts::default(), new_histogram(), 850_000_000, 2, 2);
        assert!(!w.generator_bound);
        let w = Window::compute(1.0, Counts::default(), new_histogram(), 1_700_000_000, 2, 2);
        assert!(w.generator_bound);
    }

    #[test]
    fn empty_window() {
        let w = Window::compute(0.0, Counts::default(), new_histogram(), 0, 1, 2);
        assert!(w.rps.abs() < 1e-12, "{}", w.rps);
        assert!(w.error_ratio.abs() < 1e-12, "{}", w.error_ratio);
        assert!(w.p99_us.abs() < 1e-12, "{}", w.p99_us);
        assert!(
            w.cpu_ns_per_request.abs() < 1e-12,
            "{}",
            w.cpu_ns_per_request
        );
        assert!(!w.generator_bound);
    }

    #[test]
    fn all_errors_ratio_is_one() {
        let c = Counts {
            completed_ok: 0,
            non_2xx: 3,
            timeouts: 1,
            conn_errors: 0,
        };
        let w = Window::compute(4.0, c, new_histogram(), 0, 1, 2);
        assert!(w.rps.abs() < 1e-12, "{}", w.rps);
        assert!((w.error_ratio - 1.0).abs() < 1e-12);
    }
}

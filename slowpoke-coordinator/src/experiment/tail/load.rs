//! The open loop of a tail comparison: one window at a set rate, with every request's latency
//! from its intended send time ([`OpenLoad`]; the real one is `slowpoke-load`'s open loop).
//!
//! Each window is a run of its own (warm-up, then the measurement), so that requests queued
//! under one arm are never counted in the next arm's window; the arms of one repetition get
//! the same seed, and so the same arrival times (common random numbers: the arms differ in
//! their schedule only).

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::experiment::LoadConfig;

/// What one open-loop window measured.
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    pub secs: f64,
    pub completed_ok: u64,
    /// Non-2xx, timeouts, connection errors.
    pub errors: u64,
    /// Latencies of the 2xx answers from their intended send times, µs.
    pub latency_us: Histogram<u64>,
    /// What a failed request counts as in the percentiles, µs: the load's per-request timeout,
    /// so a failure ranks behind every answer (see [`LatencyWindow::ranked`]).
    pub failed_as_us: u64,
}

impl LatencyWindow {
    /// 2xx answers per second.
    pub fn rps(&self) -> f64 {
        if self.secs > 0.0 {
            self.completed_ok as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Every request's latency, the failed ones counted as [`LatencyWindow::failed_as_us`]: the
    /// percentiles and the CDF are taken over this, so an arm cannot look faster by failing its
    /// slowest requests (a schedule that keeps threads off their CPU makes a server's idle-close
    /// race with its clients more likely). The mean stays over the answers.
    pub fn ranked(&self) -> Histogram<u64> {
        let mut h = self.latency_us.clone();
        if self.errors > 0 {
            h.saturating_record_n(self.failed_as_us.max(1), self.errors);
        }
        h
    }

    /// errors / all outcomes.
    pub fn error_ratio(&self) -> f64 {
        let all = self.completed_ok + self.errors;
        if all == 0 {
            0.0
        } else {
            self.errors as f64 / all as f64
        }
    }
}

/// Runs open-loop windows (a trait so the comparison can be driven by another load in tests).
pub trait OpenLoad: Send + Sync {
    /// Poisson arrivals at `rate_rps` for `warmup`, then measured for `length`; `seed` fixes
    /// the arrival times.
    fn window(
        &self,
        cfg: &LoadConfig,
        rate_rps: f64,
        warmup: Duration,
        length: Duration,
        seed: u64,
    ) -> Result<LatencyWindow, String>;

    /// The real-time priority (`SCHED_FIFO`) the load's threads run at; `None`: normal scheduling.
    fn realtime_priority(&self) -> Option<u8> {
        None
    }

    /// What a reader of the result should know about how the load ran.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The load generator's real-time priority by default: above every thread a schedule promotes
/// (1 to 19) and the agent's scheduler (20).
///
/// Why: a load generator on the app's own machine shares the CPUs with it. Under `oldest-first`
/// the promoted threads run `SCHED_FIFO` and may hold most of each CPU (`max_share`), so a
/// generator at normal priority gets what they leave: its sends and its reading of answers come
/// late, and a kept-alive connection it reuses may by then have been closed as idle by the
/// server (measured: 19 of 1849 requests failed under `oldest-first` at share 0.9, none with the
/// generator at this priority; docs/tail.md). Clients on other machines see none of that, so the
/// generator runs above the app as they would. Its CPU is bounded by the rate it sends at.
pub const DEFAULT_LOAD_PRIORITY: u8 = 30;

/// The priority asked for the load generator's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadPriority {
    /// [`DEFAULT_LOAD_PRIORITY`] when this process may use real-time priorities (root or
    /// `CAP_SYS_NICE`), else normal scheduling with a warning in the result.
    #[default]
    Auto,
    /// Normal scheduling.
    Normal,
    /// `SCHED_FIFO` at this priority (1 to 99); refused when not permitted.
    Fifo(u8),
}

impl LoadPriority {
    /// From the CLI's `--load-priority` and the API's `load_priority`: absent = `Auto`, 0 =
    /// `Normal`, else `Fifo` (the range is checked by [`super::TailSpec::check`]).
    pub fn from_setting(setting: Option<u8>) -> LoadPriority {
        match setting {
            None => LoadPriority::Auto,
            Some(0) => LoadPriority::Normal,
            Some(p) => LoadPriority::Fifo(p),
        }
    }
}

/// `slowpoke-load`'s open loop.
#[derive(Clone, Debug, Default)]
pub struct RealOpenLoad {
    realtime_priority: Option<u8>,
    warnings: Vec<String>,
}

impl RealOpenLoad {
    /// The load at the priority asked for, when this process may use it (tried on a thread of its
    /// own). `Fifo` not permitted is an error naming the cause; `Auto` then falls back to normal
    /// scheduling and says so in [`OpenLoad::warnings`].
    pub fn new(asked: LoadPriority) -> Result<RealOpenLoad, String> {
        Self::resolve(asked, slowpoke_load::realtime_permitted)
    }

    fn resolve(
        asked: LoadPriority,
        permitted: impl Fn(u8) -> std::io::Result<()>,
    ) -> Result<RealOpenLoad, String> {
        let realtime = |p| RealOpenLoad {
            realtime_priority: Some(p),
            warnings: Vec::new(),
        };
        match asked {
            LoadPriority::Normal => Ok(RealOpenLoad::default()),
            LoadPriority::Fifo(p) => match permitted(p) {
                Ok(()) => Ok(realtime(p)),
                Err(e) => Err(format!(
                    "the load generator cannot run at real-time priority {p}: {e} (run as root \
                     or with CAP_SYS_NICE, or ask for normal priority)"
                )),
            },
            LoadPriority::Auto => match permitted(DEFAULT_LOAD_PRIORITY) {
                Ok(()) => Ok(realtime(DEFAULT_LOAD_PRIORITY)),
                Err(e) => Ok(RealOpenLoad {
                    realtime_priority: None,
                    warnings: vec![format!(
                        "the load generator ran at normal priority (real-time priority \
                         {DEFAULT_LOAD_PRIORITY}: {e}); if it shares the app's CPUs, a schedule's \
                         real-time threads delay its sends and its reading of answers, which counts \
                         against the scheduled arms (docs/tail.md)"
                    )],
                }),
            },
        }
    }
}

impl OpenLoad for RealOpenLoad {
    fn window(
        &self,
        cfg: &LoadConfig,
        rate_rps: f64,
        warmup: Duration,
        length: Duration,
        seed: u64,
    ) -> Result<LatencyWindow, String> {
        let schedule = slowpoke_load::Schedule::poisson(rate_rps).map_err(|e| e.to_string())?;
        let spec = slowpoke_load::LoadSpec {
            requests: vec![cfg.request_template()?],
            connections: cfg.connections,
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup,
            arrivals: slowpoke_load::Arrivals::Open(schedule),
        };
        let options = slowpoke_load::GeneratorOptions {
            seed,
            realtime_priority: self.realtime_priority,
            ..slowpoke_load::GeneratorOptions::default()
        };
        let report = slowpoke_load::run_with(
            &spec,
            slowpoke_load::RunLength::Duration(length),
            false,
            &options,
        )
        .map_err(|e| e.to_string())?;
        let w = &report.window;
        Ok(LatencyWindow {
            secs: w.secs,
            completed_ok: w.completed_ok,
            errors: w.non_2xx + w.timeouts + w.conn_errors,
            latency_us: w.latency_us.clone(),
            failed_as_us: (cfg.timeout_s.max(0.001) * 1e6) as u64,
        })
    }

    fn realtime_priority(&self) -> Option<u8> {
        self.realtime_priority
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eperm(_: u8) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }

    #[test]
    fn the_default_priority_is_real_time_when_permitted_and_normal_with_a_warning_when_not() {
        let asked = std::cell::Cell::new(0);
        let ok = RealOpenLoad::resolve(LoadPriority::Auto, |p| {
            asked.set(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(asked.get(), DEFAULT_LOAD_PRIORITY);
        assert_eq!(ok.realtime_priority(), Some(DEFAULT_LOAD_PRIORITY));
        assert!(ok.warnings().is_empty());

        let fallback = RealOpenLoad::resolve(LoadPriority::Auto, eperm).unwrap();
        assert_eq!(fallback.realtime_priority(), None);
        let w = fallback.warnings().join(" ");
        assert!(
            w.contains("normal priority") && w.contains("docs/tail.md"),
            "{w}"
        );
    }

    #[test]
    fn an_explicit_priority_not_permitted_is_refused_and_normal_asks_nothing() {
        let e = RealOpenLoad::resolve(LoadPriority::Fifo(40), eperm).unwrap_err();
        assert!(
            e.contains("priority 40") && e.contains("CAP_SYS_NICE"),
            "{e}"
        );
        let n = RealOpenLoad::resolve(LoadPriority::Normal, |_| panic!("not asked")).unwrap();
        assert_eq!((n.realtime_priority(), n.warnings().len()), (None, 0));
        let f = RealOpenLoad::resolve(LoadPriority::Fifo(40), |_| Ok(())).unwrap();
        assert_eq!(f.realtime_priority(), Some(40));
    }
}

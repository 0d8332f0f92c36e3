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
}

/// `slowpoke-load`'s open loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealOpenLoad;

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
}

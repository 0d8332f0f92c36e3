//! The open loop's own counters (beside the per-outcome statistics every load keeps) and what it reports.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::arrivals::Schedule;
use crate::stats::new_histogram;

/// Due requests waiting for a connection beyond this are shed (counted, never sent): an open loop far above
/// what the server takes would otherwise queue without bound and eat the machine's memory.
pub const MAX_BACKLOG: u64 = 1_000_000;

/// The open loop's own counters, beside the per-outcome statistics every load keeps.
#[derive(Debug)]
pub(crate) struct OpenCounters {
    pub(crate) schedule: Schedule,
    pub(crate) stop: AtomicBool,
    pub(crate) handed: AtomicU64,
    pub(crate) taken: AtomicU64,
    pub(crate) shed: AtomicU64,
    pub(crate) max_backlog: AtomicU64,
    /// Due time → a connection took it, µs, for measured requests.
    pub(crate) queue_wait_us: Mutex<Histogram<u64>>,
}

impl OpenCounters {
    pub(crate) fn new(schedule: Schedule) -> OpenCounters {
        OpenCounters {
            schedule,
            stop: AtomicBool::new(false),
            handed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            max_backlog: AtomicU64::new(0),
            queue_wait_us: Mutex::new(new_histogram()),
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// What the open loop did so far (queue waits of measured requests only).
    pub(crate) fn report(&self) -> OpenReport {
        let h = self.queue_wait_us.lock().expect("queue wait lock");
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64
            }
        };
        OpenReport {
            arrivals: self.schedule.kind(),
            target_rps: self.schedule.rate(),
            queue_wait_p50_us: q(0.5),
            queue_wait_p99_us: q(0.99),
            queue_wait_max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
            max_backlog: self.max_backlog.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
        }
    }
}

/// The open loop's part of a [`crate::Report`].
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    /// `poisson`, `uniform` or `trace`.
    pub arrivals: &'static str,
    /// The schedule's mean rate, requests/s (compare with `rps`: below it, the server did not keep up).
    pub target_rps: f64,
    /// Time from a measured request's due time until a connection took it, µs: the generator's pacing
    /// lateness plus waiting for a free connection (both are part of the latency). A large value with few
    /// connections says to raise `-c`.
    pub queue_wait_p50_us: f64,
    pub queue_wait_p99_us: f64,
    pub queue_wait_max_us: f64,
    /// Most due requests waiting for a connection at once.
    pub max_backlog: u64,
    /// Due requests never sent because [`MAX_BACKLOG`] were already waiting (the server is far below the rate).
    pub shed: u64,
}

//! What a running load's threads share: the per-outcome statistics (sharded), the request budget and its
//! epochs, and the count of connections that finished.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cpu::ThreadCpu;
use crate::exchange::Outcome;
use crate::open_counters::OpenCounters;
use crate::stats::{Snapshot, new_histogram};

/// Requests claimed before [`LoadGenerator::begin_measurement`] (warm-up, or all of them for a plain load).
pub(crate) const WARMUP: usize = 0;
/// Requests claimed after it.
pub(crate) const MEASURE: usize = 1;

#[derive(Debug)]
struct Stats {
    completed_ok: u64,
    non_2xx: u64,
    timeouts: u64,
    conn_errors: u64,
    latency_us: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            completed_ok: 0,
            non_2xx: 0,
            timeouts: 0,
            conn_errors: 0,
            latency_us: new_histogram(),
        }
    }
}

/// Which epoch new requests belong to and, in a counted measurement, how many are left to send.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) epoch: usize,
    pub(crate) remaining: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    shards: Vec<Mutex<[Stats; 2]>>,
    pub(crate) budget: Mutex<Budget>,
    /// Connections that found the budget exhausted (and went idle).
    pub(crate) finished: Mutex<usize>,
    pub(crate) finished_cv: Condvar,
    pub(crate) origin: Instant,
    /// Per connection: 1 + ns since `origin` of its last completed measured request (0: none yet).
    pub(crate) last_done_ns: Vec<AtomicU64>,
    /// All outcomes so far, any epoch (cheap progress counter).
    pub(crate) outcomes: AtomicU64,
    pub(crate) cpu: Arc<ThreadCpu>,
    pub(crate) threads: usize,
    pub(crate) connections: usize,
    /// The open loop's counters (None: a closed loop).
    pub(crate) open: Option<OpenCounters>,
}

impl Shared {
    /// Counters for `connections` connections on `threads` worker threads, requests counted in `epoch`, at
    /// most `limit` of them.
    pub(crate) fn new(
        connections: usize,
        threads: usize,
        epoch: usize,
        limit: Option<u64>,
        open: Option<OpenCounters>,
    ) -> Shared {
        // A few more shards than worker threads keeps record() uncontended; fewer keeps snapshots cheap.
        let n_shards = connections.clamp(1, 8);
        Shared {
            shards: (0..n_shards)
                .map(|_| Mutex::new([Stats::new(), Stats::new()]))
                .collect(),
            budget: Mutex::new(Budget {
                epoch,
                remaining: limit,
            }),
            finished: Mutex::new(0),
            finished_cv: Condvar::new(),
            origin: Instant::now(),
            last_done_ns: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            outcomes: AtomicU64::new(0),
            cpu: Arc::new(ThreadCpu::default()),
            threads,
            connections,
            open,
        }
    }

    pub(crate) fn claim(&self) -> Option<usize> {
        let mut b = self.budget.lock().expect("budget lock");
        match &mut b.remaining {
            None => Some(b.epoch),
            Some(0) => None,
            Some(n) => {
                *n -= 1;
                Some(b.epoch)
            }
        }
    }

    pub(crate) fn record(
        &self,
        conn: usize,
        epoch: usize,
        outcome: &Outcome,
        latency: Duration,
        now: Instant,
    ) {
        {
            let mut shard = self.shards[conn % self.shards.len()]
                .lock()
                .expect("stats lock");
            let s = &mut shard[epoch];
            match outcome {
                Outcome::Ok => {
                    s.completed_ok += 1;
                    s.latency_us
                        .saturating_record((latency.as_micros() as u64).max(1));
                }
                Outcome::Non2xx => s.non_2xx += 1,
                Outcome::Timeout => s.timeouts += 1,
                Outcome::ConnError => s.conn_errors += 1,
            }
        }
        if epoch == MEASURE {
            let ns = now.saturating_duration_since(self.origin).as_nanos() as u64;
            self.last_done_ns[conn].store(ns + 1, Ordering::Relaxed);
        }
        self.outcomes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn mark_finished(&self) {
        *self.finished.lock().expect("finished lock") += 1;
        self.finished_cv.notify_all();
    }

    pub(crate) fn snapshot(&self, epochs: &[usize]) -> Snapshot {
        let at = Instant::now();
        let totals = self.cpu.totals();
        let mut snap = Snapshot::empty(at, totals.cpu_ns, self.threads);
        snap.sched_wait_ns = totals.wait_ns;
        for shard in &self.shards {
            let shard = shard.lock().expect("stats lock");
            for &e in epochs {
                let s = &shard[e];
                snap.completed_ok += s.completed_ok;
                snap.non_2xx += s.non_2xx;
                snap.timeouts += s.timeouts;
                snap.conn_errors += s.conn_errors;
                if !s.latency_us.is_empty() {
                    snap.latency_us
                        .add(&s.latency_us)
                        .expect("histograms share their bounds");
                }
            }
        }
        snap
    }
}

/// Counts a connection as finished however its task ends (a panic included), so `run` never waits forever.
pub(crate) struct FinishGuard<'a> {
    shared: &'a Shared,
    done: bool,
}

impl<'a> FinishGuard<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        FinishGuard {
            shared,
            done: false,
        }
    }

    /// The connection found nothing more to send.
    pub(crate) fn finished(&mut self) {
        self.done = true;
        self.shared.mark_finished();
    }
}

impl Drop for FinishGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.mark_finished();
        }
    }
}

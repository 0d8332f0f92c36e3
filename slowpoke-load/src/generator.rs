//! The running closed-loop load: N keep-alive HTTP/1.1 connections on a small runtime of the generator's own.
//!
//! Each connection is one task that sends the next request as soon as the previous response has been read in
//! full. Outcomes go into a few mutex-protected shards (a connection always writes the same shard, so locks are
//! almost never contended); a snapshot locks each shard for the time of a histogram add and never stalls the load
//! for longer than that.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use rand::SeedableRng;
use rand::distributions::{Distribution, WeightedIndex};
use rand_chacha::ChaCha8Rng;

use crate::arrivals::Arrivals;
use crate::cpu::Totals;
use crate::exchange::{Outcome, one_request, outcome_of};
use crate::open_counters::{OpenCounters, OpenReport};
use crate::open_loop;
use crate::shared::{FinishGuard, MEASURE, Shared, WARMUP};
use crate::spec::{Plan, validate};
use crate::stats::Snapshot;
use crate::{LoadError, LoadSpec};

/// How the generator runs (beyond the [`LoadSpec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorOptions {
    /// Threads running the connections: 1 = a current-thread runtime on the generator's driver thread; more =
    /// a multi-thread runtime with that many workers (the driver thread then idles). One is enough for tens of
    /// thousands of requests/s on loopback; raise it when windows come back `generator_bound`.
    pub worker_threads: usize,
    /// Seed of the weighted choice among request templates (connection `i` uses a stream derived from it), so a
    /// run's request sequence per connection is reproducible.
    pub seed: u64,
    /// Run every thread of the generator under `SCHED_FIFO` at this priority (1 to 99): the driver thread sets
    /// it first and the threads it starts (the runtime's workers, the pacer) inherit it. So an app on the same
    /// CPUs, and the real-time threads of a schedule on it, do not delay its sends (see `realtime.rs`).
    /// `None`: normal scheduling. Starting fails, naming the cause, if the thread may not.
    pub realtime_priority: Option<u8>,
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            worker_threads: 1,
            seed: 0x5EED_5EED,
            realtime_priority: None,
        }
    }
}

/// A running closed-loop load: N keep-alive connections, each sends the next request as soon as the previous
/// response arrived. Stops (and joins its threads) on [`LoadGenerator::stop`] or when dropped.
#[derive(Debug)]
pub struct LoadGenerator {
    shared: Arc<Shared>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    probe_requests: u64,
    /// When the connections were started (after the probe) and the generator's CPU time then.
    started: (Instant, Totals),
    warmup: Duration,
}

/// What the driver thread reports once the connections run.
struct Started {
    probe_requests: u64,
    at: Instant,
    totals: Totals,
}

impl LoadGenerator {
    /// Starts the connections on a dedicated runtime/threads of its own (works from inside a tokio runtime
    /// too, but blocks the calling thread for the probe). First sends one probe request to each distinct
    /// address (with the first template that uses it) and fails, naming the URL, if it gets no HTTP response
    /// at all; any status counts as an answer. Does not wait for `spec.warmup` (see
    /// [`LoadGenerator::warmed_up`]).
    pub fn start(spec: LoadSpec) -> Result<LoadGenerator, LoadError> {
        Self::start_with(spec, &GeneratorOptions::default())
    }

    /// [`LoadGenerator::start`] with explicit [`GeneratorOptions`].
    pub fn start_with(
        spec: LoadSpec,
        options: &GeneratorOptions,
    ) -> Result<LoadGenerator, LoadError> {
        Self::start_in(spec, options, WARMUP, None)
    }

    /// Starts with requests counted in `epoch`, at most `limit` of them.
    pub(crate) fn start_in(
        spec: LoadSpec,
        options: &GeneratorOptions,
        epoch: usize,
        limit: Option<u64>,
    ) -> Result<LoadGenerator, LoadError> {
        let plan = validate(&spec)?;
        let spec_warmup = spec.warmup;
        let threads = options.worker_threads.max(1);
        let open = match &spec.arrivals {
            Arrivals::Closed => None,
            Arrivals::Open(schedule) => Some(OpenCounters::new(schedule.clone())),
        };
        let shared = Arc::new(Shared::new(spec.connections, threads, epoch, limit, open));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Started, LoadError>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_shared = Arc::clone(&shared);
        let (seed, realtime) = (options.seed, options.realtime_priority);
        if let Some(p) = realtime
            && !(1..=crate::realtime::MAX_REALTIME_PRIORITY).contains(&p)
        {
            return Err(LoadError::Invalid(format!(
                "the real-time priority must be 1 to {}, got {p}",
                crate::realtime::MAX_REALTIME_PRIORITY
            )));
        }
        let thread = std::thread::Builder::new()
            .name("slowpoke-load".into())
            .spawn(move || {
                drive(
                    &thread_shared,
                    plan,
                    &spec,
                    (seed, realtime),
                    &ready_tx,
                    stop_rx,
                );
            })
            .map_err(LoadError::Runtime)?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(LoadError::Runtime(std::io::Error::other(
                "the load generator thread died while starting",
            )))
        });
        match ready {
            Ok(started) => Ok(LoadGenerator {
                shared,
                stop_tx: Some(stop_tx),
                thread: Some(thread),
                probe_requests: started.probe_requests,
                started: (started.at, started.totals),
                warmup: spec_warmup,
            }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// Cumulative counters since start (all epochs; cheap; callable at any time, from any thread).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(&[WARMUP, MEASURE])
    }

    /// Stops all connections (in-flight requests are abandoned and not counted) and returns the final snapshot.
    pub fn stop(mut self) -> Snapshot {
        self.shutdown();
        self.snapshot()
    }

    /// Waits until `spec.warmup` has passed since the connections started, then returns a snapshot: a
    /// convenient first point for measurement windows.
    pub fn warmed_up(&self) -> Snapshot {
        let until = self.started.0 + self.warmup;
        let now = Instant::now();
        if until > now {
            std::thread::sleep(until - now);
        }
        self.snapshot()
    }

    /// Probe requests sent by `start` (one per distinct address); the server saw these too.
    pub fn probe_requests(&self) -> u64 {
        self.probe_requests
    }

    /// When the connections were started (after the probe), with the generator's CPU time (ns) then.
    pub(crate) fn started(&self) -> (Instant, Totals) {
        self.started
    }

    pub(crate) fn cpu_totals(&self) -> Totals {
        self.shared.cpu.totals()
    }

    /// Connections of this load.
    pub fn connections(&self) -> usize {
        self.shared.connections
    }

    /// What the open loop did so far (None for a closed loop).
    pub fn open_report(&self) -> Option<OpenReport> {
        self.shared.open.as_ref().map(OpenCounters::report)
    }

    /// Outcomes (of any kind) so far: a cheaper progress counter than a snapshot.
    pub fn outcomes(&self) -> u64 {
        self.shared.outcomes.load(Ordering::Relaxed)
    }

    /// From now on requests are counted in the measurement epoch; with `limit`, exactly that many more
    /// requests are sent in total, after which each connection goes idle. Returns the instant the
    /// measurement started: every measured request starts after it.
    pub(crate) fn begin_measurement(&self, limit: Option<u64>) -> Instant {
        let mut b = self.shared.budget.lock().expect("budget lock");
        b.epoch = MEASURE;
        b.remaining = limit;
        Instant::now()
    }

    /// No new requests from now on (each connection goes idle after its in-flight request).
    pub(crate) fn close_budget(&self) {
        self.shared.budget.lock().expect("budget lock").remaining = Some(0);
    }

    /// Waits up to `timeout` for every connection to have found the budget exhausted.
    pub(crate) fn wait_all_finished(&self, timeout: Duration) -> bool {
        let finished = self.shared.finished.lock().expect("finished lock");
        let (finished, _) = self
            .shared
            .finished_cv
            .wait_timeout_while(finished, timeout, |f| *f < self.shared.connections)
            .expect("finished lock");
        *finished >= self.shared.connections
    }

    pub(crate) fn epoch_snapshot(&self, epoch: usize) -> Snapshot {
        self.shared.snapshot(&[epoch])
    }

    /// Per connection: when it completed its last measured request (None if it completed none).
    pub(crate) fn last_measured_done(&self) -> Vec<Option<Instant>> {
        self.shared
            .last_done_ns
            .iter()
            .map(|a| match a.load(Ordering::Relaxed) {
                0 => None,
                ns => Some(self.shared.origin + Duration::from_nanos(ns - 1)),
            })
            .collect()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Body of the generator's driver thread: builds the runtime, probes, runs the connections until stopped.
fn drive(
    shared: &Arc<Shared>,
    plan: Plan,
    spec: &LoadSpec,
    (seed, realtime): (u64, Option<u8>),
    ready_tx: &mpsc::Sender<Result<Started, LoadError>>,
    stop_rx: tokio::sync::oneshot::Receiver<()>,
) {
    // Threads started from here on (the runtime's workers, the pacer) inherit the policy.
    if let Some(priority) = realtime
        && let Err(source) = crate::realtime::set_current_thread(priority)
    {
        let _ = ready_tx.send(Err(LoadError::Realtime { priority, source }));
        return;
    }
    shared.cpu.register_current();
    let (on_start, on_stop) = (Arc::clone(&shared.cpu), Arc::clone(&shared.cpu));
    // One worker: a current-thread runtime on this (driver) thread, which saves the cross-thread wake-ups of a
    // one-worker multi-thread runtime (measured: less CPU per request). More: a multi-thread runtime.
    let mut builder = if shared.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(shared.threads);
        b
    };
    let rt = builder
        .enable_io()
        .enable_time()
        .thread_name("slowpoke-load-worker")
        .on_thread_start(move || on_start.register_current())
        .on_thread_stop(move || on_stop.retire_current())
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready_tx.send(Err(LoadError::Runtime(e)));
            shared.cpu.retire_current();
            return;
        }
    };
    let plan = Arc::new(plan);
    let timeout = spec.timeout;
    let connections = spec.connections;
    let mut pacer = None;
    rt.block_on(async {
        let probes = match probe_all(&plan, timeout).await {
            Ok(n) => n,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let started = Started {
            probe_requests: probes,
            at: Instant::now(),
            totals: shared.cpu.totals(),
        };
        let handles: Vec<_> = if shared.open.is_some() {
            let (tx, rx) = open_loop::queue();
            let handles = (0..connections)
                .map(|i| {
                    let (shared, plan, rx) =
                        (Arc::clone(shared), Arc::clone(&plan), Arc::clone(&rx));
                    tokio::spawn(open_loop::connection_worker(i, shared, plan, rx, timeout))
                })
                .collect();
            match open_loop::start_pacer(Arc::clone(shared), Arc::clone(&plan), seed, tx) {
                Ok(p) => pacer = Some(p),
                Err(e) => {
                    let _ = ready_tx.send(Err(LoadError::Runtime(e)));
                    return;
                }
            }
            handles
        } else {
            (0..connections)
                .map(|i| {
                    let shared = Arc::clone(shared);
                    let plan = Arc::clone(&plan);
                    tokio::spawn(
                        async move { connection_loop(i, &shared, &plan, timeout, seed).await },
                    )
                })
                .collect()
        };
        let _ = ready_tx.send(Ok(started));
        // A dropped sender (generator dropped without stop) also ends the load.
        let _ = stop_rx.await;
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
    });
    // The pacer notices within its nap (20 ms) and retires its own CPU time.
    if let Some(open) = &shared.open {
        open.stop();
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    // Not inside an async context here, so dropping the runtime may block: it joins its worker threads (whose
    // CPU time is retired by on_thread_stop) and drops the connection driver tasks.
    drop(rt);
    shared.cpu.retire_current();
}

/// One probe per distinct address, with the first template that uses it. Returns the number sent.
async fn probe_all(plan: &Plan, timeout: Duration) -> Result<u64, LoadError> {
    let mut sent = 0;
    for (i, addr) in plan.addrs.iter().enumerate() {
        let target = plan
            .targets
            .iter()
            .find(|t| t.addr == i)
            .expect("every address comes from a target");
        let mut slot = None;
        sent += 1;
        if let Err(f) = one_request(&mut slot, *addr, target, timeout).await {
            return Err(LoadError::Unreachable {
                url: target.url.clone(),
                reason: f.to_string(),
            });
        }
    }
    Ok(sent)
}

async fn connection_loop(idx: usize, shared: &Shared, plan: &Plan, timeout: Duration, seed: u64) {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (idx as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let chooser = if plan.targets.len() > 1 {
        Some(
            WeightedIndex::new(plan.targets.iter().map(|t| t.weight))
                .expect("validated: some weight is positive"),
        )
    } else {
        None
    };
    let mut slots: Vec<Option<SendRequest<Full<Bytes>>>> = std::iter::repeat_with(|| None)
        .take(plan.addrs.len())
        .collect();
    let mut consecutive_failures: u32 = 0;
    let mut finish = FinishGuard::new(shared);
    loop {
        let Some(epoch) = shared.claim() else {
            finish.finished();
            // Idle until the generator stops (which aborts this task).
            std::future::pending::<()>().await;
            return;
        };
        let target = &plan.targets[chooser.as_ref().map_or(0, |c| c.sample(&mut rng))];
        let start = Instant::now();
        let result = one_request(
            &mut slots[target.addr],
            plan.addrs[target.addr],
            target,
            timeout,
        )
        .await;
        let now = Instant::now();
        let outcome = outcome_of(&result);
        shared.record(idx, epoch, &outcome, now - start, now);
        if matches!(outcome, Outcome::ConnError) {
            consecutive_failures += 1;
            // Back off a little when the entry keeps refusing, so a dead upstream is not a busy loop.
            if consecutive_failures >= 3 {
                let shift = (consecutive_failures - 3).min(7);
                tokio::time::sleep(Duration::from_millis(1 << shift)).await;
            }
        } else {
            consecutive_failures = 0;
        }
    }
}

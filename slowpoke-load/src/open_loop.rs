//! The open loop: a pacing thread hands each request to the connections at its due time
//! ([`crate::Schedule`]), whatever the responses; latency is measured from the due time.
//!
//! The pacer is a plain thread with a 1 ns timer slack, not a task: tokio's timers tick in milliseconds,
//! which would bunch requests due a few hundred µs apart into bursts. A request it hands over late (the
//! machine was busy) keeps its due time, so the lateness shows in its latency rather than vanishing. The
//! `connections` worker tasks take due requests from one queue; a request that finds every connection busy
//! waits in the queue, and that wait is part of its latency too (and reported apart as the queue wait).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use rand::SeedableRng;
use rand::distributions::{Distribution, WeightedIndex};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::exchange::{one_request, outcome_of};
use crate::open_counters::MAX_BACKLOG;
use crate::shared::{FinishGuard, MEASURE, Shared};
use crate::spec::Plan;

/// The pacer sleeps at most this long at a time, so it notices a stop quickly whatever the gap.
const MAX_NAP: Duration = Duration::from_millis(20);

/// A request whose time has come.
#[derive(Debug)]
pub(crate) struct Due {
    at: Instant,
    epoch: usize,
    target: usize,
}

/// The queue between the pacer and the connections.
pub(crate) fn queue() -> (
    UnboundedSender<Due>,
    Arc<tokio::sync::Mutex<UnboundedReceiver<Due>>>,
) {
    let (tx, rx) = unbounded_channel();
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

/// Starts the pacing thread: from now on, hands every request to `tx` at its due time until the budget is
/// exhausted or the load stops; dropping `tx` then lets the connections finish.
pub(crate) fn start_pacer(
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    seed: u64,
    tx: UnboundedSender<Due>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("slowpoke-load-pacer".into())
        .spawn(move || {
            shared.cpu.register_current();
            pace(&shared, &plan, seed, &tx);
            shared.cpu.retire_current();
        })
}

fn pace(shared: &Shared, plan: &Plan, seed: u64, tx: &UnboundedSender<Due>) {
    let open = shared.open.as_ref().expect("an open loop has its counters");
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes how late this thread's sleeps may end (default 50 µs).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64, 0_u64, 0_u64, 0_u64);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let chooser = (plan.targets.len() > 1).then(|| {
        WeightedIndex::new(plan.targets.iter().map(|t| t.weight))
            .expect("validated: some weight is positive")
    });
    let gap_rng = ChaCha8Rng::seed_from_u64(seed ^ 0xA221_7A15);
    let mut due = Instant::now();
    for gap in open.schedule.gaps(gap_rng) {
        due += gap;
        loop {
            if open.stop.load(Ordering::Relaxed) {
                return;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(MAX_NAP));
        }
        let Some(epoch) = shared.claim() else {
            return;
        };
        let target = chooser.as_ref().map_or(0, |c| c.sample(&mut rng));
        let backlog = open.handed.load(Ordering::Relaxed) - open.taken.load(Ordering::Relaxed);
        if backlog >= MAX_BACKLOG {
            open.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        open.max_backlog.fetch_max(backlog + 1, Ordering::Relaxed);
        open.handed.fetch_add(1, Ordering::Relaxed);
        if tx
            .send(Due {
                at: due,
                epoch,
                target,
            })
            .is_err()
        {
            return;
        }
    }
}

/// One of the open loop's connections: takes due requests from the queue until the pacer is done.
pub(crate) async fn connection_worker(
    idx: usize,
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    rx: Arc<tokio::sync::Mutex<UnboundedReceiver<Due>>>,
    timeout: Duration,
) {
    let open = shared.open.as_ref().expect("an open loop has its counters");
    let mut slots: Vec<Option<SendRequest<Full<Bytes>>>> = std::iter::repeat_with(|| None)
        .take(plan.addrs.len())
        .collect();
    let mut finish = FinishGuard::new(&shared);
    loop {
        let next = rx.lock().await.recv().await;
        let Some(due) = next else {
            finish.finished();
            // Idle until the generator stops (which aborts this task).
            std::future::pending::<()>().await;
            return;
        };
        open.taken.fetch_add(1, Ordering::Relaxed);
        if due.epoch == MEASURE {
            let waited = due.at.elapsed().as_micros() as u64;
            open.queue_wait_us
                .lock()
                .expect("queue wait lock")
                .saturating_record(waited.max(1));
        }
        let target = &plan.targets[due.target];
        let result = one_request(
            &mut slots[target.addr],
            plan.addrs[target.addr],
            target,
            timeout,
        )
        .await;
        let now = Instant::now();
        shared.record(idx, due.epoch, &outcome_of(&result), now - due.at, now);
    }
}

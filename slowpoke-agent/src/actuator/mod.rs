//! The pause actuator: stops every process of a service, sleeps the owed time precisely, resumes.
//!
//! One dedicated OS thread per service (not a tokio task: a busy runtime must not delay a resume),
//! so services pause independently and several can be stopped at the same time. Each thread:
//! - asks for `SCHED_FIFO` and a 1 ns timer slack, so a saturated machine does not delay it;
//! - sleeps with `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` to an absolute deadline;
//! - accounts the ACHIEVED pause (stop sent -> resume sent), so oversleep is carried forward as
//!   negative debt: the next pause is shorter by what this one overran;
//! - enforces the safety cap: at most `max_stopped_share` of any sliding window of wall time
//!   stopped; debt beyond it is dropped and counted (`dropped_ns`);
//! - pays debt below the quantum when the service goes idle (owed unchanged for `idle_ns`) or
//!   when the plan is removed (`flush`), so total paid == total owed − dropped;
//! - wakes a little before the deadline ([`SpinMargin`], a running estimate of how late the
//!   timer wakes this thread) and busy-waits to it, so the resume is sent at the deadline rather
//!   than one timer latency after it;
//! - in a synchronized plan, tells the other services' actuators to pay what they owe
//!   ([`PayHandle`]) when its own debt reaches the quantum (a kernel pause request), so every
//!   service of the node pauses at about the same moment.
//!
//! Where the debt comes from is behind [`DebtSource`]: the kernel's per-service `owed_ns` in the
//! agent, a plain counter in tests.
//!
//! Files: `worker.rs` (the thread and its commands), `pause.rs` (one pause: stop, precise sleep,
//! resume), `budget.rs` (the safety cap and the debt sources); this file is the handle.

mod budget;
mod pause;
mod worker;

use std::{
    sync::{Arc, Weak, atomic::Ordering, mpsc},
    thread::JoinHandle,
    time::Duration,
};

pub use budget::{CounterDebt, DebtSource, StopBudget};
pub use pause::{
    PauseControl, PauseKind, PauseOutcome, PauseRecord, RECENT_PAUSES, SpinMargin, pause_processes,
};
pub use worker::{ActuatorConfig, ActuatorStats, OnKernelPause};

use crate::{kernel::PauseRequest, safety::state::StateFile, sys::clock::monotonic_ns};
use worker::{Command, Shared, Worker, lock};

/// Asks an actuator to pay everything its service owes, now, without owning the actuator (its
/// pause thread is not kept alive by a handle).
#[derive(Clone)]
pub struct PayHandle {
    shared: Weak<Shared>,
}

impl PayHandle {
    /// Sends "pay what you owe now" unless a pause of this service is in progress (that one is
    /// left alone). Returns whether the request was sent.
    pub fn pay_now(&self) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        if shared.pausing.load(Ordering::SeqCst) {
            lock(&shared.stats).synchronized_skipped += 1;
            return false;
        }
        let tx = lock(&shared.tx).clone();
        tx.is_some_and(|t| t.send(Command::PayNow(monotonic_ns())).is_ok())
    }

    pub fn name(&self) -> Option<String> {
        self.shared.upgrade().map(|s| s.name.clone())
    }
}

/// The pause actuator of one service: a handle on its dedicated thread.
pub struct Actuator {
    tx: Option<mpsc::Sender<Command>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Actuator {
    pub fn spawn(
        name: &str,
        state: Arc<StateFile>,
        debt: Box<dyn DebtSource>,
        cfg: ActuatorConfig,
    ) -> Actuator {
        let shared = Arc::new(Shared::new(name, cfg));
        let (tx, rx) = mpsc::channel();
        *lock(&shared.tx) = Some(tx.clone());
        let worker = Worker::new(shared.clone(), state, debt, cfg);
        let thread = std::thread::Builder::new()
            .name(format!("pause-{}", truncate(name, 9)))
            .spawn(move || worker.run(&rx))
            .expect("spawning the pause thread");
        Actuator {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        }
    }

    /// The processes a pause stops (the registry keeps this current).
    pub fn set_pids(&self, pids: &[u32]) {
        *lock(&self.shared.pids) = pids.to_vec();
    }

    pub fn pids(&self) -> Vec<u32> {
        lock(&self.shared.pids).clone()
    }

    /// A delay is set (true) or removed (false): while true the thread watches for idleness.
    pub fn set_active(&self, active: bool) {
        self.shared.active.store(active, Ordering::SeqCst);
    }

    pub fn set_config(&self, quantum_ns: u64, max_stopped_share: f64) {
        let mut c = lock(&self.shared.cfg);
        c.quantum_ns = quantum_ns;
        c.max_stopped_share = max_stopped_share;
    }

    /// The kernel asked for a pause (handled asynchronously, in order).
    pub fn kernel_request(&self, req: PauseRequest) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Kernel(req));
        }
    }

    /// Pauses the service for `ns` now, outside any debt accounting and the safety cap (manual or
    /// test use), and waits for the outcome.
    pub fn pause_now(&self, ns: u64) -> Option<PauseOutcome> {
        let (tx, rx) = mpsc::channel();
        self.tx.as_ref()?.send(Command::PauseNow(ns, tx)).ok()?;
        rx.recv().ok()
    }

    /// Pays every debt owed now (below the quantum too) and waits, at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        if let Some(t) = &self.tx
            && t.send(Command::Flush(tx)).is_ok()
        {
            let _ = rx.recv_timeout(timeout);
        }
    }

    /// Ends the pause in progress now (its processes are resumed; the achieved part counts).
    pub fn cancel_pause(&self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
    }

    /// A handle other actuators use to make this one pay what it owes (synchronized plans).
    pub fn pay_handle(&self) -> PayHandle {
        PayHandle {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Pays everything owed now, asynchronously, unless a pause is in progress
    /// ([`PayHandle::pay_now`]).
    pub fn pay_now(&self) -> bool {
        self.pay_handle().pay_now()
    }

    /// What to call when this service starts a pause because its debt reached the quantum
    /// (`None`: nothing, the default; a synchronized plan makes the other services pay).
    pub fn set_on_kernel_pause(&self, hook: Option<OnKernelPause>) {
        *lock(&self.shared.on_kernel_pause) = hook;
    }

    /// The last pauses made (oldest first), at most [`RECENT_PAUSES`].
    pub fn recent_pauses(&self) -> Vec<PauseRecord> {
        lock(&self.shared.recent).iter().copied().collect()
    }

    pub fn stats(&self) -> ActuatorStats {
        lock(&self.shared.stats).clone()
    }
}

impl Drop for Actuator {
    fn drop(&mut self) {
        lock(&self.shared.tx).take();
        *lock(&self.shared.on_kernel_pause) = None;
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

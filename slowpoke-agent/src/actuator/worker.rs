//! The per-service pause thread and the commands it takes.
//!
//! The thread owns the debt accounting (owed, paid, dropped), the safety cap and the spin margin;
//! the [`Actuator`](super::Actuator) handle and [`PayHandle`](super::PayHandle)s only send it
//! [`Command`]s and read the [`Shared`] state.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use super::{
    budget::{DebtSource, StopBudget},
    pause::{
        PauseControl, PauseKind, PauseOutcome, PauseRecord, RECENT_PAUSES, SpinMargin,
        pause_processes,
    },
};
use crate::{
    kernel::{DEFAULT_QUANTUM_NS, PauseRequest},
    safety::state::StateFile,
    sys::{clock::monotonic_ns, sched::make_thread_precise, signal::resume_pid},
};

/// Tunables of an actuator.
#[derive(Clone, Copy, Debug)]
pub struct ActuatorConfig {
    /// Debt is paid in pauses of at least this long (smaller debt waits for idle or flush).
    pub quantum_ns: u64,
    pub max_stopped_share: f64,
    /// Sliding window of the safety cap.
    pub window_ns: u64,
    /// Owed unchanged this long (while a delay is set) => the service is idle: pay what is left.
    pub idle_ns: u64,
}

impl Default for ActuatorConfig {
    fn default() -> Self {
        ActuatorConfig {
            quantum_ns: DEFAULT_QUANTUM_NS,
            max_stopped_share: 0.5,
            window_ns: 1_000_000_000,
            idle_ns: 50_000_000,
        }
    }
}

/// Counters of one actuator (all monotonic).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActuatorStats {
    /// Achieved pause time, all pauses.
    pub pause_ns: u64,
    pub pauses: u64,
    /// Debt paid by pauses (achieved, so it includes oversleep).
    pub paid_ns: u64,
    /// Debt dropped by the safety cap.
    pub dropped_ns: u64,
    /// Last owed value seen.
    pub owed_ns: u64,
    /// Why real-time priority is off, if it is.
    pub realtime_off: Option<String>,
    /// Pauses made because another service's debt reached the quantum (synchronized plans).
    pub synchronized_pauses: u64,
    /// Requests to pay at another service's pause that were ignored because this service was
    /// pausing already.
    pub synchronized_skipped: u64,
    /// Stops of this service's processes the kernel refused (`EPERM`: no `CAP_KILL` for a
    /// process of another user): those processes were not paused.
    pub refused_stops: u64,
}

pub(super) enum Command {
    Kernel(PauseRequest),
    PauseNow(u64, mpsc::Sender<PauseOutcome>),
    Flush(mpsc::Sender<()>),
    /// Pay everything owed now (synchronized plans); sent at this `CLOCK_MONOTONIC` time.
    PayNow(u64),
}

/// Called by a pause thread when its service starts a pause because its debt reached the quantum.
pub type OnKernelPause = Arc<dyn Fn() + Send + Sync>;

pub(super) struct Shared {
    pub(super) name: String,
    pub(super) pids: Mutex<Vec<u32>>,
    pub(super) stats: Mutex<ActuatorStats>,
    pub(super) cfg: Mutex<ActuatorConfig>,
    /// A delay is set: poll the debt for idleness.
    pub(super) active: AtomicBool,
    /// Ends the pause in progress (cleared when the next one starts).
    pub(super) cancel: AtomicBool,
    /// A pause is in progress (processes stopped or about to be).
    pub(super) pausing: AtomicBool,
    /// A sender to the pause thread for [`PayHandle`]s (taken when the actuator is dropped, so
    /// the thread sees its channel close).
    pub(super) tx: Mutex<Option<mpsc::Sender<Command>>>,
    /// Synchronized plans: what to do when this service starts a quantum pause.
    pub(super) on_kernel_pause: Mutex<Option<OnKernelPause>>,
    pub(super) recent: Mutex<VecDeque<PauseRecord>>,
}

impl Shared {
    pub(super) fn new(name: &str, cfg: ActuatorConfig) -> Shared {
        Shared {
            name: name.to_string(),
            pids: Mutex::new(Vec::new()),
            stats: Mutex::new(ActuatorStats::default()),
            cfg: Mutex::new(cfg),
            active: AtomicBool::new(false),
            cancel: AtomicBool::new(false),
            pausing: AtomicBool::new(false),
            tx: Mutex::new(None),
            on_kernel_pause: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
        }
    }
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    state: Arc<StateFile>,
    debt: Box<dyn DebtSource>,
    budget: StopBudget,
    last_owed: u64,
    last_change_ns: u64,
    /// When the last pause ended: a pay request sent before it is stale.
    last_pause_end_ns: u64,
    margin: SpinMargin,
    /// The refused-stop warning was logged (once per actuator; the counter says how often).
    warned_refused: bool,
}

/// How often an active actuator looks at the debt for idleness.
const IDLE_POLL: Duration = Duration::from_millis(10);

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        state: Arc<StateFile>,
        debt: Box<dyn DebtSource>,
        cfg: ActuatorConfig,
    ) -> Worker {
        Worker {
            shared,
            state,
            debt,
            budget: StopBudget::new(cfg.window_ns, cfg.max_stopped_share),
            last_owed: 0,
            last_change_ns: monotonic_ns(),
            last_pause_end_ns: 0,
            margin: SpinMargin::new(),
            warned_refused: false,
        }
    }

    pub(super) fn run(mut self, rx: &mpsc::Receiver<Command>) {
        if let Err(why) = make_thread_precise() {
            lock(&self.shared.stats).realtime_off = Some(why);
        }
        loop {
            let timeout = if self.shared.active.load(Ordering::SeqCst) {
                IDLE_POLL
            } else {
                Duration::from_millis(200)
            };
            match rx.recv_timeout(timeout) {
                Ok(Command::Kernel(req)) => self.settle(Some(req), false, PauseKind::Kernel),
                Ok(Command::PauseNow(ns, reply)) => {
                    let out = self.pause(ns, None, PauseKind::Manual, None);
                    let _ = reply.send(out);
                }
                Ok(Command::Flush(reply)) => {
                    self.settle(None, true, PauseKind::Flush);
                    let _ = reply.send(());
                }
                Ok(Command::PayNow(sent_ns)) => {
                    if self.last_pause_end_ns >= sent_ns {
                        // Asked while this service was pausing: that pause is left alone.
                        lock(&self.shared.stats).synchronized_skipped += 1;
                    } else if self.shared.active.load(Ordering::SeqCst) {
                        self.settle(None, true, PauseKind::Synchronized);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.shared.active.load(Ordering::SeqCst) {
                        self.idle_check();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn owner(&self) -> String {
        format!("stopped:{}", self.shared.name)
    }

    /// `on_stopped`: run once this service is stopped (the synchronized-plan hook); this service
    /// is marked as pausing before, so the others never ask it back.
    fn pause(
        &mut self,
        ns: u64,
        kernel_stop: Option<(u32, u64)>,
        kind: PauseKind,
        on_stopped: Option<&(dyn Fn() + Send + Sync)>,
    ) -> PauseOutcome {
        let received_ns = monotonic_ns();
        let pids = lock(&self.shared.pids).clone();
        self.shared.cancel.store(false, Ordering::SeqCst);
        self.shared.pausing.store(true, Ordering::SeqCst);
        let owner = self.owner();
        let on_stopped = on_stopped.map(|h| h as &dyn Fn());
        let out = pause_processes(
            &pids,
            ns,
            kernel_stop,
            &self.state,
            &owner,
            PauseControl {
                cancel: Some(&self.shared.cancel),
                margin: Some(&mut self.margin),
                on_stopped,
            },
        );
        self.shared.pausing.store(false, Ordering::SeqCst);
        if !out.refused.is_empty() {
            lock(&self.shared.stats).refused_stops += out.refused.len() as u64;
            if !std::mem::replace(&mut self.warned_refused, true) {
                tracing::warn!(
                    service = %self.shared.name,
                    pids = ?out.refused,
                    "the kernel refused to stop these processes (EPERM): the agent lacks CAP_KILL for them, so they are not paused and the prediction misses their share; run the agent as root with CAP_KILL (docs/security.md)"
                );
            }
        }
        if out.refused_entirely() {
            // No process could be stopped: no pause was taken.
            return out;
        }
        self.last_pause_end_ns = out.end_ns;
        self.budget.record(out.start_ns, out.end_ns);
        {
            let mut r = lock(&self.shared.recent);
            if r.len() == RECENT_PAUSES {
                r.pop_front();
            }
            r.push_back(PauseRecord {
                kind,
                start_ns: out.start_ns,
                end_ns: out.end_ns,
                requested_ns: ns,
            });
        }
        tracing::trace!(
            service = %self.shared.name,
            start_ns = out.start_ns,
            end_ns = out.end_ns,
            requested_ns = ns,
            received_ns = received_ns,
            ?kind,
            "pause"
        );
        let mut s = lock(&self.shared.stats);
        s.pause_ns += out.achieved_ns;
        s.pauses += 1;
        if kind == PauseKind::Synchronized {
            s.synchronized_pauses += 1;
        }
        out
    }

    fn idle_check(&mut self) {
        let owed = self.debt.owed_ns();
        let now = monotonic_ns();
        if owed != self.last_owed {
            self.last_owed = owed;
            self.last_change_ns = now;
            return;
        }
        let idle_ns = lock(&self.shared.cfg).idle_ns;
        let settled = self.settled();
        if now - self.last_change_ns >= idle_ns && owed > settled {
            self.settle(None, true, PauseKind::Idle);
        }
    }

    fn settled(&self) -> u64 {
        let s = lock(&self.shared.stats);
        s.paid_ns + s.dropped_ns
    }

    /// Pays what is owed: on a kernel request when it reaches the quantum, on `flush` whatever
    /// is left. The cap drops what does not fit. A quantum pause (kernel request) first calls the
    /// synchronized-plan hook, so the other services pay at the same moment.
    fn settle(&mut self, req: Option<PauseRequest>, flush: bool, kind: PauseKind) {
        // A kernel request carries the debt at its trigger: no map read (and no lock) before the
        // pause; debt accrued since then triggers again after the re-arm.
        let owed = match req {
            Some(r) if r.owed_ns > 0 => r.owed_ns,
            _ => self.debt.owed_ns(),
        };
        let cfg = *lock(&self.shared.cfg);
        self.budget.set_share(cfg.max_stopped_share);
        {
            let mut s = lock(&self.shared.stats);
            s.owed_ns = s.owed_ns.max(owed);
        }
        let kernel_stop = req.and_then(|r| r.stopped_tgid.map(|t| (t, r.at_ns)));
        let debt = owed.saturating_sub(self.settled());
        let pay_now = if flush {
            debt > 0
        } else {
            debt >= cfg.quantum_ns
        };
        if !pay_now {
            // Oversleep carried forward covers it: release the process the kernel stopped.
            if let Some((tgid, at)) = kernel_stop {
                resume_pid(tgid);
                let achieved = monotonic_ns().saturating_sub(at);
                let mut s = lock(&self.shared.stats);
                s.pause_ns += achieved;
                s.paid_ns += achieved;
            }
            let settled = self.settled();
            self.debt.rearm(settled);
            return;
        }
        let now = monotonic_ns();
        let allowed = self.budget.allowed(now);
        let pay = debt.min(allowed);
        if pay < debt {
            let mut s = lock(&self.shared.stats);
            s.dropped_ns += debt - pay;
            drop(s);
            tracing::debug!(service = %self.shared.name, dropped_ns = debt - pay, "safety cap: debt dropped");
        }
        if pay > 0 {
            let hook = if kind == PauseKind::Kernel {
                lock(&self.shared.on_kernel_pause).clone()
            } else {
                None
            };
            let out = self.pause(pay, kernel_stop, kind, hook.as_deref());
            let mut s = lock(&self.shared.stats);
            s.paid_ns += out.achieved_ns;
            if out.refused_entirely() {
                // Nothing could be stopped: the debt is given up (counted as dropped), or every
                // later visit would ask for the same impossible pause again.
                s.dropped_ns += pay.saturating_sub(out.achieved_ns);
            }
        } else if let Some((tgid, at)) = kernel_stop {
            // Nothing may be paid: release the process the kernel stopped; the time it was
            // stopped is still a pause (and counts against the cap).
            resume_pid(tgid);
            let end = monotonic_ns();
            let achieved = end.saturating_sub(at);
            self.budget.record(at.min(end), end);
            let mut s = lock(&self.shared.stats);
            s.pause_ns += achieved;
            s.paid_ns += achieved;
        }
        let settled = self.settled();
        self.debt.rearm(settled);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

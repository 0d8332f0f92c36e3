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

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{kernel::PauseRequest, procfs, state::StateFile};

/// `CLOCK_MONOTONIC` in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute; restarts after signals).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: reads `ts`; no remaining-time output with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &raw const ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// SIGSTOP one process (the whole thread group). False when it is gone.
pub fn stop_pid(pid: u32) -> bool {
    // SAFETY: kill with a positive pid signals exactly that process.
    pid > 1 && unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) } == 0
}

/// SIGCONT one process. False when it is gone.
pub fn resume_pid(pid: u32) -> bool {
    // SAFETY: as in `stop_pid`.
    pid > 1 && unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) } == 0
}

/// Makes the calling thread a precise sleeper: 1 ns timer slack and `SCHED_FIFO`. Returns why
/// real-time priority is off, if it is (the thread still works, with less precision under load).
pub fn make_thread_precise() -> Result<(), String> {
    // SAFETY: prctl/sched_setscheduler on the calling thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
        let param = libc::sched_param {
            sched_priority: REALTIME_PRIORITY,
        };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) != 0 {
            return Err(format!(
                "SCHED_FIFO refused ({}); resumes may be late on a saturated machine (run as root or \
                 grant CAP_SYS_NICE)",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Real-time priority of the resumer threads (above normal work, below kernel-critical threads).
pub const REALTIME_PRIORITY: i32 = 20;

/// What one pause achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseOutcome {
    pub requested_ns: u64,
    /// Stop sent (or the kernel's own stop) -> last resume sent.
    pub achieved_ns: u64,
    /// `CLOCK_MONOTONIC` when the pause started and ended.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Processes stopped and resumed.
    pub pids: Vec<u32>,
}

/// Sleeps until `deadline_ns`, waking every [`CANCEL_CHECK`] to look at `cancel` (the last
/// wake is at the absolute deadline, so precision is unaffected). Returns early when cancelled.
fn sleep_cancellable(deadline_ns: u64, cancel: Option<&AtomicBool>) {
    let Some(cancel) = cancel else {
        sleep_until(deadline_ns);
        return;
    };
    let step = CANCEL_CHECK.as_nanos() as u64;
    loop {
        let now = monotonic_ns();
        if now >= deadline_ns || cancel.load(Ordering::SeqCst) {
            return;
        }
        sleep_until(deadline_ns.min(now + step));
    }
}

/// Sleeps until `deadline_ns − early_ns`, then busy-waits on `CLOCK_MONOTONIC` until
/// `deadline_ns`. Returns how late the sleep woke relative to its own target (the timer's wake
/// latency, the input of [`SpinMargin`]), or `None` when cancelled.
fn sleep_then_spin(deadline_ns: u64, early_ns: u64, cancel: Option<&AtomicBool>) -> Option<u64> {
    let target = deadline_ns.saturating_sub(early_ns);
    sleep_cancellable(target, cancel);
    let woke = monotonic_ns();
    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
        return None;
    }
    let mut now = woke;
    while now < deadline_ns {
        std::hint::spin_loop();
        now = monotonic_ns();
    }
    Some(woke.saturating_sub(target))
}

/// How early a pause thread wakes before its deadline to busy-wait the rest: a running estimate
/// of its timer wake-up latency (the 90th percentile of the last [`SpinMargin::SAMPLES`] wakes,
/// plus [`SpinMargin::SLACK_NS`]), clamped to `[MIN_NS, MAX_NS]`. The cost is at most that much
/// CPU per pause; the gain is that a resume is no longer late by the wake-up latency (53–78 µs
/// median on the test VM, more under load).
#[derive(Clone, Debug)]
pub struct SpinMargin {
    lateness: VecDeque<u64>,
}

impl SpinMargin {
    pub const SAMPLES: usize = 32;
    pub const INITIAL_NS: u64 = 150_000;
    pub const MIN_NS: u64 = 20_000;
    pub const MAX_NS: u64 = 300_000;
    pub const SLACK_NS: u64 = 20_000;

    pub fn new() -> SpinMargin {
        SpinMargin {
            lateness: VecDeque::with_capacity(Self::SAMPLES),
        }
    }

    /// How early to wake for the next pause.
    pub fn margin_ns(&self) -> u64 {
        if self.lateness.len() < 4 {
            return Self::INITIAL_NS;
        }
        let mut v: Vec<u64> = self.lateness.iter().copied().collect();
        v.sort_unstable();
        let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
        (p90 + Self::SLACK_NS).clamp(Self::MIN_NS, Self::MAX_NS)
    }

    /// One observed wake-up latency.
    pub fn observe(&mut self, late_ns: u64) {
        if self.lateness.len() == Self::SAMPLES {
            self.lateness.pop_front();
        }
        self.lateness.push_back(late_ns);
    }
}

impl Default for SpinMargin {
    fn default() -> Self {
        SpinMargin::new()
    }
}

/// How a pause may be steered while it runs.
#[derive(Default)]
pub struct PauseControl<'a> {
    /// Setting it ends the pause early (the processes are resumed at once).
    pub cancel: Option<&'a AtomicBool>,
    /// Wake that much before the deadline and busy-wait to it (updated with the observed
    /// wake-up latency); `None` sleeps to the deadline.
    pub margin: Option<&'a mut SpinMargin>,
    /// Called once every process is stopped and the pause's start is recorded (a synchronized
    /// plan wakes the other services here, so their pauses never start before this one).
    pub on_stopped: Option<&'a dyn Fn()>,
}

/// How often a long pause checks whether it was cancelled (agent shutdown).
pub const CANCEL_CHECK: Duration = Duration::from_millis(5);

/// Stops `pids`, sleeps until `start + duration_ns`, resumes them. `kernel_stop`: a process the
/// kernel already stopped itself and when. Processes that were already stopped by someone else
/// (state `T`) are left alone: they are neither stopped nor resumed. `state` lists the pids
/// (under `owner`) before any stop and forgets them after the resume. See [`PauseControl`] for
/// cancelling, the spin margin and the hook run once the processes are stopped.
pub fn pause_processes(
    pids: &[u32],
    duration_ns: u64,
    kernel_stop: Option<(u32, u64)>,
    state: &StateFile,
    owner: &str,
    ctl: PauseControl<'_>,
) -> PauseOutcome {
    let PauseControl {
        cancel,
        margin,
        on_stopped,
    } = ctl;
    let mut targets: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| {
            Some(p) == kernel_stop.map(|k| k.0)
                || procfs::stat(p).is_some_and(|s| s.state != 'T' && s.state != 't')
        })
        .collect();
    if let Some((tgid, _)) = kernel_stop
        && !targets.contains(&tgid)
    {
        targets.push(tgid);
    }
    if let Err(e) = state.set(owner, &targets) {
        // Without a record the guardian could not repair a crash mid-pause: do not stop.
        tracing::error!(
            "cannot write the state file {}: {e}; pause skipped",
            state.path().display()
        );
        if let Some((tgid, _)) = kernel_stop {
            resume_pid(tgid);
        }
        return PauseOutcome {
            requested_ns: duration_ns,
            achieved_ns: 0,
            start_ns: monotonic_ns(),
            end_ns: monotonic_ns(),
            pids: Vec::new(),
        };
    }
    let now = monotonic_ns();
    let start_ns = match kernel_stop {
        Some((_, at)) if at <= now && now - at < 1_000_000_000 => at,
        _ => now,
    };
    for &p in &targets {
        if Some(p) != kernel_stop.map(|k| k.0) {
            stop_pid(p);
        }
    }
    if let Some(hook) = on_stopped {
        hook();
    }
    let deadline = start_ns + duration_ns;
    match margin {
        Some(m) => {
            if let Some(late) = sleep_then_spin(deadline, m.margin_ns(), cancel) {
                m.observe(late);
            }
        }
        None => sleep_cancellable(deadline, cancel),
    }
    for &p in &targets {
        resume_pid(p);
    }
    let end_ns = monotonic_ns();
    if let Err(e) = state.set(owner, &[]) {
        tracing::warn!(
            "cannot update the state file {}: {e}",
            state.path().display()
        );
    }
    PauseOutcome {
        requested_ns: duration_ns,
        achieved_ns: end_ns - start_ns,
        start_ns,
        end_ns,
        pids: targets,
    }
}

/// Safety cap: the share of a sliding window of wall time a service may spend stopped.
#[derive(Debug)]
pub struct StopBudget {
    window_ns: u64,
    max_share: f64,
    /// Stopped intervals (start, end) that overlap the window.
    intervals: VecDeque<(u64, u64)>,
}

impl StopBudget {
    pub fn new(window_ns: u64, max_share: f64) -> StopBudget {
        StopBudget {
            window_ns,
            max_share,
            intervals: VecDeque::new(),
        }
    }

    pub fn set_share(&mut self, max_share: f64) {
        self.max_share = max_share;
    }

    /// Stopped time within `[now − window, now]`.
    pub fn used(&mut self, now: u64) -> u64 {
        let from = now.saturating_sub(self.window_ns);
        while self.intervals.front().is_some_and(|&(_, e)| e <= from) {
            self.intervals.pop_front();
        }
        self.intervals
            .iter()
            .map(|&(s, e)| e.min(now).saturating_sub(s.max(from)))
            .sum()
    }

    /// How long the service may be stopped starting `now`.
    pub fn allowed(&mut self, now: u64) -> u64 {
        let cap = (self.window_ns as f64 * self.max_share.clamp(0.0, 1.0)) as u64;
        cap.saturating_sub(self.used(now))
    }

    pub fn record(&mut self, start: u64, end: u64) {
        if end > start {
            self.intervals.push_back((start, end));
        }
    }
}

/// Where a service's debt comes from.
pub trait DebtSource: Send + 'static {
    /// Total debt owed so far (monotonic).
    fn owed_ns(&mut self) -> u64;
    /// Everything owed up to `settled_ns` is paid or dropped: re-arm the trigger.
    fn rearm(&mut self, settled_ns: u64);
}

/// A debt counter in memory: tests and manual experiments add to it.
#[derive(Clone, Debug, Default)]
pub struct CounterDebt(pub Arc<AtomicU64>);

impl DebtSource for CounterDebt {
    fn owed_ns(&mut self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn rearm(&mut self, _settled_ns: u64) {}
}

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
            quantum_ns: crate::kernel::DEFAULT_QUANTUM_NS,
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
}

/// Why a pause was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PauseKind {
    /// The service's own debt reached the quantum (kernel pause request).
    Kernel,
    /// Another service's debt reached the quantum in a synchronized plan: paid everything owed.
    Synchronized,
    /// The service went idle: paid what was left below the quantum.
    Idle,
    /// The delay was removed: paid what was left.
    Flush,
    /// `pause_now` (outside any debt accounting).
    Manual,
}

/// One pause as the actuator made it (kept for the last [`RECENT_PAUSES`] pauses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseRecord {
    pub kind: PauseKind,
    /// `CLOCK_MONOTONIC` of the stop (the kernel's own stop when it stopped the visiting
    /// process) and of the last resume sent.
    pub start_ns: u64,
    pub end_ns: u64,
    pub requested_ns: u64,
}

/// How many recent pauses an actuator remembers ([`Actuator::recent_pauses`]).
pub const RECENT_PAUSES: usize = 512;

enum Command {
    Kernel(PauseRequest),
    PauseNow(u64, mpsc::Sender<PauseOutcome>),
    Flush(mpsc::Sender<()>),
    /// Pay everything owed now (synchronized plans); sent at this `CLOCK_MONOTONIC` time.
    PayNow(u64),
}

/// Called by a pause thread when its service starts a pause because its debt reached the quantum.
pub type OnKernelPause = Arc<dyn Fn() + Send + Sync>;

struct Shared {
    name: String,
    pids: Mutex<Vec<u32>>,
    stats: Mutex<ActuatorStats>,
    cfg: Mutex<ActuatorConfig>,
    /// A delay is set: poll the debt for idleness.
    active: AtomicBool,
    /// Ends the pause in progress (cleared when the next one starts).
    cancel: AtomicBool,
    /// A pause is in progress (processes stopped or about to be).
    pausing: AtomicBool,
    /// A sender to the pause thread for [`PayHandle`]s (taken when the actuator is dropped, so
    /// the thread sees its channel close).
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    /// Synchronized plans: what to do when this service starts a quantum pause.
    on_kernel_pause: Mutex<Option<OnKernelPause>>,
    recent: Mutex<VecDeque<PauseRecord>>,
}

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
        let shared = Arc::new(Shared {
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
        });
        let (tx, rx) = mpsc::channel();
        *lock(&shared.tx) = Some(tx.clone());
        let worker = Worker {
            shared: shared.clone(),
            state,
            debt,
            budget: StopBudget::new(cfg.window_ns, cfg.max_stopped_share),
            last_owed: 0,
            last_change_ns: monotonic_ns(),
            last_pause_end_ns: 0,
            margin: SpinMargin::new(),
        };
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

struct Worker {
    shared: Arc<Shared>,
    state: Arc<StateFile>,
    debt: Box<dyn DebtSource>,
    budget: StopBudget,
    last_owed: u64,
    last_change_ns: u64,
    /// When the last pause ended: a pay request sent before it is stale.
    last_pause_end_ns: u64,
    margin: SpinMargin,
}

/// How often an active actuator looks at the debt for idleness.
const IDLE_POLL: Duration = Duration::from_millis(10);

impl Worker {
    fn run(mut self, rx: &mpsc::Receiver<Command>) {
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
            lock(&self.shared.stats).paid_ns += out.achieved_ns;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_margin_follows_the_wake_latency() {
        let mut m = SpinMargin::new();
        assert_eq!(m.margin_ns(), SpinMargin::INITIAL_NS, "no samples yet");
        for _ in 0..SpinMargin::SAMPLES {
            m.observe(50_000);
        }
        assert_eq!(m.margin_ns(), 70_000, "p90 + slack");
        // A few late wakes (10 %) do not move the 90th percentile much; many do.
        for _ in 0..3 {
            m.observe(2_000_000);
        }
        assert_eq!(m.margin_ns(), 70_000);
        for _ in 0..10 {
            m.observe(2_000_000);
        }
        assert_eq!(m.margin_ns(), SpinMargin::MAX_NS, "clamped");
        for _ in 0..SpinMargin::SAMPLES {
            m.observe(0);
        }
        assert_eq!(m.margin_ns(), SpinMargin::MIN_NS.max(SpinMargin::SLACK_NS));
    }

    #[test]
    fn sleep_then_spin_ends_at_the_deadline() {
        let deadline = monotonic_ns() + 2_000_000;
        let late = sleep_then_spin(deadline, 300_000, None).expect("not cancelled");
        let now = monotonic_ns();
        assert!(now >= deadline, "never before the deadline");
        assert!(late < 1_000_000_000);
        // Cancelled: returns at once, without spinning.
        let cancel = AtomicBool::new(true);
        let t0 = monotonic_ns();
        assert!(sleep_then_spin(t0 + 50_000_000, 100_000, Some(&cancel)).is_none());
        assert!(monotonic_ns() - t0 < 40_000_000);
    }

    #[test]
    fn budget_caps_share_of_window() {
        let mut b = StopBudget::new(1_000, 0.5);
        assert_eq!(b.allowed(10_000), 500);
        b.record(10_000, 10_300);
        assert_eq!(b.allowed(10_300), 200);
        // Half the interval has slid out of the window.
        assert_eq!(b.used(11_150), 150);
        assert_eq!(b.allowed(12_000), 500);
    }
}

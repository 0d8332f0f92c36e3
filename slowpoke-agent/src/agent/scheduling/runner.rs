//! The scheduler thread: reads the kernel's request events, asks the core what changes and has
//! the applier make it. It runs at the agent's real-time priority (20, `sys::sched`), above
//! every thread it promotes (1–19), so it can always demote them, and it wakes at least once per
//! share-cap period while anything is promoted, and when a CPU could first reach the cap
//! ([`Core::next_deadline`], from the kernel's exact sums: `meter`).
//!
//! One thread for the agent's lifetime, idle without a schedule. It waits in `poll` on the
//! kernel's ring buffer of request events and on a doorbell (an eventfd) rung with every
//! command (and every event a test hook feeds), so a kernel event reaches the decision without
//! a hop through another thread. A [`Command::Clear`] is answered only after every thread got
//! its own policy back, so `DELETE /v1/scheduling` returns when the node is as it was.
//!
//! Only events that can change what runs first wake it: after each decision it tells the kernel
//! the key of the youngest ranked request ([`Core::wake_up_to`]); events of later requests wait
//! in the ring buffer for the next wake-up (they cannot change the ranking). Without that, every
//! request's start and end woke it: ~18 µs of agent CPU per event at 1600 req/s on the fan-out
//! topology (docs/tail.md).

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, Sender, SyncSender, TryRecvError},
    },
    thread::JoinHandle,
    time::Duration,
};

use slowpoke_common::RequestEvent;

use super::{
    apply::Applier,
    core::{Action, Core, CoreConfig},
    meter::Meter,
};
use crate::{
    api::SchedulingStats,
    kernel::{RequestEvents, share::PromotedRuns},
    safety::watchdog::SharedPage,
    sys::{
        clock::{monotonic_ns, thread_cpu_ns},
        sched::make_thread_precise,
    },
};

/// Longest idle wait: bounds how late the thread sees a command when nothing else wakes it.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// What the agent tells the scheduler.
pub enum Command {
    /// Put this schedule in force (or change it): the core's configuration, the real-time
    /// priority of promotions, and the members (tgids) of each scheduled service.
    Set {
        cfg: CoreConfig,
        priority: u32,
        members: HashMap<u32, HashSet<u32>>,
    },
    /// The services' members changed (a resolver pass).
    Members(HashMap<u32, HashSet<u32>>),
    /// End the schedule: every thread restored, then the answer.
    Clear(SyncSender<()>),
}

enum Msg {
    /// A request event fed by a test hook (the kernel's come through the ring buffer).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    Event(RequestEvent),
    Command(Command),
    Quit,
}

/// An eventfd that wakes the thread's `poll`.
struct Doorbell(OwnedFd);

impl Doorbell {
    fn new() -> std::io::Result<Doorbell> {
        // SAFETY: eventfd returns a new descriptor that we own (or -1).
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor owned by nobody else.
        Ok(Doorbell(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    fn quiet(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), (&raw mut n).cast(), 8) };
    }
}

pub struct Scheduler {
    tx: Sender<Msg>,
    doorbell: Arc<Doorbell>,
    stats: Arc<Mutex<Option<SchedulingStats>>>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the thread; `events`: the kernel's request events, `runs`: its share-cap meter
    /// (`None` without kernel programs: only a test hook feeds events then, and the share cap
    /// measures nothing).
    pub fn start(
        page: Arc<SharedPage>,
        events: Option<RequestEvents>,
        runs: Option<PromotedRuns>,
    ) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let doorbell = Arc::new(Doorbell::new()?);
        let stats = Arc::new(Mutex::new(None));
        let (published, bell) = (stats.clone(), doorbell.clone());
        let thread = std::thread::Builder::new()
            .name("tail-scheduler".into())
            .spawn(move || {
                let applier = Applier::new(page, Meter::new(runs));
                run(&rx, &bell, events, applier, &published);
            })?;
        Ok(Scheduler {
            tx,
            doorbell,
            stats,
            thread: Some(thread),
        })
    }

    fn send(&self, m: Msg) {
        let _ = self.tx.send(m);
        self.doorbell.ring();
    }

    /// TEST ONLY: a request event as the kernel would report it.
    #[cfg(feature = "test-hooks")]
    pub fn feed(&self, ev: RequestEvent) {
        self.send(Msg::Event(ev));
    }

    pub fn command(&self, c: Command) {
        self.send(Msg::Command(c));
    }

    /// Ends the schedule and waits (at most `timeout`) until every thread is restored.
    pub fn clear(&self, timeout: Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        self.command(Command::Clear(done));
        wait.recv_timeout(timeout).is_ok()
    }

    /// What the scheduler did since the schedule in force began (`None`: no schedule).
    pub fn stats(&self) -> Option<SchedulingStats> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Scheduler {
    /// Restores every thread (the applier's drop) and joins the thread.
    fn drop(&mut self) {
        self.send(Msg::Quit);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The schedule in force, as the thread holds it.
struct Running {
    core: Core,
    members: HashMap<u32, HashSet<u32>>,
    failed: u64,
    /// The scheduler's own cost since the schedule began: wake-ups, and the thread's CPU time
    /// and the clock at the start.
    wakeups: u64,
    cpu_start_ns: u64,
    wall_start_ns: u64,
}

fn run(
    rx: &Receiver<Msg>,
    bell: &Doorbell,
    mut events: Option<RequestEvents>,
    mut applier: Applier,
    stats: &Mutex<Option<SchedulingStats>>,
) {
    if let Err(why) = make_thread_precise() {
        tracing::warn!("tail scheduler: {why}");
    }
    let mut running: Option<Running> = None;
    let mut batch = Vec::new();
    'run: loop {
        let now = monotonic_ns();
        let wait = running.as_ref().map_or(IDLE_WAIT, |r| {
            r.core
                .next_deadline()
                .map_or(IDLE_WAIT, |d| Duration::from_nanos(d.saturating_sub(now)))
                .clamp(Duration::from_micros(50), IDLE_WAIT)
        });
        wait_readable(bell, events.as_ref().map(AsRawFd::as_raw_fd), wait);
        bell.quiet();
        if let Some(r) = running.as_mut() {
            r.wakeups += 1;
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Quit) | Err(TryRecvError::Disconnected) => break 'run,
                Ok(msg) => handle(msg, &mut running, &mut applier),
                Err(TryRecvError::Empty) => break,
            }
        }
        if let Some(ev) = events.as_mut() {
            batch.clear();
            ev.drain(&mut batch);
            if let Some(r) = running.as_mut() {
                for e in &batch {
                    tracing::trace!(?e, "request event");
                    r.core.observe(e);
                }
            }
        }
        if let Some(r) = running.as_mut() {
            step(r, &mut applier);
        }
        if let Some(ev) = events.as_mut() {
            set_wake_filter(ev, running.as_ref());
        }
        *stats.lock().unwrap_or_else(PoisonError::into_inner) = running.as_ref().map(snapshot);
    }
    // The agent is going away: every thread back (the applier's drop does it too).
    if let Some(r) = running.as_mut() {
        let actions = r.core.stop();
        apply(r, &mut applier, &actions);
    }
    applier.restore_all();
}

/// Tells the kernel which events wake the thread: per scheduled service, those of requests at
/// least as old as the youngest ranked one ([`Core::wake_up_to`]); without a schedule none (the
/// idle wait drains the ring), and a service that left the schedule goes back to the default.
fn set_wake_filter(ev: &mut RequestEvents, running: Option<&Running>) {
    let mut wanted: HashMap<u32, u64> = ev.filtered().into_iter().map(|s| (s, 0)).collect();
    let by_arrival = running.is_some_and(|r| r.core.wakes_by_arrival());
    match running {
        Some(r) => wanted.extend(r.core.services().map(|s| (s, r.core.wake_up_to(s)))),
        None => wanted.values_mut().for_each(|v| *v = 1),
    }
    for (service, up_to) in wanted {
        if let Err(e) = ev.wake_only_up_to(service, up_to, by_arrival) {
            tracing::debug!("tail scheduler: the kernel's wake-up filter of {service}: {e}");
        }
    }
}

/// Waits until the doorbell or the ring buffer is readable, or `timeout`.
fn wait_readable(bell: &Doorbell, ring: Option<RawFd>, timeout: Duration) {
    let mut fds = [
        libc::pollfd {
            fd: bell.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: ring.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: ppoll on two pollfds we own (a negative fd is ignored) with a valid timeout; µs
    // precision, unlike poll's ms.
    unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &raw const ts, std::ptr::null()) };
}

fn handle(msg: Msg, running: &mut Option<Running>, applier: &mut Applier) {
    match msg {
        Msg::Event(ev) => {
            if let Some(r) = running.as_mut() {
                r.core.observe(&ev);
            }
        }
        Msg::Quit => {}
        Msg::Command(Command::Set {
            cfg,
            priority,
            members,
        }) => {
            applier.set_priority(priority);
            if let Some(r) = running.as_mut() {
                r.core.reconfigure(cfg);
                r.members = members;
            } else {
                let now = monotonic_ns();
                *running = Some(Running {
                    core: Core::new(cfg, now),
                    members,
                    failed: 0,
                    wakeups: 0,
                    cpu_start_ns: thread_cpu_ns(),
                    wall_start_ns: now,
                });
            }
        }
        Msg::Command(Command::Members(m)) => {
            if let Some(r) = running.as_mut() {
                r.members = m;
                let members = &r.members;
                let actions = r
                    .core
                    .drop_processes(|tgid| members.values().any(|m| m.contains(&tgid)));
                apply(r, applier, &actions);
            }
        }
        Msg::Command(Command::Clear(done)) => {
            if let Some(mut r) = running.take() {
                let actions = r.core.stop();
                apply(&mut r, applier, &actions);
            }
            applier.restore_all();
            let _ = done.send(());
        }
    }
}

/// Charges the promoted threads' CPU time (one read of the kernel's per-CPU sums), decides,
/// applies.
fn step(r: &mut Running, applier: &mut Applier) {
    // One clock reading: the sums include the runs going on up to `now`, and are charged as of it.
    let now = monotonic_ns();
    if let Some(totals) = applier.promoted_cpu_ns(now) {
        r.core.charge(now, totals);
    }
    let actions = r.core.decide(now);
    apply(r, applier, &actions);
}

fn apply(r: &mut Running, applier: &mut Applier, actions: &[Action]) {
    for a in actions {
        tracing::trace!(?a, "scheduling action");
        match *a {
            Action::Promote { tid, tgid, rank } => {
                let member = r.members.values().any(|m| m.contains(&tgid));
                if !member || !applier.promote(tid, tgid, r.core.thread_start_ns(tid), rank) {
                    r.failed += 1;
                    r.core.refused(tid);
                }
            }
            Action::Rerank { tid, rank, .. } => {
                if !applier.rerank(tid, rank) {
                    // Gone, most likely: its slot and meter mark go, its request is forgotten.
                    r.failed += 1;
                    applier.demote(tid);
                    r.core.forget(tid);
                }
            }
            Action::Demote { tid, .. } => {
                if !applier.demote(tid) {
                    r.failed += 1;
                }
            }
        }
    }
}

fn snapshot(r: &Running) -> SchedulingStats {
    let c = r.core.counts();
    SchedulingStats {
        requests: c.requests,
        requests_with_age: c.requests_with_age,
        promotions: c.promotions,
        reranks: c.reranks,
        demotions: c.demotions,
        age_capped: c.age_capped,
        share_capped: c.share_capped,
        failed_changes: r.failed,
        // The kernel's count, added by the agent (`Kernel::age_counters`).
        lost_events: 0,
        promoted_now: r.core.promoted().count() as u32,
        wakeups: r.wakeups,
        cpu_us: thread_cpu_ns().saturating_sub(r.cpu_start_ns) / 1_000,
        elapsed_us: monotonic_ns().saturating_sub(r.wall_start_ns) / 1_000,
    }
}

//! The scheduler thread: reads the kernel's request events, asks the core what changes and has
//! the applier make it. It runs at the agent's real-time priority (20, `sys::sched`), above
//! every thread it promotes (1–19), so it can always demote them, and it wakes at least once per
//! share-cap period while anything is promoted.
//!
//! One thread for the agent's lifetime, idle without a schedule. Events and commands arrive on
//! one channel, in order; a [`Command::Clear`] is answered only after every thread got its own
//! policy back, so `DELETE /v1/scheduling` returns when the node is as it was.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender},
    },
    thread::JoinHandle,
    time::Duration,
};

use slowpoke_common::RequestEvent;

use super::{
    apply::Applier,
    core::{Action, Core, CoreConfig},
};
use crate::{
    api::SchedulingStats,
    safety::watchdog::SharedPage,
    sys::{clock::monotonic_ns, sched::make_thread_precise},
};

/// Longest idle wait: bounds how late the thread sees a command when nothing else wakes it.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Shortest gap between two share-cap samples (each reads one `/proc` file per promoted thread).
const CHARGE_EVERY_NS: u64 = 500_000;
/// Wait while something is promoted: the share cap's overshoot is at most about this.
const PROMOTED_WAIT: Duration = Duration::from_millis(1);

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
    Event(RequestEvent),
    Lost(u64),
    Command(Command),
}

/// Where request events go: the kernel's reader (or a test hook) holds one.
#[derive(Clone)]
pub struct EventSink(Sender<Msg>);

impl EventSink {
    pub fn event(&self, ev: RequestEvent) {
        let _ = self.0.send(Msg::Event(ev));
    }
    /// `n` events the kernel could not deliver (its ring buffer was full).
    pub fn lost(&self, n: u64) {
        let _ = self.0.send(Msg::Lost(n));
    }
}

pub struct Scheduler {
    tx: Sender<Msg>,
    stats: Arc<Mutex<Option<SchedulingStats>>>,
    thread: Option<JoinHandle<()>>,
}

impl Scheduler {
    pub fn start(page: Arc<SharedPage>) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(None));
        let published = stats.clone();
        let thread = std::thread::Builder::new()
            .name("tail-scheduler".into())
            .spawn(move || run(&rx, Applier::new(page), &published))?;
        Ok(Scheduler {
            tx,
            stats,
            thread: Some(thread),
        })
    }

    pub fn sink(&self) -> EventSink {
        EventSink(self.tx.clone())
    }

    pub fn command(&self, c: Command) {
        let _ = self.tx.send(Msg::Command(c));
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
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
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
    lost: u64,
    last_charge_ns: u64,
}

fn run(rx: &Receiver<Msg>, mut applier: Applier, stats: &Mutex<Option<SchedulingStats>>) {
    if let Err(why) = make_thread_precise() {
        tracing::warn!("tail scheduler: {why}");
    }
    let mut running: Option<Running> = None;
    loop {
        let now = monotonic_ns();
        let wait = running.as_ref().map_or(IDLE_WAIT, |r| {
            let until = r
                .core
                .next_deadline()
                .map_or(IDLE_WAIT, |d| Duration::from_nanos(d.saturating_sub(now)));
            let promoted = r.core.promoted().next().is_some();
            until
                .min(if promoted { PROMOTED_WAIT } else { IDLE_WAIT })
                .max(Duration::from_micros(50))
        });
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            handle(msg, &mut running, &mut applier);
        }
        if let Some(r) = running.as_mut() {
            step(r, &mut applier);
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

fn handle(msg: Msg, running: &mut Option<Running>, applier: &mut Applier) {
    match msg {
        Msg::Event(ev) => {
            if let Some(r) = running.as_mut() {
                r.core.observe(&ev);
            }
        }
        Msg::Lost(n) => {
            if let Some(r) = running.as_mut() {
                r.lost += n;
            }
        }
        Msg::Command(Command::Set {
            cfg,
            priority,
            members,
        }) => {
            applier.set_priority(priority);
            match running.as_mut() {
                Some(r) => {
                    r.core.reconfigure(cfg);
                    r.members = members;
                }
                None => {
                    *running = Some(Running {
                        core: Core::new(cfg, monotonic_ns()),
                        members,
                        failed: 0,
                        lost: 0,
                        last_charge_ns: 0,
                    });
                }
            }
        }
        Msg::Command(Command::Members(m)) => {
            if let Some(r) = running.as_mut() {
                r.members = m;
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

/// Charges the promoted threads' CPU time, decides, applies.
fn step(r: &mut Running, applier: &mut Applier) {
    let now = monotonic_ns();
    if now.saturating_sub(r.last_charge_ns) >= CHARGE_EVERY_NS {
        r.last_charge_ns = now;
        let promoted: Vec<u32> = r.core.promoted().map(|(t, _)| t).collect();
        for tid in promoted {
            if let Some((running, cpu)) = applier.sample(tid) {
                r.core.charge(tid, now, running, cpu);
            }
        }
    }
    let actions = r.core.decide(monotonic_ns());
    apply(r, applier, &actions);
}

fn apply(r: &mut Running, applier: &mut Applier, actions: &[Action]) {
    for a in actions {
        match *a {
            Action::Promote { tid, tgid } => {
                let member = r.members.values().any(|m| m.contains(&tgid));
                if !member || !applier.promote(tid, tgid) {
                    r.failed += 1;
                    r.core.refused(tid);
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
        demotions: c.demotions,
        age_capped: c.age_capped,
        share_capped: c.share_capped,
        failed_changes: r.failed,
        lost_events: r.lost,
        promoted_now: r.core.promoted().count() as u32,
    }
}

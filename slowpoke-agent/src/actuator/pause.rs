//! One pause: stop every process of a service, sleep the owed time precisely, resume. Also what
//! a pause is recorded as ([`PauseOutcome`], [`PauseRecord`], [`PauseKind`]) and how early its
//! thread wakes to be on time ([`SpinMargin`]).

use std::{collections::VecDeque, sync::atomic::AtomicBool};

use crate::{
    safety::state::StateFile,
    sys::{
        clock::{monotonic_ns, sleep_cancellable, sleep_then_spin},
        procfs,
        signal::{Stop, resume_pid, stop_pid},
    },
};

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
    /// Processes the kernel refused to stop (`EPERM`: the agent lacks `CAP_KILL` for them): not
    /// paused, and not in `pids`. When every member was refused the pause is not taken
    /// (`achieved_ns` 0, `pids` empty): see [`PauseOutcome::refused_entirely`].
    pub refused: Vec<u32>,
}

impl PauseOutcome {
    /// Every member was refused, so no pause was taken.
    pub fn refused_entirely(&self) -> bool {
        self.pids.is_empty() && !self.refused.is_empty()
    }
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

/// How many recent pauses an actuator remembers (`Actuator::recent_pauses`).
pub const RECENT_PAUSES: usize = 512;

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
            refused: Vec::new(),
        };
    }
    let now = monotonic_ns();
    let start_ns = match kernel_stop {
        Some((_, at)) if at <= now && now - at < 1_000_000_000 => at,
        _ => now,
    };
    let mut refused = Vec::new();
    for &p in &targets {
        if Some(p) != kernel_stop.map(|k| k.0)
            && let Stop::Refused(_) = stop_pid(p)
        {
            refused.push(p);
        }
    }
    targets.retain(|p| !refused.contains(p));
    if let Some(hook) = on_stopped {
        hook();
    }
    if targets.is_empty() && !refused.is_empty() {
        // Nothing could be stopped: no pause to time (and none to record as taken). (A service
        // with no running member, e.g. all stopped by someone else, still waits out its pause,
        // as it always did: its debt is paid by time.)
        let _ = state.set(owner, &[]);
        let end_ns = monotonic_ns();
        return PauseOutcome {
            requested_ns: duration_ns,
            achieved_ns: 0,
            start_ns,
            end_ns,
            pids: targets,
            refused,
        };
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
        refused,
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

    /// A service with no member to stop (all already stopped by someone else, or none yet)
    /// still waits out its pause, so its debt is paid by time; only members the kernel refused
    /// make a pause "not taken".
    #[test]
    fn a_pause_with_no_member_to_stop_still_waits_its_time() {
        let dir = std::env::temp_dir().join(format!("slowpoke-pause-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let state = StateFile::new(&dir);
        let out = pause_processes(&[], 2_000_000, None, &state, "t", PauseControl::default());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.achieved_ns >= 2_000_000, "{out:?}");
        assert!(out.refused.is_empty() && !out.refused_entirely(), "{out:?}");
    }
}

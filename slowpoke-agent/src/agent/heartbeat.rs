//! The agent's heartbeat to the kernel: the kernel programs stop nothing unless the agent beat
//! in the last 250 ms (`kernel/safety.rs`), so an agent that is stopped, hung or dead cannot
//! leave the kernel stopping processes nobody will resume.
//!
//! A beater thread beats every [`BEAT_PERIOD`], but only while [`Progress::alive`]: the threads
//! that must keep working for a kernel stop to end well show recent progress. Why these two:
//! - the **resolver** stamps every 10 ms tick of its loop and after every pass. Each pass takes
//!   the `state` and `kernel` locks, so a fresh stamp also says neither is stuck (a deadlock or a
//!   lock held for ever would freeze every pause thread that re-arms through `kernel`);
//! - the **dispatcher** hands the kernel's pause requests to the pause threads; it is idle
//!   between requests, so it marks when it starts one and when it is done: a dispatcher stuck in
//!   the middle of one would leave the process the kernel stopped to nobody.
//!
//! A stopped agent stops its beater with it (SIGSTOP stops every thread). [`STALL_LIMIT`] is
//! far above a normal pass (a few ms, tens under load) and a plan change holding `state` while
//! it flushes (at most 3 s: then the kernel merely stops nothing for a while, which is safe).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    error::AgentError,
    kernel::{Beater, Kernel},
    sys::clock::monotonic_ns,
};

/// How often the beater thread beats (five beats within the kernel's 250 ms maximum age).
pub const BEAT_PERIOD: Duration = Duration::from_millis(50);
/// Progress older than this stops the beats: the agent counts as hung.
pub const STALL_LIMIT: Duration = Duration::from_secs(1);

/// Starts beating the kernel's heartbeat while `progress` is fresh (and says so in `features`).
pub(super) fn start(
    kernel: &Kernel,
    progress: &Arc<Progress>,
    features: &mut BTreeMap<String, String>,
) -> Result<Beater, AgentError> {
    let p = progress.clone();
    let beater = kernel
        .heartbeat()
        .beat_every(BEAT_PERIOD, move || p.alive())
        .map_err(|e| AgentError::Unavailable(format!("the kernel heartbeat: {e}")))?;
    features.insert(
        "kernel_heartbeat".into(),
        format!(
            "on (every {} ms while the agent makes progress)",
            BEAT_PERIOD.as_millis()
        ),
    );
    Ok(beater)
}

/// Progress stamps of the threads the heartbeat vouches for (`CLOCK_MONOTONIC` ns).
#[derive(Debug)]
pub struct Progress {
    resolver_ns: AtomicU64,
    /// When the dispatcher started the request it is handling; 0 when idle.
    dispatch_busy_since_ns: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            resolver_ns: AtomicU64::new(monotonic_ns()),
            dispatch_busy_since_ns: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The resolver loop is turning.
    pub fn resolver_tick(&self) {
        self.resolver_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// The dispatcher took a pause request.
    pub fn dispatch_started(&self) {
        self.dispatch_busy_since_ns
            .store(monotonic_ns().max(1), Ordering::Relaxed);
    }

    /// The dispatcher handed it on and waits for the next.
    pub fn dispatch_done(&self) {
        self.dispatch_busy_since_ns.store(0, Ordering::Relaxed);
    }

    /// Both threads made progress within [`STALL_LIMIT`].
    pub fn alive(&self) -> bool {
        let now = monotonic_ns();
        let limit = STALL_LIMIT.as_nanos() as u64;
        let busy = self.dispatch_busy_since_ns.load(Ordering::Relaxed);
        now.saturating_sub(self.resolver_ns.load(Ordering::Relaxed)) < limit
            && (busy == 0 || now.saturating_sub(busy) < limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_resolver_or_stuck_dispatcher_is_not_alive() {
        let p = Progress::default();
        assert!(p.alive());
        p.dispatch_started();
        assert!(p.alive(), "a request being handled now");
        p.dispatch_done();
        let old = monotonic_ns() - STALL_LIMIT.as_nanos() as u64 - 1;
        p.dispatch_busy_since_ns.store(old, Ordering::Relaxed);
        assert!(!p.alive(), "a dispatcher stuck on one request");
        p.dispatch_done();
        p.resolver_ns.store(old, Ordering::Relaxed);
        assert!(!p.alive(), "a resolver that stopped turning");
        p.resolver_tick();
        assert!(p.alive());
    }
}

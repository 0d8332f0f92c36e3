//! Between the kernel programs and the actuators: the kernel's pause requests routed to the
//! service's actuator, the kernel's debt as each actuator's [`DebtSource`], the hooks that make a
//! synchronized plan pause every service together (and, with `sync_peers`, tell the peer agents),
//! and manual pauses.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, atomic::Ordering},
};

use super::{
    Agent, Service, SharedKernel, lock,
    peer_sync::{PeerSync, Session, parse_peers},
    unknown_service,
};
use crate::{
    actuator::{DebtSource, OnKernelPause, PauseOutcome, PauseRecord, PayHandle},
    api::{Mode, SlowdownPlan},
    error::AgentError,
    kernel::{Kernel, PauseRequest, ServiceId},
    sys::{sched::make_thread_precise, signal::resume_pid},
};

/// The kernel's per-service debt as a [`DebtSource`].
pub(super) struct KernelDebt {
    pub(super) kernel: SharedKernel,
    pub(super) id: ServiceId,
}

impl DebtSource for KernelDebt {
    fn owed_ns(&mut self) -> u64 {
        lock(&self.kernel)
            .as_ref()
            .and_then(|k| k.counters(self.id).ok())
            .map_or(0, |c| c.owed_ns)
    }
    fn rearm(&mut self, settled_ns: u64) {
        if let Some(k) = lock(&self.kernel).as_mut()
            && let Err(e) = k.rearm(self.id, settled_ns)
        {
            tracing::warn!(id = self.id, "re-arming the pause trigger failed: {e}");
        }
    }
}

impl Agent {
    /// Stops the whole service for `ns` now and resumes it, outside any plan, debt accounting and
    /// the safety cap (manual checks and tests; counted in `pause_ns`).
    pub fn pause_now(&self, name: &str, ns: u64) -> Result<PauseOutcome, AgentError> {
        self.check_running()?;
        if ns > 60_000_000_000 {
            return Err(AgentError::BadRequest(
                "a manual pause is at most 60 s".into(),
            ));
        }
        let act = {
            let st = lock(&self.inner.state);
            st.services
                .get(name)
                .map(|s| s.actuator.clone())
                .ok_or_else(|| unknown_service(name))?
        };
        act.pause_now(ns)
            .ok_or_else(|| AgentError::Internal("the pause thread of this service is gone".into()))
    }

    /// The last pauses of a service (oldest first, at most
    /// [`crate::actuator::RECENT_PAUSES`]): kind, stop and resume times. Diagnostics and tests
    /// (e.g. how close synchronized pauses are).
    pub fn recent_pauses(&self, name: &str) -> Result<Vec<PauseRecord>, AgentError> {
        let st = lock(&self.inner.state);
        st.services
            .get(name)
            .map(|s| s.actuator.recent_pauses())
            .ok_or_else(|| unknown_service(name))
    }

    /// TEST ONLY: ends the kernel's pause-request reader as a failing `poll` would (the agent
    /// then stops all pausing). False without kernel programs.
    #[cfg(feature = "test-hooks")]
    pub fn debug_break_event_reader(&self) -> bool {
        lock(&self.inner.kernel)
            .as_ref()
            .map(Kernel::break_event_reader)
            .is_some()
    }

    /// Routes the kernel's pause requests to the service's actuator.
    pub(super) fn dispatch(&self, mut rx: tokio::sync::mpsc::UnboundedReceiver<PauseRequest>) {
        if let Err(why) = make_thread_precise() {
            tracing::debug!("dispatcher: {why}");
        }
        while let Some(req) = rx.blocking_recv() {
            self.inner.progress.dispatch_started();
            let act = self
                .inner
                .by_id
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&req.service)
                .cloned();
            match act {
                Some(a) => a.kernel_request(req),
                None => {
                    if let Some(t) = req.stopped_tgid {
                        resume_pid(t);
                    }
                }
            }
            self.inner.progress.dispatch_done();
            if self.inner.stopping.load(Ordering::SeqCst) {
                break;
            }
        }
        if !self.inner.stopping.load(Ordering::SeqCst) {
            self.pause_requests_lost();
        }
    }

    /// The kernel's pause requests are no longer read (the reader thread died): the kernel would
    /// keep stopping processes that nobody resumes. Stops all pausing for good: the plan is
    /// removed (and later plans with delays refused), everything listed is resumed, and
    /// `/v1/health` says why (status `degraded`).
    fn pause_requests_lost(&self) {
        let why = lock(&self.inner.kernel)
            .as_ref()
            .and_then(Kernel::event_reader_failure)
            .unwrap_or_else(|| "their stream ended".into());
        tracing::error!(
            "the kernel's pause requests are no longer read ({why}): removing every delay and \
             resuming every member; restart the agent to pause again"
        );
        *lock(&self.inner.events_lost) = Some(why);
        if let Err(e) = self.clear_slowdown() {
            tracing::error!("removing the plan after losing the pause requests: {e}");
        }
        self.inner.state_file.resume_listed();
    }
}

/// Synchronized pause plans: each delayed service's quantum pause makes every other delayed
/// service of the plan pay what it owes at once and, with `sync_peers`, tells the peer agents
/// to do the same (and their datagrams make these services pay: the session given to
/// `peer_sync`). Any other plan: no hooks, no session.
pub(super) fn set_sync_hooks(
    services: &BTreeMap<String, Service>,
    plan: &SlowdownPlan,
    peer_sync: Option<&Arc<PeerSync>>,
) {
    let members: Vec<&str> = if plan.synchronized && plan.mode == Mode::Pause {
        plan.services
            .iter()
            .filter(|(n, d)| d.delay_per_visit_ns > 0 && services.contains_key(*n))
            .map(|(n, _)| n.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let handles = |except: Option<&str>| -> Vec<PayHandle> {
        members
            .iter()
            .filter(|&&m| Some(m) != except)
            .filter_map(|m| services.get(*m).map(|s| s.actuator.pay_handle()))
            .collect()
    };
    // Validated with the plan: a bad key or peer cannot get here.
    let session = plan
        .sync_peers
        .as_ref()
        .filter(|_| plan.synchronized && plan.mode == Mode::Pause)
        .and_then(|sp| parse_peers(sp).ok())
        .map(|(key, peers)| Arc::new(Session::new(key, peers, handles(None))));
    if let Some(p) = peer_sync {
        p.set_session(session.clone());
    }
    let network = peer_sync.cloned().zip(session);
    for (name, svc) in services {
        let hook: Option<OnKernelPause> = members.contains(&name.as_str()).then(|| {
            let others = handles(Some(name));
            let network = network.clone();
            let hook: OnKernelPause = Arc::new(move || {
                // The network first: its datagrams take longer to act than a local wake-up.
                if let Some((sync, session)) = &network {
                    sync.broadcast(session);
                }
                for o in &others {
                    o.pay_now();
                }
            });
            hook
        });
        svc.actuator.set_on_kernel_pause(hook);
    }
}

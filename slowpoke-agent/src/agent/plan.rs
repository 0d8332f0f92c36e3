//! Slowdown plans: validated as a whole, then applied (removed delays first, their leftover debt
//! paid; then the new ones). The state file already lists every member of every service
//! (`services.rs`), so a delay can be set at once.

use std::time::{Duration, Instant};

use super::{Agent, State, dispatch::set_sync_hooks, lock, peer_sync::parse_peers};
use crate::{
    api::{self, Mode, SlowdownPlan},
    error::AgentError,
    safety::lease::{ANONYMOUS, Lease, validate_owner},
    sys::{self, signal::resume_pid},
};

/// Upper bound on how long clearing a plan waits for one service's last pause.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

impl Agent {
    /// Replaces the plan in force. The whole plan is validated first: on error nothing changes.
    /// The plan's `owner` (default [`ANONYMOUS`]) gets a lease of `lease_ms` (default the
    /// agent's); while another owner's lease is live the call is refused with 409.
    pub fn set_slowdown(&self, plan: SlowdownPlan) -> Result<(), AgentError> {
        self.check_running()?;
        let owner = plan.owner.clone().unwrap_or_else(|| ANONYMOUS.to_owned());
        validate_owner(&owner)?;
        let limits = self.inner.cfg.lease_limits();
        let granted = limits.grant(plan.lease_ms, limits.default)?;
        let mut st = lock(&self.inner.state);
        self.expire_lapsed(&mut st);
        if let Some(l) = &st.lease {
            l.check_holder(&owner, Instant::now())?;
        }
        self.validate_plan(&st, &plan)?;
        Agent::refuse_delay_of_scheduled(
            &st,
            plan.services
                .iter()
                .filter(|(_, d)| d.delay_per_visit_ns > 0)
                .map(|(n, _)| n.clone()),
        )?;
        let holds = !plan.services.is_empty();
        let plan = SlowdownPlan {
            owner: holds.then(|| owner.clone()),
            lease_ms: holds.then_some(granted.as_millis() as u64),
            lease_remaining_ms: None,
            ..plan
        };
        self.apply_plan(&mut st, plan)?;
        // A plan without services slows nothing: it holds no lease (it blocks nobody).
        st.lease = holds.then(|| Lease::grant(&owner, granted, Instant::now()));
        Ok(())
    }

    /// The plan in force, with its owner and what is left of its lease.
    pub fn slowdown(&self) -> SlowdownPlan {
        let st = lock(&self.inner.state);
        let mut plan = st.plan.clone();
        plan.lease_remaining_ms = st
            .lease
            .as_ref()
            .map(|l| l.remaining(Instant::now()).as_millis() as u64);
        plan
    }

    /// Removes every delay, paying leftover debt first, whoever holds the plan (the agent's own
    /// shutdown, an operator's `DELETE /v1/slowdown?force=true`, a library user). Clients that
    /// share the agent use [`Agent::clear_slowdown_as`].
    pub fn clear_slowdown(&self) -> Result<(), AgentError> {
        let mut st = lock(&self.inner.state);
        self.remove_plan(&mut st)
    }

    /// Removes the plan in force, keeping its mode and quantum.
    pub(super) fn remove_plan(&self, st: &mut State) -> Result<(), AgentError> {
        let plan = SlowdownPlan {
            mode: st.plan.mode,
            quantum_ns: Some(st.quantum_ns),
            synchronized: st.plan.synchronized,
            ..SlowdownPlan::default()
        };
        self.apply_plan(st, plan)
    }

    fn validate_plan(&self, st: &State, plan: &SlowdownPlan) -> Result<(), AgentError> {
        let max = self.inner.cfg.max_delay_per_visit_ns;
        for (name, d) in &plan.services {
            if !st.services.contains_key(name) {
                return Err(AgentError::BadRequest(format!(
                    "unknown service {name:?} in the plan: register it first with PUT /v1/services/{name}"
                )));
            }
            if d.delay_per_visit_ns > max {
                return Err(AgentError::BadRequest(format!(
                    "delay_per_visit_ns of {name:?} is {} ns, above the limit of {max} ns \
                     (--max-delay-ms); lower it",
                    d.delay_per_visit_ns
                )));
            }
        }
        if let Some(q) = plan.quantum_ns
            && !(1_000..=1_000_000_000).contains(&q)
        {
            return Err(AgentError::BadRequest(format!(
                "quantum_ns must be between 1000 (1 µs) and 1000000000 (1 s), got {q}"
            )));
        }
        if let Some(share) = plan.max_stopped_share {
            let ceiling = self.inner.cfg.plan_ceiling();
            if !(share > 0.0 && share <= ceiling) {
                return Err(AgentError::BadRequest(format!(
                    "max_stopped_share {share} asked by the plan is not in (0, {ceiling}]: this \
                     agent lets a plan stop a service at most {ceiling} of the time \
                     (--max-plan-stopped-share); ask for less (a smaller optimization needs \
                     less), or have the agent's operator raise --max-plan-stopped-share (at most 1)"
                )));
            }
        }
        if let Some(sp) = &plan.sync_peers {
            self.validate_sync_peers(plan, sp)?;
        }
        if plan.synchronized && plan.mode != Mode::Pause {
            return Err(AgentError::BadRequest(
                "synchronized applies to pauses only (mode \"pause\"): spin delays are spent in \
                 the visiting thread, there is no debt to pay together; drop \"synchronized\" or \
                 use mode \"pause\""
                    .into(),
            ));
        }
        let wants_delay = plan.services.values().any(|d| d.delay_per_visit_ns > 0);
        if wants_delay && let Some(why) = lock(&self.inner.events_lost).as_ref() {
            return Err(AgentError::Unavailable(format!(
                "the kernel's pause requests are no longer read ({why}), so a delay could stop \
                 processes that nobody resumes; restart the agent"
            )));
        }
        if wants_delay && lock(&self.inner.kernel).is_none() {
            return Err(AgentError::Unavailable(format!(
                "the kernel programs are not loaded ({}): plans need them to count visits",
                self.inner
                    .kernel_error
                    .as_deref()
                    .unwrap_or("unknown reason")
            )));
        }
        Ok(())
    }

    fn validate_sync_peers(
        &self,
        plan: &SlowdownPlan,
        sp: &api::SyncPeers,
    ) -> Result<(), AgentError> {
        if !plan.synchronized || plan.mode != Mode::Pause {
            return Err(AgentError::BadRequest(
                "sync_peers synchronizes pauses between nodes: it needs \"synchronized\": true \
                 and mode \"pause\"; set both, or drop sync_peers"
                    .into(),
            ));
        }
        if self.inner.peer_sync.is_none() {
            return Err(AgentError::BadRequest(
                "this agent has no sync socket, so it can take no peer's datagrams: start it with \
                 --sync-listen IP:PORT (or --listen, which implies port 7172 on its IP), or drop \
                 sync_peers"
                    .into(),
            ));
        }
        parse_peers(sp).map_err(AgentError::BadRequest)?;
        Ok(())
    }

    /// Applies a validated plan: removed delays first (their debt paid), then the new ones.
    pub(super) fn apply_plan(
        &self,
        st: &mut State,
        mut plan: SlowdownPlan,
    ) -> Result<(), AgentError> {
        let quantum = plan.quantum_ns.unwrap_or(self.inner.cfg.quantum_ns);
        plan.quantum_ns = Some(quantum);
        if quantum != st.quantum_ns {
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_quantum(quantum)?;
            }
            st.quantum_ns = quantum;
            for s in st.services.values() {
                s.actuator.set_config(quantum, st.max_stopped_share);
            }
        }
        // The plan's own stopped-share cap while it holds services; the default otherwise (a
        // plan removed, replaced by one without its own, or lapsed).
        let share = if plan.services.is_empty() {
            plan.max_stopped_share = None;
            self.inner.cfg.max_stopped_share
        } else {
            plan.max_stopped_share
                .unwrap_or(self.inner.cfg.max_stopped_share)
        };
        let old = std::mem::take(&mut st.plan.services);
        // Removed (or zeroed, or mode changed): stop the debt, pay what is left, forget the pids.
        for (name, old_d) in &old {
            let keep = plan
                .services
                .get(name)
                .is_some_and(|d| d.delay_per_visit_ns > 0)
                && plan.mode == st.plan.mode;
            let Some(svc) = st.services.get(name) else {
                continue;
            };
            if keep || old_d.delay_per_visit_ns == 0 {
                continue;
            }
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_delay(svc.id, 0, st.plan.mode, false)?;
            }
            svc.actuator.flush(FLUSH_TIMEOUT);
            svc.actuator.set_active(false);
            // A stop the kernel made just before the delay went away has been handled by the
            // flush; resume once more in case.
            for &p in &svc.resolved.pids {
                resume_pid(p);
            }
        }
        // After the removed delays paid their debt under the old cap, before the new ones owe.
        if share.to_bits() != st.max_stopped_share.to_bits() {
            st.max_stopped_share = share;
            for s in st.services.values() {
                s.actuator.set_config(quantum, share);
            }
        }
        for (name, d) in &plan.services {
            let Some(svc) = st.services.get(name) else {
                continue;
            };
            if d.delay_per_visit_ns == 0 {
                continue;
            }
            let pause = plan.mode == Mode::Pause;
            // Without CAP_KILL the agent could not resume another user's process the kernel
            // stopped (deploy finding, docs/security.md): then only the agent stops, and a
            // refused stop is counted, never left behind.
            let in_kernel_stop = pause && sys::caps::can_signal_any();
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_delay(svc.id, d.delay_per_visit_ns, plan.mode, in_kernel_stop)?;
            }
            svc.actuator.set_active(pause);
        }
        set_sync_hooks(&st.services, &plan, self.inner.peer_sync.as_ref());
        // The key stays with the session: `GET /v1/slowdown` shows the peers, not the key.
        if let Some(sp) = &mut plan.sync_peers {
            sp.key.clear();
        }
        if plan.services.is_empty() {
            // Nothing left to hold (removed, or its last service deleted): nobody is blocked.
            plan.owner = None;
            plan.lease_ms = None;
            st.lease = None;
        }
        st.plan = plan;
        tracing::info!(plan = ?st.plan, "slowdown plan in force");
        Ok(())
    }
}

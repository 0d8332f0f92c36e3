//! Slowdown plans: validated as a whole, then applied (removed delays first, their leftover debt
//! paid; then the new ones). The state file already lists every member of every service
//! (`services.rs`), so a delay can be set at once.

use std::{collections::BTreeMap, time::Duration};

use super::{Agent, State, dispatch::set_sync_hooks, lock};
use crate::{
    api::{Mode, SlowdownPlan},
    error::AgentError,
    sys::signal::resume_pid,
};

/// Upper bound on how long clearing a plan waits for one service's last pause.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

impl Agent {
    /// Replaces the plan in force. The whole plan is validated first: on error nothing changes.
    pub fn set_slowdown(&self, plan: SlowdownPlan) -> Result<(), AgentError> {
        self.check_running()?;
        let mut st = lock(&self.inner.state);
        self.validate_plan(&st, &plan)?;
        self.apply_plan(&mut st, plan)
    }

    /// The plan in force.
    pub fn slowdown(&self) -> SlowdownPlan {
        lock(&self.inner.state).plan.clone()
    }

    /// Removes every delay, paying leftover debt first.
    pub fn clear_slowdown(&self) -> Result<(), AgentError> {
        let mut st = lock(&self.inner.state);
        let plan = SlowdownPlan {
            mode: st.plan.mode,
            quantum_ns: Some(st.quantum_ns),
            synchronized: st.plan.synchronized,
            services: BTreeMap::new(),
        };
        self.apply_plan(&mut st, plan)
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
        for (name, d) in &plan.services {
            let Some(svc) = st.services.get(name) else {
                continue;
            };
            if d.delay_per_visit_ns == 0 {
                continue;
            }
            let pause = plan.mode == Mode::Pause;
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_delay(svc.id, d.delay_per_visit_ns, plan.mode, pause)?;
            }
            svc.actuator.set_active(pause);
        }
        set_sync_hooks(&st.services, &plan);
        st.plan = plan;
        tracing::info!(plan = ?st.plan, "slowdown plan in force");
        Ok(())
    }
}

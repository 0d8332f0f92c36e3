//! Owners and leases of slowdown plans (the rules are `safety/lease.rs`): the lease watcher
//! thread that removes a plan (or a schedule, `scheduling/`) whose lease lapsed, renewals, and removal by an owner.
//!
//! Every call that changes the plan first removes a lapsed one ([`Agent::expire_lapsed`]), so a
//! lease that ran out a few ms before the watcher looked never blocks the next client.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use super::{Agent, State, lock};
use crate::{api::SlowdownPlan, error::AgentError, safety::lease::validate_owner};

/// Longest the watcher sleeps between two looks when no lease is about to lapse: bounds how
/// late it sees a shutdown, and costs one lock per period.
const WATCH_PERIOD: Duration = Duration::from_millis(50);

impl Agent {
    /// The lease watcher: sleeps until the lease in force lapses (or [`WATCH_PERIOD`]), then
    /// removes the plan if it did.
    pub(super) fn lease_loop(&self) {
        while !self.inner.stopping.load(Ordering::SeqCst) {
            let wait = {
                let mut st = lock(&self.inner.state);
                self.expire_lapsed(&mut st);
                self.expire_lapsed_schedule(&mut st);
                let now = Instant::now();
                st.lease
                    .iter()
                    .chain(st.schedule.as_ref().map(super::scheduling::Schedule::lease))
                    .map(|l| l.remaining(now))
                    .min()
                    .unwrap_or(WATCH_PERIOD)
            };
            std::thread::sleep(wait.clamp(Duration::from_millis(1), WATCH_PERIOD));
        }
    }

    /// Removes the plan when its lease lapsed: every delay removed, leftover debt paid, every
    /// member resumed (as `DELETE /v1/slowdown` does); counted and logged with its owner.
    pub(super) fn expire_lapsed(&self, st: &mut State) {
        let Some(lease) = st.lease.as_ref().filter(|l| l.lapsed(Instant::now())) else {
            return;
        };
        let owner = lease.owner().to_owned();
        let granted_ms = lease.granted().as_millis();
        st.leases_expired += 1;
        tracing::warn!(
            owner = %owner,
            lease_ms = granted_ms,
            "the slowdown plan's lease lapsed without renewal (its owner stopped renewing: \
             crashed, killed or cut off?); removing the plan and resuming every member"
        );
        if let Err(e) = self.remove_plan(st) {
            tracing::error!(owner = %owner, "removing the plan whose lease lapsed: {e}");
        }
        // Even if removing failed half-way, the lapsed lease must block nobody.
        st.lease = None;
    }

    /// Extends the lease of the plan in force to `lease_ms` from now (default: the length
    /// granted last) without applying the plan again. 404 when no plan holds a lease (it lapsed
    /// or was removed: PUT it again), 409 when another owner holds it.
    pub fn renew_lease(
        &self,
        owner: &str,
        lease_ms: Option<u64>,
    ) -> Result<SlowdownPlan, AgentError> {
        self.check_running()?;
        validate_owner(owner)?;
        {
            let mut st = lock(&self.inner.state);
            self.expire_lapsed(&mut st);
            let limits = self.inner.cfg.lease_limits();
            let Some(lease) = st.lease.as_mut() else {
                return Err(AgentError::NotFound(format!(
                    "no slowdown plan holds a lease to renew for {owner:?}: it lapsed or was \
                     removed (GET /v1/slowdown shows the plan in force); PUT the plan again"
                )));
            };
            let now = Instant::now();
            lease.check_holder(owner, now)?;
            let granted = limits.grant(lease_ms, lease.granted())?;
            lease.renew(granted, now);
            st.plan.lease_ms = Some(granted.as_millis() as u64);
        }
        Ok(self.slowdown())
    }

    /// Removes the plan on behalf of `owner`: refused with 409 while another owner's lease is
    /// live; anyone may remove a plan whose lease lapsed (or that holds none).
    pub fn clear_slowdown_as(&self, owner: &str) -> Result<(), AgentError> {
        validate_owner(owner)?;
        let mut st = lock(&self.inner.state);
        self.expire_lapsed(&mut st);
        if let Some(l) = &st.lease {
            l.check_holder(owner, Instant::now())?;
        }
        self.remove_plan(&mut st)
    }

    /// Who holds the plan in force now (None: no plan, or its lease lapsed).
    pub fn lease_holder(&self) -> Option<String> {
        let st = lock(&self.inner.state);
        st.lease
            .as_ref()
            .filter(|l| !l.lapsed(Instant::now()))
            .map(|l| l.owner().to_owned())
    }

    /// Plans removed because their lease lapsed, since the agent started.
    pub fn leases_expired(&self) -> u64 {
        lock(&self.inner.state).leases_expired
    }
}

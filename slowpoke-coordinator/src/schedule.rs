//! One tail schedule (docs/tail.md, the agents' `/v1/scheduling`) held on every agent of an
//! app: [`ScheduleGuard`].
//!
//! A schedule gives threads real-time priority: one left behind by a coordinator that died
//! would reorder the node's work for nobody. Three layers make that short-lived: the guard's
//! `Drop` removes it on every exit path (errors, cancellation, panics); if the process dies
//! without dropping it, the keeper stops renewing and the agents drop it when the lease lapses;
//! and the agent's guardian restores every thread's policy if the agent itself dies.

use slowpoke_api::agent as api;

use crate::agents::{
    AgentError, SharedAgent, clear_scheduling_everywhere, set_scheduling_everywhere,
};
use crate::lease::{Lease, LeaseKeeper, LeaseLost, Leased};

/// One owner's schedule on every agent of an app, renewed while it is held and removed from
/// every agent when the guard is dropped (or [`ScheduleGuard::clear`]ed).
pub struct ScheduleGuard {
    agents: Vec<SharedAgent>,
    keeper: LeaseKeeper,
}

impl ScheduleGuard {
    pub fn new(agents: &[SharedAgent], lease: Lease) -> ScheduleGuard {
        ScheduleGuard {
            agents: agents.to_vec(),
            keeper: LeaseKeeper::start_for(agents, lease, Leased::Schedule),
        }
    }

    pub fn lease(&self) -> &Lease {
        self.keeper.lease()
    }

    /// Puts `plan` (its owner and lease replaced by the guard's) on every agent and keeps it
    /// alive. On a failure every agent's copy is removed again before the error is returned.
    pub fn put(
        &mut self,
        plan: &api::SchedulingPlan,
    ) -> Result<Vec<api::SchedulingPlan>, AgentError> {
        let lease = self.keeper.lease();
        let wire = api::SchedulingPlan {
            owner: Some(lease.owner().to_owned()),
            lease_ms: Some(lease.millis()),
            lease_remaining_ms: None,
            ..plan.clone()
        };
        self.keeper.installing();
        match set_scheduling_everywhere(&self.agents, &wire) {
            Ok(answers) => Ok(answers),
            Err(e) => {
                for e in self.clear() {
                    tracing::error!("could not remove the schedule: {e}");
                }
                Err(e)
            }
        }
    }

    /// Removes the schedule from every agent; the failures (each agent is tried).
    pub fn clear(&mut self) -> Vec<AgentError> {
        self.keeper.removed();
        clear_scheduling_everywhere(&self.agents, self.keeper.lease().owner())
    }

    /// Why the lease on some agent could not be kept, once it could have lapsed (the schedule
    /// was perhaps not in force for the whole time since).
    pub fn lost(&self) -> Option<LeaseLost> {
        self.keeper.lost()
    }
}

impl Drop for ScheduleGuard {
    fn drop(&mut self) {
        // Cleared even when `put` was never called: a schedule of this owner left by an
        // earlier run that crashed goes too.
        for e in self.clear() {
            tracing::error!("could not remove the schedule: {e}");
        }
    }
}

//! Tail schedules (docs/tail.md, the agent's `/v1/scheduling`) on every agent of an app: what
//! an agent that predates them answers, and the [`ScheduleGuard`] that holds one schedule on
//! every agent under a renewed lease and removes it however its holder ends.
//!
//! A schedule gives threads real-time priority: one left behind by a coordinator that died
//! would reorder the node's work for nobody. Three layers make that short-lived: the guard's
//! `Drop` removes it on every exit path (errors, cancellation, panics); if the process dies
//! without dropping it, the keeper stops renewing and the agents drop it when the lease lapses;
//! and the agent's guardian restores every thread's policy if the agent itself dies.

use slowpoke_api::agent as api;

use super::{AgentError, SharedAgent, on_every_agent};
use crate::lease::{Lease, LeaseKeeper, LeaseLost, Leased};

/// The error an agent without tail scheduling gives, naming what to do about it.
pub(super) fn lacking(agent: &str) -> AgentError {
    AgentError::Rejected {
        agent: agent.to_owned(),
        what: "tail scheduling".into(),
        status: 404,
        message: LACKS.into(),
    }
}

const LACKS: &str = "this agent lacks tail scheduling (no /v1/scheduling endpoint): update \
                     slowpoke-agent on that node to a version with it (docs/tail.md)";

/// True when `e` says the agent has no tail scheduling at all (an older agent).
pub fn lacks_scheduling(e: &AgentError) -> bool {
    matches!(e, AgentError::Rejected { status: 404, message, .. } if message == LACKS)
}

/// An agent's 404 for a route it does not have ("no such endpoint") told as the missing
/// feature; other errors unchanged.
pub(super) fn route_missing(e: AgentError) -> AgentError {
    match e {
        AgentError::Rejected {
            agent,
            status: 404,
            message,
            ..
        } if message.starts_with("no such endpoint") => lacking(&agent),
        e => e,
    }
}

/// A 404 of an agent that has the feature means there is no schedule: `None`.
pub(super) fn no_schedule<T>(e: AgentError) -> Result<Option<T>, AgentError> {
    match e {
        AgentError::Rejected { status: 404, .. } if !lacks_scheduling(&e) => Ok(None),
        e => Err(e),
    }
}

/// Puts `plan` in force on every agent (at the same time); the answers in agent order, or the
/// first failure. A failure leaves the agents that accepted it as they are: the caller removes
/// it ([`clear_scheduling_everywhere`], or the guard).
pub fn set_scheduling_everywhere(
    agents: &[SharedAgent],
    plan: &api::SchedulingPlan,
) -> Result<Vec<api::SchedulingPlan>, AgentError> {
    on_every_agent(agents, |a| a.set_scheduling(plan))
        .into_iter()
        .collect()
}

/// Removes `owner`'s schedule from every agent; returns the failures (never stops early). An
/// agent without tail scheduling holds no schedule: not a failure.
pub fn clear_scheduling_everywhere(agents: &[SharedAgent], owner: &str) -> Vec<AgentError> {
    on_every_agent(agents, |a| a.clear_scheduling(owner))
        .into_iter()
        .filter_map(Result::err)
        .filter(|e| !lacks_scheduling(e))
        .collect()
}

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

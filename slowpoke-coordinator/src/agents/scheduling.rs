//! Tail schedules (docs/tail.md, the agent's `/v1/scheduling`) on every agent of an app: what
//! an agent that predates them answers, and putting or removing one everywhere at once. Holding
//! one under a renewed lease is `crate::schedule::ScheduleGuard`'s.

use slowpoke_api::agent as api;

use super::{AgentError, SharedAgent, on_every_agent};

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

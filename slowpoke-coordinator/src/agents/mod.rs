//! Talking to node agents: one trait, [`AgentClient`], with an HTTP implementation (many nodes,
//! `--agent http://host:7171`, or the node's daemon through its Unix socket,
//! `unix:/run/slowpoke/agent.sock`) and an in-process one (one node, the default). The runner
//! only ever sees the trait, so both take the same code path.
//!
//! Services spanning agents: every service is registered on every agent; the agent(s) where its
//! selector resolves to processes own it. Counters of a service are summed over its owners.
//!
//! Rooms: the trait and its error here; [`HttpAgent`] in `http.rs` (over `unix_http.rs` for the
//! socket), one per node of a cluster description in `cluster.rs`; finding this node's daemon and the token in `local.rs`; registering services in
//! `registration.rs`; tail schedules put on or removed from every agent in `scheduling.rs`; stats snapshots and windows in `stats.rs`, which also times calls to
//! measure an agent's clock offset, estimated in `clock.rs`; the in-process agent in
//! `in_process.rs` (feature `in-process`).

use std::sync::Arc;
use std::time::Duration;

use slowpoke_api::agent as api;

mod clock;
mod cluster;
mod http;
#[cfg(feature = "in-process")]
mod in_process;
mod local;
mod registration;
mod scheduling;
mod stats;
mod unix_http;

pub use clock::{ClockOffset, ClockSample, estimate as estimate_clock_offset};
pub use cluster::{agents_of as cluster_agents_of, cluster_agents};
pub use http::HttpAgent;
#[cfg(feature = "in-process")]
pub use in_process::InProcessAgent;
pub use local::{DEFAULT_AGENT_STATE_DIR, local_daemon, local_socket, read_token};
pub use registration::{
    RegisterError, Registration, register_placed, register_services, unregister_services,
};
pub use scheduling::{clear_scheduling_everywhere, lacks_scheduling, set_scheduling_everywhere};
pub use stats::{
    NodeWindow, StatsSnapshot, StatsWindow, clock_offset, restart_between, snapshot,
    snapshot_within, window,
};
pub use unix_http::socket_path;

/// An agent failed or could not be reached.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error(
        "agent {agent} is unreachable ({detail}): is `slowpoke-agent` running there and is the URL right?"
    )]
    Unreachable { agent: String, detail: String },
    #[error("agent {agent} refused {what}: {message} (HTTP {status})")]
    Rejected {
        agent: String,
        what: String,
        status: u16,
        message: String,
    },
    #[error("agent {agent}: {message}")]
    Failed { agent: String, message: String },
}

/// One node agent, as the coordinator uses it. Mirrors the agent's HTTP API (see
/// `slowpoke_api::agent`); every call is blocking and bounded in time.
pub trait AgentClient: Send + Sync {
    /// How to name this agent to the user: its node's name when a cluster description named
    /// it, else its URL (or `in-process`).
    fn name(&self) -> String;
    /// Where the agent is reached (its URL); the name when it has no other.
    fn url(&self) -> String {
        self.name()
    }
    /// The node this agent runs on, as Kubernetes names it, when known (a cluster
    /// description's node name; the host name for the in-process agent): pod and label
    /// selectors send each agent the pods of its node.
    fn node(&self) -> Option<String> {
        None
    }
    fn health(&self) -> Result<api::Health, AgentError>;
    fn put_service(
        &self,
        name: &str,
        spec: &api::ServiceSpec,
    ) -> Result<api::ServiceInfo, AgentError>;
    fn delete_service(&self, name: &str) -> Result<(), AgentError>;
    fn stats(&self) -> Result<api::Stats, AgentError>;
    /// Installs a plan; its `owner` and `lease_ms` say who holds it and for how long.
    fn set_slowdown(&self, plan: &api::SlowdownPlan) -> Result<(), AgentError>;
    /// Removes the plan on behalf of `owner` (refused while another owner's lease is live).
    fn clear_slowdown(&self, owner: &str) -> Result<(), AgentError>;
    /// Extends `owner`'s lease on the plan in force to `lease` from now, without applying the
    /// plan again (`POST /v1/slowdown/renew`).
    fn renew_lease(&self, owner: &str, lease: Duration) -> Result<(), AgentError>;

    // Tail scheduling (docs/tail.md, `/v1/scheduling`). The defaults answer as an agent that
    // predates it does, so clients without it (test stubs) need nothing.

    /// Puts `plan` in force (`PUT /v1/scheduling`): its `owner` and `lease_ms` say who holds
    /// it and for how long. Answers the schedule as the agent holds it.
    fn set_scheduling(
        &self,
        plan: &api::SchedulingPlan,
    ) -> Result<api::SchedulingPlan, AgentError> {
        let _ = plan;
        Err(scheduling::lacking(&self.name()))
    }
    /// The schedule in force (`GET /v1/scheduling`), `None` without one.
    fn scheduling(&self) -> Result<Option<api::SchedulingPlan>, AgentError> {
        Err(scheduling::lacking(&self.name()))
    }
    /// Removes the schedule on behalf of `owner` (`DELETE /v1/scheduling?owner=`); removing
    /// none is no error.
    fn clear_scheduling(&self, owner: &str) -> Result<(), AgentError> {
        let _ = owner;
        Err(scheduling::lacking(&self.name()))
    }
    /// Extends `owner`'s lease on the schedule to `lease` from now
    /// (`POST /v1/scheduling/renew`).
    fn renew_scheduling(&self, owner: &str, lease: Duration) -> Result<(), AgentError> {
        let _ = (owner, lease);
        Err(scheduling::lacking(&self.name()))
    }
}

/// How messages name an agent: `spk-n2 (http://10.77.0.12:7171)`, or its URL alone.
pub fn label(a: &dyn AgentClient) -> String {
    let (name, url) = (a.name(), a.url());
    if name == url {
        name
    } else {
        format!("{name} ({url})")
    }
}

/// Shared handle to any agent.
pub type SharedAgent = Arc<dyn AgentClient>;

/// Removes `owner`'s slowdown plan from every agent; returns the failures (never stops early).
/// The agents are asked at the same time, so one that stopped answering delays the others'
/// clean-up by nothing and the whole by one call's timeout at most.
pub fn clear_everywhere(agents: &[SharedAgent], owner: &str) -> Vec<AgentError> {
    on_every_agent(agents, |a| a.clear_slowdown(owner))
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// `f` on every agent at the same time (one thread each when there are several), results in
/// agent order.
pub fn on_every_agent<T: Send>(
    agents: &[SharedAgent],
    f: impl Fn(&dyn AgentClient) -> T + Sync,
) -> Vec<T> {
    if agents.len() < 2 {
        return agents.iter().map(|a| f(a.as_ref())).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = agents
            .iter()
            .map(|a| {
                let f = &f;
                s.spawn(move || f(a.as_ref()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

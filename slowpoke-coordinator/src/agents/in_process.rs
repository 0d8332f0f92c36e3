//! The node agent running inside this process (feature `in-process`, on by default): one node,
//! no daemon needed. It is the only part of the coordinator that links the agent crate, and so
//! the kernel programs' build (nightly Rust + bpf-linker); a coordinator built without it talks to
//! agents over HTTP only.

use slowpoke_api::agent as api;

use super::{AgentClient, AgentError};

/// The node agent running inside this process (one node, no daemon needed).
pub struct InProcessAgent {
    agent: slowpoke_agent::Agent,
}

impl InProcessAgent {
    /// Starts an agent in this process (needs root and a tokio runtime).
    pub async fn start(cfg: slowpoke_agent::AgentConfig) -> Result<InProcessAgent, AgentError> {
        slowpoke_agent::Agent::start(cfg)
            .await
            .map(|agent| InProcessAgent { agent })
            .map_err(|e| map_err("starting the in-process agent", &e))
    }

    /// The agent itself (e.g. to shut it down).
    pub fn into_inner(self) -> slowpoke_agent::Agent {
        self.agent
    }

    pub fn agent(&self) -> &slowpoke_agent::Agent {
        &self.agent
    }
}

fn map_err(what: &str, e: &slowpoke_agent::AgentError) -> AgentError {
    AgentError::Rejected {
        agent: "in-process".into(),
        what: what.into(),
        status: e.status().as_u16(),
        message: e.to_string(),
    }
}

impl AgentClient for InProcessAgent {
    fn name(&self) -> String {
        "in-process".into()
    }
    /// This machine: a Kubernetes node is named after its host name unless the kubelet was
    /// told otherwise (`--hostname-override`; then use an agent per node and a cluster file).
    fn node(&self) -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    }
    fn health(&self) -> Result<api::Health, AgentError> {
        Ok(self.agent.health())
    }
    fn put_service(
        &self,
        name: &str,
        spec: &api::ServiceSpec,
    ) -> Result<api::ServiceInfo, AgentError> {
        self.agent
            .put_service(name, spec.clone())
            .map_err(|e| map_err(&format!("registering `{name}`"), &e))
    }
    fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.agent
            .delete_service(name)
            .map_err(|e| map_err(&format!("unregistering `{name}`"), &e))
    }
    fn stats(&self) -> Result<api::Stats, AgentError> {
        Ok(self.agent.stats())
    }
    fn set_slowdown(&self, plan: &api::SlowdownPlan) -> Result<(), AgentError> {
        self.agent
            .set_slowdown(plan.clone())
            .map_err(|e| map_err("the slowdown plan", &e))
    }
    fn clear_slowdown(&self, owner: &str) -> Result<(), AgentError> {
        self.agent
            .clear_slowdown_as(owner)
            .map_err(|e| map_err("clearing the slowdown plan", &e))
    }
    fn renew_lease(&self, owner: &str, lease: std::time::Duration) -> Result<(), AgentError> {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.agent
            .renew_lease(owner, Some(ms))
            .map(drop)
            .map_err(|e| map_err("renewing the plan's lease", &e))
    }
    fn set_scheduling(
        &self,
        plan: &api::SchedulingPlan,
    ) -> Result<api::SchedulingPlan, AgentError> {
        self.agent
            .set_scheduling(plan.clone())
            .map_err(|e| map_err("the tail schedule", &e))
    }
    fn scheduling(&self) -> Result<Option<api::SchedulingPlan>, AgentError> {
        let plan = self.agent.scheduling();
        Ok((!plan.services.is_empty()).then_some(plan))
    }
    fn clear_scheduling(&self, owner: &str) -> Result<(), AgentError> {
        self.agent
            .clear_scheduling_as(owner)
            .map_err(|e| map_err("removing the tail schedule", &e))
    }
    fn renew_scheduling(&self, owner: &str, lease: std::time::Duration) -> Result<(), AgentError> {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.agent
            .renew_scheduling(owner, Some(ms))
            .map(drop)
            .map_err(|e| map_err("renewing the tail schedule's lease", &e))
    }
}

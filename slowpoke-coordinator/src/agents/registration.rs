//! Registering the app's services on every agent, and where each one resolved.

use std::collections::BTreeMap;

use slowpoke_api::agent as api;

use super::{AgentError, SharedAgent};

/// Where each service resolved after registration on every agent.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// Service → indexes (into the agent list) of the agents where it resolved to processes.
    pub owners: BTreeMap<String, Vec<usize>>,
    /// Service → its listening ports, over all owners.
    pub listen_ports: BTreeMap<String, Vec<u16>>,
}

impl Registration {
    /// The service that listens on `port`, if exactly one does.
    pub fn owner_of_port(&self, port: u16) -> Option<&str> {
        let mut it = self
            .listen_ports
            .iter()
            .filter(|(_, ports)| ports.contains(&port))
            .map(|(n, _)| n.as_str());
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }
}

/// Registers every service on every agent. With more than one agent, a service may live on
/// some nodes only: it is registered with `may_be_absent`, so that an agent where it has no
/// process answers with no members instead of refusing it. A service that resolves to
/// processes on no agent is an error naming it (after unregistering what was registered).
pub fn register_services(
    agents: &[SharedAgent],
    services: &BTreeMap<String, api::ServiceSpec>,
) -> Result<Registration, RegisterError> {
    let mut reg = Registration::default();
    let spread = agents.len() > 1;
    for (name, spec) in services {
        let mut owners = Vec::new();
        let mut ports = Vec::new();
        let spec = api::ServiceSpec {
            may_be_absent: spec.may_be_absent || spread,
            ..spec.clone()
        };
        for (i, agent) in agents.iter().enumerate() {
            let info = agent.put_service(name, &spec).map_err(|e| {
                unregister_services(agents, &services.keys().cloned().collect::<Vec<_>>());
                RegisterError::Agent(e)
            })?;
            if !info.pids.is_empty() {
                owners.push(i);
                ports.extend(info.listen_ports.iter().copied());
            }
        }
        ports.sort_unstable();
        ports.dedup();
        reg.owners.insert(name.clone(), owners);
        reg.listen_ports.insert(name.clone(), ports);
    }
    let unresolved: Vec<String> = reg
        .owners
        .iter()
        .filter(|(_, o)| o.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    if !unresolved.is_empty() {
        unregister_services(agents, &services.keys().cloned().collect::<Vec<_>>());
        let agent_names: Vec<String> = agents.iter().map(|a| a.name()).collect();
        return Err(RegisterError::Unresolved {
            services: unresolved,
            agents: agent_names.join(", "),
        });
    }
    Ok(reg)
}

/// Best-effort removal of the services from every agent, the agents at the same time; an agent
/// that does not answer is not asked again (one call's timeout per dead agent, not one per
/// service).
pub fn unregister_services(agents: &[SharedAgent], names: &[String]) {
    super::on_every_agent(agents, |agent| {
        for name in names {
            match agent.delete_service(name) {
                Ok(()) => {}
                Err(e @ AgentError::Unreachable { .. }) => {
                    tracing::debug!("unregistering {name}: {e}");
                    return;
                }
                Err(e) => tracing::debug!("unregistering {name}: {e}"),
            }
        }
    });
}

/// Registration failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(
        "no agent can resolve {} to processes (agents asked: {agents}): check the selector (is the process running, on that port, on a node with an agent?)",
        services.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    )]
    Unresolved {
        services: Vec<String>,
        agents: String,
    },
}

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
    /// The `host:port` endpoints where registered services listen as other nodes reach them:
    /// each listening port at the host of every agent that owns the service (its URL's host).
    /// A call from one node to a registered service on another is not an unregistered
    /// dependency, though the calling node's agent cannot know that port.
    pub fn served_endpoints(&self, agents: &[super::SharedAgent]) -> Vec<String> {
        let mut out = Vec::new();
        for (service, owners) in &self.owners {
            let ports = self
                .listen_ports
                .get(service)
                .map_or(&[][..], Vec::as_slice);
            for &i in owners {
                let Some(host) = agents.get(i).and_then(|a| url_host(&a.url())) else {
                    continue;
                };
                out.extend(ports.iter().map(|p| format!("{host}:{p}")));
            }
        }
        out
    }

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
    register_placed(agents, services, |_, spec, _| spec.clone())
}

/// [`register_services`], each agent asked for what `spec_for(name, spec, agent index)`
/// makes of a service's spec (a pod or label selector: that agent's node's pods, see
/// `kubernetes::Placement::spec_for`).
pub fn register_placed(
    agents: &[SharedAgent],
    services: &BTreeMap<String, api::ServiceSpec>,
    spec_for: impl Fn(&str, &api::ServiceSpec, usize) -> api::ServiceSpec,
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
            let spec = spec_for(name, &spec, i);
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

/// The host part of `http://HOST:PORT/...` (None for other URLs, e.g. `unix:` sockets).
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h,
        None => authority,
    };
    (!host.is_empty()).then(|| host.to_owned())
}

#[cfg(test)]
mod served_tests {
    #[test]
    fn the_host_of_an_agent_url() {
        assert_eq!(
            super::url_host("http://10.77.0.11:7171").as_deref(),
            Some("10.77.0.11")
        );
        assert_eq!(
            super::url_host("https://node-a/x").as_deref(),
            Some("node-a")
        );
        assert_eq!(super::url_host("unix:/run/slowpoke/agent.sock"), None);
    }
}

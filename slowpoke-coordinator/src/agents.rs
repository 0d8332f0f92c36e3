//! Talking to node agents: one trait, [`AgentClient`], with an HTTP implementation (many nodes,
//! `--agent http://host:7171`, or the node's daemon through its Unix socket,
//! `unix:/run/slowpoke/agent.sock`) and an in-process one (one node, the default). The runner
//! only ever sees the trait, so both take the same code path.
//!
//! Services spanning agents: every service is registered on every agent; the agent(s) where its
//! selector resolves to processes own it. Counters of a service are summed over its owners.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use slowpoke_api::agent as api;

use crate::model::ServiceSample;

mod unix_http;

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
    /// How to name this agent to the user (its URL, or `in-process`).
    fn name(&self) -> String;
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
}

/// Shared handle to any agent.
pub type SharedAgent = Arc<dyn AgentClient>;

/// An agent reached over its HTTP API: TCP (`--agent http://host:7171`, with the bearer token)
/// or the node daemon's Unix socket (`unix:/run/slowpoke/agent.sock`, never with a token).
pub struct HttpAgent {
    base: String,
    token: Option<String>,
    transport: Transport,
}

enum Transport {
    Tcp(ureq::Agent),
    Unix(std::path::PathBuf),
}

/// How long one call to an agent may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpAgent {
    /// `base` is e.g. `http://10.0.0.2:7171` or `unix:/run/slowpoke/agent.sock`; `token` is sent
    /// as a bearer token over TCP (agents listening on TCP require it on every call). Over the
    /// socket it is never sent: the socket's owner and mode are the authentication there.
    pub fn new(base: &str, token: Option<String>) -> HttpAgent {
        if let Some(path) = socket_path(base) {
            return HttpAgent {
                base: base.to_owned(),
                token: None,
                transport: Transport::Unix(path),
            };
        }
        HttpAgent {
            base: base.trim_end_matches('/').to_owned(),
            token: slowpoke_api::auth::normalize(token),
            transport: Transport::Tcp(
                ureq::AgentBuilder::new()
                    .timeout_connect(Duration::from_secs(3))
                    .timeout(CALL_TIMEOUT)
                    .build(),
            ),
        }
    }

    /// One exchange within `timeout`: `(status, body)`, or `Err` when no answer came
    /// (unreachable).
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(u16, String), AgentError> {
        let unreachable = |detail: String| AgentError::Unreachable {
            agent: self.base.clone(),
            detail,
        };
        let http = match &self.transport {
            Transport::Unix(socket) => {
                return unix_http::request(socket, method, path, body, timeout)
                    .map_err(|e| unreachable(e.to_string()));
            }
            Transport::Tcp(http) => http,
        };
        let mut req = http
            .request(method, &format!("{}{path}", self.base))
            .timeout(timeout);
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_bytes(b),
            None => req.call(),
        };
        match res {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().map_err(|e| self.failed(&e))?;
                Ok((status, text))
            }
            Err(ureq::Error::Status(status, resp)) => {
                Ok((status, resp.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Transport(t)) => Err(unreachable(t.to_string())),
        }
    }

    fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<R>, AgentError> {
        self.call_within(method, path, body, CALL_TIMEOUT)
    }

    /// [`Self::call`] answered within `timeout` or given up (unreachable).
    fn call_within<B: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Option<R>, AgentError> {
        let what = format!("{method} {path}");
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| self.failed(&e))?;
        let (status, text) = self.exchange(method, path, body.as_deref(), timeout)?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<api::ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or(text);
            return Err(AgentError::Rejected {
                agent: self.base.clone(),
                what,
                status,
                message,
            });
        }
        if status == 204 || text.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| AgentError::Failed {
                agent: self.base.clone(),
                message: format!("unexpected answer to {what}: {e}"),
            })
    }

    fn failed(&self, e: &dyn std::fmt::Display) -> AgentError {
        AgentError::Failed {
            agent: self.base.clone(),
            message: e.to_string(),
        }
    }

    fn expect<R>(&self, r: Option<R>, what: &str) -> Result<R, AgentError> {
        r.ok_or_else(|| AgentError::Failed {
            agent: self.base.clone(),
            message: format!("empty answer to {what}"),
        })
    }
}

impl AgentClient for HttpAgent {
    fn name(&self) -> String {
        self.base.clone()
    }

    fn health(&self) -> Result<api::Health, AgentError> {
        let r = self.call::<(), _>("GET", "/v1/health", None)?;
        self.expect(r, "GET /v1/health")
    }

    fn put_service(
        &self,
        name: &str,
        spec: &api::ServiceSpec,
    ) -> Result<api::ServiceInfo, AgentError> {
        let path = format!("/v1/services/{name}");
        let r = self.call("PUT", &path, Some(spec))?;
        self.expect(r, &path)
    }

    fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.call::<(), serde_json::Value>("DELETE", &format!("/v1/services/{name}"), None)
            .map(drop)
    }

    fn stats(&self) -> Result<api::Stats, AgentError> {
        let r = self.call::<(), _>("GET", "/v1/stats", None)?;
        self.expect(r, "GET /v1/stats")
    }

    fn set_slowdown(&self, plan: &api::SlowdownPlan) -> Result<(), AgentError> {
        self.call::<_, serde_json::Value>("PUT", "/v1/slowdown", Some(plan))
            .map(drop)
    }

    fn clear_slowdown(&self, owner: &str) -> Result<(), AgentError> {
        // Owners are `[A-Za-z0-9._:@-]` (crate::lease::Lease): nothing to escape in a query.
        let path = format!("/v1/slowdown?owner={owner}");
        self.call::<(), serde_json::Value>("DELETE", &path, None)
            .map(drop)
    }

    fn renew_lease(&self, owner: &str, lease: Duration) -> Result<(), AgentError> {
        let body = api::LeaseRenewal {
            owner: owner.to_owned(),
            lease_ms: Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
        };
        // Answered within a third of the lease or given up: the keeper tries again then, and a
        // hung agent must not hold up the renewals of the others.
        self.call_within::<_, serde_json::Value>(
            "POST",
            "/v1/slowdown/renew",
            Some(&body),
            (lease / 3).max(Duration::from_millis(100)),
        )
        .map(drop)
    }
}

/// Reads the agents' bearer token: the file when given (an unreadable or empty file is an
/// error), else `$SLOWPOKE_AGENT_TOKEN` ([`slowpoke_api::auth::token_from_file_or_env`]).
pub fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    Ok(slowpoke_api::auth::token_from_file_or_env(
        file,
        slowpoke_api::auth::AGENT_TOKEN_ENV,
    )?)
}

/// The state directory of a node's agent daemon unless it was given another
/// (`slowpoke-agent --state-dir`); its socket is `agent.sock` in there.
pub const DEFAULT_AGENT_STATE_DIR: &str = "/run/slowpoke";

/// The socket of the agent daemon on this node: `STATE_DIR/agent.sock`.
pub fn local_socket(state_dir: Option<&std::path::Path>) -> std::path::PathBuf {
    state_dir
        .unwrap_or(std::path::Path::new(DEFAULT_AGENT_STATE_DIR))
        .join("agent.sock")
}

/// The agent daemon on this node, if its socket exists and can be trusted: a socket file owned
/// by root (or by this user) that others may not write to. Anything else at that path is an
/// error, not something to talk to: whoever made it could answer as the agent and steer the
/// experiment. (No secret is at stake: the socket never gets a token.) A TCP port on this node
/// is never probed: anybody may listen there, and it would get the token.
pub fn local_daemon(state_dir: Option<&std::path::Path>) -> anyhow::Result<Option<HttpAgent>> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let path = local_socket(state_dir);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(None);
    };
    // SAFETY: a plain getter.
    let me = unsafe { libc::geteuid() };
    let problem = if !meta.file_type().is_socket() {
        Some("it is not a socket".to_owned())
    } else if meta.uid() != 0 && meta.uid() != me {
        Some(format!(
            "it belongs to uid {}, not root: an agent's socket is root's",
            meta.uid()
        ))
    } else if meta.mode() & 0o002 != 0 {
        Some(format!(
            "its mode {:o} lets anyone write to it",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        anyhow::bail!(
            "refusing the agent socket {}: {problem}; remove it (or fix the agent's --socket), or name an agent with --agent",
            path.display()
        );
    }
    Ok(Some(HttpAgent::new(
        &format!("unix:{}", path.display()),
        None,
    )))
}

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

/// Registers every service on every agent. A service that resolves to processes on no agent is
/// an error naming it (after unregistering what was registered).
pub fn register_services(
    agents: &[SharedAgent],
    services: &BTreeMap<String, api::ServiceSpec>,
) -> Result<Registration, RegisterError> {
    let mut reg = Registration::default();
    for (name, spec) in services {
        let mut owners = Vec::new();
        let mut ports = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            let info = agent.put_service(name, spec).map_err(|e| {
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

/// Best-effort removal of the services from every agent.
pub fn unregister_services(agents: &[SharedAgent], names: &[String]) {
    for agent in agents {
        for name in names {
            if let Err(e) = agent.delete_service(name) {
                tracing::debug!("unregistering {name}: {e}");
            }
        }
    }
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

/// One snapshot of every agent's stats, in agent order.
#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub agents: Vec<api::Stats>,
}

/// Takes a snapshot of every agent.
pub fn snapshot(agents: &[SharedAgent]) -> Result<StatsSnapshot, AgentError> {
    agents
        .iter()
        .map(|a| a.stats())
        .collect::<Result<Vec<_>, _>>()
        .map(|agents| StatsSnapshot { agents })
}

/// What happened between two snapshots, per service summed over agents.
#[derive(Debug, Clone, Default)]
pub struct StatsWindow {
    /// Visits and CPU per second of the window; cores as now.
    pub samples: BTreeMap<String, ServiceSample>,
    /// Pause debt owed (ns) during the window, per service.
    pub owed_ns: BTreeMap<String, u64>,
    /// Debt the agents' safety cap dropped (ns) during the window, per service.
    pub dropped_ns: BTreeMap<String, u64>,
    /// Achieved pause time (ns) during the window, per service.
    pub pause_ns: BTreeMap<String, u64>,
    /// Services whose visits are approximate (HTTP/2, pipelining).
    pub approximate: Vec<String>,
    /// Agents' warnings, prefixed with the service.
    pub warnings: Vec<String>,
    /// Unregistered dependencies the agents saw (`from -> addr:port (comm)`).
    pub unregistered: Vec<String>,
    /// Share of each agent's node CPUs that was busy (agents that report `node`), in order.
    pub node_busy: Vec<f64>,
    /// The same nodes with their CPUs and the visits per second each served per service.
    pub nodes: Vec<NodeWindow>,
}

/// One agent's node during a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeWindow {
    pub cpus: f64,
    /// Share of the node's CPUs that was busy (0..1).
    pub busy_share: f64,
    /// Visits per second of each service on this node.
    pub visits: BTreeMap<String, f64>,
    /// CPUs the registered services on this node used (CPU-seconds per second).
    pub app_cores: f64,
}

/// Differences of two snapshots. Each agent's counters are divided by its own clock's window
/// (`timestamp_ns`), so agents sampled a few ms apart still give consistent rates.
pub fn window(before: &StatsSnapshot, after: &StatsSnapshot) -> StatsWindow {
    let mut w = StatsWindow::default();
    for (b, a) in before.agents.iter().zip(&after.agents) {
        let secs = a.timestamp_ns.saturating_sub(b.timestamp_ns) as f64 / 1e9;
        // This agent's own rates, for its node's record below.
        let mut node_visits = BTreeMap::new();
        let mut node_cpu_ns = 0.0;
        for (name, sa) in &a.services {
            let sb = b.services.get(name).cloned().unwrap_or_default();
            let dv = sa.visits.saturating_sub(sb.visits) as f64;
            let dc = sa.cpu_ns.saturating_sub(sb.cpu_ns) as f64;
            let dw = sa.wait_ns.saturating_sub(sb.wait_ns) as f64;
            let (visits, cpu_ns, wait_ns) = if secs > 0.0 {
                (dv / secs, dc / secs, dw / secs)
            } else {
                (0.0, 0.0, 0.0)
            };
            node_visits.insert(name.clone(), visits);
            node_cpu_ns += cpu_ns;
            let cores = if sa.pids.is_empty() { 0.0 } else { sa.cores };
            let sample = ServiceSample {
                visits,
                cpu_ns,
                wait_ns,
                cores,
            };
            let e = w.samples.entry(name.clone()).or_default();
            *e = e.merged(sample);
            *w.owed_ns.entry(name.clone()).or_default() += sa.owed_ns.saturating_sub(sb.owed_ns);
            *w.dropped_ns.entry(name.clone()).or_default() +=
                sa.dropped_ns.saturating_sub(sb.dropped_ns);
            *w.pause_ns.entry(name.clone()).or_default() += sa.pause_ns.saturating_sub(sb.pause_ns);
            if sa.visits_approximate && !w.approximate.contains(name) {
                w.approximate.push(name.clone());
            }
            for warn in &sa.warnings {
                let line = format!("{name}: {warn}");
                if !w.warnings.contains(&line) {
                    w.warnings.push(line);
                }
            }
        }
        if let (Some(nb), Some(na)) = (&b.node, &a.node) {
            let total = na.cpu_total_ns.saturating_sub(nb.cpu_total_ns);
            if total > 0 {
                let busy = na.cpu_busy_ns.saturating_sub(nb.cpu_busy_ns);
                let busy_share = busy as f64 / total as f64;
                w.node_busy.push(busy_share);
                w.nodes.push(NodeWindow {
                    cpus: f64::from(na.cpus),
                    busy_share,
                    visits: node_visits,
                    app_cores: node_cpu_ns / 1e9,
                });
            }
        }
        for d in &a.unregistered_dependencies {
            // A loopback endpoint nobody listens on is a client's ephemeral port (the other end
            // of an accepted connection), not a dependency.
            let loopback = d
                .addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            if loopback && d.pid.is_none() {
                continue;
            }
            let line = match &d.comm {
                Some(c) => format!("{} -> {}:{} ({c})", d.from, d.addr, d.port),
                None => format!("{} -> {}:{}", d.from, d.addr, d.port),
            };
            if !w.unregistered.contains(&line) {
                w.unregistered.push(line);
            }
        }
    }
    w
}

/// Removes `owner`'s slowdown plan from every agent; returns the failures (never stops early).
pub fn clear_everywhere(agents: &[SharedAgent], owner: &str) -> Vec<AgentError> {
    agents
        .iter()
        .filter_map(|a| a.clear_slowdown(owner).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_reports_the_busy_share_of_each_node() {
        let stats = |busy: u64, total: u64| api::Stats {
            timestamp_ns: total,
            node: Some(api::NodeStats {
                cpus: 2,
                cpu_busy_ns: busy,
                cpu_total_ns: total,
            }),
            ..Default::default()
        };
        let before = StatsSnapshot {
            agents: vec![stats(1_000, 2_000), api::Stats::default()],
        };
        let after = StatsSnapshot {
            agents: vec![stats(1_900, 3_000), api::Stats::default()],
        };
        // 900 of 1000 ns busy on the first node; the second reports no node counters.
        let w = window(&before, &after);
        assert_eq!(w.node_busy, vec![0.9]);
    }

    #[test]
    fn window_sums_replicas_and_uses_each_agents_clock() {
        let stats = |ts: u64, visits: u64, cpu: u64, pids: Vec<u32>| api::Stats {
            timestamp_ns: ts,
            services: [(
                "cart".to_owned(),
                api::ServiceStats {
                    visits,
                    cpu_ns: cpu,
                    cores: 2.0,
                    pids,
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        };
        let before = StatsSnapshot {
            agents: vec![stats(0, 0, 0, vec![1]), stats(10, 0, 0, vec![])],
        };
        let after = StatsSnapshot {
            agents: vec![
                stats(2_000_000_000, 2000, 400_000_000, vec![1]),
                stats(1_000_000_010, 500, 0, vec![]),
            ],
        };
        let w = window(&before, &after);
        let s = w.samples["cart"];
        // 1000/s on agent 0 plus 500/s on agent 1; cores only where the service has processes.
        assert!((s.visits - 1500.0).abs() < 1e-9);
        assert!((s.cpu_ns - 200_000_000.0).abs() < 1e-6);
        assert!((s.cores - 2.0).abs() < 1e-12);
    }
}

//! [`HttpAgent`]: an agent reached over its HTTP API, on TCP with the bearer token or through
//! the node daemon's Unix socket ([`super::unix_http`]) without one.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use slowpoke_api::agent as api;

use super::scheduling::{no_schedule, route_missing};
use super::unix_http::{self, socket_path};
use super::{AgentClient, AgentError};

/// An agent reached over its HTTP API: TCP (`--agent http://host:7171`, with the bearer token)
/// or the node daemon's Unix socket (`unix:/run/slowpoke/agent.sock`, never with a token).
pub struct HttpAgent {
    base: String,
    token: Option<String>,
    transport: Transport,
    /// The node this agent runs on, from a cluster description: what messages call it.
    node: Option<String>,
}

enum Transport {
    Tcp(ureq::Agent),
    Unix(std::path::PathBuf),
}

/// How long one call to an agent may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a clean-up call (removing a plan, unregistering a service) may take: an agent that
/// stopped answering must not hold up the clean-up of the others, and its plan lapses with its
/// lease anyway.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

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
                node: None,
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
            node: None,
        }
    }

    /// Names the agent by its node (a cluster description's node name): `name()` is then the
    /// node, and errors say `node (URL)`.
    #[must_use]
    pub fn on_node(mut self, node: &str) -> HttpAgent {
        self.node = Some(node.to_owned());
        self
    }

    /// The bearer token this agent is sent (tests of the cluster description).
    #[cfg(test)]
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How errors name the agent: `spk-n2 (http://10.77.0.12:7171)`, or the URL alone.
    fn label(&self) -> String {
        match &self.node {
            Some(n) => format!("{n} ({})", self.base),
            None => self.base.clone(),
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
            agent: self.label(),
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
                agent: self.label(),
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
                agent: self.label(),
                message: format!("unexpected answer to {what}: {e}"),
            })
    }

    fn failed(&self, e: &dyn std::fmt::Display) -> AgentError {
        AgentError::Failed {
            agent: self.label(),
            message: e.to_string(),
        }
    }

    fn expect<R>(&self, r: Option<R>, what: &str) -> Result<R, AgentError> {
        r.ok_or_else(|| AgentError::Failed {
            agent: self.label(),
            message: format!("empty answer to {what}"),
        })
    }
}

impl AgentClient for HttpAgent {
    fn node(&self) -> Option<String> {
        self.node.clone()
    }
    fn name(&self) -> String {
        self.node.clone().unwrap_or_else(|| self.base.clone())
    }

    fn url(&self) -> String {
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
        let path = format!("/v1/services/{name}");
        self.call_within::<(), serde_json::Value>("DELETE", &path, None, CLEANUP_TIMEOUT)
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
        self.call_within::<(), serde_json::Value>("DELETE", &path, None, CLEANUP_TIMEOUT)
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

    fn set_scheduling(
        &self,
        plan: &api::SchedulingPlan,
    ) -> Result<api::SchedulingPlan, AgentError> {
        let r = self
            .call("PUT", "/v1/scheduling", Some(plan))
            .map_err(route_missing)?;
        // An answer without a body (204) means the schedule is the one sent.
        Ok(r.unwrap_or_else(|| plan.clone()))
    }

    fn scheduling(&self) -> Result<Option<api::SchedulingPlan>, AgentError> {
        match self.call::<(), api::SchedulingPlan>("GET", "/v1/scheduling", None) {
            Ok(plan) => Ok(plan.filter(|p| !p.services.is_empty())),
            Err(e) => no_schedule(route_missing(e)),
        }
    }

    fn clear_scheduling(&self, owner: &str) -> Result<(), AgentError> {
        // Owners are `[A-Za-z0-9._:@-]` (crate::lease::Lease): nothing to escape in a query.
        let path = format!("/v1/scheduling?owner={owner}");
        match self.call_within::<(), serde_json::Value>("DELETE", &path, None, CLEANUP_TIMEOUT) {
            Ok(_) => Ok(()),
            Err(e) => no_schedule::<()>(route_missing(e)).map(drop),
        }
    }

    fn renew_scheduling(&self, owner: &str, lease: Duration) -> Result<(), AgentError> {
        let body = api::LeaseRenewal {
            owner: owner.to_owned(),
            lease_ms: Some(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)),
        };
        // As for plans: answered within a third of the lease or given up.
        self.call_within::<_, serde_json::Value>(
            "POST",
            "/v1/scheduling/renew",
            Some(&body),
            (lease / 3).max(Duration::from_millis(100)),
        )
        .map(drop)
        .map_err(route_missing)
    }
}

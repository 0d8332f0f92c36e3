//! The HTTP API (axum 0.8): thin handlers over [`Agent`]; docs/api.md describes every endpoint.
//!
//! - `access.rs`: who may call (the socket's peer credentials, TCP's token and `Host`);
//! - `guard.rs`: the middleware every request passes (admission, audit line) and the body rules
//!   of the routes (JSON content type, body size); `audit.rs`: the audit log;
//! - `listen.rs`: the Unix socket and the TCP listener, served with the caller attached;
//! - `metrics.rs`: `GET /metrics`.
//!
//! Bodies are parsed here (not with axum's `Json` extractor) so every malformed body gets the
//! agent's own `{"error": ...}` answer with status 400.

mod access;
mod audit;
mod guard;
mod listen;
mod metrics;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;

use access::Disclosure;
pub use access::{Auth, Caller};
pub use guard::MAX_BODY_BYTES;
pub use listen::{SOCKET_FILE, SocketFile, bind_socket, serve_tcp, serve_unix};

use crate::{
    actuator::RECENT_PAUSES,
    agent::Agent,
    api::{LeaseRenewal, SchedulingPlan, ServiceSpec, SlowdownPlan},
    error::AgentError,
    safety::lease::ANONYMOUS,
};

impl Agent {
    /// The HTTP API of this agent (see docs/api.md).
    pub fn router(&self, auth: Auth) -> Router {
        router(self.clone(), auth)
    }
}

/// The agent's routes.
pub fn router(agent: Agent, auth: Auth) -> Router {
    let r = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/services", get(list_services))
        .route(
            "/v1/services/{name}",
            get(get_service).put(put_service).delete(delete_service),
        )
        .route("/v1/stats", get(stats))
        .route(
            "/v1/slowdown",
            get(get_slowdown).put(put_slowdown).delete(delete_slowdown),
        )
        .route("/v1/slowdown/renew", post(renew_slowdown))
        .route(
            "/v1/scheduling",
            get(get_scheduling)
                .put(put_scheduling)
                .delete(delete_scheduling),
        )
        .route("/v1/scheduling/renew", post(renew_scheduling))
        .route("/metrics", get(prometheus))
        .route("/v1/openapi.json", get(openapi));
    #[cfg(feature = "test-hooks")]
    let r = debug::routes(r, &agent);
    r.route_layer(middleware::from_fn(guard::body_rules))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(auth, guard::guard))
        .with_state(agent)
}

async fn not_found() -> AgentError {
    AgentError::NotFound(
        "no such endpoint; see docs/api.md or GET /v1/openapi.json (/v1/health, /v1/services, /v1/stats, /v1/slowdown, /v1/slowdown/renew, /v1/scheduling, /v1/scheduling/renew, /metrics)".into(),
    )
}

async fn method_not_allowed(method: axum::http::Method) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(crate::api::ErrorBody {
            error: format!(
                "this endpoint has no {method}; see docs/api.md or GET /v1/openapi.json for its methods"
            ),
        }),
    )
        .into_response()
}

fn parse<T: DeserializeOwned>(body: &[u8], example: &str) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|e| {
        AgentError::BadRequest(format!("invalid JSON body: {e}; expected e.g. {example}"))
    })
}

/// Runs a possibly blocking agent call (a plan change may wait for a last pause) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Internal(format!("handler failed: {e}")))?
}

/// The API document (`OpenAPI` 3.1) of the agent, generated from the wire types (docs/api.md).
async fn openapi() -> impl IntoResponse {
    Json(slowpoke_api::openapi::agent())
}

/// The full health to callers the agent admitted fully; the status only to a TCP caller
/// without the token (a probe), or when the guard did not say (fail closed).
async fn health(
    State(a): State<Agent>,
    disclosure: Option<Extension<Disclosure>>,
) -> impl IntoResponse {
    let h = a.health();
    Json(match disclosure {
        Some(Extension(Disclosure::Full)) => h,
        _ => h.status_only(),
    })
}

async fn list_services(State(a): State<Agent>) -> impl IntoResponse {
    Json(a.services())
}

async fn get_service(
    State(a): State<Agent>,
    Path(name): Path<String>,
) -> Result<Response, AgentError> {
    Ok(Json(a.service(&name)?).into_response())
}

async fn put_service(
    State(a): State<Agent>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, AgentError> {
    let spec: ServiceSpec = parse(&body, r#"{"ports":[8080]} or {"comm":"nginx"}"#)?;
    let info = blocking(move || a.put_service(&name, spec)).await?;
    Ok(Json(info).into_response())
}

async fn delete_service(
    State(a): State<Agent>,
    Path(name): Path<String>,
) -> Result<StatusCode, AgentError> {
    blocking(move || a.delete_service(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/stats?recent_pauses=N`: N > 0 adds each service's last N pauses (N at most
/// [`RECENT_PAUSES`], 400 above).
#[derive(serde::Deserialize)]
struct StatsQuery {
    #[serde(default)]
    recent_pauses: usize,
}

async fn stats(
    State(a): State<Agent>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, AgentError> {
    let Query(q) = query.map_err(|e| {
        AgentError::BadRequest(format!(
            "{e}; the only parameter is recent_pauses=N (each service's last N pauses, at most 512)"
        ))
    })?;
    let n = q.recent_pauses;
    if n > RECENT_PAUSES {
        return Err(AgentError::BadRequest(format!(
            "recent_pauses is at most {RECENT_PAUSES} (each service keeps its last \
             {RECENT_PAUSES} pauses), got {n}"
        )));
    }
    Ok(Json(blocking(move || Ok(a.stats_with_pauses(n))).await?).into_response())
}

async fn get_slowdown(State(a): State<Agent>) -> impl IntoResponse {
    Json(a.slowdown())
}

async fn put_slowdown(State(a): State<Agent>, body: Bytes) -> Result<Response, AgentError> {
    let plan: SlowdownPlan = parse(
        &body,
        r#"{"mode":"pause","services":{"cart":{"delay_per_visit_ns":200000}}}"#,
    )?;
    let plan = blocking(move || {
        a.set_slowdown(plan)?;
        Ok(a.slowdown())
    })
    .await?;
    Ok(Json(plan).into_response())
}

/// `DELETE /v1/slowdown?owner=..&force=..`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Who removes the plan (default `anonymous`).
    owner: Option<String>,
    /// Operator override: remove another owner's live plan.
    #[serde(default)]
    force: bool,
}

async fn delete_slowdown(
    State(a): State<Agent>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, AgentError> {
    let Query(q) = q.map_err(|e| {
        AgentError::BadRequest(format!(
            "{e}; use DELETE /v1/slowdown?owner=ID (the plan's owner) or ?force=true (operator override)"
        ))
    })?;
    let owner = q.owner.unwrap_or_else(|| ANONYMOUS.to_owned());
    blocking(move || {
        if !q.force {
            return a.clear_slowdown_as(&owner);
        }
        // An operator override must leave a trace: whose plan was removed, by whom.
        if let Some(holder) = a.lease_holder().filter(|h| *h != owner) {
            tracing::warn!(
                holder = %holder,
                caller = %owner,
                "operator override (DELETE /v1/slowdown?force=true): removing a plan whose lease is live"
            );
        }
        a.clear_slowdown()
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn renew_slowdown(State(a): State<Agent>, body: Bytes) -> Result<Response, AgentError> {
    let r: LeaseRenewal = parse(&body, r#"{"owner":"my-experiment","lease_ms":15000}"#)?;
    let plan = blocking(move || a.renew_lease(&r.owner, r.lease_ms)).await?;
    Ok(Json(plan).into_response())
}

async fn get_scheduling(State(a): State<Agent>) -> impl IntoResponse {
    Json(a.scheduling())
}

async fn put_scheduling(State(a): State<Agent>, body: Bytes) -> Result<Response, AgentError> {
    let plan: SchedulingPlan = parse(
        &body,
        r#"{"policy":"oldest-first","services":["cart","db"],"k":1,"owner":"my-experiment"}"#,
    )?;
    let plan = blocking(move || a.set_scheduling(plan)).await?;
    Ok(Json(plan).into_response())
}

/// `DELETE /v1/scheduling?owner=..&force=..`: as `DELETE /v1/slowdown`.
async fn delete_scheduling(
    State(a): State<Agent>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, AgentError> {
    let Query(q) = q.map_err(|e| {
        AgentError::BadRequest(format!(
            "{e}; use DELETE /v1/scheduling?owner=ID (the schedule's owner) or ?force=true (operator override)"
        ))
    })?;
    let owner = q.owner.unwrap_or_else(|| ANONYMOUS.to_owned());
    blocking(move || {
        if !q.force {
            return a.clear_scheduling_as(&owner);
        }
        if let Some(holder) = a.scheduling_holder().filter(|h| *h != owner) {
            tracing::warn!(
                holder = %holder,
                caller = %owner,
                "operator override (DELETE /v1/scheduling?force=true): ending a schedule whose lease is live"
            );
        }
        a.clear_scheduling();
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn renew_scheduling(State(a): State<Agent>, body: Bytes) -> Result<Response, AgentError> {
    let r: LeaseRenewal = parse(&body, r#"{"owner":"my-experiment","lease_ms":15000}"#)?;
    let plan = blocking(move || a.renew_scheduling(&r.owner, r.lease_ms)).await?;
    Ok(Json(plan).into_response())
}

async fn prometheus(State(a): State<Agent>) -> Result<Response, AgentError> {
    let (s, w, expired) =
        blocking(move || Ok((a.stats(), a.watchdog_counts(), a.leases_expired()))).await?;
    let text = metrics::render(metrics::Snapshot {
        stats: s,
        watchdog: w,
        leases_expired: expired,
    });
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

/// TEST ONLY (cargo feature `test-hooks`, and the agent started with `--test-hooks`): the manual
/// pause endpoint. Not compiled into release builds.
#[cfg(feature = "test-hooks")]
mod debug {
    use axum::{
        Json, Router,
        extract::{Path, Query, State},
        response::{IntoResponse, Response},
        routing::post,
    };

    use super::blocking;
    use crate::{agent::Agent, error::AgentError};

    /// `POST /v1/debug/pause/{name}?ns=N` when the agent runs with test hooks.
    pub(super) fn routes(r: Router<Agent>, agent: &Agent) -> Router<Agent> {
        if agent.config().test_hooks {
            r.route("/v1/debug/pause/{name}", post(debug_pause))
                .route("/v1/debug/request-event/{name}", post(debug_request_event))
        } else {
            r
        }
    }

    /// A kernel request event as a test feeds it (`kind`: 1 start, 2 end; times
    /// `CLOCK_MONOTONIC` ns, 0 = now).
    #[derive(serde::Deserialize)]
    struct RequestEventBody {
        kind: u32,
        tid: u32,
        tgid: u32,
        #[serde(default)]
        origin_ns: u64,
        #[serde(default)]
        arrival_ns: u64,
    }

    /// `POST /v1/debug/request-event/{name}`: feeds the tail scheduler as the kernel would.
    async fn debug_request_event(
        State(a): State<Agent>,
        Path(name): Path<String>,
        body: axum::body::Bytes,
    ) -> Result<Response, AgentError> {
        let b: RequestEventBody = super::parse(&body, r#"{"kind":1,"tid":123,"tgid":123}"#)?;
        // Times left out (0) are "now", as the kernel would stamp them.
        let now = crate::sys::clock::monotonic_ns();
        let arrival_ns = if b.arrival_ns == 0 { now } else { b.arrival_ns };
        let ev = slowpoke_common::RequestEvent {
            at_ns: now,
            origin_ns: if b.origin_ns == 0 {
                arrival_ns
            } else {
                b.origin_ns
            },
            arrival_ns,
            tid: b.tid,
            tgid: b.tgid,
            service: 0,
            kind: b.kind,
            thread_start_ns: 0,
        };
        blocking(move || a.debug_request_event(&name, ev)).await?;
        Ok(axum::http::StatusCode::NO_CONTENT.into_response())
    }

    #[derive(serde::Deserialize)]
    struct PauseQuery {
        ns: u64,
    }

    async fn debug_pause(
        State(a): State<Agent>,
        Path(name): Path<String>,
        q: Result<Query<PauseQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Response, AgentError> {
        let Query(q) = q.map_err(|e| AgentError::BadRequest(format!("{e}; use ?ns=N")))?;
        let out = blocking(move || a.pause_now(&name, q.ns)).await?;
        Ok(Json(serde_json::json!({
            "requested_ns": out.requested_ns,
            "achieved_ns": out.achieved_ns,
            "pids": out.pids,
            "refused": out.refused,
        }))
        .into_response())
    }
}

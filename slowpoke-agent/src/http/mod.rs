//! The HTTP API (axum 0.8): thin handlers over [`Agent`]; docs/api.md describes every endpoint.
//! `metrics.rs` renders `GET /metrics`.
//!
//! Bodies are parsed here (not with axum's `Json` extractor) so every malformed body gets the
//! agent's own `{"error": ...}` answer with status 400.

mod metrics;

use std::net::SocketAddr;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::de::DeserializeOwned;
pub use slowpoke_api::auth::token_required;
use slowpoke_api::auth::{AGENT_TOKEN_ENV, BearerPolicy, Scope, Verdict};

use crate::{
    agent::Agent,
    api::{ServiceSpec, SlowdownPlan},
    error::AgentError,
};

/// Who may call the agent: the one bearer rule of [`slowpoke_api::auth`] with the agent's scope,
/// [`Scope::Mutations`] (PUT, DELETE, POST need the token when there is one; reads are monitoring
/// data and stay open).
#[derive(Clone, Debug)]
pub struct Auth(BearerPolicy);

impl Default for Auth {
    fn default() -> Auth {
        Auth::none()
    }
}

impl Auth {
    /// No token: fine on loopback only.
    pub fn none() -> Auth {
        Auth(BearerPolicy::new(Scope::Mutations, None))
    }

    /// The rule for a listen address: off loopback a token is mandatory (refuse to start without
    /// one) and required on every mutating call; on loopback it is required only if given.
    pub fn for_listen(addr: SocketAddr, token: Option<String>) -> Result<Auth, AgentError> {
        BearerPolicy::for_listen(addr, token, Scope::Mutations)
            .map(Auth)
            .map_err(|e| {
                AgentError::BadRequest(format!(
                    "{e} (the agent also reads the token from ${AGENT_TOKEN_ENV})"
                ))
            })
    }

    /// Whether a request may proceed.
    pub fn allows(&self, method: &Method, headers: &HeaderMap) -> bool {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        self.0.check(
            method.as_str(),
            header(header::AUTHORIZATION),
            header(header::HOST),
        ) == Verdict::Allow
    }
}

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
        .route("/metrics", get(prometheus))
        .route("/v1/openapi.json", get(openapi));
    #[cfg(feature = "test-hooks")]
    let r = debug::routes(r, &agent);
    r.fallback(not_found)
        .layer(middleware::from_fn_with_state(auth, check_auth))
        .with_state(agent)
}

async fn check_auth(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if auth.allows(req.method(), req.headers()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(crate::api::ErrorBody {
                error: "this call changes the agent: send `Authorization: Bearer <token>` with the agent's token".into(),
            }),
        )
            .into_response()
    }
}

async fn not_found() -> AgentError {
    AgentError::NotFound(
        "no such endpoint; see docs/api.md or GET /v1/openapi.json (/v1/health, /v1/services, /v1/stats, /v1/slowdown, /metrics)".into(),
    )
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

async fn health(State(a): State<Agent>) -> impl IntoResponse {
    Json(a.health())
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

async fn stats(State(a): State<Agent>) -> Result<Response, AgentError> {
    Ok(Json(blocking(move || Ok(a.stats())).await?).into_response())
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

async fn delete_slowdown(State(a): State<Agent>) -> Result<StatusCode, AgentError> {
    blocking(move || a.clear_slowdown()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prometheus(State(a): State<Agent>) -> Result<Response, AgentError> {
    let (s, w) = blocking(move || Ok((a.stats(), a.watchdog_counts()))).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s, &w),
    )
        .into_response())
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
        } else {
            r
        }
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
        }))
        .into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rule() {
        let lo: SocketAddr = "127.0.0.1:7171".parse().expect("addr");
        let lo6: SocketAddr = "[::1]:7171".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:7171".parse().expect("addr");
        assert!(!token_required(lo) && !token_required(lo6));
        assert!(token_required(any));
        assert!(Auth::for_listen(any, None).is_err());
        assert!(Auth::for_listen(any, Some("  ".into())).is_err());
        let a = Auth::for_listen(any, Some("s3cret\n".into())).expect("token given");
        let mut h = HeaderMap::new();
        assert!(a.allows(&Method::GET, &h));
        assert!(!a.allows(&Method::PUT, &h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer wrong".parse().expect("header"),
        );
        assert!(!a.allows(&Method::DELETE, &h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("header"),
        );
        assert!(a.allows(&Method::PUT, &h));
        let open = Auth::for_listen(lo, None).expect("loopback without token");
        assert!(open.allows(&Method::PUT, &HeaderMap::new()));
    }
}

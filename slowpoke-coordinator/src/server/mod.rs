//! The coordinator's HTTP API and web page (`slowpoke serve`); docs/coordinator-api.md describes
//! every endpoint and `GET /v1/openapi.json` serves its OpenAPI document, generated from the wire
//! types of the `slowpoke-api` crate (requests, views, results).
//!
//! - `POST /v1/experiments` starts a what-if or a profile ([`request::ExperimentRequest`]);
//!   one experiment runs at a time on a node (the paused services are shared), so a second POST
//!   while one runs is refused with 409 rather than queued: a queue would silently measure an app
//!   that someone else is already slowing down.
//! - `GET /v1/experiments[/{id}]`, `DELETE /v1/experiments/{id}` (cancel: answers once the
//!   runner removed every delay), `GET /v1/experiments/{id}/plot.svg`, `GET /v1/agents`,
//!   `GET /v1/openapi.json`.
//! - `/` is a small page (plain HTML + JS embedded in the binary) over the same API.
//!
//! Finished results go to the library's [`ResultStore`], so results of the CLI and of earlier
//! servers are listed too. Failed and cancelled experiments live in memory only.
//!
//! How an experiment's app and load are built is the caller's: a [`Launcher`] (the CLI gives
//! the same one its `what-if` uses; tests give the fake world).
//!
//! Anyone who can reach the server can send it requests, and a browser can be made to (another
//! site's scripts): [`guard`] checks who a request is addressed to and which page sent it before
//! anything else, the bearer rule ([`bearer_policy`]) who sent it, [`request::check`] that its
//! numbers are bounded, and the operator's [`ServePolicy`] what it may name (agents, entry hosts,
//! topology files). docs/security/coordinator.md is the threat model.

mod guard;
mod handlers;
pub mod policy;
pub mod request;
mod run;
mod state;
mod views;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use slowpoke_api::ErrorBody;
use slowpoke_api::auth::{BearerPolicy, NoTokenError, Scope, Verdict};
pub use slowpoke_api::coordinator::{
    AgentView, ExperimentResult, ExperimentSummary, ExperimentView, ProgressView, Status,
};

use crate::agents::SharedAgent;
use crate::experiment::Backends;
use crate::kubernetes::KubeAccess;
use crate::lease::Lease;
use crate::real::RealLoadStarter;
use crate::spec_builder::Emulator;
pub use guard::MAX_BODY;
pub use policy::{EntryHost, KEEP_EXPERIMENTS, ServePolicy};
use request::AppRequest;
pub use state::AppState;

/// Default listen address of `slowpoke serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7272";

/// Builds what one experiment runs against (the app and the load), from the request.
/// Called on a blocking thread: it may start an emulated app and wait for it to listen.
pub trait Launcher: Send + Sync {
    fn backends(&self, app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String>;
    /// What can be refused with a `400` when the request arrives, before anything starts.
    fn check(&self, _app: &AppRequest) -> Result<(), String> {
        Ok(())
    }
}

/// The real launcher: a running app (`services` + `entry`) or an emulated app started from
/// `topology` on this node by the [`Emulator`] it was given (it stops when the experiment ends),
/// and the real closed-loop load. Without an emulator, requests naming a topology fail.
#[derive(Clone, Default)]
pub struct RealLauncher {
    emulator: Option<Arc<dyn Emulator>>,
    /// The Kubernetes API of pod and label selectors, one connection for every experiment.
    kubernetes: Arc<KubeAccess>,
}

impl RealLauncher {
    /// A launcher that starts emulated apps with `emulator`.
    pub fn with_emulator(emulator: Arc<dyn Emulator>) -> RealLauncher {
        RealLauncher {
            emulator: Some(emulator),
            ..RealLauncher::default()
        }
    }

    /// Resolves pod and label selectors with this kubeconfig (`--kubeconfig`; default: what
    /// `kube::Config::infer` finds, e.g. the pod's service account).
    #[must_use]
    pub fn with_kubeconfig(mut self, kubeconfig: Option<std::path::PathBuf>) -> RealLauncher {
        self.kubernetes = Arc::new(KubeAccess::new(kubeconfig));
        self
    }
}

impl Launcher for RealLauncher {
    fn check(&self, app: &AppRequest) -> Result<(), String> {
        app.check(self.emulator.as_deref())
    }

    fn backends(&self, app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String> {
        Ok(Backends {
            agents,
            app: app.start(self.emulator.as_deref())?,
            load: Arc::new(RealLoadStarter),
            // The server names the owner (the experiment's id) once the backends are built.
            lease: Lease::default(),
            kubernetes: self.kubernetes.clone(),
        })
    }
}

/// Everything `slowpoke serve` needs.
#[derive(Clone)]
pub struct ServeConfig {
    /// Default [`DEFAULT_LISTEN`]; off loopback a token is mandatory.
    pub listen: SocketAddr,
    /// Bearer token required on every `/v1` call when set (`--token-file`).
    pub token: Option<String>,
    /// Where results are stored and read from (`--results-dir`).
    pub results_dir: PathBuf,
    /// The node agents experiments use (`--agent`): all of them, or those a request names
    /// among them. Each carries its own token; a request cannot name other agents.
    pub agents: Vec<SharedAgent>,
    /// Builds each experiment's app and load.
    pub launcher: Arc<dyn Launcher>,
    /// What requests may name and address (`--allowed-host`, `--allow-entry-host`,
    /// `--topology-dir`); the default is the strictest.
    pub policy: ServePolicy,
    /// Lease of each experiment's plans on the agents (`--lease`), renewed while it runs: a
    /// server that dies leaves no plan behind for longer than this.
    pub lease: Duration,
}

/// The server's bearer rule ([`slowpoke_api::auth`]): off loopback it refuses to start without a
/// token; with one, every `/v1` call must carry it ([`Scope::Every`]: results are the user's
/// data); without one, `/v1` calls must address the server as loopback (the `Host` header), so
/// other web sites cannot drive it through DNS rebinding.
pub fn bearer_policy(
    listen: SocketAddr,
    token: Option<String>,
) -> Result<BearerPolicy, NoTokenError> {
    Ok(BearerPolicy::for_listen(listen, token, Scope::Every)?.loopback_host_only_without_token())
}

/// Every error answer: `{"error": "...what to fix"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

/// The server's routes: the `/v1` API (behind the token when one is set) and the web page, all
/// behind the [`guard`] checks.
pub fn router(state: AppState) -> Router {
    let hosts = Arc::clone(&state.inner.hosts);
    let api = Router::new()
        .route(
            "/v1/experiments",
            get(handlers::list_experiments).post(handlers::post_experiment),
        )
        .route(
            "/v1/experiments/{id}",
            get(handlers::get_experiment).delete(handlers::delete_experiment),
        )
        .route("/v1/experiments/{id}/plot.svg", get(handlers::plot_svg))
        .route("/v1/agents", get(handlers::list_agents))
        .route("/v1/openapi.json", get(handlers::openapi))
        .route("/v1/{*rest}", axum::routing::any(no_endpoint))
        .route_layer(middleware::from_fn(guard::check_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), check_auth));
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/style.css", get(web::style_css))
        .merge(api)
        .fallback(no_endpoint)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(hosts, guard::check_request))
}

async fn check_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let verdict = {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        state.inner.auth.check(
            req.method().as_str(),
            header(header::AUTHORIZATION),
            header(header::HOST),
        )
    };
    match verdict {
        Verdict::Allow => return next.run(req).await,
        Verdict::ForeignHost => {
            return ApiError(
                StatusCode::FORBIDDEN,
                "without a token this server only answers requests addressed to localhost, 127.0.0.1 or [::1] (the Host header); to serve other names, start it with --token-file".into(),
            )
            .into_response();
        }
        Verdict::NeedsToken => {}
    }
    let mut r = ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send `Authorization: Bearer <token>` with the server's token (its --token-file)".into(),
    )
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn no_endpoint() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint; see docs/coordinator-api.md or GET /v1/openapi.json (/v1/experiments, /v1/experiments/{id}, /v1/experiments/{id}/plot.svg, /v1/agents)".into(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here; see docs/coordinator-api.md".into(),
    )
}

/// Binds `cfg.listen` (checking the token rule first); the listener and the state, for callers
/// that want the bound address before serving (tests use port 0).
pub async fn bind(cfg: &ServeConfig) -> anyhow::Result<(tokio::net::TcpListener, AppState)> {
    let auth = bearer_policy(cfg.listen, cfg.token.clone())?;
    cfg.policy.check_start(auth.token().is_some())?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    Ok((listener, AppState::new(cfg, auth)))
}

/// Serves until SIGINT/SIGTERM; on the signal the running experiment is cancelled (its delays
/// removed) before the server returns.
pub async fn serve(cfg: ServeConfig) -> anyhow::Result<()> {
    let (listener, state) = bind(&cfg).await?;
    tracing::info!(
        "slowpoke serve: http://{} (results in {})",
        listener.local_addr()?,
        cfg.results_dir.display()
    );
    serve_on(listener, state, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` completes, then cancels the running experiment and
/// waits for it to remove its delays.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let s2 = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: cancelling the running experiment");
            s2.cancel_running().await;
        })
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Runs blocking work (file system, agent calls) off the runtime.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

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
pub mod plot;
pub mod policy;
pub mod request;
mod web;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use slowpoke_api::ErrorBody;
use slowpoke_api::auth::{BearerPolicy, HostAllowList, NoTokenError, Scope, Verdict};
pub use slowpoke_api::coordinator::{
    AgentView, ExperimentResult, ExperimentSummary, ExperimentView, ProgressView, Status,
};
use tokio::sync::watch;

use crate::agents::SharedAgent;
use crate::experiment::{
    self, App, AttachedApp, Backends, Monitor, Progress, RunError, spawn_profile, spawn_what_if,
};
use crate::lease::Lease;
use crate::real::{EmuApp, RealLoadStarter};
use crate::results::{self, ResultStore, StoredResult};
pub use guard::MAX_BODY;
pub use policy::{EntryHost, KEEP_EXPERIMENTS, ServePolicy};
use request::{AppRequest, Checked, ExperimentRequest, Kind, Spec};

/// Default listen address of `slowpoke serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7272";

/// How long the list of stored results is reused before the results directory is read again.
const STORED_TTL: Duration = Duration::from_secs(3);

/// How long `DELETE` waits for the runner to remove its delays before answering anyway.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Builds what one experiment runs against (the app and the load), from the request.
/// Called on a blocking thread: it may start an emulated app and wait for it to listen.
pub trait Launcher: Send + Sync {
    fn backends(&self, app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String>;
}

/// The real launcher: an emulated app started from `topology` on this node (it stops when the
/// experiment ends) or a running app (`services` + `entry`), and the real closed-loop load.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealLauncher;

impl Launcher for RealLauncher {
    fn backends(&self, app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String> {
        let the_app: Box<dyn App> = match &app.topology {
            Some(path) => Box::new(EmuApp::start(path, &app.set).map_err(|e| format!("{e:#}"))?),
            None => Box::new(AttachedApp {
                services: app.services.clone(),
                entry: app.entry.clone().unwrap_or_default(),
                entry_service: None,
            }),
        };
        Ok(Backends {
            agents,
            app: the_app,
            load: Arc::new(RealLoadStarter),
            // The server names the owner (the experiment's id) once the backends are built.
            lease: Lease::default(),
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

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

struct Entry {
    id: String,
    kind: Kind,
    /// What was asked, e.g. `cart 2x speedup`, until there is a result to summarize.
    asked: String,
    created: String,
    status: watch::Sender<Status>,
    monitor: Monitor,
    agents: Vec<SharedAgent>,
    error: Option<String>,
    result: Option<StoredResult>,
}

struct Inner {
    auth: BearerPolicy,
    hosts: Arc<HostAllowList>,
    policy: ServePolicy,
    store: ResultStore,
    agents: Vec<SharedAgent>,
    launcher: Arc<dyn Launcher>,
    lease: Duration,
    /// Experiments of this server, oldest first.
    experiments: Mutex<Vec<Entry>>,
    /// The stored results' summaries, and when they were read: the page polls the list every
    /// second while an experiment runs, and reading every result file each time is wasteful.
    stored: Mutex<Option<(std::time::Instant, Vec<results::ResultSummary>)>>,
}

/// The server's shared state; build it with [`AppState::new`] and pass it to [`router`].
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// The state of a server with this configuration and bearer rule ([`bearer_policy`]; its
    /// token, not `cfg.token`, is enforced).
    pub fn new(cfg: &ServeConfig, auth: BearerPolicy) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                auth,
                hosts: Arc::new(HostAllowList::new(
                    cfg.listen,
                    cfg.policy.allowed_hosts.iter().cloned(),
                )),
                policy: cfg.policy.clone(),
                store: ResultStore::new(cfg.results_dir.clone()),
                agents: cfg.agents.clone(),
                launcher: Arc::clone(&cfg.launcher),
                lease: cfg.lease,
                experiments: Mutex::new(Vec::new()),
                stored: Mutex::new(None),
            }),
        }
    }

    fn experiments(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.inner
            .experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn with_entry<R>(&self, id: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.experiments().iter_mut().find(|e| e.id == id).map(f)
    }

    /// Summaries of the stored results, re-read at most every [`STORED_TTL`] (results written by
    /// the CLI show up within that time; this server's own are in memory at once).
    async fn stored_summaries(&self) -> Result<Vec<results::ResultSummary>, ApiError> {
        {
            let g = self
                .inner
                .stored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, list)) = g.as_ref()
                && at.elapsed() < STORED_TTL
            {
                return Ok(list.clone());
            }
        }
        let store = self.inner.store.clone();
        let list = blocking(move || {
            store.list().map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot list the results: {e:#}"),
                )
            })
        })
        .await?;
        *self
            .inner
            .stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), list.clone()));
        Ok(list)
    }

    /// Cancels the running experiment, if any, and waits until it removed its delays.
    pub async fn cancel_running(&self) {
        let active: Vec<(Monitor, watch::Receiver<Status>)> = self
            .experiments()
            .iter()
            .filter(|e| e.status.borrow().is_active())
            .map(|e| (e.monitor.clone(), e.status.subscribe()))
            .collect();
        for (m, mut rx) in active {
            m.cancel();
            let _ = tokio::time::timeout(CANCEL_WAIT, rx.wait_for(|s| !s.is_active())).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Every error answer: `{"error": "...what to fix"}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no experiment `{id}` (GET /v1/experiments lists them)"),
    )
}

// ---------------------------------------------------------------------------------------------
// Router
// ---------------------------------------------------------------------------------------------

/// The server's routes: the `/v1` API (behind the token when one is set) and the web page, all
/// behind the [`guard`] checks.
pub fn router(state: AppState) -> Router {
    let hosts = Arc::clone(&state.inner.hosts);
    let api = Router::new()
        .route(
            "/v1/experiments",
            get(list_experiments).post(post_experiment),
        )
        .route(
            "/v1/experiments/{id}",
            get(get_experiment).delete(delete_experiment),
        )
        .route("/v1/experiments/{id}/plot.svg", get(plot_svg))
        .route("/v1/agents", get(list_agents))
        .route("/v1/openapi.json", get(openapi))
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

// ---------------------------------------------------------------------------------------------
// Experiments
// ---------------------------------------------------------------------------------------------

/// Progress as the API shows it.
fn progress_view(p: &Progress) -> ProgressView {
    ProgressView {
        fraction: p.fraction,
        phase: p.phase.clone(),
        windows_done: p.windows_done,
        last_rps: p.last_rps,
    }
}

/// The progress of a finished experiment.
fn progress_done() -> ProgressView {
    ProgressView {
        fraction: 1.0,
        phase: "done".into(),
        windows_done: 0,
        last_rps: None,
    }
}

fn kind_of(r: &StoredResult) -> Kind {
    match r {
        StoredResult::WhatIf(_) => Kind::WhatIf,
        StoredResult::Profile(_) => Kind::Profile,
    }
}

/// The result as the API shows it: its own JSON (untagged, as the CLI prints it).
fn result_view(r: &StoredResult) -> ExperimentResult {
    match r {
        StoredResult::WhatIf(w) => ExperimentResult::WhatIf(w.clone()),
        StoredResult::Profile(p) => ExperimentResult::Profile(p.clone()),
    }
}

fn stored_summary(r: &StoredResult) -> ExperimentSummary {
    let s = results::summarize(r);
    ExperimentSummary {
        id: s.id,
        kind: kind_of(r),
        status: Status::Done,
        progress: progress_done(),
        created: s.created,
        summary: Some(s.summary),
        error: None,
    }
}

impl Entry {
    fn summary(&self) -> ExperimentSummary {
        let status = *self.status.borrow();
        let progress = match status {
            Status::Done => progress_done(),
            Status::Queued => ProgressView {
                phase: "preparing the app and the load".into(),
                ..progress_view(&self.monitor.progress())
            },
            Status::Running => progress_view(&self.monitor.progress()),
            Status::Failed | Status::Cancelled => {
                let mut p = progress_view(&self.monitor.progress());
                if p.phase.is_empty() {
                    // Ended before the runner started (preparing the app failed, or a cancel).
                    p.phase = if status == Status::Failed {
                        "failed".into()
                    } else {
                        "cancelled".into()
                    };
                }
                p
            }
        };
        ExperimentSummary {
            id: self.id.clone(),
            kind: self.kind,
            status,
            progress,
            created: self.created.clone(),
            summary: Some(
                self.result
                    .as_ref()
                    .map_or_else(|| self.asked.clone(), |r| results::summarize(r).summary),
            ),
            error: self.error.clone(),
        }
    }

    fn view(&self) -> ExperimentView {
        ExperimentView {
            summary: self.summary(),
            result: self.result.as_ref().map(result_view),
        }
    }
}

/// Runs blocking work (file system, agent calls) off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })?
}

/// Ids are file names in the results directory: refuse anything that could leave it.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

async fn list_experiments(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stored = state.stored_summaries().await?;
    let mut by_id: BTreeMap<String, ExperimentSummary> = BTreeMap::new();
    for s in stored {
        let kind = if s.kind == "profile" {
            Kind::Profile
        } else {
            Kind::WhatIf
        };
        by_id.insert(
            s.id.clone(),
            ExperimentSummary {
                id: s.id,
                kind,
                status: Status::Done,
                progress: progress_done(),
                created: s.created,
                summary: Some(s.summary),
                error: None,
            },
        );
    }
    for e in state.experiments().iter() {
        by_id.insert(e.id.clone(), e.summary());
    }
    let mut list: Vec<ExperimentSummary> = by_id.into_values().collect();
    // Newest first; ids start with their UTC start time, so they sort like `created`.
    list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.id.cmp(&a.id)));
    Ok(Json(list).into_response())
}

async fn load_stored(state: &AppState, id: &str) -> Result<StoredResult, ApiError> {
    if !valid_id(id) {
        return Err(not_found(id));
    }
    let store = state.inner.store.clone();
    let id2 = id.to_owned();
    blocking(move || {
        store.load(&id2).map_err(|e| {
            let msg = format!("{e:#}");
            if msg.starts_with("no result") {
                not_found(&id2)
            } else if msg.contains("matches") {
                bad_request(msg)
            } else {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg)
            }
        })
    })
    .await
}

async fn get_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ExperimentView>, ApiError> {
    if let Some(v) = state.with_entry(&id, |e| e.view()) {
        return Ok(Json(v));
    }
    let r = load_stored(&state, &id).await?;
    Ok(Json(ExperimentView {
        summary: stored_summary(&r),
        result: Some(result_view(&r)),
    }))
}

async fn plot_svg(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let r = match state.with_entry(&id, |e| (e.result.clone(), *e.status.borrow())) {
        Some((Some(r), _)) => r,
        Some((None, status)) => {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "experiment `{id}` has no result to plot (it is {}); wait until it is done",
                    status.as_str()
                ),
            ));
        }
        None => load_stored(&state, &id).await?,
    };
    let svg = blocking(move || {
        plot::svg(&r).map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot draw the plot: {e:#}"),
            )
        })
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}

async fn post_experiment(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The guard checked Content-Type and a declared length; a body sent without one is cut at
    // MAX_BODY here.
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => guard::too_large(),
        status => ApiError(status, format!("cannot read the request body: {e}")),
    })?;
    let req: ExperimentRequest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "invalid request body: {e}; see docs/coordinator-api.md, e.g. {{\"services\": {{\"cart\": \"port:8081\", \"front\": \"port:8080\"}}, \"entry\": \"http://127.0.0.1:8080/\", \"target\": \"cart\", \"speedup\": \"2x\"}}"
        ))
    })?;
    let mut checked = request::check(&req).map_err(bad_request)?;
    let agents = state
        .inner
        .policy
        .admit(&mut checked, &state.inner.agents)
        .map_err(bad_request)?;
    if agents.is_empty() {
        return Err(bad_request(
            "this server has no agent to talk to: start it with --agent URL (or where it may run one in-process)",
        ));
    }
    let kind = checked.kind();
    let (what, asked) = match &checked.spec {
        Spec::WhatIf(w) => (w.target.clone(), format!("{} {}", w.target, w.optimization)),
        Spec::Profile(p) => (
            "app".to_owned(),
            format!(
                "profile of {}: {} %",
                p.services
                    .as_ref()
                    .map_or_else(|| "every service".to_owned(), |s| s.join(", ")),
                p.percents
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    let id = experiment::new_id(
        match kind {
            Kind::WhatIf => "whatif",
            Kind::Profile => "profile",
        },
        &what,
    );
    let view = {
        let mut list = state.experiments();
        if let Some(busy) = list.iter().find(|e| e.status.borrow().is_active()) {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "experiment `{}` is still running ({}); one experiment runs at a time on a node: wait for it, or cancel it with DELETE /v1/experiments/{}",
                    busy.id,
                    busy.monitor.progress().phase,
                    busy.id
                ),
            ));
        }
        let (tx, _) = watch::channel(Status::Queued);
        let entry = Entry {
            id: id.clone(),
            kind,
            asked,
            created: experiment::now_rfc3339(),
            status: tx,
            monitor: Monitor::new(),
            agents: agents.clone(),
            error: None,
            result: None,
        };
        let v = entry.view();
        list.push(entry);
        policy::evict_finished(&mut list, state.inner.policy.keep_experiments.max(1), |e| {
            e.status.borrow().is_active()
        });
        v
    };
    tokio::spawn(drive(state.clone(), id.clone(), checked, agents));
    let mut r = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/experiments/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// Runs one experiment to its end and records how it ended.
async fn drive(state: AppState, id: String, checked: Checked, agents: Vec<SharedAgent>) {
    let launcher = Arc::clone(&state.inner.launcher);
    let app = checked.app.clone();
    let built = tokio::task::spawn_blocking(move || launcher.backends(&app, agents))
        .await
        .unwrap_or_else(|e| Err(format!("preparing the app failed: {e}")));
    let backends = match built {
        Ok(mut b) => {
            // The agents know the experiment by its id: 409s and lapsed-lease logs name it.
            b.lease = Lease::new(&id, state.inner.lease);
            b
        }
        Err(e) => {
            finish(
                &state,
                &id,
                Err(format!("cannot prepare the experiment: {e}")),
            );
            return;
        }
    };
    // A cancel while the app was being prepared: nothing was installed yet.
    let cancelled = state
        .with_entry(&id, |e| e.monitor.is_cancelled())
        .unwrap_or(true);
    if cancelled {
        drop(backends);
        finish(&state, &id, Err(RunError::Cancelled.to_string()));
        return;
    }
    let outcome: Result<StoredResult, RunError> = match checked.spec {
        Spec::WhatIf(spec) => {
            let h = spawn_what_if(spec, backends);
            adopt(&state, &id, &h.monitor);
            h.wait().await.map(StoredResult::WhatIf)
        }
        Spec::Profile(spec) => {
            let h = spawn_profile(spec, backends);
            adopt(&state, &id, &h.monitor);
            h.wait().await.map(StoredResult::Profile)
        }
    };
    match outcome {
        Ok(mut r) => {
            let created = state.with_entry(&id, |e| e.created.clone());
            match &mut r {
                StoredResult::WhatIf(w) => {
                    w.id.clone_from(&id);
                    if let Some(c) = created {
                        w.created = c;
                    }
                }
                StoredResult::Profile(p) => {
                    p.id.clone_from(&id);
                    if let Some(c) = created {
                        p.created = c;
                    }
                }
            }
            let store = state.inner.store.clone();
            let to_save = r.clone();
            let saved = tokio::task::spawn_blocking(move || store.save(&to_save))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|r| r);
            if let Err(e) = &saved {
                tracing::error!("experiment {id}: cannot store the result: {e:#}");
            }
            state.with_entry(&id, |e| {
                e.result = Some(r);
                if let Err(err) = saved {
                    e.error = Some(format!("the result could not be stored: {err:#}"));
                }
                e.status.send_replace(Status::Done);
            });
        }
        Err(RunError::Cancelled) => finish(&state, &id, Err(RunError::Cancelled.to_string())),
        Err(e) => finish(&state, &id, Err(e.to_string())),
    }
}

/// Swaps the entry's placeholder monitor for the runner's, carrying a pending cancel over.
fn adopt(state: &AppState, id: &str, m: &Monitor) {
    state.with_entry(id, |e| {
        if e.monitor.is_cancelled() {
            m.cancel();
        }
        e.monitor = m.clone();
        e.status.send_replace(Status::Running);
    });
}

fn finish(state: &AppState, id: &str, outcome: Result<(), String>) {
    state.with_entry(id, |e| {
        let status = match &outcome {
            Ok(()) => Status::Done,
            Err(msg) if msg == &RunError::Cancelled.to_string() => Status::Cancelled,
            Err(_) => Status::Failed,
        };
        if let Err(msg) = outcome {
            tracing::info!("experiment {}: {msg}", e.id);
            e.error = Some(msg);
        }
        e.status.send_replace(status);
    });
}

async fn delete_experiment(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some((status, monitor, mut rx, agents)) = state.with_entry(&id, |e| {
        (
            *e.status.borrow(),
            e.monitor.clone(),
            e.status.subscribe(),
            e.agents.clone(),
        )
    }) else {
        // A stored result exists (finished earlier, or by the CLI): nothing to cancel.
        if valid_id(&id) && load_stored(&state, &id).await.is_ok() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("experiment `{id}` is already done: nothing to cancel"),
            ));
        }
        return Err(not_found(&id));
    };
    if !status.is_active() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "experiment `{id}` already ended ({}): nothing to cancel",
                status.as_str()
            ),
        ));
    }
    monitor.cancel();
    // The runner's PlanGuard / Session::finish remove every delay before the status changes.
    if tokio::time::timeout(CANCEL_WAIT, rx.wait_for(|s| !s.is_active()))
        .await
        .is_err()
    {
        // The runner is stuck in a call: remove the plan ourselves, and say so.
        let owner = Lease::new(&id, state.inner.lease).owner().to_owned();
        let errors = blocking(move || Ok(crate::agents::clear_everywhere(&agents, &owner))).await?;
        let detail = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "experiment `{id}` did not stop within {} s; the plan was removed from the agents directly{}",
                CANCEL_WAIT.as_secs(),
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" (failures: {detail})")
                }
            ),
        ));
    }
    let v = state
        .with_entry(&id, |e| e.view())
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(v).into_response())
}

// ---------------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------------

/// The OpenAPI document of this API, generated from the wire types.
async fn openapi() -> impl IntoResponse {
    Json(slowpoke_api::openapi::coordinator())
}

async fn list_agents(State(state): State<AppState>) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = state.inner.agents.clone();
    let mut tasks = Vec::new();
    for a in agents {
        tasks.push(tokio::task::spawn_blocking(move || {
            let name = a.name();
            match a.health() {
                Ok(h) => AgentView {
                    name,
                    status: if h.status == "ok" {
                        "ok".into()
                    } else {
                        h.status.clone()
                    },
                    health: Some(h),
                    error: None,
                },
                Err(e) => AgentView {
                    name,
                    status: "unreachable".into(),
                    health: None,
                    error: Some(e.to_string()),
                },
            }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )
        })?);
    }
    Ok(Json(out))
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

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

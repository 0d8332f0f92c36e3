//! The `/v1` handlers: list, show, start, cancel and plot experiments; list the agents; the
//! OpenAPI document. Each answers from the [`AppState`]; starting an experiment hands it to
//! [`super::run`].

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use slowpoke_api::coordinator::{AgentView, ExperimentSummary, ExperimentView, Status};
use tokio::sync::watch;

use super::request::{self, ExperimentRequest, Kind, Spec};
use super::state::{CANCEL_WAIT, Entry};
use super::views::{listed_summary, result_view, stored_summary};
use super::{ApiError, AppState, blocking, guard, policy, run};
use crate::experiment::{self, Monitor};
use crate::lease::Lease;
use crate::results::StoredResult;

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no experiment `{id}` (GET /v1/experiments lists them)"),
    )
}
/// Ids are file names in the results directory: refuse anything that could leave it.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) async fn list_experiments(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stored = state.stored_summaries().await?;
    let mut by_id: BTreeMap<String, ExperimentSummary> = BTreeMap::new();
    for s in stored {
        by_id.insert(s.id.clone(), listed_summary(s));
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

pub(super) async fn get_experiment(
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

pub(super) async fn plot_svg(
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
        crate::plot::result_svg(&r).map_err(|e| {
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

pub(super) async fn post_experiment(
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
    // A real-time priority this process may not use: refused now, not when the load starts.
    if let Spec::Tail(t) = &checked.spec {
        crate::experiment::tail::RealOpenLoad::new(t.load_priority).map_err(bad_request)?;
    }
    state
        .inner
        .launcher
        .check(&checked.app)
        .map_err(bad_request)?;
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
        Spec::Tail(t) => (
            "app".to_owned(),
            format!(
                "tail comparison at {} req/s: {}",
                t.rate_rps,
                t.arms_in_order()
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    };
    let id = experiment::new_id(
        match kind {
            Kind::WhatIf => "whatif",
            Kind::Profile => "profile",
            Kind::Tail => "tail",
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
    tokio::spawn(run::drive(state.clone(), id.clone(), checked, agents));
    let mut r = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/experiments/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

pub(super) async fn delete_experiment(
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

/// The OpenAPI document of this API, generated from the wire types.
pub(super) async fn openapi() -> impl IntoResponse {
    Json(slowpoke_api::openapi::coordinator())
}

pub(super) async fn list_agents(
    State(state): State<AppState>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
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

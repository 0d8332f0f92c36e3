//! The coordinator's API (`slowpoke serve`, docs/coordinator-api.md).

#![allow(dead_code)] // the functions only carry the operations' descriptions

use utoipa::OpenApi as _;

use super::BearerScheme;

use crate::ErrorBody;
use crate::agent::Health;
use crate::coordinator::{
    AgentView, Capacity, CapacityRange, ExperimentRequest, ExperimentResult, ExperimentSummary,
    ExperimentView, Factor, Kind, Optimization, ProfileCurve, ProfilePoint, ProfileResult,
    ProgressView, ServiceRow, ServiceWindowRecord, Status, StopReason, TailArm, TailArmResult,
    TailCapacity, TailResult, TailSchedule, TailSchedulerCounts, TailSweepPoint, TailWindow,
    TargetUse, TargetUseRecord, WhatIfResult, WindowRecord,
};
use crate::coordinator::{CdfPoint, Interval};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Slowpoke coordinator API",
        version = "1",
        description = "`slowpoke serve`: run what-ifs, causal profiles and tail comparisons over HTTP \
            (docs/coordinator-api.md). One experiment runs at a time per node: a POST while one \
            is queued or running gets 409. With a token (mandatory off loopback) every /v1 call \
            needs `Authorization: Bearer <token>`; without one, /v1 calls must address the \
            server as localhost, 127.0.0.1 or [::1]."
    ),
    servers((url = "http://127.0.0.1:7272")),
    security((), ("bearer" = [])),
    paths(
        list_experiments, post_experiment, get_experiment, delete_experiment, plot, list_agents,
        openapi, web_page, web_script, web_style
    ),
    components(schemas(
        AgentView, Capacity, CapacityRange, ErrorBody, ExperimentRequest, ExperimentResult,
        ExperimentSummary, ExperimentView, Factor, Health, Kind, Optimization, ProfileCurve,
        ProfilePoint, ProfileResult, ProgressView, ServiceRow, Status, StopReason, TargetUse,
        TargetUseRecord, WhatIfResult, WindowRecord, ServiceWindowRecord, TailArm, TailArmResult, TailCapacity,
        TailResult, TailSchedule, TailSchedulerCounts, TailSweepPoint, TailWindow, CdfPoint,
        Interval
    )),
    modifiers(&BearerScheme)
)]
struct CoordinatorApi;

/// The coordinator's OpenAPI document (served at `GET /v1/openapi.json`).
pub fn document() -> utoipa::openapi::OpenApi {
    CoordinatorApi::openapi()
}

#[utoipa::path(get, path = "/v1/experiments", tag = "experiments",
    responses(
        (status = 200, description = "Every experiment, newest first: this server's and the stored results", body = Vec<ExperimentSummary>),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "No token set and the Host is not loopback", body = ErrorBody)))]
fn list_experiments() {}

#[utoipa::path(post, path = "/v1/experiments", tag = "experiments",
    request_body(content = ExperimentRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted; poll the Location", body = ExperimentView,
            headers(("Location" = String, description = "/v1/experiments/{id}"))),
        (status = 400, description = "Bad request; the message says what to fix", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "No token set and the Host is not loopback", body = ErrorBody),
        (status = 409, description = "Another experiment is queued or running", body = ErrorBody),
        (status = 415, description = "The body is not sent as `application/json`", body = ErrorBody)))]
fn post_experiment() {}

#[utoipa::path(get, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id (or a unique prefix of a stored one)", example = "20261122T050553-262-whatif-cart")),
    responses(
        (status = 200, description = "Status, progress and (when done) the result", body = ExperimentView),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such experiment", body = ErrorBody)))]
fn get_experiment() {}

#[utoipa::path(delete, path = "/v1/experiments/{id}", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses(
        (status = 200, description = "Cancelled (status `cancelled`) after every delay was removed from the agents", body = ExperimentView),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such experiment", body = ErrorBody),
        (status = 409, description = "The experiment already ended", body = ErrorBody),
        (status = 504, description = "The runner did not stop within 30 s; the server removed the plan from the agents itself", body = ErrorBody)))]
fn delete_experiment() {}

#[utoipa::path(get, path = "/v1/experiments/{id}/plot.svg", tag = "experiments",
    params(("id" = String, Path, description = "Experiment id")),
    responses(
        (status = 200, description = "The result as an SVG chart", body = String, content_type = "image/svg+xml"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such experiment", body = ErrorBody),
        (status = 409, description = "The experiment has no result yet", body = ErrorBody)))]
fn plot() {}

#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses(
        (status = 200, description = "The node agents and their health", body = Vec<AgentView>),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
fn list_agents() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses(
        (status = 200, description = "This document", body = Object),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
fn openapi() {}

#[utoipa::path(get, path = "/", tag = "web", security(()),
    responses((status = 200, description = "The web page (no token needed: it carries no data, it asks for the token)", body = String, content_type = "text/html")))]
fn web_page() {}

#[utoipa::path(get, path = "/app.js", tag = "web", security(()),
    responses((status = 200, description = "The web page's script", body = String, content_type = "text/javascript")))]
fn web_script() {}

#[utoipa::path(get, path = "/style.css", tag = "web", security(()),
    responses((status = 200, description = "The web page's style sheet", body = String, content_type = "text/css")))]
fn web_style() {}

//! The node agent's API (docs/api.md).

#![allow(dead_code)] // the functions only carry the operations' descriptions

use utoipa::OpenApi as _;

use super::BearerScheme;

use crate::ErrorBody;
use crate::agent::{
    Health, Mode, NodeStats, ServiceDelay, ServiceInfo, ServiceList, ServiceSpec, ServiceStats,
    SlowdownPlan, Stats, UnregisteredDependency,
};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Slowpoke node agent API",
        version = "1",
        description = "The node agent (`slowpoke-agent`): registers services by selector, counts \
            their visits, pauses them to apply a virtual-speedup plan (docs/api.md). Counters are \
            monotonic since a service was registered. Off loopback every mutating call (PUT, \
            DELETE, POST) needs `Authorization: Bearer <token>`; reads stay open."
    ),
    servers((url = "http://127.0.0.1:7171")),
    security((), ("bearer" = [])),
    paths(
        health, list_services, get_service, put_service, delete_service, stats, get_slowdown,
        put_slowdown, delete_slowdown, metrics, openapi
    ),
    components(schemas(
        ErrorBody, Health, Mode, NodeStats, ServiceDelay, ServiceInfo, ServiceList, ServiceSpec,
        ServiceStats, SlowdownPlan, Stats, UnregisteredDependency
    )),
    modifiers(&BearerScheme)
)]
struct AgentApi;

/// The agent's OpenAPI document (served at `GET /v1/openapi.json`).
pub fn document() -> utoipa::openapi::OpenApi {
    AgentApi::openapi()
}

#[utoipa::path(get, path = "/v1/health", tag = "agent",
    responses((status = 200, description = "`ok`, `degraded` (with `reasons`: kernel programs not loaded, guardian not running, pause requests no longer read) or `stopping`, with the features probed at start and `warnings` (e.g. the guardian's watchdog acted)", body = Health)))]
fn health() {}

#[utoipa::path(get, path = "/v1/services", tag = "services",
    responses((status = 200, description = "Every registered service", body = ServiceList)))]
fn list_services() {}

#[utoipa::path(get, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name, `[A-Za-z0-9._-]{1,64}`")),
    responses(
        (status = 200, description = "The service as resolved now", body = ServiceInfo),
        (status = 404, description = "No such service", body = ErrorBody)))]
fn get_service() {}

#[utoipa::path(put, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name, `[A-Za-z0-9._-]{1,64}`")),
    request_body(content = ServiceSpec, description = "Exactly one selector, e.g. `{\"ports\":[8080]}`; a PUT on an existing name replaces its selector and keeps its counters"),
    responses(
        (status = 200, description = "The service as resolved now", body = ServiceInfo),
        (status = 400, description = "Bad selector or name; the message says what to fix", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Too many services registered", body = ErrorBody)))]
fn put_service() {}

#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses(
        (status = 204, description = "Unregistered; its delay (if any) was removed first"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody)))]
fn delete_service() {}

#[utoipa::path(get, path = "/v1/stats", tag = "stats",
    responses((status = 200, description = "Monotonic counters of every service and of the node", body = Stats)))]
fn stats() {}

#[utoipa::path(get, path = "/v1/slowdown", tag = "slowdown",
    responses((status = 200, description = "The plan in force (no services: none)", body = SlowdownPlan)))]
fn get_slowdown() {}

#[utoipa::path(put, path = "/v1/slowdown", tag = "slowdown",
    request_body(content = SlowdownPlan, description = "Per-visit delays of registered services"),
    responses(
        (status = 200, description = "The plan now in force", body = SlowdownPlan),
        (status = 400, description = "Bad plan (unknown service, delay above the limit, spin with synchronized)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 503, description = "The kernel programs are not loaded", body = ErrorBody)))]
fn put_slowdown() {}

#[utoipa::path(delete, path = "/v1/slowdown", tag = "slowdown",
    responses(
        (status = 204, description = "Leftover debt paid, every delay removed"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
fn delete_slowdown() {}

#[utoipa::path(get, path = "/metrics", tag = "stats",
    responses((status = 200, description = "The counters in Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "agent",
    responses((status = 200, description = "This document", body = Object)))]
fn openapi() {}

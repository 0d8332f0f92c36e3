//! The node agent's API (docs/api.md).

#![allow(dead_code)] // the functions only carry the operations' descriptions

use utoipa::OpenApi as _;

use super::BearerScheme;

use crate::ErrorBody;
use crate::agent::{
    ExcludedProcess, Health, KubeSelector, LeaseRenewal, Mode, NodeStats, PauseInfo, PeerSyncStats,
    PodMember, SchedulingPlan, SchedulingPolicy, SchedulingStats, ServiceDelay, ServiceInfo,
    ServiceList, ServiceSpec, ServiceStats, SlowdownPlan, Stats, StopCap, SyncPeers,
    UnregisteredDependency,
};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Slowpoke node agent API",
        version = "1",
        description = "The node agent (`slowpoke-agent`): registers services by selector, counts \
            their visits, pauses them to apply a virtual-speedup plan (docs/api.md). Counters are \
            monotonic since a service was registered. Served on a root-only Unix socket \
            (`/run/slowpoke/agent.sock`, no token); with `--listen ADDR` also over TCP (the server \
            below), where every call needs `Authorization: Bearer <token>` (401) except \
            `GET /v1/health`, which then answers the status only, and the `Host` header must name \
            the agent (421). Calls that change something take `Content-Type: application/json` \
            (415) and at most 64 KiB of body (413)."
    ),
    servers((url = "http://127.0.0.1:7171")),
    security((), ("bearer" = [])),
    paths(
        health, list_services, get_service, put_service, delete_service, stats, get_slowdown,
        put_slowdown, delete_slowdown, renew_slowdown, get_scheduling, put_scheduling,
        delete_scheduling, renew_scheduling, metrics, openapi
    ),
    components(schemas(
        ErrorBody, ExcludedProcess, Health, LeaseRenewal, Mode, NodeStats, ServiceDelay, ServiceInfo,
        ServiceList, ServiceSpec, ServiceStats, SlowdownPlan, Stats, StopCap,
        UnregisteredDependency, PauseInfo, PeerSyncStats, SyncPeers, PodMember, KubeSelector,
        SchedulingPlan, SchedulingPolicy, SchedulingStats
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
        (status = 403, description = "Every process the selector matches is protected (pid 1, kernel threads, the agent, protected names, outside --allow-uid/--allow-cgroup); the message names each with the reason", body = ErrorBody),
        (status = 409, description = "Too many services registered", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody)))]
fn put_service() {}

#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses(
        (status = 204, description = "Unregistered; its delay (if any) was removed first"),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No such service", body = ErrorBody)))]
fn delete_service() {}

#[utoipa::path(get, path = "/v1/stats", tag = "stats",
    params(("recent_pauses" = Option<u32>, Query, minimum = 0, maximum = 512,
        description = "Also list each service's last N pauses (`recent_pauses`, 0 to 512)")),
    responses(
        (status = 200, description = "Monotonic counters of every service and of the node", body = Stats),
        (status = 400, description = "`recent_pauses` is not an integer from 0 to 512", body = ErrorBody)))]
fn stats() {}

#[utoipa::path(get, path = "/v1/slowdown", tag = "slowdown",
    responses((status = 200, description = "The plan in force (no services: none), with its owner and what is left of its lease", body = SlowdownPlan)))]
fn get_slowdown() {}

#[utoipa::path(put, path = "/v1/slowdown", tag = "slowdown",
    request_body(content = SlowdownPlan, description = "Per-visit delays of registered services, with a lease (`lease_ms`, default 15 s) and an `owner` (default `anonymous`)"),
    responses(
        (status = 200, description = "The plan now in force", body = SlowdownPlan),
        (status = 400, description = "Bad plan (unknown service, delay above the limit, spin with synchronized, lease above the agent's maximum, bad owner, sync_peers without synchronized pauses or without the agent's sync socket, a bad key or peer address)", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 409, description = "Another owner's lease is live; the message names the holder and when it expires", body = ErrorBody),
        (status = 503, description = "The kernel programs are not loaded", body = ErrorBody)))]
fn put_slowdown() {}

#[utoipa::path(delete, path = "/v1/slowdown", tag = "slowdown",
    params(
        ("owner" = Option<String>, Query, description = "Who removes the plan (default `anonymous`): must be the holder while its lease is live"),
        ("force" = Option<bool>, Query, description = "Operator override: remove another owner's live plan (logged at warn)")),
    responses(
        (status = 204, description = "Leftover debt paid, every delay removed"),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Another owner's lease is live; the message names the holder and when it expires", body = ErrorBody)))]
fn delete_slowdown() {}

#[utoipa::path(post, path = "/v1/slowdown/renew", tag = "slowdown",
    request_body(content = LeaseRenewal, description = "The plan's owner and, optionally, the new lease length"),
    responses(
        (status = 200, description = "The plan in force, its lease extended from now (not applied again)", body = SlowdownPlan),
        (status = 400, description = "Bad body, or a lease above the agent's maximum", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No plan holds a lease (it lapsed or was removed): PUT it again", body = ErrorBody),
        (status = 409, description = "The plan belongs to another owner", body = ErrorBody)))]
fn renew_slowdown() {}

#[utoipa::path(get, path = "/v1/scheduling", tag = "scheduling",
    responses((status = 200, description = "The schedule in force (no services: none), with its owner and what is left of its lease", body = SchedulingPlan)))]
fn get_scheduling() {}

#[utoipa::path(put, path = "/v1/scheduling", tag = "scheduling",
    request_body(content = SchedulingPlan, description = "Tail-latency scheduling of registered services (docs/tail.md): the threads serving the `k` oldest requests run first (`SCHED_FIFO` `priority`), with an age cap, a CPU share cap, a lease (`lease_ms`, default 15 s) and an `owner` (default `anonymous`)"),
    responses(
        (status = 200, description = "The schedule now in force, every default filled in", body = SchedulingPlan),
        (status = 400, description = "Bad schedule: the message names the field (no or unknown services, k, priority, age_cap_ms, max_share, lease_ms, owner); nothing changed", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Another owner's schedule is live, or a service has a delay in the slowdown plan in force", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Body not sent as `application/json`", body = ErrorBody),
        (status = 503, description = "The kernel cannot report these services' requests, or the agent is shutting down", body = ErrorBody)))]
fn put_scheduling() {}

#[utoipa::path(delete, path = "/v1/scheduling", tag = "scheduling",
    params(
        ("owner" = Option<String>, Query, description = "Who ends the schedule (default `anonymous`): must be the holder while its lease is live"),
        ("force" = Option<bool>, Query, description = "Operator override: end another owner's live schedule (logged at warn)")),
    responses(
        (status = 204, description = "Schedule ended: every thread it changed has its own policy back"),
        (status = 400, description = "Bad query parameters", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 409, description = "Another owner's lease is live; the message names the holder and when it expires", body = ErrorBody)))]
fn delete_scheduling() {}

#[utoipa::path(post, path = "/v1/scheduling/renew", tag = "scheduling",
    request_body(content = LeaseRenewal, description = "The schedule's owner and, optionally, the new lease length"),
    responses(
        (status = 200, description = "The schedule in force, its lease extended from now", body = SchedulingPlan),
        (status = 400, description = "Bad body, or a lease above the agent's maximum", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 404, description = "No schedule holds a lease (it lapsed or was removed): PUT it again", body = ErrorBody),
        (status = 409, description = "The schedule belongs to another owner", body = ErrorBody)))]
fn renew_scheduling() {}

#[utoipa::path(get, path = "/metrics", tag = "stats",
    responses((status = 200, description = "The counters in the OpenMetrics text format 1.0.0 (written by prometheus-client; Prometheus scrapes it)", body = String, content_type = "application/openmetrics-text")))]
fn metrics() {}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "agent",
    responses((status = 200, description = "This document", body = Object)))]
fn openapi() {}

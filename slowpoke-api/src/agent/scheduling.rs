//! `PUT/GET/DELETE /v1/scheduling`: tail-latency scheduling of a node's services
//! (`docs/tail.md`). The kernel programs carry each request's age along the call chain; the
//! agent runs the threads serving the oldest requests first.

use serde::{Deserialize, Serialize};

/// Which order the agent enforces among the threads of the scheduled services.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SchedulingPolicy {
    /// Oldest request first across every scheduled service of the node: a request's age
    /// counts from its arrival at the app's entry, carried along the call chain (the
    /// system-wide, end-to-end order).
    #[default]
    OldestFirst,
    /// Each service by its own arrival order (a request's age counts from its arrival at that
    /// service, services ordered independently): the per-component FIFO baseline.
    PerServiceFifo,
}

/// `PUT /v1/scheduling` body and `GET /v1/scheduling` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SchedulingPlan {
    #[serde(default)]
    pub policy: SchedulingPolicy,
    /// Registered services whose threads are scheduled (at least one). A service with a delay
    /// in the slowdown plan in force is refused (409), and so is a slowdown plan for a
    /// scheduled service.
    pub services: Vec<String>,
    /// How many requests run first at once (limited processor sharing): the threads serving
    /// the `k` oldest requests (per service with `per-service-fifo`) share the CPU, the rest
    /// wait. Default 1; 1 to 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 64))]
    pub k: Option<u32>,
    /// The real-time priority of a promoted thread (`SCHED_FIFO`), always below the agent's own
    /// (20). Default 10; 1 to 19.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 19))]
    pub priority: Option<u8>,
    /// A request older than this is no longer promoted (its thread returns to normal
    /// scheduling), so a request that never finishes cannot hold the node. Default 1000 ms;
    /// 1 ms to 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 60000))]
    pub age_cap_ms: Option<u64>,
    /// The share of each CPU the promoted threads may hold (per 10 ms); above it they are
    /// demoted until the period ends, so normal work (sshd, the kubelet) keeps the rest.
    /// Default 0.5; above 0 and at most 0.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, maximum = 0.9))]
    pub max_share: Option<f64>,
    /// How long the schedule stays in force without a renewal, ms: when it lapses every thread
    /// gets its scheduling policy back. Default and maximum as for slowdown plans.
    /// Renew with `POST /v1/scheduling/renew` or a PUT by the same owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Who holds the schedule (default `anonymous`); another owner's PUT or DELETE is refused
    /// with 409 while the lease is live. `[A-Za-z0-9._:@-]{1,128}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Answers only (ignored in a PUT): what is left of the lease, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_remaining_ms: Option<u64>,
}

/// What the scheduler did since the schedule was put in force (in `GET /v1/stats` →
/// `scheduling`, absent without a schedule).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchedulingStats {
    /// Requests the kernel reported starting on the scheduled services' threads.
    pub requests: u64,
    /// Of those, requests whose caller carried an age (not started at this node's entry).
    pub requests_with_age: u64,
    /// Threads promoted to the real-time policy.
    pub promotions: u64,
    /// Promoted threads moved to another rank's priority (an older request ended; `k` > 1).
    #[serde(default)]
    pub reranks: u64,
    /// Threads returned to their own policy (request finished, left the k oldest, capped).
    pub demotions: u64,
    /// Demotions because a request passed `age_cap_ms`.
    pub age_capped: u64,
    /// Demotions because the promoted threads reached `max_share`.
    pub share_capped: u64,
    /// Policy changes the kernel refused (the thread exited, a permission): counted, not fatal.
    pub failed_changes: u64,
    /// Kernel request events lost because the agent read them too late (ring buffer full).
    pub lost_events: u64,
    /// Threads promoted right now.
    pub promoted_now: u32,
    /// Times the scheduler thread woke up (a kernel event it had to see, a deadline, a
    /// command): events of requests younger than every ranked one do not wake it.
    #[serde(default)]
    pub wakeups: u64,
    /// CPU time the scheduler thread used, µs, and the wall time it covers, µs: the
    /// scheduler's own cost (`cpu_us / elapsed_us` cores).
    #[serde(default)]
    pub cpu_us: u64,
    #[serde(default)]
    pub elapsed_us: u64,
}

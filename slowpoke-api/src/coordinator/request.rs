//! The body of `POST /v1/experiments` (docs/coordinator-api.md). The coordinator checks it and
//! turns it into a what-if or a profile; this is only its shape.
//!
//! Field names follow the CLI's flags (`--delta-us` is `delta_us`, `--service cart=port:8080` is
//! `"services": {"cart": "port:8080"}`), so a command line translates field by field. Unknown
//! fields are refused rather than ignored: a misspelt `precison` must not silently run with the
//! default precision.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Kind {
    /// One what-if (the default).
    #[default]
    #[serde(rename = "what-if", alias = "what_if", alias = "whatif")]
    WhatIf,
    /// A causal profile: a sweep of optimizations of every service.
    #[serde(rename = "profile")]
    Profile,
    /// A tail comparison: end-to-end latency under open-loop load with and without the
    /// agents' tail schedules (docs/tail.md).
    #[serde(rename = "tail")]
    Tail,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WhatIf => "what-if",
            Kind::Profile => "profile",
            Kind::Tail => "tail",
        }
    }
}

/// `2`, `2.5` or `"2x"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Factor {
    Number(f64),
    Text(String),
}

/// `20000` (T's new capacity, req/s), `"10000:20000"` (as the CLI's `--capacity OLD:NEW`) or
/// `{"old_rps": 10000, "new_rps": 20000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Capacity {
    New(f64),
    Text(String),
    Range(CapacityRange),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CapacityRange {
    #[serde(default)]
    pub old_rps: Option<f64>,
    pub new_rps: f64,
}

/// The JSON body of `POST /v1/experiments` (docs/coordinator-api.md): the CLI's options as
/// fields. Exactly one of `topology` / `services`; for a what-if a `target` and exactly one of
/// `speedup`, `delta_us`, `percent`, `cores`, `capacity`. Fields of the other kind are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExperimentRequest {
    /// `what-if` (default) or `profile`.
    #[serde(default)]
    pub kind: Kind,

    // The app: a topology file (an emulated app the server starts) or running services.
    /// Path of an emulated app's topology inside the server's `--topology-dir` (relative to it),
    /// which the server starts and stops; refused when the server has no topology directory.
    #[serde(default)]
    pub topology: Option<String>,
    /// A running app, name → selector (`port:8080[,8081]`, `pid:123[,124]`, `comm:nginx`,
    /// `cgroup:/path`).
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// The URL the load hits (required with `services`; overrides the topology's own); its host
    /// must be loopback or one the server allows (`--allow-entry-host`).
    #[serde(default)]
    pub entry: Option<String>,
    /// The service owning the entry port, when the agents cannot tell.
    #[serde(default)]
    pub entry_service: Option<String>,
    /// Changes to the topology before it starts, `svc.endpoint.key=value` (`--set`).
    #[serde(default)]
    pub set: Vec<String>,

    // Requests of the load.
    /// HTTP method of the load's requests (default GET).
    #[serde(default)]
    pub method: Option<String>,
    /// `"K: V"` lines (alias `header`).
    #[serde(default, alias = "header")]
    pub headers: Vec<String>,
    /// Body of the load's requests.
    #[serde(default)]
    pub body: Option<String>,
    /// Per-request timeout, seconds, at most 600 (default 5).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Closed-loop connections, 1 to 4096 (default 64); tail: the most requests in flight at
    /// once (default 32).
    #[serde(default)]
    pub connections: Option<i64>,

    // What-if.
    /// What-if: the service to optimize.
    #[serde(default)]
    pub target: Option<String>,
    /// What-if, one of five: T becomes k times as fast (k > 1): `2`, `2.5` or `"2x"`.
    #[serde(default)]
    pub speedup: Option<Factor>,
    /// … T's per-visit time drops by this many µs (> 0).
    #[serde(default)]
    pub delta_us: Option<f64>,
    /// … by this % of its measured per-visit time (0 < P < 100).
    #[serde(default)]
    pub percent: Option<f64>,
    /// … T gets this many cores in total.
    #[serde(default)]
    pub cores: Option<f64>,
    /// … T's capacity goes to NEW req/s (from OLD, default the measured one).
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Emulated apps: also measure T really optimized, and the prediction's error.
    #[serde(default)]
    pub truth: bool,

    // Profile.
    /// Profile: optimizations to sweep, % of each service's per-visit time (default
    /// [10, 30, 50, 70, 90]).
    #[serde(default)]
    pub percents: Option<Vec<f64>>,
    /// Profile: services to sweep (default: every visited service); the CLI's `--only`, alias
    /// `targets`. Tail: the services to schedule (default: every service of the app).
    #[serde(default, alias = "targets")]
    pub only: Option<Vec<String>>,

    // Tail comparison (`kind: tail`, docs/tail.md).
    /// Tail: the open loop's rate, requests/s (Poisson arrivals), above 0 up to 1000000.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Tail: the arms to compare (default all: `default`, `oldest-first`,
    /// `per-service-fifo`); `default` always runs (the ratios are against it).
    #[serde(default)]
    pub arms: Option<Vec<crate::coordinator::TailArm>>,
    /// Tail: requests run first at once (limited processor sharing), 1 to 64 (agent default 1).
    #[serde(default)]
    pub k: Option<i64>,
    /// Tail: real-time priority of promoted threads, 1 to 19 (agent default 10).
    #[serde(default)]
    pub priority: Option<i64>,
    /// Tail: a request older than this is no longer promoted, ms, 1 to 60000 (agent default
    /// 1000).
    #[serde(default)]
    pub age_cap_ms: Option<i64>,
    /// Tail: the share of each CPU promoted threads may hold, above 0 up to 0.9 (agent default
    /// 0.5).
    #[serde(default)]
    pub max_share: Option<f64>,
    /// Tail: a rate sweep, requests/s (1 to 50 rates), each measured with every arm; with
    /// `p99_target_us`.
    #[serde(default)]
    pub sweep: Option<Vec<f64>>,
    /// Tail: the p99 a sweep's rate must keep under, µs: the result gives each arm's highest
    /// such rate.
    #[serde(default)]
    pub p99_target_us: Option<f64>,
    /// Tail: the load generator's threads run `SCHED_FIFO` at this priority, 1 to 99, so a
    /// schedule's real-time threads on the same CPUs do not delay its requests; 0: normal
    /// scheduling. Default: 30 when the coordinator may (root or `CAP_SYS_NICE`), else normal
    /// with a warning in the result.
    #[serde(default)]
    pub load_priority: Option<i64>,

    // Measurement.
    /// One measurement window, seconds, at most 600 (the CLI's `--duration`, alias `duration`;
    /// default 1).
    #[serde(default, alias = "duration")]
    pub window: Option<f64>,
    /// Load before the first window, seconds, at most 600 (default 2; profile 3).
    #[serde(default)]
    pub warmup: Option<f64>,
    /// Wait after a plan change before measuring, seconds, at most 600 (default 0.25; profile
    /// 0.5).
    #[serde(default)]
    pub settle: Option<f64>,
    /// Pause quantum, µs (the CLI's `--quantum-us`; default 10000).
    #[serde(default)]
    pub quantum_us: Option<f64>,
    /// `synchronized` (default), `synchronized-per-node`, `per-service` or `spin` (the CLI's
    /// `--actuator`): how the
    /// agents apply delays (docs/evaluation.md compares them).
    #[serde(default)]
    pub actuator: Option<String>,
    /// Repetitions always run, 1 to 1000 (default 5; profile 3).
    #[serde(default)]
    pub repetitions: Option<i64>,
    /// Target 95 % CI half-width of the prediction, %; 0 turns repeating for precision off
    /// (default 3 for a what-if, off for a profile).
    #[serde(default)]
    pub precision: Option<f64>,
    /// Time budget for repeating towards the precision, seconds, at most 3600 (default 15: a
    /// what-if starts no repetition that would end after it; profile 300).
    #[serde(default)]
    pub budget: Option<f64>,
    /// What-if: cap on repetitions for `precision` (default 30).
    #[serde(default)]
    pub max_repetitions: Option<i64>,
    /// Abort when the load sees more errors than this % in a window (default 1).
    #[serde(default)]
    pub max_errors: Option<f64>,

    /// Agent URLs, some of the server's own (`--agent`, as `GET /v1/agents` names them); default
    /// all of them. Any other URL is refused: the server's agent token goes to its agents only.
    #[serde(default)]
    pub agents: Vec<String>,
}

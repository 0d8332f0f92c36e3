//! The file's schema: the types a topology JSON file deserializes into, with their defaults.
//!
//! Times are in microseconds (`f64`, fractional allowed, never negative), sizes in bytes. Every field
//! except `entry`, `services` and a service's `endpoints` has a default, so a minimal file stays short.
//! Nothing here checks more than JSON types: cross-field rules live in `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A whole emulated application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Free-form name (shown in logs).
    #[serde(default)]
    pub name: String,
    /// Generator family that produced the file (informational; `dynamic-cycle` also allows cycles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Whether calls may form a cycle (they must then be probabilistic so the expected visits stay finite).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_cycles: bool,
    /// How probabilistic calls are decided.
    #[serde(default)]
    pub sampling: Sampling,
    /// The endpoint end-to-end requests enter through.
    pub entry: EndpointRef,
    /// Services by name (`[A-Za-z0-9_-]+`).
    pub services: BTreeMap<String, Service>,
    /// What the generator expects (informational; recomputed by
    /// [`expected_visit_ratios`](super::expected_visit_ratios)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde hands a reference
fn is_false(b: &bool) -> bool {
    !*b
}

/// Decision rule for calls whose `probability` is below 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Error diffusion per call site: over any n visits the call happens `round(n·p)` times (±1). Which requests
    /// make the call still varies, but measured visit ratios carry no sampling noise.
    #[default]
    Dither,
    /// An independent random draw per visit (binomial noise in the visit ratios).
    Random,
}

/// One service: an OS process with its own port and its own tokio runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Worker threads = the service's CPU parallelism: at most this many visits do their per-visit work
    /// (`cpu_us`, `lock_us`, `sleep_us`) at once. Changeable live, within 1..=[`Service::runtime_threads`].
    #[serde(default = "one")]
    pub threads: u32,
    /// Worker threads of the service's tokio runtime (the most `threads` can be raised to live); absent =
    /// `threads`, which makes the runtime exactly `threads` wide as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_threads: Option<u32>,
    /// Fixed service port (optional; otherwise `--base-port` + index or an ephemeral port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The node this service runs on when the app spans a cluster (`slowpoke-emu run --cluster F --node N`):
    /// a node name of the cluster description (`[A-Za-z0-9._-]{1,63}`). Ignored when run on one machine;
    /// `--place SERVICE=NODE` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How requests are served: `async` (default: a tokio runtime, a visit may move between worker threads
    /// and one thread interleaves many) or `thread-per-request` (each worker thread serves one connection at a
    /// time and each of its requests from the first byte read to the last downstream call and the reply, like
    /// Apache's worker MPM or `PostgreSQL`'s backends).
    #[serde(default, skip_serializing_if = "Serving::is_async")]
    pub serving: Serving,
    /// Endpoints by name; endpoint `x` is served at path `/x`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// A service's serving model (see [`Service::serving`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Serving {
    #[default]
    Async,
    ThreadPerRequest,
}

impl Serving {
    pub fn is_async(&self) -> bool {
        *self == Serving::Async
    }
}

fn one() -> u32 {
    1
}

impl Service {
    /// Worker threads of the runtime: `max_threads`, or `threads` when it is absent.
    pub fn runtime_threads(&self) -> u32 {
        self.max_threads.unwrap_or(self.threads)
    }
}

/// The work one visit to an endpoint does, in this order: `cpu_us`, `lock_us` (under the process-wide mutex),
/// `sleep_us` (blocking the worker thread), `wait_us` (non-blocking), then the downstream calls, then the reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// CPU time burnt per visit (µs of the worker thread's CPU clock); with `cpu_dist`, the mean.
    #[serde(default)]
    pub cpu_us: f64,
    /// How each visit's CPU time varies around `cpu_us` (default `fixed`: every visit exactly `cpu_us`).
    #[serde(default, skip_serializing_if = "CpuDist::is_fixed")]
    pub cpu_dist: CpuDist,
    /// CPU time burnt per visit while holding the process-wide mutex (µs; lock contention).
    #[serde(default)]
    pub lock_us: f64,
    /// Blocking sleep of the worker thread per visit (µs; synchronous I/O wait: the thread is occupied).
    #[serde(default)]
    pub sleep_us: f64,
    /// Non-blocking wait per visit (µs; asynchronous I/O wait: the thread serves other requests meanwhile).
    #[serde(default)]
    pub wait_us: f64,
    /// Size of the response body (bytes).
    #[serde(default)]
    pub response_bytes: u64,
    /// `sync`: downstream calls one after the other; `async`: all at once, then wait for all.
    #[serde(default)]
    pub mode: Mode,
    /// Downstream calls made per visit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Call>,
}

/// The distribution of one visit's CPU time, always with mean `cpu_us` (so visit ratios, demands and the
/// bottleneck stay what the file says); the heavy-tailed ones are where the order requests are served in
/// matters for the tail latency. In JSON: `"fixed"`, `"exponential"`, `{"lognormal": {"sigma": 1.5}}`,
/// `{"pareto": {"alpha": 1.5}}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum CpuDist {
    /// Every visit burns exactly `cpu_us`.
    #[default]
    Fixed,
    /// Exponential (coefficient of variation 1).
    Exponential,
    /// Log-normal with this σ of the underlying normal (CV = √(e^σ² − 1): σ = 1.5 gives CV ≈ 2.9).
    Lognormal { sigma: f64 },
    /// Pareto with this shape α > 1 (the variance is infinite for α ≤ 2: a few visits are huge).
    Pareto { alpha: f64 },
}

impl CpuDist {
    pub fn is_fixed(&self) -> bool {
        *self == CpuDist::Fixed
    }
}

/// Sequential or parallel fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Sync,
    Async,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(format!("mode must be sync or async, not {other:?}")),
        }
    }
}

/// One downstream call of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub service: String,
    pub endpoint: String,
    /// Probability that a visit makes this call (0..=1).
    #[serde(default = "one_f64")]
    pub probability: f64,
    /// Size of the request body sent (bytes).
    #[serde(default)]
    pub request_bytes: u64,
}

fn one_f64() -> f64 {
    1.0
}

/// `{"service": "...", "endpoint": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRef {
    pub service: String,
    pub endpoint: String,
}

/// What the generator predicts; informational only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// The service with the largest CPU demand per end-to-end request relative to its threads.
    pub bottleneck: String,
    /// Visits per end-to-end request, per service.
    pub visit_ratios: BTreeMap<String, f64>,
    /// Per service: busiest-resource demand per end-to-end request (µs), see
    /// [`service_demands_us`](super::service_demands_us).
    #[serde(default)]
    pub demand_us: BTreeMap<String, f64>,
}

impl Topology {
    /// Every endpoint, in (service, endpoint) order.
    pub fn endpoint_refs(&self) -> Vec<EndpointRef> {
        self.services
            .iter()
            .flat_map(|(s, svc)| {
                svc.endpoints.keys().map(move |e| EndpointRef {
                    service: s.clone(),
                    endpoint: e.clone(),
                })
            })
            .collect()
    }
}

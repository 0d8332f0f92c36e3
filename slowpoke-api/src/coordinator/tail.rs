//! The result of a tail comparison (`slowpoke tail compare --json`, `POST /v1/experiments` with
//! `"kind": "tail"`, stored results): the end-to-end latency of an app under open-loop load with
//! no schedule and with each of the agents' tail schedules (docs/tail.md), arms interleaved and
//! repeated. Field names are a stable interface.

use serde::{Deserialize, Serialize};

use crate::agent::SchedulingPolicy;

/// One way of scheduling the app's threads that a comparison measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TailArm {
    /// No schedule: Linux's own scheduling (the reference every ratio is taken against).
    Default,
    /// The agents' `oldest-first` schedule on every service.
    OldestFirst,
    /// The agents' `per-service-fifo` schedule on every service.
    PerServiceFifo,
}

impl TailArm {
    /// Every arm, in the order a repetition runs them.
    pub const ALL: [TailArm; 3] = [
        TailArm::Default,
        TailArm::OldestFirst,
        TailArm::PerServiceFifo,
    ];

    /// The wire name, e.g. `oldest-first`.
    pub fn as_str(self) -> &'static str {
        match self {
            TailArm::Default => "default",
            TailArm::OldestFirst => "oldest-first",
            TailArm::PerServiceFifo => "per-service-fifo",
        }
    }

    /// The schedule this arm puts on the agents (none for `default`).
    pub fn policy(self) -> Option<SchedulingPolicy> {
        match self {
            TailArm::Default => None,
            TailArm::OldestFirst => Some(SchedulingPolicy::OldestFirst),
            TailArm::PerServiceFifo => Some(SchedulingPolicy::PerServiceFifo),
        }
    }

    /// Parses a wire name (`default`, `oldest-first`, `per-service-fifo`).
    pub fn parse(s: &str) -> Option<TailArm> {
        TailArm::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for TailArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A figure over repetitions with its 95 % confidence interval (`null` bounds: one repetition,
/// no interval).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Interval {
    pub value: f64,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Repetitions it rests on.
    pub n: usize,
}

/// One point of a latency distribution: this share of the requests took at most `latency_us`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CdfPoint {
    pub latency_us: f64,
    pub fraction: f64,
}

/// One measured window of one arm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailWindow {
    pub arm: TailArm,
    pub repetition: usize,
    /// The open loop's rate, requests/s.
    pub rate_rps: f64,
    pub secs: f64,
    /// 2xx answers in the window.
    pub completed_ok: u64,
    /// Non-2xx answers, timeouts and connection errors.
    pub errors: u64,
    /// Achieved throughput (2xx per second).
    pub rps: f64,
    /// Latency from each request's intended send time (no coordinated omission), µs. The
    /// percentiles and `max_us` count a failed request as the load's per-request timeout (it
    /// ranks behind every answer, so an arm cannot look faster by failing its slowest
    /// requests); `mean_us` is over the answers.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub mean_us: f64,
    pub max_us: f64,
    /// The tail schedulers' own cost over the window, summed over the agents: CPU (cores) and
    /// wake-ups per second (absent for `default`, or from agents that do not report it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_cores: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_wakeups_per_s: Option<f64>,
    /// What the tail schedulers did over the window, summed over the agents (absent for
    /// `default`, or from agents that do not report it): tells a schedule that could not act
    /// (no ages carried, threads never promoted, the share cap always hit) from one that did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_counts: Option<TailSchedulerCounts>,
}

/// The tail schedulers' counters over one window (differences of the agents'
/// `GET /v1/scheduling` → `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailSchedulerCounts {
    /// Requests the kernel reported starting on the scheduled services' threads.
    pub requests: u64,
    /// Of those, requests whose caller carried an age (callees of the entry).
    pub requests_with_age: u64,
    /// Threads promoted to the real-time policy, and returned to their own.
    pub promotions: u64,
    pub demotions: u64,
    /// Promoted threads moved to another rank's priority (`k` > 1).
    #[serde(default)]
    pub reranks: u64,
    /// Demotions because the promoted threads reached the share cap, or a request the age cap.
    pub share_capped: u64,
    pub age_capped: u64,
    /// Policy changes the kernel refused.
    pub failed_changes: u64,
    /// Kernel request events the scheduler read too late.
    pub lost_events: u64,
}

/// What one arm gave over its repetitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailArmResult {
    pub arm: TailArm,
    /// False when the arm could not run (e.g. an agent without tail scheduling); `error` says
    /// why, and the figures are absent.
    pub ran: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Percentiles, mean (µs) and achieved throughput (req/s): trimmed means over the
    /// repetitions' windows with their intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p999_us: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_us: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps: Option<Interval>,
    /// This arm's p99 / the `default` arm's, from the ratios within each repetition (the arms
    /// of a repetition ran back to back); absent for `default` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_vs_default: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_vs_default: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rps_vs_default: Option<Interval>,
    /// The latency distribution of every request of the arm's windows together.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cdf: Vec<CdfPoint>,
}

/// One rate of a sweep: each arm's p99 there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailSweepPoint {
    pub rate_rps: f64,
    pub arms: Vec<TailArmResult>,
}

/// The highest rate of a sweep at which an arm's p99 stayed under the target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailCapacity {
    pub arm: TailArm,
    /// `null`: not even the lowest rate kept the p99 under the target (or the arm never ran).
    pub max_rate_rps: Option<f64>,
    /// The achieved throughput at that rate.
    pub rps: Option<f64>,
}

/// The schedule the arms put on the agents (the policy is the arm's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailSchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_cap_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_share: Option<f64>,
}

/// The answer to one tail comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TailResult {
    pub id: String,
    pub created: String,
    pub entry_url: String,
    /// The scheduled services (every service of the app).
    pub services: Vec<String>,
    /// The agents the schedules went to.
    pub agents: Vec<String>,
    pub schedule: TailSchedule,
    /// The open loop's rate of the main comparison (Poisson arrivals), requests/s.
    pub rate_rps: f64,
    pub window_s: f64,
    pub repetitions: usize,
    /// The main comparison, one entry per arm asked for.
    pub arms: Vec<TailArmResult>,
    /// Every window, in the order it ran (main comparison, then the sweep's).
    pub windows: Vec<TailWindow>,
    /// With a sweep: the p99 target, µs, each rate's figures, and each arm's highest rate (of the
    /// sweep's and the main one) that
    /// kept its p99 under the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_target_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sweep: Vec<TailSweepPoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<TailCapacity>,
    /// The real-time priority (`SCHED_FIFO`) the load generator's threads ran at, so that a
    /// schedule's real-time threads on the same CPUs did not delay its requests; null: normal
    /// scheduling (docs/tail.md).
    #[serde(default)]
    pub load_priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

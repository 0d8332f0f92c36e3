//! What the coordinator's HTTP API answers: experiments as lists and single views, their
//! progress, and the node agents' health (docs/coordinator-api.md).

use serde::{Deserialize, Serialize};

use super::{Kind, ProfileResult, TailResult, WhatIfResult};
use crate::agent::Health;

/// Where an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted; its app and load are being prepared.
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl Status {
    /// Queued or running: it holds the node (one experiment at a time) and can be cancelled.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Queued | Status::Running)
    }

    /// The wire name, e.g. `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Progress of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressView {
    /// 0..=1, a best estimate.
    pub fraction: f64,
    /// Human-readable phase, e.g. `rep 2/5: slow`.
    pub phase: String,
    pub windows_done: usize,
    /// Last measured throughput, req/s.
    pub last_rps: Option<f64>,
}

/// One line of `GET /v1/experiments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExperimentSummary {
    /// e.g. `20261122T043112-123-whatif-cart`: UTC start time, milliseconds, kind, target.
    pub id: String,
    pub kind: Kind,
    pub status: Status,
    pub progress: ProgressView,
    /// RFC 3339, UTC.
    pub created: String,
    /// One line, e.g. `cart 2x speedup: 3333 -> 5000 req/s predicted (+50.0 %)`.
    pub summary: Option<String>,
    pub error: Option<String>,
}

/// `GET /v1/experiments/{id}` (and the answers of `POST` and `DELETE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExperimentView {
    #[serde(flatten)]
    pub summary: ExperimentSummary,
    /// The result when done: the same JSON as `slowpoke what-if --json` (or `profile --json`,
    /// `tail compare --json`).
    pub result: Option<ExperimentResult>,
}

/// A result as the CLI prints it: a what-if's or a profile's own JSON, without a tag (the
/// view's `kind` tells which).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // one per answer: boxing buys nothing
pub enum ExperimentResult {
    WhatIf(WhatIfResult),
    Profile(ProfileResult),
    Tail(TailResult),
}

/// One line of `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentView {
    /// The agent's URL, or `in-process`.
    pub name: String,
    /// `ok`, `unreachable` when the health call failed, or the agent's own status (`degraded`).
    pub status: String,
    pub health: Option<Health>,
    pub error: Option<String>,
}

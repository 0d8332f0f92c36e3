//! The coordinator's HTTP API types (`slowpoke serve`, docs/coordinator-api.md): the request that
//! starts an experiment, the views that report on it and the results it produces. The CLI's
//! `--json` output and the stored result files use the same result types.

mod request;
mod result;
mod tail;
mod view;

pub use request::{Capacity, CapacityRange, ExperimentRequest, Factor, Kind};
pub use result::{
    Limit, Optimization, PredictedBy, ProfileCurve, ProfilePoint, ProfileResult, RegimeRecord,
    ServiceRow, ServiceWindowRecord, StopReason, TargetUse, TargetUseRecord, WhatIfResult,
    WindowRecord,
};
pub use tail::{
    CdfPoint, Interval, TailArm, TailArmResult, TailCapacity, TailResult, TailSchedule,
    TailSchedulerCounts, TailSweepPoint, TailWindow,
};
pub use view::{
    AgentView, ExperimentResult, ExperimentSummary, ExperimentView, ProgressView, Status,
};

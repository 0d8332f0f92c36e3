//! The experiment runner: the profiling loop of one what-if or one causal profile.
//!
//! One continuous closed-loop load runs for the whole experiment (the app and the load are never
//! restarted between points, plans change live). Measurements are WINDOWS: agent stats and load
//! counters are snapshotted at t0 and t1. A calibration baseline window gives r_s, p_s, c_s (and
//! so Δ, δ and the pause plan); then repetitions are interleaved — base, slow, (truth), base,
//! slow, (truth), ... — because throughput drifts by a few percent over minutes on a shared
//! machine and interleaving spreads that drift evenly over the three kinds of run.
//!
//! Every exit path (success, error, cancellation, panic) removes the plan from every agent and
//! restores the emulator's ground-truth change: [`PlanGuard`] and the session's `finish`.
//!
//! The runner is blocking; from async code use [`spawn_what_if`] / [`spawn_profile`], which run it
//! on tokio's blocking pool and hand back an [`ExperimentHandle`] to observe and cancel it.
//!
//! Rooms, in the order an experiment meets them:
//! - `spec`: what to run ([`WhatIfSpec`], [`ProfileSpec`], [`Timing`], [`Repeat`], [`Safety`],
//!   [`LoadConfig`]) and the checks that need no app;
//! - `app`: what the runner drives ([`App`], [`Load`], [`LoadStarter`], [`Backends`]);
//! - `session`: app + agents + load opened for one experiment, and the [`PlanGuard`]; `entry`
//!   finds the entry service; `pods` resolves the pod and label selectors and re-registers
//!   pods that changed;
//! - `window`: one measured window, its record, its warnings and safety limits; `warnings`
//!   collects them for the result;
//! - `stop_share`: the share of time a plan stops each service, and what to ask the agents for;
//! - `what_if`, `profile`: the two protocols; `regime`: which limit binds and what that makes
//!   a point's prediction; `shortfall`: did the target keep working;
//! - `monitor`: [`Progress`] and cancellation; `spawn`: the async API;
//! - `result`: the wire result types, ids and timestamps; `error`: [`RunError`];
//! - `tail`: the tail comparison (open-loop latency with and without the agents' tail
//!   schedules), a protocol of its own over the same app, agents, monitor and errors.

mod app;
mod entry;
mod error;
mod monitor;
mod pods;
mod profile;
mod regime;
mod result;
mod session;
mod shortfall;
mod spawn;
mod spec;
mod stop_share;
mod sync_peers;
pub mod tail;
mod warnings;
mod what_if;
mod window;

#[cfg(test)]
mod tests;

pub use app::{App, AttachedApp, Backends, Load, LoadStarter, LoadWindow, TruthChange};
pub use entry::url_port;
pub use error::RunError;
pub use monitor::{Monitor, Progress};
pub use profile::run_profile;
pub use result::{
    ProfileCurve, ProfilePoint, ProfileResult, ServiceRow, StopReason, TargetUseRecord,
    WhatIfResult, WindowRecord, new_id, now_rfc3339,
};
pub use session::PlanGuard;
pub use shortfall::{target_use_record, target_use_warning};
pub use spawn::{ExperimentHandle, spawn_profile, spawn_tail, spawn_what_if};
pub use spec::{
    ACTUATORS, DEFAULT_QUANTUM_US, LoadConfig, ProfileSpec, Repeat, Safety, Timing, WhatIfSpec,
};
pub use what_if::run_what_if;
pub use window::NODE_SATURATED;

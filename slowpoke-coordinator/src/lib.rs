//! Slowpoke coordinator (library): the virtual-speedup model, the profiling loop, agent clients
//! and result storage. The `slowpoke` binary (crate `slowpoke-cli`) is a thin CLI over it; the
//! HTTP server ([`server`]) drives the same [`experiment::spawn_what_if`] / [`experiment::spawn_profile`].
//!
//! - [`model`]: pure maths (r, p, c, Δ, δ, d_s, X_pred), docs/model.md derives it.
//! - [`stats`]: robust statistics over repetitions.
//! - [`agents`]: [`agents::AgentClient`] over HTTP (TCP or the node daemon's socket) or in-process.
//! - [`experiment`]: the runner (windows, interleaving, precision, safety, cleanup).
//! - [`kubernetes`]: pod and label selectors resolved through the Kubernetes API and placed on
//!   the agents of the pods' nodes, followed during the experiment.
//! - [`lease`]: the experiment's owner id and lease on the agents, renewed while it runs.
//! - [`schedule`]: a tail schedule held on every agent under a renewed lease.
//! - [`results`]: JSON files under a results directory.
//! - [`real`]: the real agent (in-process, feature `in-process`), load generator and scripted
//!   ground truth; emulated apps (the test bed) are `slowpoke-eval`'s, passed in as a
//!   [`spec_builder::Emulator`].
//! - [`spec_builder`]: the rules of a request (optimization, app) shared by the CLI and server.
//! - [`plot`]: the what-if and causal-profile SVGs (plotters).
//! - `fake` (only under `cfg(test)` or the cargo feature `fake`, never in a release library): a
//!   fake app + agent + load obeying the model exactly, for tests.

// Doc comments are full of maths (r_s, X_pred, 1/X_slow) that are not code.
#![allow(clippy::doc_markdown)]

pub mod agents;
pub mod experiment;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod kubernetes;
pub mod lease;
pub mod model;
pub mod plot;
pub mod real;
pub mod report;
pub mod results;
pub mod schedule;
pub mod server;
pub mod spec_builder;
pub use slowpoke_stats as stats;

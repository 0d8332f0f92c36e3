//! The accuracy evaluation (`slowpoke eval`, `cargo xtask eval`; docs/evaluation.md).
//!
//! - [`suite`]: which topologies, targets and points (pure).
//! - [`summary`]: points, per-family statistics and the markdown report (pure).
//! - [`runner`]: runs a suite against the agents and the emulator, resumable.
//! - [`plot`]: the predicted-vs-true plot of a run.

pub mod plot;
pub mod runner;
pub mod suite;
pub mod summary;

//! The accuracy evaluation of Slowpoke against ground truth (`slowpoke eval`, `cargo xtask eval`;
//! docs/evaluation.md), and the emulated app it measures. This is the test bed's side of the
//! workspace: the coordinator library does not depend on the emulator, the `slowpoke` binary
//! does through this crate (its default feature `emu`).
//!
//! - [`emu_app`]: [`EmuApp`] (an emulated app with live ground truth) and [`EmuApps`] (the
//!   coordinator's [`slowpoke_coordinator::spec_builder::Emulator`] for `--topology`).
//! - [`suite`]: which topologies, targets and points (pure).
//! - [`summary`]: points, per-family statistics and the markdown report (pure).
//! - [`runner`]: runs a suite against the agents and the emulator, resumable.
//! - [`plot`]: the predicted-vs-true plot of a run.
//! - [`tail_suite`]: the tail suite (default vs tail schedules under open-loop load).

// Doc comments are full of maths (r_s, X_pred) that are not code.
#![allow(clippy::doc_markdown)]

pub mod emu_app;
pub mod plot;
pub mod runner;
pub mod suite;
pub mod summary;
pub mod tail_suite;

pub use emu_app::{ClusterEmuApps, EmuApp, EmuApps, TruthOn};

//! Slowpoke node agent (library): everything but argument parsing lives here.
//!
//! - [`agent`]: the [`Agent`] (services, plans, stats, lifecycle) and its [`AgentConfig`];
//! - [`registry`]: services, selectors, cores and CPU time;
//! - [`actuator`]: the pause actuator (one precise resumer thread per service, safety cap);
//! - [`safety`]: nothing is ever left stopped (guardian, state file, single-agent lock);
//! - [`http`]: the HTTP API on a root-only Unix socket (and TCP with a token), the Prometheus
//!   text;
//! - [`kernel`]: the kernel programs; [`api`]: the wire types;
//! - [`sys`]: the OS helpers (clock, signals, scheduling, `/proc`, socket tables) everything
//!   else builds on.
//!
//! Modules import each other in one direction only: `sys` ← `safety`, `kernel`, `registry` ←
//! `actuator` ← `agent` ← `http`.

pub mod actuator;
pub mod agent;
/// The wire types live in the `slowpoke-api` crate (no eBPF toolchain needed to use them).
pub use slowpoke_api::agent as api;
pub mod error;
pub mod http;
pub mod kernel;
pub mod registry;
pub mod safety;
pub mod sys;

pub use agent::{
    Agent, AgentConfig, DEFAULT_LEASE, DEFAULT_MAX_LEASE, DEFAULT_MAX_PLAN_STOPPED_SHARE,
};
pub use error::AgentError;
pub use http::Auth;

/// The kernel object built by build.rs (the `slowpoke-kernel` binary of `slowpoke-ebpf`).
pub static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slowpoke-kernel"));

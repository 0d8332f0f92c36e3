//! Slowpoke node agent (library): everything but argument parsing lives here.
//!
//! - [`agent`]: the [`Agent`] (registry, plans, stats, lifecycle) and its [`AgentConfig`];
//! - [`registry`] and [`procfs`]: services, selectors, cores and CPU time from `/proc`;
//! - [`actuator`]: the pause actuator (one precise resumer thread per service, safety cap);
//! - [`guardian`] and [`state`]: nothing is ever left stopped, single agent per node;
//! - [`http`] and [`metrics`]: the HTTP API and the Prometheus text;
//! - [`api`]: the wire types; [`kernel`]: the kernel programs.

pub mod actuator;
pub mod agent;
/// The wire types live in the `slowpoke-api` crate (no eBPF toolchain needed to use them).
pub use slowpoke_api::agent as api;
pub mod error;
pub mod guardian;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod procfs;
pub mod registry;
pub mod sockdiag;
pub mod state;

pub use agent::{Agent, AgentConfig};
pub use error::AgentError;
pub use http::Auth;

/// The kernel object built by build.rs.
pub static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slowpoke"));

impl Agent {
    /// The HTTP API of this agent (see docs/api.md).
    pub fn router(&self, auth: Auth) -> axum::Router {
        http::router(self.clone(), auth)
    }
}

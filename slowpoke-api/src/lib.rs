//! Slowpoke's wire contract: what goes over HTTP between a client, the coordinator and the node
//! agents, apart from the code that serves it.
//!
//! The agent crate compiles the kernel programs (nightly Rust + bpf-linker); anything that only
//! speaks JSON to an agent or a coordinator (the coordinator's HTTP client, tools, a coordinator
//! built without the in-process agent) links this crate instead and builds on stable Rust. It
//! depends on serde and `subtle` only (plus `utoipa` with the `openapi` feature); never on aya.
//!
//! - [`agent`]: the agent's HTTP API types (`/v1/services`, `/v1/stats`, `/v1/slowdown`, ...);
//! - [`coordinator`]: the coordinator's request, view and result types (`/v1/experiments`, ...);
//! - [`selector`]: `port:8080`-style selectors of the CLI and of experiment requests;
//! - [`auth`]: the one bearer-token rule both servers enforce;
//! - [`cluster`]: the cluster description (nodes, their agents and tokens) the coordinator and the
//!   emulator read;
//! - `openapi` (feature `openapi`): the OpenAPI documents of both APIs, generated from these types.
//!
//! Fixed interface (docs/api.md, docs/coordinator-api.md): extend, don't rename.

// Doc comments are full of units and maths (r_s, X_pred, µs) that are not code.
#![allow(clippy::doc_markdown)]

pub mod agent;
pub mod auth;
pub mod cluster;
pub mod coordinator;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod selector;

use serde::{Deserialize, Serialize};

/// Every error answer of both servers: `{"error": "...what is wrong and what to do"}` with a
/// 4xx/5xx status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Error))]
pub struct ErrorBody {
    /// What is wrong and what to do about it.
    pub error: String,
}

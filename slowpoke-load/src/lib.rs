//! Closed-loop HTTP/1.1 load generator for Slowpoke.
//!
//! N keep-alive connections each send the next request as soon as the previous response has been read, so
//! the offered load adapts to the system: at saturation the completion rate is the system's throughput `X`.
//!
//! - [`LoadGenerator`] runs a continuous load on threads of its own; the coordinator reads cumulative
//!   [`Snapshot`]s and turns pairs of them into measurement [`Window`]s (`Window::rps` is the throughput the
//!   model uses), without restarting the load between experiment points.
//! - [`run`] is a one-shot wrk-like run (warm-up, then a fixed duration or request count) returning a
//!   [`Report`] that also carries the published system's throughput definition (`rps_workers`).
//!
//! Only 2xx responses count as throughput; non-2xx, timeouts and connection errors are counted apart.
//! See docs/load.md for the CLI and the throughput definitions.

mod arrivals;
mod cpu;
mod exchange;
mod generator;
mod open_counters;
mod open_loop;
mod realtime;
mod run;
mod shared;
mod spec;
mod stats;

pub use arrivals::{Arrivals, Schedule};
pub use generator::{GeneratorOptions, LoadGenerator};
pub use hyper::Method;
pub use open_counters::{MAX_BACKLOG, OpenReport};
pub use realtime::permitted as realtime_permitted;
pub use run::{Report, RunLength, run, run_with};
pub use spec::{LoadSpec, RequestTemplate, parse_duration, parse_header, parse_method, parse_mix};
pub use stats::{Counts, GENERATOR_BOUND_BUSY, Snapshot, Window, online_cpus};

/// Why a load could not be started or run. Messages name what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("bad URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("bad header {header:?}: {reason}")]
    BadHeader { header: String, reason: String },
    #[error("bad request mix: {0}")]
    BadMix(String),
    #[error("invalid load: {0}")]
    Invalid(String),
    #[error("{url} does not answer: {reason} (is the server running and listening there?)")]
    Unreachable { url: String, reason: String },
    #[error("cannot start the load generator's threads: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(
        "cannot run the load generator's threads at real-time priority {priority} (SCHED_FIFO): {source}; \
         run as root or with CAP_SYS_NICE, or at normal priority"
    )]
    Realtime {
        priority: u8,
        #[source]
        source: std::io::Error,
    },
}

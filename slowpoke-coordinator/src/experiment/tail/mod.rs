//! Tail comparison (docs/tail.md, "Using it"): an app's end-to-end latency under open-loop load
//! with no schedule (`default`) and with the agents' tail schedules (`oldest-first`,
//! `per-service-fifo`), arms interleaved and repeated, figures with confidence intervals and
//! the latency CDF per arm; optionally a rate sweep for the highest rate whose p99 stays under
//! a target.
//!
//! Rooms: `spec` (what to run and its checks), `load` (the open-loop window), `run` (the
//! protocol and the schedule's lifetime), `summary` (pure: windows to figures).

mod load;
mod run;
mod spec;
mod summary;
#[cfg(test)]
mod tests;

pub use load::{DEFAULT_LOAD_PRIORITY, LatencyWindow, LoadPriority, OpenLoad, RealOpenLoad};
pub use run::run_tail;
pub use spec::{DEFAULT_IN_FLIGHT, Sweep, TailSpec, check_schedule};
pub use summary::{capacity, cdf, interval};

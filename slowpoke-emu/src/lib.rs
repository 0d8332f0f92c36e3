//! Synthetic microservice emulator: runs an application described by a topology JSON file, one OS process per
//! service, each with its own loopback port, CPU parallelism, per-visit CPU work, locks, waits and downstream
//! calls; plus generators for the evaluation's topology families. It is the test bed, the ground truth
//! (settings change at start with `--set` or live through each service's control port) and the demo app.
//!
//! Library code logs through `tracing` (the binary installs the subscriber). See `docs/emu.md` for the file
//! format, the command line and the library API.

pub mod busy;
pub mod client;
pub mod control;
pub mod dist;
mod downstream;
pub mod generate;
pub mod placement;
pub mod runner;
pub mod serve;
pub mod service;
pub mod topology;
pub mod workers;

pub use client::{ClusterStart, RunningApp, StartOptions, find_binary};
pub use control::{Scope, ServiceControl, Setting};
pub use generate::{Family, GenSpec, generate};
pub use placement::{PlaceArg, Placement};
pub use runner::{AppInfo, RunOptions, ServiceInfo};
pub use service::{ServiceSettings, ServiceStats};
pub use topology::{
    Call, CpuDist, Endpoint, EndpointRef, Mode, Sampling, Service, Serving, Set, Topology,
    TopologyError, TopologySource, expected_bottleneck, expected_visit_ratios, load,
};

//! Helpers of the tail-latency spike (issue #18, item 0): thread scheduling policies by thread id
//! ([`sched`]), cgroup-v1 `cpu` groups for the per-class alternative ([`cgroup`]) and latency
//! summaries with tail quantiles ([`dist`]). The binaries under `src/bin` measure; this library
//! holds what items 1–2 may reuse.

pub mod cgroup;
pub mod dist;
pub mod sched;

//! The operating system as the agent uses it: clocks, signals, scheduling, `/proc`, the
//! socket tables and socket peers' credentials.
//!
//! Thin, domain-free wrappers over system calls and kernel files. Nothing here knows about
//! services, plans or kernel programs, and nothing here imports the rest of the crate: every other
//! module may use `sys`, so `sys` must never need them back (that is what kept the actuator, the
//! state file and the kernel loader importing each other in a circle).

pub mod caps;
pub mod clock;
pub mod cred;
pub mod procfs;
pub mod rawfs;
pub mod sched;
pub mod signal;
pub mod sockdiag;

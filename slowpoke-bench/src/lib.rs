//! Slowpoke's benchmarks, one binary each (`cargo xtask bench agent|emu|whatif` runs them in
//! release mode and they print one JSON object):
//!
//! - `bench-agent` (`src/bin/bench-agent/`): the kernel programs' cost per socket call and per
//!   request, pause precision as the paused process sees it, listing listening sockets,
//!   synchronized pauses;
//! - `bench-emu` (`src/bin/bench-emu/`): the emulator's overhead per visit, the load generator's
//!   CPU per request, the shop app's true gain from halving cart's work live;
//! - `bench-whatif` (`src/bin/bench-whatif/`): the time the coordinator takes to answer a 5-point
//!   what-if at its default precision, with the load generator's and the node's CPU.
//!
//! This library holds what they share: [`machine`], the CPU and load readings of the node. Their
//! statistics (Student-t intervals, rounding for reports) come from `slowpoke-stats`.

pub mod machine;

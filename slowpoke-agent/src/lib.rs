//! Slowpoke node agent (library): everything but argument parsing lives here.

pub mod api;
pub mod kernel;

/// The kernel object built by build.rs.
pub static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/slowpoke"));

//! Types shared by the kernel programs (`slowpoke-ebpf`) and the agent (`slowpoke-agent`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel writes it into BPF maps and the agent
//! reads it back byte for byte. The `user` feature adds `aya::Pod` impls for the agent side.
#![no_std]

/// Placeholder so the pipeline builds; the real map layout lands with the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ServiceCounters {
    pub visits: u64,
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data without padding.
unsafe impl aya::Pod for ServiceCounters {}

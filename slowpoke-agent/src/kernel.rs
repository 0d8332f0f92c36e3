//! The kernel side as the rest of the agent sees it: loads and attaches the programs of
//! `slowpoke-ebpf`, keeps their maps current and reads their counters back.
//!
//! CONTRACT (the registry, actuators and API are written against exactly this API; extend, don't
//! rename). Bodies are filled in with the kernel programs.
#![allow(clippy::unused_self, clippy::needless_pass_by_value)]

use std::{collections::BTreeMap, net::IpAddr};

use crate::api::Mode;

/// Index of a service in the kernel maps (`0..MAX_SERVICES`).
pub type ServiceId = u32;
/// How many services one agent can track.
pub const MAX_SERVICES: u32 = 64;
/// Default pause quantum: debt is batched into pauses of at least this long.
pub const DEFAULT_QUANTUM_NS: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Unsupported(String),
    #[error("eBPF: {0}")]
    Ebpf(String),
}

/// Counters the kernel keeps per service (monotonic since the service id was (re)assigned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub visits: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub calls_out: u64,
    /// Sum of delay_per_visit over visits made while a delay was set (pause mode).
    pub owed_ns: u64,
    /// Busy delay spent in the kernel (spin mode).
    pub spin_ns: u64,
    /// Pauses the kernel started itself (in-kernel SIGSTOP of the visiting process).
    pub kernel_stops: u64,
    /// HTTP/2 (or other multiplexed/pipelined) traffic seen on a server socket of the service.
    pub visits_approximate: bool,
}

/// The kernel asks for a pause: the service's debt reached the quantum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseRequest {
    pub service: ServiceId,
    /// The process the kernel already stopped itself (`bpf_send_signal(SIGSTOP)`), if any.
    pub stopped_tgid: Option<u32>,
    /// CLOCK_MONOTONIC (bpf_ktime_get_ns) at the trigger.
    pub at_ns: u64,
}

/// An outgoing (client-side) connection endpoint of a tracked process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingEndpoint {
    pub service: ServiceId,
    pub tgid: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub calls: u64,
}

/// Loaded and attached kernel programs. Dropping it detaches them.
pub struct Kernel {
    _private: (),
}

impl Kernel {
    /// Loads the embedded object, probes the tracepoints and attaches. A missing feature is an
    /// error that says which one and why.
    pub fn load(quantum_ns: u64) -> Result<Kernel, KernelError> {
        let _ = quantum_ns;
        Err(KernelError::Unsupported("kernel programs not implemented yet".into()))
    }

    /// Kernel features probed at load (name -> "on" or the reason it is off).
    pub fn features(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Replaces the listening ports of a service (a receive on one of them may start a visit).
    pub fn set_listen_ports(&mut self, id: ServiceId, ports: &[u16]) -> Result<(), KernelError> {
        let _ = (id, ports);
        todo!()
    }

    /// Replaces the tgid membership of a service.
    pub fn set_members(&mut self, id: ServiceId, tgids: &[u32]) -> Result<(), KernelError> {
        let _ = (id, tgids);
        todo!()
    }

    /// Replaces the cgroup (v2 id) membership of a service.
    pub fn set_cgroup_members(&mut self, id: ServiceId, cgroup_ids: &[u64]) -> Result<(), KernelError> {
        let _ = (id, cgroup_ids);
        todo!()
    }

    /// Forgets a service: membership, ports, delay and counters.
    pub fn remove_service(&mut self, id: ServiceId) -> Result<(), KernelError> {
        let _ = id;
        todo!()
    }

    /// Sets the per-visit delay (0 removes it). `in_kernel_stop`: the kernel may SIGSTOP the
    /// visiting process itself when the debt reaches the quantum (the agent stops the others).
    pub fn set_delay(
        &mut self,
        id: ServiceId,
        delay_per_visit_ns: u64,
        mode: Mode,
        in_kernel_stop: bool,
    ) -> Result<(), KernelError> {
        let _ = (id, delay_per_visit_ns, mode, in_kernel_stop);
        todo!()
    }

    pub fn set_quantum(&mut self, quantum_ns: u64) -> Result<(), KernelError> {
        let _ = quantum_ns;
        todo!()
    }

    pub fn counters(&self, id: ServiceId) -> Result<KernelCounters, KernelError> {
        let _ = id;
        todo!()
    }

    /// After a pause: the total paid so far for this service; re-arms the trigger.
    pub fn rearm(&mut self, id: ServiceId, paid_total_ns: u64) -> Result<(), KernelError> {
        let _ = (id, paid_total_ns);
        todo!()
    }

    /// Distinct threads of the service that did socket work on its server sockets since
    /// `since_ns` (CLOCK_MONOTONIC).
    pub fn serving_threads(&self, id: ServiceId, since_ns: u64) -> usize {
        let _ = (id, since_ns);
        todo!()
    }

    /// Outgoing endpoints of tracked processes (client side).
    pub fn outgoing_endpoints(&self) -> Vec<OutgoingEndpoint> {
        todo!()
    }

    /// Takes the stream of pause requests (once).
    pub fn take_pause_requests(
        &mut self,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<PauseRequest>, KernelError> {
        todo!()
    }
}

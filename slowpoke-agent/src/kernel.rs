//! The kernel side as the rest of the agent sees it: loads and attaches the programs of
//! `slowpoke-ebpf`, keeps their maps current and reads their counters back.
//!
//! CONTRACT (the registry, actuators and API are written against exactly this API; extend, don't
//! rename). `docs/kernel.md` describes what the kernel programs count and when they trigger.

mod ages;
mod btf;
mod events;
mod offsets;
mod safety;
pub mod share;
pub mod support;

pub use ages::RequestEvents;
use offsets::Offsets;

pub use safety::{
    Beater, DEFAULT_HEARTBEAT_MAX_AGE_NS, Heartbeat, MAX_CGROUP_DEPTH, MAX_PROTECTED_CGROUPS,
    MAX_PROTECTED_PIDS, cgroup_v2_id,
};

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{BtfTracePoint, FExit},
};
use slowpoke_common::{
    CONFIG_IN_KERNEL_STOP, EndpointKey, EndpointValue, GLOBAL_DETECT_HTTP2, GlobalConfig,
    ListenKey, MODE_PAUSE, MODE_SPIN, PORT_OTHER, PORT_VISITS, PauseGate, ServiceConfig,
    ServiceCounters, ServiceTraffic, ThreadActivity,
};
use tokio::sync::mpsc;

use crate::api::Mode;

/// Index of a service in the kernel maps (`0..MAX_SERVICES`).
pub type ServiceId = u32;
/// How many services one agent can track.
pub const MAX_SERVICES: u32 = slowpoke_common::MAX_SERVICES;
/// Default pause quantum: debt is batched into pauses of at least this long.
pub const DEFAULT_QUANTUM_NS: u64 = 1_000_000;
/// Longest busy delay the spin actuator inserts at one visit (longer delays are capped).
pub const MAX_SPIN_NS: u64 = slowpoke_common::MAX_SPIN_NS;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{0}")]
    Unsupported(String),
    #[error("eBPF: {0}")]
    Ebpf(String),
    /// An argument the kernel maps cannot take (too many entries, a path that is no cgroup v2
    /// directory, ...); the message says what to change.
    #[error("{0}")]
    Invalid(String),
}

/// Counters the kernel keeps per service (monotonic since the service id was (re)assigned).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub visits: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub calls_out: u64,
    /// Sum of `delay_per_visit` over visits made while a delay was set (pause mode).
    pub owed_ns: u64,
    /// Busy delay spent in the kernel (spin mode).
    pub spin_ns: u64,
    /// Pauses the kernel started itself (in-kernel SIGSTOP of the visiting process).
    pub kernel_stops: u64,
    /// HTTP/2 (or other multiplexed/pipelined) traffic seen on a server socket of the service.
    pub visits_approximate: bool,
    /// Pause requests the kernel emitted.
    pub pause_requests: u64,
    /// Triggers lost because the ring buffer was full (the kernel reopened the gate, so the
    /// next visit triggers again).
    pub dropped_requests: u64,
    /// In-kernel stops (or spins) refused because the visiting process is protected
    /// ([`Kernel::set_protected_pids`], [`Kernel::set_protected_cgroups`], tgid 1).
    pub denied_stops: u64,
    /// In-kernel stops (or spins) skipped because the agent's heartbeat was stale
    /// ([`Kernel::beat`]).
    pub stale_stops: u64,
}

/// The kernel asks for a pause: the service's debt reached the quantum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseRequest {
    pub service: ServiceId,
    /// The process the kernel already stopped itself (`bpf_send_signal(SIGSTOP)`), if any.
    pub stopped_tgid: Option<u32>,
    /// `CLOCK_MONOTONIC` (`bpf_ktime_get_ns`) at the trigger.
    pub at_ns: u64,
    /// The service's total debt (`owed_ns`) at the trigger.
    pub owed_ns: u64,
}

/// A loaded program as the kernel accounts it ([`Kernel::program_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub id: u32,
    pub run_count: u64,
    pub run_time_ns: u64,
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

/// Loaded and attached kernel programs. Dropping it detaches them (links are owned by the
/// programs, which are owned by `ebpf`; nothing is pinned).
pub struct Kernel {
    /// Stopped first on drop (see `Drop`): it owns the ring buffer and the log reader.
    events: Option<events::EventReader>,
    pause_requests: Option<mpsc::UnboundedReceiver<PauseRequest>>,
    members: HashMap<MapData, u32, u32>,
    member_bits: Array<MapData, u64>,
    cgroup_members: HashMap<MapData, u64, u32>,
    listen_ports: HashMap<MapData, ListenKey, u8>,
    config: Array<MapData, ServiceConfig>,
    global: Array<MapData, GlobalConfig>,
    counters: Array<MapData, ServiceCounters>,
    traffic: PerCpuArray<MapData, ServiceTraffic>,
    nr_cpus: usize,
    gates: Array<MapData, PauseGate>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    threads: HashMap<MapData, u32, ThreadActivity>,
    protected: safety::Protected,
    heartbeat: Heartbeat,
    /// Request ages (tail-latency scheduling): maps, and the carrying programs once needed.
    ages: ages::Ages,
    /// The share cap's program and maps (tail-latency scheduling).
    share: share::Share,
    ebpf: Ebpf,
    /// What the agent wrote, so that replacing a set touches only the differences.
    tgids: BTreeMap<ServiceId, Vec<u32>>,
    cgroups: BTreeMap<ServiceId, Vec<u64>>,
    ports: BTreeMap<ServiceId, Vec<u16>>,
    global_value: GlobalConfig,
    features: BTreeMap<String, String>,
}

fn ebpf_error(what: &str) -> impl FnOnce(aya::maps::MapError) -> KernelError + '_ {
    move |e| KernelError::Ebpf(format!("{what}: {e}"))
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| KernelError::Ebpf(format!("map {name} missing from the kernel object")))?;
    T::try_from(map).map_err(|e| KernelError::Ebpf(format!("map {name}: {e}")))
}

/// Kernels before 6.3 (no sock tracepoints): the same body on the returns of `tcp_recvmsg` and
/// `tcp_sendmsg` ([`support::FALLBACK`], docs/kernel.md#support).
fn attach_fallback(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    features: &mut BTreeMap<String, String>,
) -> Result<(), KernelError> {
    for (program_name, function, tracepoint) in [
        ("tcp_recvmsg_exit", "tcp_recvmsg", "sock_recv_length"),
        ("tcp_sendmsg_exit", "tcp_sendmsg", "sock_send_length"),
    ] {
        let feature = format!("fexit/{function}");
        let program: &mut FExit = ebpf
            .program_mut(program_name)
            .ok_or_else(|| KernelError::Ebpf(format!("program {program_name} missing")))?
            .try_into()
            .map_err(|e| KernelError::Ebpf(format!("program {program_name}: {e}")))?;
        program
            .load(function, btf)
            .map_err(|e| KernelError::Unsupported(format!("{feature} (fallback): {e:#}")))?;
        program
            .attach()
            .map_err(|e| KernelError::Unsupported(format!("attaching {feature}: {e:#}")))?;
        features.insert(
            format!("tp_btf/{tracepoint}"),
            format!("off: no sock:{tracepoint} before Linux 6.3; {feature} instead"),
        );
        features.insert(feature, "on (fallback)".into());
    }
    Ok(())
}

fn check_id(id: ServiceId) -> Result<(), KernelError> {
    if id < MAX_SERVICES {
        Ok(())
    } else {
        Err(KernelError::Ebpf(format!(
            "service id {id} out of range (at most {MAX_SERVICES} services)"
        )))
    }
}

impl Kernel {
    /// Loads the embedded object, probes the tracepoints and attaches. A missing feature is an
    /// error that says which one and why.
    pub fn load(quantum_ns: u64) -> Result<Kernel, KernelError> {
        Kernel::load_inner(quantum_ns, 0, false)
    }

    /// `ages_clock_offset_ns` and `ages_from_current`: 0 and false but in tests
    /// (`Kernel::load_with_clock_offset`, `Kernel::load_without_sendmsg_tracepoint`).
    fn load_inner(
        quantum_ns: u64,
        ages_clock_offset_ns: u64,
        ages_from_current: bool,
    ) -> Result<Kernel, KernelError> {
        let mut features = BTreeMap::new();
        let kernel_btf = btf::Btf::from_sys_fs();
        // Everything the programs need, checked at once: an old kernel gets one message
        // listing all it lacks, not the first verifier error.
        let support =
            support::SupportReport::probe_with(kernel_btf.as_ref().map_err(String::as_str));
        if let Some(message) = support.missing_message() {
            return Err(KernelError::Unsupported(message));
        }
        let kernel_btf = kernel_btf.map_err(|e| {
            KernelError::Unsupported(format!("kernel BTF: {e}; the kernel programs need it"))
        })?;
        let offsets = Offsets::from_btf(&kernel_btf, &mut features)?;
        let mut age_offsets = ages::AgeOffsets::from_btf(&kernel_btf);
        if ages_from_current {
            age_offsets.force_from_current();
        }
        drop(kernel_btf);
        let aya_btf = aya::Btf::from_sys_fs()
            .map_err(|e| KernelError::Unsupported(format!("kernel BTF (aya): {e}")))?;
        let mut ebpf = offsets.load_object(&age_offsets, ages_clock_offset_ns, &aya_btf)?;

        // Before 6.3 (no sock tracepoints): the same programs' body on fexit, if it loads here.
        let fallback = support.attach() == Some(support::Attach::Fexit);
        if fallback {
            attach_fallback(&mut ebpf, &aya_btf, &mut features)?;
        }
        let tracepoints: &[&str] = if fallback {
            &[]
        } else {
            &["sock_recv_length", "sock_send_length"]
        };
        for &tracepoint in tracepoints {
            let feature = format!("tp_btf/{tracepoint}");
            let program: &mut BtfTracePoint = ebpf
                .program_mut(tracepoint)
                .ok_or_else(|| KernelError::Ebpf(format!("program {tracepoint} missing")))?
                .try_into()
                .map_err(|e| KernelError::Ebpf(format!("program {tracepoint}: {e}")))?;
            program.load(tracepoint, &aya_btf).map_err(|e| {
                KernelError::Unsupported(format!(
                    "{feature}: {e:#} (needs the sock:{tracepoint} tracepoint, Linux ≥ 6.3, and \
                     BTF-typed tracepoint programs; see docs/kernel.md#support)"
                ))
            })?;
            program
                .attach()
                .map_err(|e| KernelError::Unsupported(format!("attaching {feature}: {e:#}")))?;
            features.insert(feature, "on".into());
        }

        let mut global: Array<MapData, GlobalConfig> = take_map(&mut ebpf, "GLOBAL")?;
        let global_value = GlobalConfig {
            quantum_ns,
            cgroup_members: 0,
            ports_generation: 0,
            pad: 0,
            heartbeat_max_age_ns: DEFAULT_HEARTBEAT_MAX_AGE_NS,
            flags: if offsets.regs.is_some() {
                GLOBAL_DETECT_HTTP2
            } else {
                0
            },
        };
        global
            .set(0, global_value, 0)
            .map_err(ebpf_error("GLOBAL"))?;
        let ring: RingBuf<MapData> = take_map(&mut ebpf, "PAUSE_EVENTS")?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(mut logger) => {
                features.insert("kernel_log".into(), "on".into());
                let raw = logger.as_raw_fd();
                let flush: Box<dyn FnMut() + Send> = Box::new(move || logger.flush());
                Some((raw, flush))
            }
            Err(e) => {
                features.insert("kernel_log".into(), format!("off: {e}"));
                None
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let events = events::EventReader::spawn(ring, logger, tx)
            .map_err(|e| KernelError::Ebpf(format!("starting the pause-request reader: {e}")))?;
        features.insert("pause_trigger".into(), "on".into());
        features.insert("spin_actuator".into(), "on".into());
        let ages = ages::Ages::new(&mut ebpf, age_offsets)?;
        features.insert(ages::FEATURE.into(), ages.status());
        let share = share::Share::new(&mut ebpf)?;

        Ok(Kernel {
            events: Some(events),
            pause_requests: Some(rx),
            members: take_map(&mut ebpf, "MEMBERS")?,
            member_bits: take_map(&mut ebpf, "MEMBER_BITS")?,
            cgroup_members: take_map(&mut ebpf, "CGROUP_MEMBERS")?,
            listen_ports: take_map(&mut ebpf, "LISTEN_PORTS")?,
            config: take_map(&mut ebpf, "SERVICE_CONFIG")?,
            global,
            counters: take_map(&mut ebpf, "COUNTERS")?,
            traffic: take_map(&mut ebpf, "TRAFFIC")?,
            nr_cpus: aya::util::nr_cpus()
                .map_err(|(what, e)| KernelError::Ebpf(format!("{what}: {e}")))?,
            gates: take_map(&mut ebpf, "GATES")?,
            endpoints: take_map(&mut ebpf, "ENDPOINTS")?,
            threads: take_map(&mut ebpf, "THREADS")?,
            protected: safety::Protected::new(
                take_map(&mut ebpf, "PROTECTED_TGIDS")?,
                take_map(&mut ebpf, "PROTECTED_CGROUPS")?,
            ),
            heartbeat: Heartbeat::new(take_map(&mut ebpf, "HEARTBEAT")?),
            ages,
            share,
            ebpf,
            tgids: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            ports: BTreeMap::new(),
            global_value,
            features,
        })
    }

    /// Kernel features probed at load (name -> "on" or the reason it is off).
    pub fn features(&self) -> BTreeMap<String, String> {
        let mut features = self.features.clone();
        features.insert(ages::FEATURE.into(), self.ages.status());
        features.insert(ages::FEATURE_POOLED.into(), self.ages.pooled_status());
        if let Some(why) = self.share.failure() {
            features.insert(share::FEATURE.into(), format!("off: {why}"));
        }
        features
    }

    /// Replaces the listening ports of a service (a receive on one of them may start a visit).
    pub fn set_listen_ports(&mut self, id: ServiceId, ports: &[u16]) -> Result<(), KernelError> {
        self.set_server_ports(id, ports, &[])
    }

    /// Replaces the server-side ports of a service: receives on `visit_ports` are visits;
    /// `other_ports` are the members' other listening ports (admin or control ports), whose
    /// sockets count as neither visits nor outgoing calls.
    pub fn set_server_ports(
        &mut self,
        id: ServiceId,
        visit_ports: &[u16],
        other_ports: &[u16],
    ) -> Result<(), KernelError> {
        check_id(id)?;
        let key = |port: u16| ListenKey {
            service: id,
            port: u32::from(port),
        };
        let all: Vec<u16> = visit_ports.iter().chain(other_ports).copied().collect();
        let old = self.ports.remove(&id).unwrap_or_default();
        for port in old.iter().filter(|p| !all.contains(p)) {
            let _ = self.listen_ports.remove(&key(*port));
        }
        for port in other_ports.iter().filter(|p| !visit_ports.contains(p)) {
            self.listen_ports
                .insert(key(*port), PORT_OTHER, 0)
                .map_err(ebpf_error("LISTEN_PORTS"))?;
        }
        for port in visit_ports {
            self.listen_ports
                .insert(key(*port), PORT_VISITS, 0)
                .map_err(ebpf_error("LISTEN_PORTS"))?;
        }
        if old != all {
            // New connections to filter on, existing ones to switch on (no-op without ages).
            self.update_ages(id, visit_ports)?;
        }
        if !all.is_empty() {
            self.ports.insert(id, all);
        }
        // Sockets re-check their role against the new ports.
        self.global_value.ports_generation = self.global_value.ports_generation.wrapping_add(1);
        self.global
            .set(0, self.global_value, 0)
            .map_err(ebpf_error("GLOBAL"))
    }

    /// Replaces the tgid membership of a service.
    pub fn set_members(&mut self, id: ServiceId, tgids: &[u32]) -> Result<(), KernelError> {
        check_id(id)?;
        let old = self.tgids.remove(&id).unwrap_or_default();
        for tgid in old.iter().filter(|t| !tgids.contains(t)) {
            // Another service may have claimed it since.
            if self.members.get(tgid, 0).is_ok_and(|owner| owner == id) {
                self.set_member_bit(*tgid, false)?;
                let _ = self.members.remove(tgid);
            }
        }
        for tgid in tgids {
            self.members
                .insert(tgid, id, 0)
                .map_err(ebpf_error("MEMBERS"))?;
            self.set_member_bit(*tgid, true)?;
        }
        if !tgids.is_empty() {
            self.tgids.insert(id, tgids.to_vec());
        }
        if old.as_slice() != tgids && self.ages.tracks(id) {
            self.update_ages(id, &self.visit_ports(id))?;
        }
        Ok(())
    }

    /// The kernel's pre-filter: one bit per tgid present in `MEMBERS` (only the agent writes it).
    fn set_member_bit(&mut self, tgid: u32, on: bool) -> Result<(), KernelError> {
        let index = tgid >> 6;
        if index >= slowpoke_common::MEMBER_WORDS {
            return Err(KernelError::Ebpf(format!(
                "tgid {tgid} above PID_MAX_LIMIT"
            )));
        }
        let word = self
            .member_bits
            .get(&index, 0)
            .map_err(ebpf_error("MEMBER_BITS"))?;
        let bit = 1u64 << (tgid & 63);
        let word = if on { word | bit } else { word & !bit };
        self.member_bits
            .set(index, word, 0)
            .map_err(ebpf_error("MEMBER_BITS"))
    }

    /// Replaces the cgroup (v2 id) membership of a service.
    pub fn set_cgroup_members(
        &mut self,
        id: ServiceId,
        cgroup_ids: &[u64],
    ) -> Result<(), KernelError> {
        check_id(id)?;
        let old = self.cgroups.remove(&id).unwrap_or_default();
        for cgroup in old.iter().filter(|c| !cgroup_ids.contains(c)) {
            if self
                .cgroup_members
                .get(cgroup, 0)
                .is_ok_and(|owner| owner == id)
            {
                let _ = self.cgroup_members.remove(cgroup);
            }
        }
        for cgroup in cgroup_ids {
            self.cgroup_members
                .insert(cgroup, id, 0)
                .map_err(ebpf_error("CGROUP_MEMBERS"))?;
        }
        if !cgroup_ids.is_empty() {
            self.cgroups.insert(id, cgroup_ids.to_vec());
        }
        self.global_value.cgroup_members = self.cgroups.len() as u32;
        self.global
            .set(0, self.global_value, 0)
            .map_err(ebpf_error("GLOBAL"))
    }

    /// Forgets a service: membership, ports, delay and counters.
    pub fn remove_service(&mut self, id: ServiceId) -> Result<(), KernelError> {
        check_id(id)?;
        self.ages.forget(id)?;
        self.set_members(id, &[])?;
        self.set_cgroup_members(id, &[])?;
        self.set_listen_ports(id, &[])?;
        self.config
            .set(id, ServiceConfig::default(), 0)
            .map_err(ebpf_error("SERVICE_CONFIG"))?;
        self.gates
            .set(id, PauseGate::default(), 0)
            .map_err(ebpf_error("GATES"))?;
        self.counters
            .set(id, ServiceCounters::default(), 0)
            .map_err(ebpf_error("COUNTERS"))?;
        let zeros = PerCpuValues::try_from(vec![ServiceTraffic::default(); self.nr_cpus])
            .map_err(|e| KernelError::Ebpf(format!("TRAFFIC: {e}")))?;
        self.traffic
            .set(id, zeros, 0)
            .map_err(ebpf_error("TRAFFIC"))?;
        let stale_threads: Vec<u32> = self
            .threads
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, activity)| activity.service == id)
            .map(|(tid, _)| tid)
            .collect();
        for tid in stale_threads {
            let _ = self.threads.remove(&tid);
        }
        let stale_endpoints: Vec<EndpointKey> = self
            .endpoints
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, value)| value.service == id)
            .map(|(key, _)| key)
            .collect();
        for key in stale_endpoints {
            let _ = self.endpoints.remove(&key);
        }
        Ok(())
    }

    /// Sets the per-visit delay (0 removes it). `in_kernel_stop`: the kernel may SIGSTOP the
    /// visiting process itself when the debt reaches the quantum (the agent stops the others).
    /// In spin mode a visit spins at most [`MAX_SPIN_NS`].
    pub fn set_delay(
        &mut self,
        id: ServiceId,
        delay_per_visit_ns: u64,
        mode: Mode,
        in_kernel_stop: bool,
    ) -> Result<(), KernelError> {
        check_id(id)?;
        let config = ServiceConfig {
            delay_ns: delay_per_visit_ns,
            mode: match mode {
                Mode::Pause => MODE_PAUSE,
                Mode::Spin => MODE_SPIN,
            },
            flags: if in_kernel_stop {
                CONFIG_IN_KERNEL_STOP
            } else {
                0
            } | self.age_flag(id),
        };
        self.config
            .set(id, config, 0)
            .map_err(ebpf_error("SERVICE_CONFIG"))
    }

    pub fn set_quantum(&mut self, quantum_ns: u64) -> Result<(), KernelError> {
        self.global_value.quantum_ns = quantum_ns;
        self.global
            .set(0, self.global_value, 0)
            .map_err(ebpf_error("GLOBAL"))
    }

    pub fn counters(&self, id: ServiceId) -> Result<KernelCounters, KernelError> {
        check_id(id)?;
        let c = self.counters.get(&id, 0).map_err(ebpf_error("COUNTERS"))?;
        let per_cpu = self.traffic.get(&id, 0).map_err(ebpf_error("TRAFFIC"))?;
        let t = per_cpu
            .iter()
            .fold(ServiceTraffic::default(), |sum, cpu| ServiceTraffic {
                visits: sum.visits + cpu.visits,
                bytes_in: sum.bytes_in + cpu.bytes_in,
                bytes_out: sum.bytes_out + cpu.bytes_out,
                calls_out: sum.calls_out + cpu.calls_out,
                spin_ns: sum.spin_ns + cpu.spin_ns,
            });
        Ok(KernelCounters {
            visits: t.visits,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            calls_out: t.calls_out,
            owed_ns: c.owed_ns,
            spin_ns: t.spin_ns,
            kernel_stops: c.kernel_stops,
            visits_approximate: c.visits_approximate != 0,
            pause_requests: c.pause_requests,
            dropped_requests: c.dropped_requests,
            denied_stops: c.denied_stops,
            stale_stops: c.stale_stops,
        })
    }

    /// After a pause: the total paid so far for this service; re-arms the trigger.
    ///
    /// `paid_ns` is written before the gate reopens (two updates), so a visit that takes the gate
    /// right after always compares against the new total.
    pub fn rearm(&mut self, id: ServiceId, paid_total_ns: u64) -> Result<(), KernelError> {
        check_id(id)?;
        for busy in [1, 0] {
            let gate = PauseGate {
                paid_ns: paid_total_ns,
                busy,
            };
            self.gates.set(id, gate, 0).map_err(ebpf_error("GATES"))?;
        }
        Ok(())
    }

    /// Distinct threads of the service that did socket work on its server sockets since
    /// `since_ns` (`CLOCK_MONOTONIC`).
    pub fn serving_threads(&self, id: ServiceId, since_ns: u64) -> usize {
        self.threads
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, activity)| activity.service == id && activity.last_ns >= since_ns)
            .count()
    }

    /// Outgoing endpoints of tracked processes (client side).
    pub fn outgoing_endpoints(&self) -> Vec<OutgoingEndpoint> {
        self.endpoints
            .iter()
            .filter_map(Result::ok)
            .map(|(key, value)| {
                let addr = if key.family == libc::AF_INET as u16 {
                    IpAddr::V4(Ipv4Addr::new(
                        key.addr[0],
                        key.addr[1],
                        key.addr[2],
                        key.addr[3],
                    ))
                } else {
                    Ipv6Addr::from(key.addr).to_canonical()
                };
                OutgoingEndpoint {
                    service: value.service,
                    tgid: key.tgid,
                    addr,
                    port: key.port,
                    calls: value.calls,
                }
            })
            .collect()
    }

    /// Takes the stream of pause requests (once).
    pub fn take_pause_requests(
        &mut self,
    ) -> Result<mpsc::UnboundedReceiver<PauseRequest>, KernelError> {
        self.pause_requests
            .take()
            .ok_or_else(|| KernelError::Ebpf("the pause-request stream was already taken".into()))
    }

    /// Why the thread reading the pause requests ended on its own, if it did (the request
    /// stream then ends too; see `kernel/events.rs`).
    pub fn event_reader_failure(&self) -> Option<String> {
        self.events.as_ref().and_then(events::EventReader::failure)
    }

    /// TEST ONLY: makes the pause-request reader end as a failing `poll` would.
    #[cfg(feature = "test-hooks")]
    pub fn break_event_reader(&self) {
        if let Some(events) = &self.events {
            events.inject_failure();
        }
    }

    /// Each loaded program's kernel id, run count and total run time (ns), as the kernel
    /// accounts them while BPF run-time statistics are on (`aya::sys::enable_stats`; zeros
    /// otherwise): what a benchmark divides to learn the cost of one program call.
    pub fn program_stats(&self) -> BTreeMap<String, ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                let stats = ProgramStats {
                    id: info.id(),
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                };
                Some((name.to_string(), stats))
            })
            .collect()
    }

    /// The pause quantum in force.
    pub fn quantum_ns(&self) -> u64 {
        self.global_value.quantum_ns
    }

    /// Replaces the thread-group ids the kernel never stops or spins (at most
    /// [`MAX_PROTECTED_PIDS`]). tgid 1 is protected whatever this set holds.
    pub fn set_protected_pids(&mut self, tgids: &[u32]) -> Result<(), KernelError> {
        self.protected.set_pids(tgids)
    }

    /// Replaces the cgroups (v2 ids, see [`cgroup_v2_id`]) whose processes, and those of every
    /// cgroup below (up to [`MAX_CGROUP_DEPTH`] levels deep), the kernel never stops or spins
    /// (at most [`MAX_PROTECTED_CGROUPS`]).
    pub fn set_protected_cgroups(&mut self, cgroup_ids: &[u64]) -> Result<(), KernelError> {
        self.protected.set_cgroups(cgroup_ids)
    }

    /// Tells the kernel the agent is alive (see [`Heartbeat::beat`]). Until the first beat, and
    /// whenever the last one is older than the maximum age, the kernel stops and spins nothing.
    pub fn beat(&self) -> Result<(), KernelError> {
        self.heartbeat.beat()
    }

    /// A handle that beats without the `Kernel` (for a thread of its own).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// How old the heartbeat may get before the kernel stops nothing (default
    /// [`DEFAULT_HEARTBEAT_MAX_AGE_NS`]; beat several times within it).
    pub fn set_heartbeat_max_age(&mut self, max_age_ns: u64) -> Result<(), KernelError> {
        if max_age_ns == 0 {
            return Err(KernelError::Invalid(
                "a heartbeat max age of 0 would stop nothing ever; give a few beat periods                  (default 250 ms)"
                    .into(),
            ));
        }
        self.global_value.heartbeat_max_age_ns = max_age_ns;
        self.global
            .set(0, self.global_value, 0)
            .map_err(ebpf_error("GLOBAL"))
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // Stop the reader thread before the maps and programs go.
        if let Some(events) = self.events.take() {
            events.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Kernel>();
        check::<PauseRequest>();
    }

    #[test]
    fn btf_offsets_of_this_kernel() {
        let Ok(btf) = btf::Btf::from_sys_fs() else {
            return; // no BTF here: Kernel::load says so
        };
        let mut features = BTreeMap::new();
        let offsets = Offsets::from_btf(&btf, &mut features).unwrap();
        // Layout of struct sock_common since Linux 4.x (x86_64).
        assert_eq!(offsets.skc_daddr, 0);
        assert_eq!(offsets.skc_dport, 12);
        assert_eq!(offsets.skc_family, 16);
        assert!(offsets.sk_protocol > offsets.skc_v6_daddr);
    }
}

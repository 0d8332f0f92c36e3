//! Request ages (issue #18 item 1; `docs/tail.md#request-ages`, `docs/kernel.md`): the agent's
//! half. The visit-side code runs in the always-loaded socket tracepoints; the programs that
//! carry ages between services (`sock_ops` on the cgroup-v2 root, `tp_btf/tcp_sendmsg_locked`,
//! `iter/tcp`) are loaded and attached only when a service first tracks ages, so an agent that
//! never tracks ages pays nothing for them and a kernel that cannot run them still runs the rest.
//! They detach when the `Kernel` (which owns the `Ebpf` and so their links) is dropped.

use std::{
    collections::BTreeMap,
    io::Read as _,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
        unix::fs::MetadataExt as _,
    },
    path::PathBuf,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, RingBuf},
    programs::{BtfTracePoint, CgroupAttachMode, Iter, SockOps, tp_btf::BtfTracePointLinkId},
};
use slowpoke_common::{
    AGE_PORT_LISTEN, AGE_PORT_PEER, AgeCounters, AgeStats, CONFIG_TRACK_AGES,
    GLOBAL_REQUEST_EVENTS_NO_WAKEUP, ListenKey, PORT_VISITS, RequestEvent, RequestWake,
    ThreadRequest,
};

use super::{Kernel, KernelError, ServiceId, ebpf_error, take_map};

/// Health feature names (`Kernel::features`).
pub const FEATURE: &str = "request_ages";
pub const FEATURE_POOLED: &str = "request_ages_pooled_connections";

/// The kernel's request events ([`RequestEvent`]: a thread started or finished serving a
/// request of a service that tracks ages), read without a runtime: wait for the descriptor to
/// become readable (`poll`/`epoll` on [`AsRawFd`]), then [`RequestEvents::drain`]. Which events
/// make it readable is the reader's choice ([`RequestEvents::wake_only_up_to`]).
pub struct RequestEvents {
    ring: RingBuf<MapData>,
    wake: Array<MapData, RequestWake>,
    /// What `wake` holds per service id (written only when it changes: one system call each
    /// time); absent: the default, every event wakes.
    wake_now: BTreeMap<ServiceId, RequestWake>,
}

impl RequestEvents {
    /// The next event the kernel submitted, if any (never blocks).
    pub fn next_event(&mut self) -> Option<RequestEvent> {
        loop {
            let item = self.ring.next()?;
            if item.len() < size_of::<RequestEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole `RequestEvent` (plain data) into this record.
            return Some(unsafe { item.as_ptr().cast::<RequestEvent>().read_unaligned() });
        }
    }

    /// Appends every event submitted so far to `out`; returns how many.
    pub fn drain(&mut self, out: &mut Vec<RequestEvent>) -> usize {
        let before = out.len();
        while let Some(event) = self.next_event() {
            out.push(event);
        }
        out.len() - before
    }

    /// From now on only events of service `id`'s requests whose key (`origin_ns`, or
    /// `arrival_ns` when `by_arrival`) is at most `up_to_ns` wake the reader; the others wait in
    /// the ring for its next wake-up. 0: every event wakes it (the default).
    pub fn wake_only_up_to(
        &mut self,
        id: ServiceId,
        up_to_ns: u64,
        by_arrival: bool,
    ) -> Result<(), KernelError> {
        super::check_id(id)?;
        let want = RequestWake {
            quiet_after_ns: up_to_ns,
            by_arrival: u32::from(by_arrival && up_to_ns != 0),
            pad: 0,
        };
        if self.wake_now.get(&id).copied().unwrap_or_default() == want {
            return Ok(());
        }
        self.wake
            .set(id, want, 0)
            .map_err(ebpf_error("REQUEST_WAKE"))?;
        self.wake_now.insert(id, want);
        Ok(())
    }

    /// The services whose filter is not the default (every event wakes).
    pub fn filtered(&self) -> Vec<ServiceId> {
        self.wake_now
            .iter()
            .filter(|(_, w)| **w != RequestWake::default())
            .map(|(&id, _)| id)
            .collect()
    }
}

impl AsFd for RequestEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for RequestEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_fd().as_raw_fd()
    }
}

/// Offsets the age programs read, from the running kernel's BTF, or why ages cannot work here
/// (the rest of the programs are unaffected), and whether the kernel lacks
/// `tcp:tcp_sendmsg_locked` (then the socket callbacks take the origin from the current thread:
/// `AGES_FROM_CURRENT` in `slowpoke-ebpf/src/ages.rs`).
pub(super) struct AgeOffsets {
    offsets: Result<(u32, u32, u32), String>,
    /// `task_struct.start_boottime` (0: not found; the agent then reads `/proc`).
    start_boottime: u32,
    from_current: bool,
    at_arrival: bool,
}

impl AgeOffsets {
    pub(super) fn from_btf(btf: &super::btf::Btf) -> AgeOffsets {
        let read = || -> Result<(u32, u32, u32), String> {
            let tgid = btf.member("task_struct", "tgid")?;
            let pid = btf.member("task_struct", "pid")?;
            let state = btf.member("sock_common", "skc_state")?;
            if tgid.size != 4 || pid.size != 4 || state.size != 1 {
                return Err(
                    "task_struct.tgid/pid or sock_common.skc_state has an unexpected size".into(),
                );
            }
            Ok((tgid.offset, pid.offset, state.offset))
        };
        AgeOffsets {
            offsets: read(),
            start_boottime: btf
                .member("task_struct", "start_boottime")
                .ok()
                .filter(|m| m.size == 8)
                .map_or(0, |m| m.offset),
            from_current: !btf.has_typedef("btf_trace_tcp_sendmsg_locked"),
            at_arrival: btf.has_typedef("btf_trace_sk_data_ready"),
        }
    }

    /// Behave as on a kernel without `tcp:tcp_sendmsg_locked` (reached from tests only,
    /// through `Kernel::load_without_sendmsg_tracepoint`).
    pub(super) fn force_from_current(&mut self) {
        self.from_current = true;
    }

    pub(super) fn task_tgid(&self) -> u32 {
        self.offsets.as_ref().map_or(0, |o| o.0)
    }

    pub(super) fn task_pid(&self) -> u32 {
        self.offsets.as_ref().map_or(0, |o| o.1)
    }

    pub(super) fn task_start_boottime(&self) -> u32 {
        self.start_boottime
    }

    pub(super) fn skc_state(&self) -> u32 {
        self.offsets.as_ref().map_or(0, |o| o.2)
    }

    pub(super) fn origin_from_current(&self) -> u32 {
        u32::from(self.from_current)
    }

    /// Why ages cannot work, whether the origin comes from the current thread, and whether
    /// requests can start when their data arrives.
    pub(super) fn into_parts(self) -> (Option<String>, bool, bool) {
        (self.offsets.err(), self.from_current, self.at_arrival)
    }
}

pub(super) struct Ages {
    events: Option<(RingBuf<MapData>, Array<MapData, RequestWake>)>,
    counters: Array<MapData, AgeCounters>,
    stats: Array<MapData, AgeStats>,
    ports: HashMap<MapData, u32, u8>,
    threads: HashMap<MapData, u32, ThreadRequest>,
    /// Services that track ages, with their visit ports.
    tracked: BTreeMap<ServiceId, Vec<u16>>,
    /// `None` until a service first tracks ages; then the attach result.
    carrying: Option<Result<(), String>>,
    /// Why carrying cannot work on this kernel, found at load.
    unavailable: Option<String>,
    /// No `tcp:tcp_sendmsg_locked`: the origin comes from the current thread.
    from_current: bool,
    /// `sock:sk_data_ready` exists: requests start when their data arrives.
    at_arrival: bool,
    /// The links of `sk_data_ready` and `sched_waking` (every data arrival and every wake-up of
    /// the node), held only while some service tracks ages.
    arrival_links: Vec<(&'static str, BtfTracePointLinkId)>,
}

impl Ages {
    pub(super) fn new(ebpf: &mut Ebpf, offsets: AgeOffsets) -> Result<Ages, KernelError> {
        let (unavailable, from_current, at_arrival) = offsets.into_parts();
        Ok(Ages {
            events: Some((
                take_map(ebpf, "REQUEST_EVENTS")?,
                take_map(ebpf, "REQUEST_WAKE")?,
            )),
            counters: take_map(ebpf, "AGE_COUNTERS")?,
            stats: take_map(ebpf, "AGE_STATS")?,
            ports: take_map(ebpf, "AGE_PORTS")?,
            threads: take_map(ebpf, "THREAD_REQUESTS")?,
            tracked: BTreeMap::new(),
            carrying: None,
            unavailable,
            from_current,
            at_arrival,
            arrival_links: Vec::new(),
        })
    }

    pub(super) fn take_events(&mut self) -> Result<RequestEvents, KernelError> {
        self.events
            .take()
            .map(|(ring, wake)| RequestEvents {
                ring,
                wake,
                wake_now: BTreeMap::new(),
            })
            .ok_or_else(|| KernelError::Ebpf("the request-event stream was already taken".into()))
    }

    pub(super) fn tracks(&self, id: ServiceId) -> bool {
        self.tracked.contains_key(&id)
    }

    pub(super) fn any_tracked(&self) -> bool {
        !self.tracked.is_empty()
    }

    /// The health line of the feature: what works and, if something does not, why.
    pub(super) fn status(&self) -> String {
        match (&self.unavailable, &self.carrying) {
            (Some(why), _) | (None, Some(Err(why))) => {
                format!("requests only, ages not carried: {why}")
            }
            (None, None) => "available (loaded when a service tracks ages)".into(),
            (None, Some(Ok(()))) => {
                let mut line = String::from("on");
                if self.from_current {
                    line.push_str(
                        ", without tcp:tcp_sendmsg_locked (Linux < 6.17): a call's age is the \
                         thread's that builds its segments, so retransmits and delayed ACKs may \
                         carry another request's",
                    );
                }
                if !self.at_arrival {
                    line.push_str(
                        ", without sock:sk_data_ready: a request starts when its thread first \
                         runs its receive, not when its data arrives",
                    );
                }
                line
            }
        }
    }

    /// Attaches (`on`) or detaches the two programs that start a request when its data arrives:
    /// they run at every data arrival and every wake-up of the node, so only while a service
    /// tracks ages. A failure is logged: requests then start at their receive.
    fn hook_arrivals(&mut self, ebpf: &mut Ebpf, on: bool) {
        let ready = self.at_arrival && matches!(self.carrying, Some(Ok(())));
        if on && ready && self.arrival_links.is_empty() {
            for name in ARRIVAL_PROGRAMS {
                match tracepoint(ebpf, name).and_then(|tp| {
                    tp.attach()
                        .map_err(|e| format!("attaching tp_btf/{name}: {e:#}"))
                }) {
                    Ok(link) => self.arrival_links.push((name, link)),
                    Err(why) => tracing::warn!("requests start at their receive: {why}"),
                }
            }
        } else if !on {
            for (name, link) in self.arrival_links.drain(..) {
                if let Err(why) = tracepoint(ebpf, name).and_then(|tp| {
                    tp.detach(link)
                        .map_err(|e| format!("detaching tp_btf/{name}: {e:#}"))
                }) {
                    tracing::warn!("{why}");
                }
            }
        }
    }

    /// Starts or stops tracking `id`'s request ages; the caller has set its config flag.
    /// `visit_ports`: the service's listening ports whose receives are visits.
    pub(super) fn set_tracked(
        &mut self,
        ebpf: &mut Ebpf,
        id: ServiceId,
        on: bool,
        visit_ports: &[u16],
        members: &[u32],
        peer_ports: &[u16],
    ) -> Result<(), KernelError> {
        if on {
            self.tracked.insert(id, visit_ports.to_vec());
        } else {
            self.tracked.remove(&id);
        }
        self.write_ports(peer_ports)?;
        if on && self.carrying.is_none() && self.unavailable.is_none() {
            self.carrying = Some(attach(ebpf, self.from_current, self.at_arrival));
            if let Some(Err(why)) = &self.carrying {
                tracing::warn!("request ages are not carried between services: {why}");
            }
        }
        self.hook_arrivals(ebpf, !self.tracked.is_empty());
        if on {
            self.refresh(ebpf, members);
        }
        Ok(())
    }

    /// Rewrites `AGE_PORTS`: the tracked services' visit ports, and the ports they call.
    fn write_ports(&mut self, peer_ports: &[u16]) -> Result<(), KernelError> {
        let mut want: BTreeMap<u32, u8> = BTreeMap::new();
        for port in peer_ports {
            want.insert(u32::from(*port), AGE_PORT_PEER);
        }
        for port in self.tracked.values().flatten() {
            want.insert(u32::from(*port), AGE_PORT_LISTEN);
        }
        let old: Vec<u32> = self.ports.keys().filter_map(Result::ok).collect();
        for port in old.iter().filter(|p| !want.contains_key(p)) {
            let _ = self.ports.remove(port);
        }
        for (port, kind) in want {
            self.ports
                .insert(port, kind, 0)
                .map_err(ebpf_error("AGE_PORTS"))?;
        }
        Ok(())
    }

    /// A tracked service's ports or members changed: new ports to filter on, and the
    /// connections that already exist (in every network namespace of `members`) switched on.
    pub(super) fn update(
        &mut self,
        ebpf: &mut Ebpf,
        id: ServiceId,
        visit_ports: &[u16],
        members: &[u32],
        peer_ports: &[u16],
    ) -> Result<(), KernelError> {
        if !self.tracks(id) {
            return Ok(());
        }
        self.tracked.insert(id, visit_ports.to_vec());
        self.write_ports(peer_ports)?;
        self.refresh(ebpf, members);
        Ok(())
    }

    /// Runs the iterator in this process's network namespace and in each of `members'`.
    fn refresh(&mut self, ebpf: &mut Ebpf, members: &[u32]) {
        if !matches!(self.carrying, Some(Ok(()))) {
            return;
        }
        let mut namespaces: BTreeMap<u64, Option<PathBuf>> = BTreeMap::new();
        if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
            namespaces.insert(own.ino(), None);
        }
        for pid in members {
            let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if let Ok(meta) = std::fs::metadata(&path) {
                namespaces.entry(meta.ino()).or_insert(Some(path));
            }
        }
        for (ino, path) in namespaces {
            if let Err(why) = walk_connections(ebpf, path) {
                tracing::warn!(
                    "switching on age carrying for existing connections (netns {ino}): {why}"
                );
            }
        }
    }

    /// Whether connections opened before tracking started were switched on, from the
    /// iterator's own counters (it fails per socket on kernels before 6.12).
    pub(super) fn pooled_status(&self) -> String {
        match &self.carrying {
            None => "not yet needed".into(),
            Some(Err(why)) => format!("off: {why}"),
            Some(Ok(())) => {
                let stats = self.stats().unwrap_or_default();
                if stats.iter_failures > 0 && stats.connections_enabled_later == 0 {
                    format!(
                        "off: bpf_setsockopt(TCP_BPF_SOCK_OPS_CB_FLAGS) failed with errno {} \
                         (needs Linux ≥ 6.12); pooled connections carry no age until reopened",
                        stats.iter_last_errno
                    )
                } else {
                    "on".into()
                }
            }
        }
    }

    pub(super) fn counters(&self, id: ServiceId) -> Result<AgeCounters, KernelError> {
        self.counters
            .get(&id, 0)
            .map_err(ebpf_error("AGE_COUNTERS"))
    }

    pub(super) fn stats(&self) -> Result<AgeStats, KernelError> {
        self.stats.get(&0, 0).map_err(ebpf_error("AGE_STATS"))
    }

    /// Forgets a removed service: its counters, its threads' requests, its ports (the ports
    /// other services call are written again at their next refresh).
    pub(super) fn forget(&mut self, id: ServiceId) -> Result<(), KernelError> {
        if self.tracked.remove(&id).is_some() {
            self.write_ports(&[])?;
        }
        self.counters
            .set(id, AgeCounters::default(), 0)
            .map_err(ebpf_error("AGE_COUNTERS"))?;
        let stale: Vec<u32> = self
            .threads
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, r)| r.service == id)
            .map(|(tid, _)| tid)
            .collect();
        for tid in stale {
            let _ = self.threads.remove(&tid);
        }
        Ok(())
    }
}

/// Request ages as the rest of the agent sees them (the scheduler of `docs/tail.md`).
impl Kernel {
    /// TEST ONLY: as [`Kernel::load`], with `offset_ns` added to every clock reading of the age
    /// programs — this `Kernel` stands for a node whose clock is that far from the others'.
    #[cfg(feature = "test-hooks")]
    pub fn load_with_clock_offset(quantum_ns: u64, offset_ns: u64) -> Result<Kernel, KernelError> {
        Kernel::load_inner(quantum_ns, offset_ns, false)
    }

    /// TEST ONLY: as [`Kernel::load`], behaving as on a kernel without
    /// `tcp:tcp_sendmsg_locked` (before 6.17): the socket callbacks take a call's origin from
    /// the thread that builds its segments.
    #[cfg(feature = "test-hooks")]
    pub fn load_without_sendmsg_tracepoint(quantum_ns: u64) -> Result<Kernel, KernelError> {
        Kernel::load_inner(quantum_ns, 0, true)
    }

    /// Starts (or stops) tracking the requests of service `id`: the kernel reports each
    /// request's start and end on a thread ([`Kernel::take_request_events`]) and carries its
    /// age on the calls that thread makes. The first service to track ages loads the carrying
    /// programs; where they cannot run (see [`Kernel::features`], `request_ages`) requests are
    /// still reported, each with the origin of its arrival at this service.
    pub fn set_track_ages(&mut self, id: ServiceId, on: bool) -> Result<(), KernelError> {
        super::check_id(id)?;
        let mut config = self
            .config
            .get(&id, 0)
            .map_err(ebpf_error("SERVICE_CONFIG"))?;
        config.flags = (config.flags & !CONFIG_TRACK_AGES) | if on { CONFIG_TRACK_AGES } else { 0 };
        self.config
            .set(id, config, 0)
            .map_err(ebpf_error("SERVICE_CONFIG"))?;
        let (visits, members, peers) =
            (self.visit_ports(id), self.all_members(), self.peer_ports());
        self.ages
            .set_tracked(&mut self.ebpf, id, on, &visits, &members, &peers)?;
        self.share.hook(&mut self.ebpf, self.ages.any_tracked());
        Ok(())
    }

    /// Whether submitting a request event wakes a reader blocked in `poll` (the default) or not
    /// (`false`: the reader polls on a timer of its own; each wake-up costs the submitting
    /// thread a self-IPI, 1–3 µs in a VM — docs/tail.md#request-ages has the figures).
    pub fn set_request_event_wakeups(&mut self, on: bool) -> Result<(), KernelError> {
        if on {
            self.global_value.flags &= !GLOBAL_REQUEST_EVENTS_NO_WAKEUP;
        } else {
            self.global_value.flags |= GLOBAL_REQUEST_EVENTS_NO_WAKEUP;
        }
        self.global
            .set(0, self.global_value, 0)
            .map_err(ebpf_error("GLOBAL"))
    }

    /// Whether service `id` tracks request ages.
    pub fn tracks_ages(&self, id: ServiceId) -> bool {
        self.ages.tracks(id)
    }

    /// Takes the stream of request events (once); see [`RequestEvents`].
    pub fn take_request_events(&mut self) -> Result<RequestEvents, KernelError> {
        self.ages.take_events()
    }

    /// Takes the share cap's maps (once): the promoted threads' time per CPU, measured at
    /// every context switch while a service tracks ages (`kernel::share`).
    pub fn take_promoted_runs(&mut self) -> Result<super::share::PromotedRuns, KernelError> {
        self.share.take()
    }

    /// The service's request counters (monotonic since the id was assigned).
    pub fn age_counters(&self, id: ServiceId) -> Result<AgeCounters, KernelError> {
        super::check_id(id)?;
        self.ages.counters(id)
    }

    /// Node-wide counters of the age-carrying socket programs.
    pub fn age_stats(&self) -> Result<AgeStats, KernelError> {
        self.ages.stats()
    }

    /// The `CONFIG_TRACK_AGES` bit of service `id`, for writers of its whole config.
    pub(super) fn age_flag(&self, id: ServiceId) -> u32 {
        if self.ages.tracks(id) {
            CONFIG_TRACK_AGES
        } else {
            0
        }
    }

    /// A tracked service's ports or members changed.
    pub(super) fn update_ages(
        &mut self,
        id: ServiceId,
        visit_ports: &[u16],
    ) -> Result<(), KernelError> {
        if !self.ages.tracks(id) {
            return Ok(());
        }
        let (members, peers) = (self.all_members(), self.peer_ports());
        self.ages
            .update(&mut self.ebpf, id, visit_ports, &members, &peers)
    }

    /// The listening ports of `id` whose receives are visits.
    pub(super) fn visit_ports(&self, id: ServiceId) -> Vec<u16> {
        let ports = self.ports.get(&id).map_or(&[][..], Vec::as_slice);
        ports
            .iter()
            .copied()
            .filter(|port| {
                let key = ListenKey {
                    service: id,
                    port: u32::from(*port),
                };
                self.listen_ports
                    .get(&key, 0)
                    .is_ok_and(|v| v == PORT_VISITS)
            })
            .collect()
    }

    /// Processes of the services that track ages (their network namespaces get the iterator).
    fn all_members(&self) -> Vec<u32> {
        self.tgids
            .iter()
            .filter(|(id, _)| self.ages.tracks(**id))
            .flat_map(|(_, tgids)| tgids.iter().copied())
            .collect()
    }

    /// Remote ports the services that track ages have called (their pooled connections).
    fn peer_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .endpoints
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, value)| self.ages.tracks(value.service))
            .map(|(key, _)| key.port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// The cgroup-v2 hierarchy's mount point: `/sys/fs/cgroup` on pure v2 nodes,
/// `/sys/fs/cgroup/unified` on hybrid ones (systemd's layout with v1 controllers).
fn cgroup2_root() -> Result<PathBuf, String> {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|e| format!("/proc/mounts: {e}"))?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .min_by_key(|dir| dir.as_os_str().len())
        .ok_or_else(|| {
            "no cgroup2 file system mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)".into()
        })
}

/// The programs that start a request when its data arrives (program name = tracepoint name).
const ARRIVAL_PROGRAMS: [&str; 2] = ["sk_data_ready", "sched_waking"];

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut BtfTracePoint, String> {
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e| format!("program {name}: {e}"))
}

/// Loads and attaches the carrying programs: the tracepoint that marks a call's request (where
/// the kernel has it), the pair that starts a request when its data arrives (`sock:sk_data_ready`
/// and `sched:sched_waking`, where the kernel has the first), the
/// `sock_ops` program on the cgroup-v2 root (every TCP connection of the node; it filters at
/// connect and accept), and loads the iterator.
fn attach(ebpf: &mut Ebpf, from_current: bool, btf_has_data_ready: bool) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF (aya): {e}"))?;
    if !from_current {
        let tp: &mut BtfTracePoint = ebpf
            .program_mut("tcp_sendmsg_locked")
            .ok_or("program tcp_sendmsg_locked missing")?
            .try_into()
            .map_err(|e| format!("program tcp_sendmsg_locked: {e}"))?;
        tp.load("tcp_sendmsg_locked", &btf)
            .map_err(|e| format!("tp_btf/tcp_sendmsg_locked: {e:#}"))?;
        tp.attach()
            .map_err(|e| format!("attaching tp_btf/tcp_sendmsg_locked: {e:#}"))?;
    }

    if btf_has_data_ready {
        // Loaded here, attached while a service tracks ages (`Ages::hook_arrivals`).
        for name in ARRIVAL_PROGRAMS {
            tracepoint(ebpf, name)?
                .load(name, &btf)
                .map_err(|e| format!("tp_btf/{name}: {e:#}"))?;
        }
    }

    let root = cgroup2_root()?;
    let cgroup = std::fs::File::open(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let sock_ops: &mut SockOps = ebpf
        .program_mut("request_ages")
        .ok_or("program request_ages missing")?
        .try_into()
        .map_err(|e| format!("program request_ages: {e}"))?;
    sock_ops
        .load()
        .map_err(|e| format!("sock_ops program: {e:#}"))?;
    // Cgroup links are multi-attach whatever the mode; `Single` is the one that takes no flags.
    sock_ops
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| format!("attaching sock_ops to {}: {e:#}", root.display()))?;

    let iter: &mut Iter = ebpf
        .program_mut("request_ages_iter")
        .ok_or("program request_ages_iter missing")?
        .try_into()
        .map_err(|e| format!("program request_ages_iter: {e}"))?;
    iter.load("tcp", &btf)
        .map_err(|e| format!("iter/tcp program: {e:#}"))?;
    Ok(())
}

/// Runs the iterator over every TCP socket of one network namespace (`None`: the agent's own):
/// an iterator walks the namespace of the thread that opens it, so a short-lived thread enters
/// the namespace first (`setns` moves only the calling thread).
fn walk_connections(ebpf: &mut Ebpf, netns: Option<PathBuf>) -> Result<(), String> {
    let iter: &mut Iter = ebpf
        .program_mut("request_ages_iter")
        .ok_or("program request_ages_iter missing")?
        .try_into()
        .map_err(|e| format!("program request_ages_iter: {e}"))?;
    let link_id = iter.attach().map_err(|e| format!("iterator link: {e:#}"))?;
    let link = iter
        .take_link(link_id)
        .map_err(|e| format!("iterator link: {e:#}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<(), String> {
                if let Some(path) = netns {
                    let ns = std::fs::File::open(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    // SAFETY: setns on this thread only, with a namespace descriptor we own.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(format!(
                            "setns {}: {}",
                            path.display(),
                            std::io::Error::last_os_error()
                        ));
                    }
                }
                let mut file = link
                    .into_file()
                    .map_err(|e| format!("opening the iterator: {e:#}"))?;
                let mut sink = Vec::new();
                file.read_to_end(&mut sink)
                    .map_err(|e| format!("running the iterator: {e}"))?;
                Ok(())
            })
            .join()
            .map_err(|_| "the iterator thread panicked".to_string())?
    })
}

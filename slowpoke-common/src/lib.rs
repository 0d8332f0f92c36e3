//! Types shared by the kernel programs (`slowpoke-ebpf`) and the agent (`slowpoke-agent`).
//!
//! Everything here is `#[repr(C)]` plain data without implicit padding: the kernel writes it
//! into BPF maps and the agent reads it back byte for byte. The `user` feature adds `aya::Pod`
//! impls for the agent side.
//!
//! Who writes what (so that no map value is written by both sides, which would lose updates):
//! - agent only: [`ServiceConfig`], [`GlobalConfig`], membership maps, listening ports, the
//!   protected tgids and cgroups, the heartbeat;
//! - kernel only (agent reads, and zeroes on service removal): [`ServiceCounters`];
//! - both, word by word: [`PauseGate`] (kernel: compare-and-swap `busy` 0 -> 1; agent: writes
//!   `paid_ns`, then `busy = 0`).
#![no_std]

/// How many services one agent can track (size of the per-service arrays).
pub const MAX_SERVICES: u32 = 64;

/// Words of the tgid membership bitmap: 64 Ki words of 64 bits cover `PID_MAX_LIMIT` (2^22).
pub const MEMBER_WORDS: u32 = 1 << 16;

/// Longest busy delay the spin actuator inserts at one visit.
pub const MAX_SPIN_NS: u64 = 1_000_000;

/// Capacity of the protected-tgid map (processes the kernel never stops).
pub const MAX_PROTECTED_TGIDS: u32 = 4_096;
/// Capacity of the protected-cgroup map (cgroup v2 ids whose processes, and those of every
/// cgroup below them, the kernel never stops).
pub const MAX_PROTECTED_CGROUPS: u32 = 256;
/// How many cgroup levels below the root the kernel inspects for a protected ancestor (a
/// Kubernetes container sits at level 4 or 5, a systemd service at level 2).
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Default [`GlobalConfig::heartbeat_max_age_ns`]: the agent beats every ~50 ms, so a few
/// missed beats (a loaded machine) do not switch the in-kernel actuators off, while an agent
/// that is stopped or hung stops nothing after a quarter of a second.
pub const DEFAULT_HEARTBEAT_MAX_AGE_NS: u64 = 250_000_000;

/// [`ServiceConfig::mode`]: debt is paid by pausing the whole service (agent-side actuator).
pub const MODE_PAUSE: u32 = 0;
/// [`ServiceConfig::mode`]: the visiting thread busy-waits in the kernel at the visit.
pub const MODE_SPIN: u32 = 1;

/// [`ServiceConfig::flags`]: the kernel stops the visiting process itself (SIGSTOP) on a trigger.
pub const CONFIG_IN_KERNEL_STOP: u32 = 1;

/// [`GlobalConfig::flags`]: look for the HTTP/2 preface in the first data of server sockets.
pub const GLOBAL_DETECT_HTTP2: u32 = 1;
/// [`GlobalConfig::flags`]: submit [`RequestEvent`]s without waking their reader (it polls on
/// a timer of its own). Each wake-up costs the submitting thread a self-IPI (~1–3 µs in a VM,
/// docs/tail.md#request-ages).
pub const GLOBAL_REQUEST_EVENTS_NO_WAKEUP: u32 = 2;

/// Per-socket direction of the last data transfer ([`SockState::last`]).
pub const DIR_NONE: u8 = 0;
pub const DIR_RECV: u8 = 1;
pub const DIR_SEND: u8 = 2;

/// Role of a socket for its service ([`SockState::role`]).
pub const ROLE_CLIENT: u8 = 0;
pub const ROLE_SERVER: u8 = 1;
/// Not a TCP socket, or a server socket on a port whose traffic is not the service's visits
/// (another listening port of a member, e.g. an admin or control port): ignored.
pub const ROLE_IGNORED: u8 = 2;

/// `LISTEN_PORTS` values: a port whose receives are visits, and another listening port of the
/// service's processes (its sockets are server side, yet neither visits nor outgoing calls).
pub const PORT_VISITS: u8 = 1;
pub const PORT_OTHER: u8 = 2;

/// Agent-written settings of one service (array indexed by service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Delay owed per visit (pause mode) or spun per visit (spin mode, capped at
    /// [`MAX_SPIN_NS`]); 0: no delay.
    pub delay_ns: u64,
    /// [`MODE_PAUSE`] or [`MODE_SPIN`].
    pub mode: u32,
    /// [`CONFIG_IN_KERNEL_STOP`].
    pub flags: u32,
}

/// Agent-written settings of the whole agent (array of one element).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Debt is batched into pauses of at least this long.
    pub quantum_ns: u64,
    /// Services with cgroup members: 0 lets the hot path skip the cgroup lookup.
    pub cgroup_members: u32,
    /// [`GLOBAL_DETECT_HTTP2`], [`GLOBAL_REQUEST_EVENTS_NO_WAKEUP`].
    pub flags: u32,
    /// Bumped by the agent whenever listening ports change: a socket's cached role
    /// ([`SockState::role`]) is recomputed when its generation differs.
    pub ports_generation: u32,
    pub pad: u32,
    /// The kernel stops nothing (no SIGSTOP, no spin) when the heartbeat (`HEARTBEAT`, the
    /// agent's last `CLOCK_MONOTONIC` beat) is older than this, or was never written.
    pub heartbeat_max_age_ns: u64,
}

/// Kernel-written traffic counters of one service, per CPU (per-CPU array indexed by service
/// id; the agent sums the CPUs): no cache line shared between CPUs on the hot path. Monotonic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceTraffic {
    pub visits: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub calls_out: u64,
    /// Busy delay spent at visits (spin mode).
    pub spin_ns: u64,
}

/// Kernel-written counters of one service that must be shared by all CPUs (array indexed by
/// service id). Monotonic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Sum of `delay_ns` over visits made in pause mode with a delay set (the trigger compares
    /// it with the quantum, so it is one shared word).
    pub owed_ns: u64,
    /// Pause requests emitted on the ring buffer.
    pub pause_requests: u64,
    /// In-kernel SIGSTOPs of the visiting process.
    pub kernel_stops: u64,
    /// Triggers lost because the ring buffer was full (the gate was reopened).
    pub dropped_requests: u64,
    /// Non-zero once HTTP/2 (multiplexed) traffic was seen on a server socket.
    pub visits_approximate: u64,
    /// In-kernel stops or spins not made because the visiting process is protected (tgid 0 or
    /// 1, a protected tgid, or a process in or below a protected cgroup).
    pub denied_stops: u64,
    /// In-kernel stops or spins not made because the agent's heartbeat was stale.
    pub stale_stops: u64,
}

/// The pause trigger of one service (array indexed by service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PauseGate {
    /// Debt paid so far (written by the agent through `rearm`).
    pub paid_ns: u64,
    /// 1 while a pause is requested or in progress: the kernel swaps 0 -> 1 to trigger, the
    /// agent writes 0 after the pause.
    pub busy: u64,
}

/// Key of the listening-ports map: a receive on a socket whose local port is listed for the
/// process's service is server-side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenKey {
    pub service: u32,
    /// Host byte order.
    pub port: u32,
}

/// Per-socket state (LRU hash keyed by the `struct sock` address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// `skc_portpair` when the state was created: a different value means the address was
    /// reused by another socket, whose state starts afresh.
    pub portpair: u32,
    pub service: u32,
    /// [`DIR_NONE`], [`DIR_RECV`] or [`DIR_SEND`].
    pub last: u8,
    /// [`ROLE_CLIENT`], [`ROLE_SERVER`] or [`ROLE_IGNORED`], valid for `ports_generation`.
    pub role: u8,
    pub pad: [u8; 2],
    /// [`GlobalConfig::ports_generation`] when `role` was computed.
    pub ports_generation: u32,
}

/// Key of the outgoing-endpoints map: one remote endpoint called by one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// IPv4 in the first 4 bytes (network order), or IPv6.
    pub addr: [u8; 16],
    pub tgid: u32,
    /// Host byte order.
    pub port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    pub calls: u64,
    pub service: u32,
    pub pad: u32,
}

/// Last socket work of one thread on a server socket (LRU hash keyed by tid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadActivity {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`).
    pub last_ns: u64,
    pub service: u32,
    pub pad: u32,
}

/// Ring-buffer record: a service's debt reached the quantum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PauseEvent {
    /// `bpf_ktime_get_ns` at the trigger.
    pub at_ns: u64,
    /// Debt owed in total at the trigger.
    pub owed_ns: u64,
    pub service: u32,
    /// The process the kernel stopped itself, or 0.
    pub stopped_tgid: u32,
}

/// [`ServiceConfig::flags`] bit: the kernel tracks the age of every request this service serves
/// (tail-latency scheduling, `docs/tail.md`): it reports each request's start and end on a
/// thread as [`RequestEvent`]s and carries the request's age on the calls that thread makes.
pub const CONFIG_TRACK_AGES: u32 = 2;

/// [`RequestEvent::kind`]: thread `tid` started serving a request (a visit began).
pub const REQUEST_START: u32 = 1;
/// [`RequestEvent::kind`]: thread `tid` finished the request it was serving (it sent the
/// response and, until its next visit, serves nothing).
pub const REQUEST_END: u32 = 2;
/// [`RequestEvent::kind`]: thread `tid` was given a fresh connection's request when it was woken
/// for the connection's data, but another thread read the connection (a pool's workers race in
/// `accept`, or a listener thread hands connections to workers): `tid` serves nothing, and the
/// request's start is reported again on the thread that reads it. The kernel's `requests`
/// counter does not count it.
pub const REQUEST_DROPPED: u32 = 3;

/// Ring-buffer record (`REQUEST_EVENTS`) of a service with [`CONFIG_TRACK_AGES`]: a thread
/// started or finished serving a request. The agent's scheduler orders threads by `origin_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestEvent {
    /// `bpf_ktime_get_ns` (this node's `CLOCK_MONOTONIC`) when the event happened.
    pub at_ns: u64,
    /// When the request arrived at the app's entry, on this node's clock: `at_ns` minus the
    /// age the caller carried (a request no caller carried an age for started here: then
    /// `origin_ns == arrival_ns`). For `REQUEST_END` the origin of the request that ended.
    pub origin_ns: u64,
    /// When the request arrived at this service (the visit's first receive), this node's clock:
    /// the order of the per-service FIFO baseline.
    pub arrival_ns: u64,
    pub tid: u32,
    pub tgid: u32,
    pub service: u32,
    /// [`REQUEST_START`], [`REQUEST_END`] or [`REQUEST_DROPPED`].
    pub kind: u32,
    /// `REQUEST_START`: when the thread was created (`task_struct.start_boottime`, ns since
    /// boot): with `tid`, the thread's identity, as `/proc`'s start time (field 22, in clock
    /// ticks) that the guardian checks. 0: unknown (`REQUEST_END`, or no offset in BTF).
    pub thread_start_ns: u64,
}

/// Agent-written wake-up filter of one service's request events (`REQUEST_WAKE`, an array
/// indexed by service id): the scheduler needs to wake only for events that can change which
/// requests rank first, i.e. events of requests at least as old as the youngest one ranked now
/// (across the node, or in the service for a per-service order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestWake {
    /// An event whose request's key is later than this is submitted without waking the reader
    /// (it reads it at its next wake-up); 0: every event wakes it.
    pub quiet_after_ns: u64,
    /// The key: [`RequestEvent::arrival_ns`] when non-zero, else [`RequestEvent::origin_ns`].
    pub by_arrival: u32,
    pub pad: u32,
}

/// Per-thread state of a service with [`CONFIG_TRACK_AGES`] (LRU hash `THREAD_REQUESTS` keyed by
/// tid): the request the thread is serving, from its visit's start to its first response send.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadRequest {
    /// As [`RequestEvent::origin_ns`].
    pub origin_ns: u64,
    /// As [`RequestEvent::arrival_ns`].
    pub arrival_ns: u64,
    pub service: u32,
    /// [`THREAD_REQUEST_EARLY`], [`THREAD_REQUEST_DROPPED`] or 0 (changed with a
    /// compare-and-swap: a worker and the thread that beat it to its connection may both drop
    /// its early request at once, and only one of them may take it back).
    pub flags: u32,
}

/// [`ThreadRequest::flags`]: the request was started when its data arrived, by the wake-up of
/// its thread, and the thread has not received it yet (its receive only clears this).
pub const THREAD_REQUEST_EARLY: u32 = 1;
/// [`ThreadRequest::flags`]: an early request another thread read the connection of: the
/// thread serves nothing (the entry stays until the thread's next request replaces it, so that
/// nobody but the thread itself removes or replaces its entry).
pub const THREAD_REQUEST_DROPPED: u32 = 2;

/// Per CPU (per-CPU array `PROMOTED_RUNS` of one element, kernel-written at every context
/// switch while a service tracks ages): how long threads the tail scheduler promoted have run
/// there, for its share cap (`docs/tail.md#the-share-cap`). Times are `CLOCK_MONOTONIC` ns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromotedRun {
    /// CPU time of promoted threads on this CPU, summed at their switches out (monotonic).
    pub used_ns: u64,
    /// When the thread running now was switched in.
    pub switched_in_ns: u64,
    /// The thread running now (0: idle, or not known yet).
    pub tid: u32,
    pub pad: u32,
}

/// Entries of the kernel's `PROMOTED` map (tid -> when the agent promoted it): the guardian's
/// table holds as many.
pub const MAX_PROMOTED_THREADS: u32 = 256;

/// Kernel-written counters of request ages for one service (array `AGE_COUNTERS` indexed by
/// service id; the agent reads them and zeroes them on service removal). Monotonic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgeCounters {
    /// Requests started (visits of the service while it tracks ages).
    pub requests: u64,
    /// Of those, requests whose origin came from an age a caller carried on the connection.
    pub carried: u64,
    /// Requests ended by the serving thread's first response send.
    pub ended: u64,
    /// [`RequestEvent`]s lost because the ring buffer was full (nobody read it fast enough).
    pub dropped_events: u64,
}

/// Kernel-written counters of the age-carrying `sock_ops` and iterator programs, node-wide
/// (array `AGE_STATS` of one element): the socket callbacks know connections, not services.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgeStats {
    /// Connections whose header-option callbacks were switched on at connect or accept.
    pub connections_enabled: u64,
    /// Established connections switched on by the `iter/tcp` program.
    pub connections_enabled_later: u64,
    /// `bpf_setsockopt` failures of the iterator, and the last error (a positive errno).
    pub iter_failures: u64,
    pub iter_last_errno: u64,
    /// Age options written into outgoing segments, and the writes that failed.
    pub options_written: u64,
    pub write_failures: u64,
    /// Age options found in incoming segments.
    pub options_parsed: u64,
    /// Requests started when their data arrived (by their sleeping thread's wake-up), not at
    /// their thread's first receive.
    pub started_at_arrival: u64,
}

/// The TCP option that carries a request's age: RFC 6994's shared experimental kind 254 with
/// the 16-bit experiment id [`AGE_OPTION_EXID`] and an 8-byte big-endian payload, the age in ns
/// ([`AGE_NONE`]: the sending thread serves no request now).
pub const AGE_OPTION_KIND: u8 = 254;
/// Experiment id "SP" (unregistered; RFC 6994 section 3 lets experiments share kind 254 by id).
pub const AGE_OPTION_EXID: [u8; 2] = *b"SP";
/// Kind, length, experiment id, payload.
pub const AGE_OPTION_LEN: u32 = 12;
/// Payload of the age option when the sender serves no request: the receiver forgets the age
/// it had for the connection.
pub const AGE_NONE: u64 = u64::MAX;

/// `AGE_PORTS` values: a listening port of a service that tracks ages (its accepted connections
/// parse ages), and a port such a service calls (its established connections to it write ages;
/// used for connections opened before tracking started).
pub const AGE_PORT_LISTEN: u8 = 1;
pub const AGE_PORT_PEER: u8 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): plain `#[repr(C)]` data whose fields leave no padding.
    unsafe impl aya::Pod for super::ServiceConfig {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for super::ServiceCounters {}
    unsafe impl aya::Pod for super::ServiceTraffic {}
    unsafe impl aya::Pod for super::PauseGate {}
    unsafe impl aya::Pod for super::ListenKey {}
    unsafe impl aya::Pod for super::SockState {}
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::EndpointValue {}
    unsafe impl aya::Pod for super::ThreadActivity {}
    unsafe impl aya::Pod for super::RequestWake {}
    unsafe impl aya::Pod for super::PauseEvent {}
    unsafe impl aya::Pod for super::RequestEvent {}
    unsafe impl aya::Pod for super::ThreadRequest {}
    unsafe impl aya::Pod for super::AgeCounters {}
    unsafe impl aya::Pod for super::AgeStats {}
    unsafe impl aya::Pod for super::PromotedRun {}
}

//! Slowpoke's kernel programs: visit detection, per-service counters, pause debt and the
//! in-kernel busy-delay actuator, all on the two socket tracepoints `sock_recv_length` and
//! `sock_send_length` (process context, `struct sock *sk, int ret, int flags`) — or, on kernels
//! before 6.3 that lack them, on the returns of `tcp_recvmsg`/`tcp_sendmsg` (`fexit`), with the
//! same body.
//!
//! Hot path for a process no service tracks: one hash lookup by tgid, then (only when some
//! service has cgroup members) one hash lookup by cgroup id. Everything else is for tracked
//! processes only. The safety checks (protected processes, the agent's heartbeat) sit on the
//! stop path alone, right before a SIGSTOP or a spin. `docs/kernel.md` describes the rules.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap in its target spec, so `AtomicU64::fetch_add` and
// `compare_exchange` are not offered; the intrinsics lower to the BPF v3 atomic instructions.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod ages;
mod share;

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    ptr::read_volatile,
};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_loop,
            bpf_send_signal, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, fexit, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FExitContext},
};
use aya_log_ebpf::warn;
use slowpoke_common::{
    CONFIG_IN_KERNEL_STOP, DIR_NONE, DIR_RECV, DIR_SEND, EndpointKey, EndpointValue,
    GLOBAL_DETECT_HTTP2, GlobalConfig, ListenKey, MAX_CGROUP_DEPTH, MAX_PROTECTED_CGROUPS,
    MAX_PROTECTED_TGIDS, MAX_SERVICES, MAX_SPIN_NS, MEMBER_WORDS, MODE_SPIN, PORT_VISITS,
    PauseEvent, PauseGate, ROLE_CLIENT, ROLE_IGNORED, ROLE_SERVER, ServiceConfig, ServiceCounters,
    ServiceTraffic, SockState, ThreadActivity,
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const MSG_PEEK: i32 = 2;
const SIGSTOP: u32 = 19;

// x86_64 syscall numbers whose first buffer argument the HTTP/2 check knows how to find.
const SYS_READ: u64 = 0;
const SYS_READV: u64 = 19;
const SYS_RECVFROM: u64 = 45;
const SYS_RECVMSG: u64 = 47;
const SYS_WRITE: u64 = 1;
const SYS_WRITEV: u64 = 20;
const SYS_SENDTO: u64 = 44;
const SYS_SENDMSG: u64 = 46;
/// `offsetof(struct user_msghdr, msg_iov)`.
const MSGHDR_IOV: u64 = 16;

/// First 16 bytes of the HTTP/2 connection preface, "PRI * HTTP/2.0\r\n", as two words.
const H2_PREFACE_0: u64 = u64::from_le_bytes(*b"PRI * HT");
const H2_PREFACE_1: u64 = u64::from_le_bytes(*b"TP/2.0\r\n");

/// `THREADS` is updated at most this often per thread and CPU.
const THREAD_RESOLUTION_NS: u64 = 1_000_000;

struct ThreadSeen {
    last_ns: u64,
    tid: u32,
    service: u32,
}

/// "HTTP/1." followed by anything: the start of an HTTP/1.x response.
const HTTP1_STATUS: u64 = u64::from_le_bytes(*b"HTTP/1.\0");
const HTTP1_STATUS_MASK: u64 = 0x00ff_ffff_ffff_ffff;

/// Upper bound of `bpf_loop` iterations of one spin (the deadline ends it much earlier).
const SPIN_MAX_STEPS: u32 = 1 << 20;

// Field offsets, set by the agent at load from the running kernel's BTF (never guessed).
#[unsafe(no_mangle)]
static OFF_SKC_DADDR: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SKC_V6_DADDR: u32 = 0;
/// `skc_dport`; `skc_num` follows it (checked by the agent), so one 4-byte read gets both.
#[unsafe(no_mangle)]
static OFF_SKC_DPORT: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SKC_FAMILY: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SK_PROTOCOL: u32 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_ARG1: u32 = 0;
#[unsafe(no_mangle)]
static OFF_REGS_SYSCALL_NR: u32 = 0;

/// Bit `tgid % 64` of word `tgid / 64` is set when `MEMBERS` has the tgid: an array lookup is
/// inlined by the verifier (no helper call), so untracked processes skip the hash lookup.
/// 65 536 words cover `PID_MAX_LIMIT` (2^22).
#[map]
static MEMBER_BITS: Array<u64> = Array::with_max_entries(MEMBER_WORDS, 0);
/// tgid -> service id.
#[map]
static MEMBERS: HashMap<u32, u32> = HashMap::with_max_entries(16_384, 0);
/// cgroup v2 id -> service id.
#[map]
static CGROUP_MEMBERS: HashMap<u64, u32> = HashMap::with_max_entries(4_096, 0);
/// (service, local port) of the services' listening sockets.
#[map]
static LISTEN_PORTS: HashMap<ListenKey, u8> = HashMap::with_max_entries(4_096, 0);
#[map]
static SERVICE_CONFIG: Array<ServiceConfig> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
static GLOBAL: Array<GlobalConfig> = Array::with_max_entries(1, 0);
#[map]
static COUNTERS: Array<ServiceCounters> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
static TRAFFIC: PerCpuArray<ServiceTraffic> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);
#[map]
static GATES: Array<PauseGate> = Array::with_max_entries(MAX_SERVICES, 0);
/// `struct sock *` -> direction of its last data transfer.
#[map]
static SOCKS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(32_768, 0);
#[map]
static ENDPOINTS: LruHashMap<EndpointKey, EndpointValue> = LruHashMap::with_max_entries(4_096, 0);
/// tid -> last socket work on a server socket.
#[map]
static THREADS: LruHashMap<u32, ThreadActivity> = LruHashMap::with_max_entries(16_384, 0);
/// Last thread recorded in `THREADS`, per CPU.
#[map]
static THREAD_SEEN: PerCpuArray<ThreadSeen> = PerCpuArray::with_max_entries(1, 0);
/// tgids the kernel never stops or spins (the agent, its guardian, sshd...); value unused.
#[map]
static PROTECTED_TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_PROTECTED_TGIDS, 0);
/// cgroup v2 ids whose processes, and those of every cgroup below, the kernel never stops or
/// spins (the agent's own cgroup covers processes it has not listed); value unused.
#[map]
static PROTECTED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_PROTECTED_CGROUPS, 0);
/// The agent's last beat (`CLOCK_MONOTONIC` ns; 0 = never beaten): no stops once it is older
/// than `GlobalConfig::heartbeat_max_age_ns`.
#[map]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);
#[map]
static PAUSE_EVENTS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv_length(ctx: BtfTracePointContext) -> u32 {
    let call = SockCall::of_tracepoint(&ctx);
    match try_sock_data(&ctx, call, true) {
        Ok(v) | Err(v) => v,
    }
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send_length(ctx: BtfTracePointContext) -> u32 {
    let call = SockCall::of_tracepoint(&ctx);
    match try_sock_data(&ctx, call, false) {
        Ok(v) | Err(v) => v,
    }
}

/// Fallback for kernels without the sock tracepoints (before 6.3), loaded by the agent only
/// there: the return of `int tcp_recvmsg(struct sock *sk, struct msghdr *msg, size_t len,
/// int flags, ...)` (5.19+ layout; the agent checks it in BTF). Every TCP receive
/// passes through it in process context, as through `sock_recv_length`.
#[fexit(function = "tcp_recvmsg")]
pub fn tcp_recvmsg_exit(ctx: FExitContext) -> u32 {
    let call = SockCall {
        sk: ctx.arg(0),
        ret: ctx.ret().unwrap_or(0),
        flags: ctx.arg(3),
    };
    match try_sock_data(&ctx, call, true) {
        Ok(v) | Err(v) => v,
    }
}

/// Fallback: the return of `int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t
/// size)`. Unlike `sock_send_length`, `sendfile`/`splice` bodies do not pass through it
/// (`tcp_sendpage` before 6.5): their bytes are not counted, the headers sent before them are.
#[fexit(function = "tcp_sendmsg")]
pub fn tcp_sendmsg_exit(ctx: FExitContext) -> u32 {
    let call = SockCall {
        sk: ctx.arg(0),
        ret: ctx.ret().unwrap_or(0),
        flags: 0,
    };
    match try_sock_data(&ctx, call, false) {
        Ok(v) | Err(v) => v,
    }
}

/// One socket data transfer as the hooks see it.
#[derive(Clone, Copy)]
struct SockCall {
    sk: *const u8,
    /// Bytes moved, or a negative error (`ret <= 0`: nothing moved).
    ret: i32,
    /// The receive's `MSG_*` flags (0 for sends).
    flags: i32,
}

impl SockCall {
    /// `sock_*_length(struct sock *sk, int ret, int flags)`.
    #[inline(always)]
    fn of_tracepoint(ctx: &BtfTracePointContext) -> SockCall {
        SockCall {
            sk: ctx.arg(0),
            ret: ctx.arg(1),
            flags: ctx.arg(2),
        }
    }
}

fn try_sock_data<C: EbpfContext>(ctx: &C, call: SockCall, recv: bool) -> Result<u32, u32> {
    let ret = call.ret;
    // EOF, errors (-EAGAIN) and peeks move no data.
    if ret <= 0 || (recv && call.flags & MSG_PEEK != 0) {
        return Ok(0);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(service) = service_of(tgid) else {
        return Ok(0);
    };

    let sk = call.sk;
    // Little-endian: low half `skc_dport` (network order), high half `skc_num` (host order).
    let portpair: u32 = read_field(sk, &OFF_SKC_DPORT)?;
    let (role, last) = socket_role_and_last(sk, portpair, service, recv)?;
    if role == ROLE_IGNORED {
        return Ok(0);
    }
    let traffic = TRAFFIC.get_ptr_mut(service).ok_or(0u32)?;
    let bytes = ret as u64;
    if role == ROLE_SERVER {
        if last != now_dir(recv) {
            note_thread(pid_tgid as u32, service);
            ages::on_server_turn(sk, pid_tgid, service, recv);
        }
        if !recv {
            add(unsafe { &raw mut (*traffic).bytes_out }, bytes);
            if last == DIR_SEND && ret >= 16 {
                let counters = COUNTERS.get_ptr_mut(service).ok_or(0u32)?;
                check_approximate(ctx, counters, Probe::SecondResponse);
            }
        } else {
            add(unsafe { &raw mut (*traffic).bytes_in }, bytes);
            if last != DIR_RECV {
                add(unsafe { &raw mut (*traffic).visits }, 1);
                let counters = COUNTERS.get_ptr_mut(service).ok_or(0u32)?;
                if last == DIR_NONE && ret >= 16 {
                    check_approximate(ctx, counters, Probe::Http2Preface);
                }
                on_visit(service, tgid, counters, traffic)?;
            }
        }
    } else if !recv && last != DIR_SEND {
        add(unsafe { &raw mut (*traffic).calls_out }, 1);
        let remote_port = u16::from_be(portpair as u16);
        note_endpoint(sk, remote_port, tgid, service)?;
    }
    Ok(0)
}

/// The service of the current process: by tgid, else by cgroup v2 id.
#[inline(always)]
fn service_of(tgid: u32) -> Option<u32> {
    if let Some(service) = member_service(tgid) {
        return Some(service);
    }
    if GLOBAL.get(0)?.cgroup_members == 0 {
        return None;
    }
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    unsafe { CGROUP_MEMBERS.get(cgroup) }.copied()
}

/// The service of process `tgid` by its listed pids (not by cgroup: it need not be current).
#[inline(always)]
fn member_service(tgid: u32) -> Option<u32> {
    let word = MEMBER_BITS.get(tgid >> 6)?;
    if (*word >> (tgid & 63)) & 1 == 0 {
        return None;
    }
    unsafe { MEMBERS.get(tgid) }.copied()
}

#[inline(always)]
fn now_dir(recv: bool) -> u8 {
    if recv { DIR_RECV } else { DIR_SEND }
}

/// The socket's role for the service and the direction of its previous data transfer
/// (`DIR_NONE` for a socket seen for the first time); records this transfer's direction.
/// Family, protocol and listening port are checked once per socket (and again after the
/// listening ports changed), not at every call.
#[inline(always)]
fn socket_role_and_last(
    sk: *const u8,
    portpair: u32,
    service: u32,
    recv: bool,
) -> Result<(u8, u8), u32> {
    let generation = GLOBAL.get(0).ok_or(0u32)?.ports_generation;
    let key = sk as u64;
    let mut last = DIR_NONE;
    if let Some(state) = SOCKS.get_ptr_mut(key) {
        let state = unsafe { &mut *state };
        if state.portpair == portpair && state.service == service {
            last = state.last;
            state.last = now_dir(recv);
            if state.ports_generation == generation {
                return Ok((state.role, last));
            }
        }
    }
    let role = classify(sk, portpair, service)?;
    let fresh = SockState {
        portpair,
        service,
        last: now_dir(recv),
        role,
        pad: [0; 2],
        ports_generation: generation,
    };
    SOCKS.insert(key, fresh, 0).map_err(|_| 0u32)?;
    Ok((role, last))
}

fn classify(sk: *const u8, portpair: u32, service: u32) -> Result<u8, u32> {
    let family: u16 = read_field(sk, &OFF_SKC_FAMILY)?;
    if (family != AF_INET && family != AF_INET6)
        || read_field::<u16>(sk, &OFF_SK_PROTOCOL)? != IPPROTO_TCP
    {
        return Ok(ROLE_IGNORED);
    }
    let listening = ListenKey {
        service,
        port: portpair >> 16,
    };
    Ok(match unsafe { LISTEN_PORTS.get(listening) } {
        Some(&PORT_VISITS) => ROLE_SERVER,
        Some(_) => ROLE_IGNORED,
        None => ROLE_CLIENT,
    })
}

/// Records that thread `tid` did socket work for `service` now. A per-CPU cache of the last
/// thread recorded skips the LRU update when the same thread was recorded less than
/// `THREAD_RESOLUTION_NS` ago (`serving_threads` windows are far longer).
fn note_thread(tid: u32, service: u32) {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(seen) = THREAD_SEEN.get_ptr_mut(0) else {
        return;
    };
    let seen = unsafe { &mut *seen };
    if seen.tid == tid && seen.service == service && now - seen.last_ns < THREAD_RESOLUTION_NS {
        return;
    }
    seen.tid = tid;
    seen.service = service;
    seen.last_ns = now;
    if let Some(activity) = THREADS.get_ptr_mut(tid) {
        let activity = unsafe { &mut *activity };
        activity.last_ns = now;
        activity.service = service;
        return;
    }
    let activity = ThreadActivity {
        last_ns: now,
        service,
        pad: 0,
    };
    let _ = THREADS.insert(tid, activity, 0);
}

fn note_endpoint(sk: *const u8, port: u16, tgid: u32, service: u32) -> Result<(), u32> {
    let family: u16 = read_field(sk, &OFF_SKC_FAMILY)?;
    let mut key = EndpointKey {
        addr: [0; 16],
        tgid,
        port,
        family,
    };
    if family == AF_INET {
        let v4: [u8; 4] = read_field(sk, &OFF_SKC_DADDR)?;
        key.addr[0] = v4[0];
        key.addr[1] = v4[1];
        key.addr[2] = v4[2];
        key.addr[3] = v4[3];
    } else {
        key.addr = read_field(sk, &OFF_SKC_V6_DADDR)?;
    }
    if let Some(value) = ENDPOINTS.get_ptr_mut(key) {
        add(unsafe { &raw mut (*value).calls }, 1);
        return Ok(());
    }
    let value = EndpointValue {
        calls: 1,
        service,
        pad: 0,
    };
    ENDPOINTS.insert(key, value, 0).map_err(|_| 0u32)
}

/// A visit started: add the service's delay to its debt (pause mode) and trigger a pause when
/// the unpaid debt reaches the quantum, or spin the visiting thread (spin mode).
fn on_visit(
    service: u32,
    tgid: u32,
    counters: *mut ServiceCounters,
    traffic: *mut ServiceTraffic,
) -> Result<(), u32> {
    let config = SERVICE_CONFIG.get(service).ok_or(0u32)?;
    let delay = config.delay_ns;
    if delay == 0 {
        return Ok(());
    }
    if config.mode == MODE_SPIN {
        if !may_stop(tgid, counters) {
            return Ok(());
        }
        let spun = spin(if delay < MAX_SPIN_NS {
            delay
        } else {
            MAX_SPIN_NS
        });
        add(unsafe { &raw mut (*traffic).spin_ns }, spun);
        return Ok(());
    }
    let owed = fetch_add(unsafe { &raw mut (*counters).owed_ns }, delay) + delay;
    let quantum = GLOBAL.get(0).ok_or(0u32)?.quantum_ns;
    let gate = GATES.get_ptr_mut(service).ok_or(0u32)?;
    let paid = unsafe { &raw const (*gate).paid_ns };
    if owed.saturating_sub(unsafe { read_volatile(paid) }) < quantum {
        return Ok(());
    }
    let busy = unsafe { &raw mut (*gate).busy };
    if !compare_and_swap(busy, 0, 1) {
        return Ok(()); // a pause is already requested or in progress
    }
    // `rearm` writes `paid_ns` before it reopens the gate: re-read it now that we own the gate.
    if owed.saturating_sub(unsafe { read_volatile(paid) }) < quantum {
        release(busy);
        return Ok(());
    }
    let Some(mut entry) = PAUSE_EVENTS.reserve::<PauseEvent>(0) else {
        release(busy);
        add(unsafe { &raw mut (*counters).dropped_requests }, 1);
        return Ok(());
    };
    let mut stopped_tgid = 0;
    if config.flags & CONFIG_IN_KERNEL_STOP != 0
        && may_stop(tgid, counters)
        && unsafe { bpf_send_signal(SIGSTOP) } == 0
    {
        stopped_tgid = tgid;
        add(unsafe { &raw mut (*counters).kernel_stops }, 1);
    }
    entry.write(PauseEvent {
        at_ns: unsafe { bpf_ktime_get_ns() },
        owed_ns: owed,
        service,
        stopped_tgid,
    });
    entry.submit(0);
    add(unsafe { &raw mut (*counters).pause_requests }, 1);
    Ok(())
}

/// Whether the kernel may stop (or spin) the current process now; counts why not. Called only
/// right before a SIGSTOP or a spin, so its lookups cost nothing on the hot path.
#[inline(always)]
fn may_stop(tgid: u32, counters: *mut ServiceCounters) -> bool {
    if is_protected(tgid) || !is_listed(tgid) {
        add(unsafe { &raw mut (*counters).denied_stops }, 1);
        return false;
    }
    if heartbeat_stale() {
        add(unsafe { &raw mut (*counters).stale_stops }, 1);
        return false;
    }
    true
}

/// The agent listed the process itself (`MEMBERS`): it checked it against its protection rules.
/// A process counted only through its cgroup (one that appeared since the agent's last
/// resolution) is counted but never stopped here: it may be one the agent would refuse.
#[inline(always)]
fn is_listed(tgid: u32) -> bool {
    unsafe { MEMBERS.get(tgid) }.is_some()
}

/// tgid 0 or 1 (whatever the maps say), a protected tgid, or a process in a protected cgroup
/// or below one (its own cgroup v2 id, then its ancestors from the root down).
#[inline(always)]
fn is_protected(tgid: u32) -> bool {
    if tgid <= 1 || unsafe { PROTECTED_TGIDS.get(tgid) }.is_some() {
        return true;
    }
    let own = unsafe { bpf_get_current_cgroup_id() };
    if unsafe { PROTECTED_CGROUPS.get(own) }.is_some() {
        return true;
    }
    for level in 0..MAX_CGROUP_DEPTH {
        // 0 past the process's own level; its own id at that level (already checked).
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 || ancestor == own {
            return false;
        }
        if unsafe { PROTECTED_CGROUPS.get(ancestor) }.is_some() {
            return true;
        }
    }
    false
}

/// The agent's heartbeat is missing or older than the configured maximum age: the agent may be
/// stopped, hung or dead, and nobody would resume what the kernel stops.
#[inline(always)]
fn heartbeat_stale() -> bool {
    let (Some(beat), Some(global)) = (HEARTBEAT.get_ptr(0), GLOBAL.get(0)) else {
        return true;
    };
    let beat = unsafe { read_volatile(beat) };
    beat == 0 || unsafe { bpf_ktime_get_ns() }.saturating_sub(beat) > global.heartbeat_max_age_ns
}

struct SpinDeadline {
    until_ns: u64,
}

unsafe extern "C" fn spin_step(_index: u64, ctx: *mut c_void) -> i64 {
    let deadline = unsafe { &*ctx.cast::<SpinDeadline>() };
    i64::from(unsafe { bpf_ktime_get_ns() } >= deadline.until_ns)
}

/// Busy-waits the current thread for `ns` (bounded by `SPIN_MAX_STEPS`); returns the time spent.
fn spin(ns: u64) -> u64 {
    let start = unsafe { bpf_ktime_get_ns() };
    let mut deadline = SpinDeadline {
        until_ns: start + ns,
    };
    unsafe {
        bpf_loop(
            SPIN_MAX_STEPS,
            spin_step as *mut c_void,
            (&raw mut deadline).cast(),
            0,
        );
    }
    let end = unsafe { bpf_ktime_get_ns() };
    end - start
}

/// What the multiplexing/pipelining check looks for in a syscall's user buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// First data received on a server socket: the HTTP/2 connection preface.
    Http2Preface,
    /// A second send of one visit on a server socket: another HTTP/1.x status line, i.e. a
    /// second response to what the kernel counted as one visit (pipelined requests).
    SecondResponse,
}

/// Best effort, x86_64 syscalls only: flags the service's visits as approximate when the
/// current syscall's user buffer shows HTTP/2 or HTTP/1.x pipelining. Stops looking once the
/// flag is set.
fn check_approximate<C: EbpfContext>(ctx: &C, counters: *mut ServiceCounters, probe: Probe) {
    let flag = unsafe { &raw mut (*counters).visits_approximate };
    if unsafe { read_volatile(flag) } != 0 {
        return;
    }
    let Some(global) = GLOBAL.get(0) else {
        return;
    };
    if global.flags & GLOBAL_DETECT_HTTP2 == 0 {
        return;
    }
    let Ok(head) = syscall_buffer_head(probe == Probe::Http2Preface) else {
        return;
    };
    let found = match probe {
        Probe::Http2Preface => head[0] == H2_PREFACE_0 && head[1] == H2_PREFACE_1,
        Probe::SecondResponse => head[0] & HTTP1_STATUS_MASK == HTTP1_STATUS,
    };
    if found {
        unsafe { flag.write_volatile(1) };
        if probe == Probe::Http2Preface {
            warn!(
                ctx,
                "HTTP/2 preface on a server socket: visits are approximate"
            );
        } else {
            warn!(ctx, "pipelined HTTP/1.x responses: visits are approximate");
        }
    }
}

/// The first 16 bytes of the buffer of the current read-like (`recv`) or write-like syscall.
fn syscall_buffer_head(recv: bool) -> Result<[u64; 2], u32> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    let nr: u64 = read_field(regs, &OFF_REGS_SYSCALL_NR)?;
    let arg1: u64 = read_field(regs, &OFF_REGS_ARG1)?;
    let buf: u64 = match (recv, nr) {
        (true, SYS_READ | SYS_RECVFROM) | (false, SYS_WRITE | SYS_SENDTO) => arg1,
        (true, SYS_READV) | (false, SYS_WRITEV) => read_user(arg1)?,
        (true, SYS_RECVMSG) | (false, SYS_SENDMSG) => {
            read_user(read_user::<u64>(arg1 + MSGHDR_IOV)?)?
        }
        _ => return Err(0),
    };
    read_user(buf)
}

#[inline(always)]
fn read_field<T>(base: *const u8, offset: &'static u32) -> Result<T, u32> {
    let offset = unsafe { read_volatile(offset) } as usize;
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset).cast::<T>()) }.map_err(|_| 0u32)
}

#[inline(always)]
fn read_user<T>(addr: u64) -> Result<T, u32> {
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|_| 0u32)
}

/// Atomic add whose result is unused (`lock xadd`).
#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Atomic add returning the previous value (BPF v3 `atomic_fetch_add`).
#[inline(always)]
fn fetch_add(counter: *mut u64, value: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, value) }
}

/// BPF v3 `cmpxchg` (64 or 32 bits): `*word` from `old` to `new`; true when this call made the
/// change.
#[inline(always)]
fn compare_and_swap<T: Copy>(word: *mut T, old: T, new: T) -> bool {
    unsafe {
        atomic_cxchg::<T, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new)
    }
    .1
}

/// Reopens a gate word taken with [`compare_and_swap`]: a plain store (BPF before v4 has no
/// store-release; the swap that takes the gate is a full barrier).
#[inline(always)]
fn release(word: *mut u64) {
    unsafe { word.write_volatile(0) };
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

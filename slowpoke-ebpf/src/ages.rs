//! Request ages (issue #18 item 1, `docs/tail.md#request-ages`): for services whose
//! `ServiceConfig.flags` has `CONFIG_TRACK_AGES`, which request each thread serves and how old it
//! is, carried from service to service in a TCP header option — no application change.
//!
//! - A visit's start on thread T (a server-socket receive after a send, `try_sock_data`) starts
//!   a request: its origin is `now - age` for the age the caller carried on that connection
//!   (parsed into `CARRIED`), else `now` (it entered the app here). T's first response send ends
//!   it. Both are `RequestEvent`s on `REQUEST_EVENTS`.
//! - Before every send of a tracked process (`tcp:tcp_sendmsg_locked`, process context, ahead of
//!   the segments) the socket is given the sending thread's request origin (`SOCK_ORIGIN`, or
//!   `AGE_NONE` when the thread serves none). The `sock_ops` program writes `now - origin` into
//!   each segment of that socket: an **age**, never a raw `bpf_ktime_get_ns`, so the nodes'
//!   clocks need not agree. Softirq-context segments (ACKs, retransmits) find the socket's value,
//!   never the interrupted thread's.
//! - **Started when its data arrives** (`sock:sk_data_ready` + `sched:sched_waking`, where the
//!   kernel has the first): when a request's bytes reach a connection of a tracked service's
//!   listening port, the thread the kernel wakes for them (on the same CPU, within
//!   [`WAKE_WINDOW_NS`]) starts the request at once, stamped with the arrival, before it runs —
//!   if it is the thread that last started a request on that connection (`SOCK_READER`), or
//!   the connection had none yet, and it serves no request now. On a fresh connection the
//!   woken thread may lose the race for it to another worker of a pool (`accept`): the first
//!   receive on the connection by another thread drops the woken one's early request
//!   (`EARLY_FOR`/`EARLY_HOLDER`), and a thread that reads another connection than the one it
//!   was woken for starts that one's request instead. Its receive then finds the
//!   request started ([`THREAD_REQUEST_EARLY`]) and only clears the mark. So a scheduler sees
//!   every waiting request in arrival order, not in the order the CPU lets their threads run.
//!   A thread that was not asleep (busy, or an event loop between polls) is not woken and starts
//!   its request at its receive, as before.
//! - Header callbacks cost on every segment, so they are switched on only for connections of
//!   tracked services: at connect when the connecting process tracks ages (write), at accept
//!   when the local port is a listening port of such a service (parse), and for connections
//!   opened before by the `iter/tcp` program (kernel ≥ 6.12, `TCP_BPF_SOCK_OPS_CB_FLAGS`).
//!
//! The agent loads the `sock_ops`, tracepoint and iterator programs only once a service tracks
//! ages; the visit-side code here runs inside the always-loaded socket tracepoints and costs one
//! array lookup per turn of a server socket when no service tracks ages.

use core::{ffi::c_void, ptr::read_volatile};

use aya_ebpf::{
    bindings::{
        BPF_RB_NO_WAKEUP, BPF_SOCK_OPS_HDR_OPT_LEN_CB, BPF_SOCK_OPS_PARSE_HDR_OPT_CB,
        BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task, bpf_get_socket_cookie, bpf_load_hdr_opt, bpf_reserve_hdr_opt,
            bpf_setsockopt, bpf_skc_to_tcp_sock, bpf_store_hdr_opt,
        },
    },
    macros::{btf_tracepoint, map, sock_ops},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, SockOpsContext},
};
use slowpoke_common::{
    AGE_NONE, AGE_OPTION_EXID, AGE_OPTION_KIND, AGE_OPTION_LEN, AGE_PORT_LISTEN, AgeCounters,
    AgeStats, CONFIG_TRACK_AGES, GLOBAL_REQUEST_EVENTS_NO_WAKEUP, MAX_SERVICES, REQUEST_DROPPED,
    REQUEST_END, REQUEST_START, RequestEvent, RequestWake, THREAD_REQUEST_DROPPED,
    THREAD_REQUEST_EARLY, ThreadRequest,
};

use crate::{
    GLOBAL, IPPROTO_TCP, OFF_SK_PROTOCOL, OFF_SKC_DPORT, SERVICE_CONFIG, add, compare_and_swap,
    member_service, read_field, service_of,
};

/// TEST ONLY (set by the agent's `test-hooks` build, 0 otherwise): added to every clock reading
/// of this module, so one `Kernel` can stand for a node whose clock is far from another's and a
/// test can show that ages, not timestamps, cross the wire.
#[unsafe(no_mangle)]
static AGES_CLOCK_OFFSET_NS: u64 = 0;
/// `task_struct.tgid` and `sock_common.skc_state`, from the running kernel's BTF.
#[unsafe(no_mangle)]
static OFF_TASK_TGID: u32 = 0;
#[unsafe(no_mangle)]
static OFF_SKC_STATE: u32 = 0;
/// `task_struct.pid` (the thread id), for [`AGES_FROM_CURRENT`].
#[unsafe(no_mangle)]
pub(crate) static OFF_TASK_PID: u32 = 0;
/// `task_struct.start_boottime` (0: unknown), reported with each request's start.
#[unsafe(no_mangle)]
static OFF_TASK_START_BOOTTIME: u32 = 0;
/// 1 on kernels without `tcp:tcp_sendmsg_locked` (before 6.17): the socket callbacks take the
/// origin from the thread that is current when a segment is built instead of from the socket's
/// mark. Right for segments built by the sending thread's own `sendmsg` (a request/response
/// call's data); a segment built in softirq context (a retransmit, a delayed ACK) carries the
/// age of whatever tracked thread it interrupted, or none.
#[unsafe(no_mangle)]
static AGES_FROM_CURRENT: u32 = 0;

/// tid -> the request the thread serves (none when its flags say `THREAD_REQUEST_DROPPED`:
/// see [`serving`]). Only the thread's own programs remove or replace its entry, except the
/// wake-up that gives a thread serving none its early request.
#[map]
static THREAD_REQUESTS: LruHashMap<u32, ThreadRequest> = LruHashMap::with_max_entries(16_384, 0);
/// What a socket's segments carry: the origin (this node's clock) of the sending thread's
/// request, or `AGE_NONE`, and the sender's service (nothing is written once it stops tracking).
#[repr(C)]
#[derive(Clone, Copy)]
struct SockOrigin {
    origin_ns: u64,
    service: u32,
    pad: u32,
}

/// Socket cookie -> what its segments carry.
#[map]
static SOCK_ORIGIN: LruHashMap<u64, SockOrigin> = LruHashMap::with_max_entries(32_768, 0);
/// Socket cookie -> origin (this node's clock) of the request the caller last carried on it.
#[map]
static CARRIED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(32_768, 0);
/// Port (host order) -> `AGE_PORT_LISTEN` or `AGE_PORT_PEER` (agent-written).
#[map]
static AGE_PORTS: HashMap<u32, u8> = HashMap::with_max_entries(4_096, 0);
#[map]
static AGE_COUNTERS: Array<AgeCounters> = Array::with_max_entries(MAX_SERVICES, 0);
#[map]
static AGE_STATS: Array<AgeStats> = Array::with_max_entries(1, 0);
#[map]
static REQUEST_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);
/// Per service: which events wake the scheduler (agent-written; all of them until it writes).
#[map]
static REQUEST_WAKE: Array<RequestWake> = Array::with_max_entries(MAX_SERVICES, 0);

/// Socket cookie -> the thread (`pid_tgid`) that last started a request on it (a connection to
/// a listening port of a service that tracks ages).
#[map]
static SOCK_READER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(32_768, 0);

/// A fresh connection's request started early on the thread woken for its data (no thread has
/// read it yet): tid -> the connection's cookie, and cookie -> that thread (`pid_tgid`). A pool's
/// workers blocked in `accept` race for the connection; when another one reads it, the woken
/// one's early request is dropped ([`drop_early`]).
#[map]
static EARLY_FOR: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16_384, 0);
#[map]
static EARLY_HOLDER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);

/// A tracked connection's data just arrived on this CPU (`sk_data_ready`), for the wake-up that
/// follows in the same call. `at_ns` 0: nothing pending.
#[repr(C)]
#[derive(Clone, Copy)]
struct DataArrival {
    at_ns: u64,
    origin_ns: u64,
    /// `SOCK_READER` of the connection, 0 if none yet.
    reader: u64,
    carried: u64,
    cookie: u64,
}

#[map]
static DATA_ARRIVAL: PerCpuArray<DataArrival> = PerCpuArray::with_max_entries(1, 0);

/// How long after a data arrival its wake-up may come: it follows within the same call
/// (`sock_def_readable`), microseconds; later, the arrival woke nobody and this is another
/// wake-up.
const WAKE_WINDOW_NS: u64 = 20_000;

const SOL_TCP: i32 = 6;
/// `bpf_setsockopt(SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS)`: a socket's callback flags set from
/// outside its own callbacks (Linux ≥ 6.12).
const TCP_BPF_SOCK_OPS_CB_FLAGS: i32 = 1008;
const TCP_ESTABLISHED: u8 = 1;
const TCPHDR_SYN: u32 = 0x02;
const WRITE_FLAGS: u32 = BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG;
const PARSE_FLAGS: u32 = BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG;

/// This node's clock (plus the test offset, 0 outside tests).
#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }.wrapping_add(unsafe { read_volatile(&AGES_CLOCK_OFFSET_NS) })
}

#[inline(always)]
fn tracks_ages(service: u32) -> bool {
    SERVICE_CONFIG
        .get(service)
        .is_some_and(|c| c.flags & CONFIG_TRACK_AGES != 0)
}

fn stat(field: impl FnOnce(*mut AgeStats) -> *mut u64) {
    if let Some(stats) = AGE_STATS.get_ptr_mut(0) {
        add(field(stats), 1);
    }
}

/// A turn of a server socket of `service` (the first receive after a send starts a visit, the
/// first send after a receive starts the response): starts or ends the thread's request.
#[inline(always)]
pub fn on_server_turn(sk: *const u8, pid_tgid: u64, service: u32, recv: bool) {
    if !tracks_ages(service) {
        return;
    }
    if recv {
        start_request(sk, pid_tgid, service);
    } else {
        end_request(pid_tgid, service);
    }
}

fn start_request(sk: *const u8, pid_tgid: u64, service: u32) {
    let Some(counters) = AGE_COUNTERS.get_ptr_mut(service) else {
        return;
    };
    let tid = pid_tgid as u32;
    // Started when its data arrived: this receive is its visit's first — if it reads the
    // connection it was woken for (a fresh connection's early start names it, `EARLY_FOR`).
    // A swap of the flags confirms it: the thread that read the connection may be dropping it
    // at the same moment.
    let mut early = None;
    if let Some(started) = THREAD_REQUESTS.get_ptr_mut(tid) {
        let request = unsafe { *started };
        if request.flags & THREAD_REQUEST_EARLY != 0 && request.service == service {
            let flags = unsafe { &raw mut (*started).flags };
            match unsafe { EARLY_FOR.get(tid) }.copied() {
                Some(woken_for) => early = Some((flags, woken_for)),
                // Woken as the connection's known reader.
                None if compare_and_swap(flags, THREAD_REQUEST_EARLY, 0) => return,
                // Dropped meanwhile: this receive starts a request of its own, below.
                None => {}
            }
        }
    }
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    if let Some((flags, woken_for)) = early {
        if woken_for == cookie {
            if compare_and_swap(flags, THREAD_REQUEST_EARLY, 0) {
                let _ = EARLY_FOR.remove(tid);
                let _ = EARLY_HOLDER.remove(cookie);
                return;
            }
        } else {
            // Another worker took the connection it was woken for: its request is that
            // worker's; this one starts below.
            if unsafe { EARLY_HOLDER.get(woken_for) }.copied() == Some(pid_tgid) {
                let _ = EARLY_HOLDER.remove(woken_for);
            }
            drop_early(pid_tgid, woken_for);
        }
    }
    start_on(cookie, pid_tgid, service, counters);
}

/// Thread `pid_tgid` starts a request of `service` read from connection `cookie`.
#[inline(always)]
fn start_on(cookie: u64, pid_tgid: u64, service: u32, counters: *mut AgeCounters) {
    // A worker woken for this connection that another one (this thread) beat to it: only a
    // connection nobody read yet, or another thread last, can have one.
    if note_reader(cookie, pid_tgid)
        && let Some(holder) = unsafe { EARLY_HOLDER.get(cookie) }.copied()
        && holder != pid_tgid
    {
        let _ = EARLY_HOLDER.remove(cookie);
        drop_early(holder, cookie);
    }
    let arrival = now();
    let carried = unsafe { CARRIED.get(cookie) }.copied();
    begin(
        ThreadRequest {
            origin_ns: carried.unwrap_or(arrival),
            arrival_ns: arrival,
            service,
            flags: 0,
        },
        pid_tgid,
        thread_start_ns(unsafe { bpf_get_current_task() } as *const u8),
        counters,
        carried.is_some(),
    );
}

/// Drops the request thread `pid_tgid` started early for fresh connection `cookie`, if it still
/// holds it unread (`REQUEST_DROPPED`, so the scheduler forgets it; not counted as a request):
/// the thread that reads the connection starts it. The caller has cleared `EARLY_HOLDER`.
/// The thread itself (reading another connection) and the connection's reader may both call
/// this at once: the swap of the flags lets exactly one of them take the request back, and the
/// entry stays, marked dropped, for the thread's next request to replace.
fn drop_early(pid_tgid: u64, cookie: u64) {
    let tid = pid_tgid as u32;
    if unsafe { EARLY_FOR.get(tid) }.copied() != Some(cookie) {
        return;
    }
    let Some(started) = THREAD_REQUESTS.get_ptr_mut(tid) else {
        return;
    };
    let request = unsafe { *started };
    let flags = unsafe { &raw mut (*started).flags };
    if !compare_and_swap(flags, THREAD_REQUEST_EARLY, THREAD_REQUEST_DROPPED) {
        return;
    }
    let _ = EARLY_FOR.remove(tid);
    let Some(counters) = AGE_COUNTERS.get_ptr_mut(request.service) else {
        return;
    };
    // Counted when it started: taken back (a wrapping add of -1).
    add(unsafe { &raw mut (*counters).requests }, u64::MAX);
    if request.origin_ns != request.arrival_ns {
        add(unsafe { &raw mut (*counters).carried }, u64::MAX);
    }
    emit(REQUEST_DROPPED, now(), &request, pid_tgid, 0, counters);
}

/// When `task` was created (`start_boottime`), 0 if unknown.
#[inline(always)]
fn thread_start_ns(task: *const u8) -> u64 {
    if unsafe { read_volatile(&OFF_TASK_START_BOOTTIME) } == 0 {
        return 0;
    }
    read_field(task, &OFF_TASK_START_BOOTTIME).unwrap_or(0)
}

/// Thread `pid_tgid` started a request on connection `cookie`: the connection's next request
/// is for it too (a thread per connection; an event loop is one thread). True when the
/// connection had no reader yet, or another one.
#[inline(always)]
fn note_reader(cookie: u64, pid_tgid: u64) -> bool {
    if let Some(reader) = SOCK_READER.get_ptr_mut(cookie) {
        unsafe {
            if *reader == pid_tgid {
                return false;
            }
            *reader = pid_tgid;
        }
    } else {
        let _ = SOCK_READER.insert(cookie, pid_tgid, 0);
    }
    true
}

/// Records `request` as the one thread `pid_tgid` serves and reports its start.
#[inline(always)]
fn begin(
    request: ThreadRequest,
    pid_tgid: u64,
    started_ns: u64,
    counters: *mut AgeCounters,
    carried: bool,
) {
    if THREAD_REQUESTS.insert(pid_tgid as u32, request, 0).is_err() {
        return;
    }
    add(unsafe { &raw mut (*counters).requests }, 1);
    if carried {
        add(unsafe { &raw mut (*counters).carried }, 1);
    }
    emit(
        REQUEST_START,
        request.arrival_ns,
        &request,
        pid_tgid,
        started_ns,
        counters,
    );
}

/// The request thread `tid` serves: none when it serves none, or its early request was dropped.
#[inline(always)]
fn serving(tid: u32) -> Option<ThreadRequest> {
    unsafe { THREAD_REQUESTS.get(tid) }
        .copied()
        .filter(|r| r.flags & THREAD_REQUEST_DROPPED == 0)
}

fn end_request(pid_tgid: u64, service: u32) {
    let tid = pid_tgid as u32;
    let Some(request) = (unsafe { THREAD_REQUESTS.get(tid) }).copied() else {
        return;
    };
    let _ = THREAD_REQUESTS.remove(tid);
    if request.service != service || request.flags & THREAD_REQUEST_DROPPED != 0 {
        return;
    }
    let Some(counters) = AGE_COUNTERS.get_ptr_mut(service) else {
        return;
    };
    add(unsafe { &raw mut (*counters).ended }, 1);
    emit(REQUEST_END, now(), &request, pid_tgid, 0, counters);
}

fn emit(
    kind: u32,
    at: u64,
    request: &ThreadRequest,
    pid_tgid: u64,
    thread_start_ns: u64,
    counters: *mut AgeCounters,
) {
    let Some(mut entry) = REQUEST_EVENTS.reserve::<RequestEvent>(0) else {
        add(unsafe { &raw mut (*counters).dropped_events }, 1);
        return;
    };
    entry.write(RequestEvent {
        at_ns: at,
        origin_ns: request.origin_ns,
        arrival_ns: request.arrival_ns,
        tid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        service: request.service,
        kind,
        thread_start_ns,
    });
    let quiet = GLOBAL
        .get(0)
        .is_some_and(|g| g.flags & GLOBAL_REQUEST_EVENTS_NO_WAKEUP != 0)
        || REQUEST_WAKE.get(request.service).is_some_and(|w| {
            let key = if w.by_arrival != 0 {
                request.arrival_ns
            } else {
                request.origin_ns
            };
            w.quiet_after_ns != 0 && key > w.quiet_after_ns
        });
    entry.submit(if quiet {
        u64::from(BPF_RB_NO_WAKEUP)
    } else {
        0
    });
}

/// Data reached a socket (any context: the sender's softirq on loopback and veth). On a
/// connection of a tracked service's listening port, notes the arrival for the wake-up that
/// follows ([`sched_waking`]).
#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    let _ = try_sk_data_ready(sk);
    0
}

fn try_sk_data_ready(sk: *const u8) -> Result<(), u32> {
    // Little-endian: high half `skc_num` (local port, host order).
    let portpair: u32 = read_field(sk, &OFF_SKC_DPORT)?;
    if unsafe { AGE_PORTS.get(portpair >> 16) } != Some(&AGE_PORT_LISTEN) {
        return Ok(());
    }
    // A listening socket's "data" is a new connection, not a request; a UDP socket on the same
    // port number (DNS, QUIC beside HTTPS) is no connection of the service.
    let state: u8 = read_field(sk, &OFF_SKC_STATE)?;
    if state != TCP_ESTABLISHED || read_field::<u16>(sk, &OFF_SK_PROTOCOL)? != IPPROTO_TCP {
        return Ok(());
    }
    let at = now();
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    let carried = unsafe { CARRIED.get(cookie) }.copied();
    let pending = DATA_ARRIVAL.get_ptr_mut(0).ok_or(0u32)?;
    unsafe {
        *pending = DataArrival {
            at_ns: at,
            origin_ns: carried.unwrap_or(at),
            reader: SOCK_READER.get(cookie).copied().unwrap_or(0),
            carried: u64::from(carried.is_some()),
            cookie,
        };
    }
    Ok(())
}

/// Every wake-up of the node (one per-CPU lookup when no data arrival is pending): the thread
/// woken for a data arrival starts that request if it is the connection's reader (or the
/// connection has none yet: then it is noted as the request's early holder), belongs to a
/// service that tracks ages and serves none now.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> u32 {
    let task: *const u8 = ctx.arg(0);
    let _ = try_sched_waking(task);
    0
}

fn try_sched_waking(task: *const u8) -> Result<(), u32> {
    let pending = DATA_ARRIVAL.get_ptr_mut(0).ok_or(0u32)?;
    let arrival = unsafe { *pending };
    if arrival.at_ns == 0 {
        return Ok(());
    }
    unsafe { (*pending).at_ns = 0 };
    if now().wrapping_sub(arrival.at_ns) > WAKE_WINDOW_NS {
        return Ok(());
    }
    let tgid: u32 = read_field(task, &OFF_TASK_TGID)?;
    let tid: u32 = read_field(task, &OFF_TASK_PID)?;
    let pid_tgid = (u64::from(tgid) << 32) | u64::from(tid);
    if arrival.reader != 0 && arrival.reader != pid_tgid {
        return Ok(());
    }
    let service = member_service(tgid).ok_or(0u32)?;
    if !tracks_ages(service) || serving(tid).is_some() {
        return Ok(());
    }
    let counters = AGE_COUNTERS.get_ptr_mut(service).ok_or(0u32)?;
    stat(|s| unsafe { &raw mut (*s).started_at_arrival });
    begin(
        ThreadRequest {
            origin_ns: arrival.origin_ns,
            arrival_ns: arrival.at_ns,
            service,
            flags: THREAD_REQUEST_EARLY,
        },
        pid_tgid,
        thread_start_ns(task),
        counters,
        arrival.carried != 0,
    );
    if arrival.reader == 0 {
        let _ = EARLY_FOR.insert(tid, arrival.cookie, 0);
        let _ = EARLY_HOLDER.insert(arrival.cookie, pid_tgid, 0);
    }
    Ok(())
}

/// Before a send's segments are built: the socket carries the sending thread's request.
#[btf_tracepoint(function = "tcp_sendmsg_locked")]
pub fn tcp_sendmsg_locked(ctx: BtfTracePointContext) -> u32 {
    let sk: *const u8 = ctx.arg(0);
    match try_tcp_sendmsg_locked(sk) {
        Ok(v) | Err(v) => v,
    }
}

fn try_tcp_sendmsg_locked(sk: *const u8) -> Result<u32, u32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(service) = service_of((pid_tgid >> 32) as u32) else {
        return Ok(0);
    };
    if !tracks_ages(service) {
        return Ok(0);
    }
    let want = serving(pid_tgid as u32).map_or(AGE_NONE, |r| r.origin_ns);
    let cookie = unsafe { bpf_get_socket_cookie(sk as *mut c_void) };
    match SOCK_ORIGIN.get_ptr_mut(cookie) {
        Some(carried) => unsafe {
            if (*carried).origin_ns != want || (*carried).service != service {
                (*carried).origin_ns = want;
                (*carried).service = service;
            }
        },
        // A connection that never carried an age needs no "none" either.
        None if want != AGE_NONE => {
            let carried = SockOrigin {
                origin_ns: want,
                service,
                pad: 0,
            };
            SOCK_ORIGIN.insert(cookie, carried, 0).map_err(|_| 0u32)?;
        }
        None => {}
    }
    Ok(0)
}

/// The header-option callbacks: switched on per connection, then reserve, write and parse.
#[sock_ops]
pub fn request_ages(ctx: SockOpsContext) -> u32 {
    match try_request_ages(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_request_ages(ctx: &SockOpsContext) -> Result<u32, u32> {
    let ops = ctx.ops;
    match ctx.op() {
        // Process context: the connecting process is `current`.
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            let task = unsafe { bpf_get_current_task() } as *const u8;
            let tgid: u32 = read_field(task, &OFF_TASK_TGID)?;
            if service_of(tgid).is_some_and(tracks_ages) {
                enable(ctx, WRITE_FLAGS);
            }
        }
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            if unsafe { AGE_PORTS.get(ctx.local_port()) } == Some(&AGE_PORT_LISTEN) {
                enable(ctx, PARSE_FLAGS);
                // The segment that completes the handshake: a listener with TCP_DEFER_ACCEPT
                // (apache2's default `AcceptFilter http data`, nginx's `deferred`, haproxy's
                // `defer-accept`) establishes the connection only when the request's first data
                // arrive, and that segment's options are never parsed otherwise (the kernel
                // skips parsing in SYN_RECV): read its age here, before its data are queued.
                parse_age(ctx);
            }
        }
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => {
            // SYNs are left alone: the callee's parse flags are set once it is established.
            if unsafe { (*ops).skb_tcp_flags } & TCPHDR_SYN == 0 && sock_origin(ctx).is_some() {
                unsafe { bpf_reserve_hdr_opt(ops, AGE_OPTION_LEN, 0) };
            }
        }
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB => {
            if unsafe { (*ops).skb_tcp_flags } & TCPHDR_SYN == 0
                && let Some(origin) = sock_origin(ctx)
            {
                let age = if origin == AGE_NONE {
                    AGE_NONE
                } else {
                    now().saturating_sub(origin)
                };
                write_age(ctx, age);
            }
        }
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => parse_age(ctx),
        _ => {}
    }
    Ok(1)
}

fn enable(ctx: &SockOpsContext, flags: u32) {
    if ctx.set_cb_flags((ctx.cb_flags() | flags) as i32).is_ok() {
        stat(|s| unsafe { &raw mut (*s).connections_enabled });
    }
}

/// The origin the socket's segments carry, if its sender's service still tracks ages.
#[inline(always)]
fn sock_origin(ctx: &SockOpsContext) -> Option<u64> {
    if unsafe { read_volatile(&AGES_FROM_CURRENT) } != 0 {
        return current_origin();
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let carried = unsafe { SOCK_ORIGIN.get(cookie) }?;
    tracks_ages(carried.service).then_some(carried.origin_ns)
}

/// [`AGES_FROM_CURRENT`]: the current thread's request origin, `AGE_NONE` for a thread of a
/// tracked service that serves none, nothing for other processes.
fn current_origin() -> Option<u64> {
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let tgid: u32 = read_field(task, &OFF_TASK_TGID).ok()?;
    if !service_of(tgid).is_some_and(tracks_ages) {
        return None;
    }
    let tid: u32 = read_field(task, &OFF_TASK_PID).ok()?;
    Some(serving(tid).map_or(AGE_NONE, |r| r.origin_ns))
}

fn write_age(ctx: &SockOpsContext, age: u64) {
    let mut opt = [0u8; AGE_OPTION_LEN as usize];
    opt[0] = AGE_OPTION_KIND;
    opt[1] = AGE_OPTION_LEN as u8;
    opt[2] = AGE_OPTION_EXID[0];
    opt[3] = AGE_OPTION_EXID[1];
    opt[4..12].copy_from_slice(&age.to_be_bytes());
    let rc = unsafe { bpf_store_hdr_opt(ctx.ops, opt.as_ptr().cast(), AGE_OPTION_LEN, 0) };
    if rc == 0 {
        stat(|s| unsafe { &raw mut (*s).options_written });
    } else {
        stat(|s| unsafe { &raw mut (*s).write_failures });
    }
}

fn parse_age(ctx: &SockOpsContext) {
    // Searched by kind and experiment id: the length given names kind, length and the id.
    let mut buf = [0u8; AGE_OPTION_LEN as usize];
    buf[0] = AGE_OPTION_KIND;
    buf[1] = 4;
    buf[2] = AGE_OPTION_EXID[0];
    buf[3] = AGE_OPTION_EXID[1];
    let n = unsafe { bpf_load_hdr_opt(ctx.ops, buf.as_mut_ptr().cast(), AGE_OPTION_LEN, 0) };
    if n != i64::from(AGE_OPTION_LEN) {
        return;
    }
    stat(|s| unsafe { &raw mut (*s).options_parsed });
    let mut payload = [0u8; 8];
    payload.copy_from_slice(&buf[4..12]);
    let age = u64::from_be_bytes(payload);
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    if age == AGE_NONE {
        let _ = CARRIED.remove(cookie);
        return;
    }
    // An origin before this node's boot (a request older than its uptime) is clamped to 0.
    let origin = now().saturating_sub(age);
    if let Some(old) = CARRIED.get_ptr_mut(cookie) {
        unsafe { *old = origin };
    } else {
        let _ = CARRIED.insert(cookie, origin, 0);
    }
}

/// Switches the header-option callbacks on for established connections opened before tracking
/// started (pooled connections get no callback of any kind otherwise): run once per network
/// namespace by the agent. Context: the iterator's arguments as 8-byte slots (`meta`,
/// `sk_common`, `uid`). Parse on connections whose local port is a listening port of a service
/// that tracks ages; write on connections to a port such a service listens on or calls.
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn request_ages_iter(ctx: *mut u64) -> i32 {
    let skc = unsafe { *ctx.add(1) } as *const u8;
    if skc.is_null() {
        return 0;
    }
    let _ = try_request_ages_iter(skc);
    0
}

fn try_request_ages_iter(skc: *const u8) -> Result<(), u32> {
    let state: u8 = read_field(skc, &OFF_SKC_STATE)?;
    if state != TCP_ESTABLISHED {
        return Ok(());
    }
    // Little-endian: low half `skc_dport` (network order), high half `skc_num` (host order).
    let portpair: u32 = read_field(skc, &OFF_SKC_DPORT)?;
    let remote = u32::from(u16::from_be(portpair as u16));
    let local = portpair >> 16;
    let mut flags = 0;
    if unsafe { AGE_PORTS.get(local) } == Some(&AGE_PORT_LISTEN) {
        flags |= PARSE_FLAGS;
    }
    if unsafe { AGE_PORTS.get(remote) }.is_some() {
        flags |= WRITE_FLAGS;
    }
    if flags == 0 {
        return Ok(());
    }
    let tp = unsafe { bpf_skc_to_tcp_sock(skc as *mut c_void) };
    if tp.is_null() {
        return Ok(());
    }
    let mut value = flags as i32;
    let rc = unsafe {
        bpf_setsockopt(
            tp.cast(),
            SOL_TCP,
            TCP_BPF_SOCK_OPS_CB_FLAGS,
            (&raw mut value).cast(),
            4,
        )
    };
    if rc == 0 {
        stat(|s| unsafe { &raw mut (*s).connections_enabled_later });
    } else if let Some(stats) = AGE_STATS.get_ptr_mut(0) {
        add(unsafe { &raw mut (*stats).iter_failures }, 1);
        unsafe { (*stats).iter_last_errno = rc.unsigned_abs() };
    }
    Ok(())
}

//! Spike of issue #18 (question 3): does a `sock_ops` program's TCP header option reach the callee?
//! The option is RFC 6994's shared experimental kind 254 with the 2-byte experiment id "SP" and an
//! 8-byte payload (here the sender's `bpf_ktime_get_ns`, so the receiver on the same machine can
//! compute the option's one-way delay; item 1 will carry an age instead). Counters per side
//! (active = the connecting side, passive = the accepting side) and a histogram of the callbacks
//! seen go to maps the user side (`tail-hdropt`) reads.
//!
//! `CONFIG[0]` chooses when the header-option callbacks are switched on for a connection:
//! 1 = at establishment (the normal way), 2 = only later, from the first RTT callback (to learn
//! whether flags can be set after establishment from another callback).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_HDR_OPT_LEN_CB,
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB, BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG,
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, BPF_SOCK_OPS_RTT_CB, BPF_SOCK_OPS_RTT_CB_FLAG,
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB, BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG,
    },
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{
            bpf_load_hdr_opt, bpf_reserve_hdr_opt, bpf_setsockopt, bpf_skc_to_tcp_sock,
            bpf_store_hdr_opt,
        },
    },
    macros::{map, sock_ops},
    maps::Array,
    programs::SockOpsContext,
};

const KIND_EXP: u8 = 254;
const MAGIC: [u8; 2] = *b"SP";
/// kind, length, experiment id, 8-byte payload.
const OPT_LEN: u32 = 12;
const TCP_PSH: u32 = 0x08;
const TCP_SYN: u32 = 0x02;

// Counter slots per side (side s uses s * SLOTS + slot).
const SLOTS: u32 = 18;
const ESTABLISHED: u32 = 0;
const LEN_CB: u32 = 1;
const WRITE_CB: u32 = 2;
const WRITE_OK: u32 = 3;
const WRITE_PSH: u32 = 4;
const PARSE_CB: u32 = 5;
const FOUND: u32 = 6;
const FOUND_PSH: u32 = 7;
const DELAY_SUM_NS: u32 = 8;
const DELAY_MAX_NS: u32 = 9;
const SEGS_IN: u32 = 10;
const DATA_SEGS_IN: u32 = 11;
const RTT_CB: u32 = 12;
const LATE_FLAGS: u32 = 13;
const WRITE_FAIL: u32 = 14;
const FOUND_SYN: u32 = 15;
/// Options found whose payload differs from the previous one found on that side: how many of the
/// distinct values written arrived (one flow at a time).
const DISTINCT_FOUND: u32 = 16;
const LAST_STAMP: u32 = 17;

#[map]
static COUNTERS: Array<u64> = Array::with_max_entries(2 * SLOTS, 0);
/// How many times each callback (`op`) ran, all sockets of the cgroup.
#[map]
static OPS: Array<u64> = Array::with_max_entries(32, 0);
/// What the `iter/tcp` program did: `[0]` sockets of the test port seen, `[1]` flags set,
/// `[2]` the last `bpf_setsockopt` error (negated errno), `[3]` sockets visited in all.
#[map]
static ITER: Array<u64> = Array::with_max_entries(4, 0);
/// `[0]` = mode (see the crate doc), `[1]` = the passive side's port.
#[map]
static CONFIG: Array<u64> = Array::with_max_entries(4, 0);

fn add(slot: u32, v: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a valid map slot; races between CPUs only blur a spike's counters.
        unsafe { *p += v };
    }
}

fn set_max(slot: u32, v: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: as in `add`.
        unsafe {
            if v > *p {
                *p = v;
            }
        }
    }
}

fn config(i: u32) -> u64 {
    CONFIG.get(i).copied().unwrap_or(0)
}

const HDR_FLAGS: i32 =
    (BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG | BPF_SOCK_OPS_PARSE_UNKNOWN_HDR_OPT_CB_FLAG) as i32;

#[sock_ops]
pub fn tail_hdropt(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    if let Some(p) = OPS.get_ptr_mut(op & 31) {
        // SAFETY: a valid map slot.
        unsafe { *p += 1 };
    }
    let side = u32::from(u64::from(ctx.local_port()) == config(1));
    let base = side * SLOTS;
    let ops = ctx.ops;
    // SAFETY: `ops` is the program's context; the fields read exist for every callback.
    let tcp_flags = unsafe { (*ops).skb_tcp_flags };
    match op {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            add(base + ESTABLISHED, 1);
            let flags = if config(0) == 2 {
                BPF_SOCK_OPS_RTT_CB_FLAG as i32
            } else {
                HDR_FLAGS
            };
            let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 | flags);
        }
        BPF_SOCK_OPS_RTT_CB => {
            add(base + RTT_CB, 1);
            if ctx.cb_flags() as i32 & HDR_FLAGS == 0 && ctx.set_cb_flags(HDR_FLAGS).is_ok() {
                add(base + LATE_FLAGS, 1);
            }
        }
        BPF_SOCK_OPS_HDR_OPT_LEN_CB => {
            add(base + LEN_CB, 1);
            // SAFETY: the helper is allowed in this callback.
            unsafe { bpf_reserve_hdr_opt(ops, OPT_LEN, 0) };
        }
        BPF_SOCK_OPS_WRITE_HDR_OPT_CB => {
            add(base + WRITE_CB, 1);
            // SAFETY: bpf_ktime_get_ns has no preconditions.
            let stamp = unsafe { bpf_ktime_get_ns() }.to_be_bytes();
            let mut opt = [0u8; OPT_LEN as usize];
            opt[0] = KIND_EXP;
            opt[1] = OPT_LEN as u8;
            opt[2..4].copy_from_slice(&MAGIC);
            opt[4..12].copy_from_slice(&stamp);
            // SAFETY: `opt` is OPT_LEN bytes on the stack; the space was reserved in LEN_CB.
            let rc = unsafe { bpf_store_hdr_opt(ops, opt.as_ptr().cast(), OPT_LEN, 0) };
            if rc == 0 {
                add(base + WRITE_OK, 1);
                if tcp_flags & TCP_PSH != 0 {
                    add(base + WRITE_PSH, 1);
                }
            } else {
                add(base + WRITE_FAIL, 1);
            }
        }
        BPF_SOCK_OPS_PARSE_HDR_OPT_CB => {
            add(base + PARSE_CB, 1);
            // Search by kind 254 and experiment id: the length names kind + length + 2-byte id.
            let mut buf = [0u8; OPT_LEN as usize];
            buf[0] = KIND_EXP;
            buf[1] = 4;
            buf[2..4].copy_from_slice(&MAGIC);
            // SAFETY: `buf` is OPT_LEN bytes on the stack.
            let n = unsafe { bpf_load_hdr_opt(ops, buf.as_mut_ptr().cast(), OPT_LEN, 0) };
            if n == i64::from(OPT_LEN) {
                add(base + FOUND, 1);
                if tcp_flags & TCP_PSH != 0 {
                    add(base + FOUND_PSH, 1);
                }
                if tcp_flags & TCP_SYN != 0 {
                    add(base + FOUND_SYN, 1);
                }
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&buf[4..12]);
                let stamp = u64::from_be_bytes(stamp);
                if let Some(p) = COUNTERS.get_ptr_mut(base + LAST_STAMP) {
                    // SAFETY: a valid map slot.
                    unsafe {
                        if *p != stamp {
                            *p = stamp;
                            add(base + DISTINCT_FOUND, 1);
                        }
                    }
                }
                // SAFETY: as above.
                let delay = unsafe { bpf_ktime_get_ns() }.wrapping_sub(stamp);
                add(base + DELAY_SUM_NS, delay);
                set_max(base + DELAY_MAX_NS, delay);
            }
            // SAFETY: plain context fields.
            let (segs, data_segs) = unsafe { ((*ops).segs_in, (*ops).data_segs_in) };
            if let Some(p) = COUNTERS.get_ptr_mut(base + SEGS_IN) {
                // SAFETY: a valid map slot.
                unsafe { *p = u64::from(segs) };
            }
            if let Some(p) = COUNTERS.get_ptr_mut(base + DATA_SEGS_IN) {
                // SAFETY: a valid map slot.
                unsafe { *p = u64::from(data_segs) };
            }
        }
        _ => {}
    }
    1
}

const SOL_TCP: i32 = 6;
const TCP_LISTEN: u8 = 10;
/// `bpf_setsockopt(SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS)` (kernel 6.12+): a tcp socket's callback
/// flags set from outside a `sock_ops` callback.
const TCP_BPF_SOCK_OPS_CB_FLAGS: i32 = 1008;

fn iter_add(i: u32, v: u64) {
    if let Some(p) = ITER.get_ptr_mut(i) {
        // SAFETY: a valid map slot.
        unsafe { *p += v };
    }
}

/// Switches the header-option callbacks on for connections that already exist (opened before
/// the `sock_ops` program was attached): a `bpf_iter/tcp` program the user side runs once. Its
/// context is the iterator's arguments as 8-byte slots: `meta`, `sk_common`, `uid`. Only
/// connections (not listeners) whose local or remote port is `CONFIG[1]` are touched
/// (`sock_common`: `skc_dport` at byte 12, big-endian, `skc_num` at 14, `skc_state` at 18; stable
/// on x86-64 for years).
#[unsafe(link_section = "iter/tcp")]
#[unsafe(no_mangle)]
pub extern "C" fn tail_iter_tcp(ctx: *mut u64) -> i32 {
    // SAFETY: slot 1 of the iterator's context is the socket (null at the end).
    let skc = unsafe { *ctx.add(1) } as *mut core::ffi::c_void;
    if skc.is_null() {
        return 0;
    }
    iter_add(3, 1);
    // SAFETY: a kernel read of 8 bytes inside `struct sock_common`.
    let Ok(f) = (unsafe { bpf_probe_read_kernel(skc.cast::<u8>().add(12).cast::<[u8; 8]>()) })
    else {
        return 0;
    };
    let dport = u64::from(u16::from_be_bytes([f[0], f[1]]));
    let num = u64::from(u16::from_ne_bytes([f[2], f[3]]));
    let port = config(1);
    if (dport != port && num != port) || f[6] == TCP_LISTEN {
        return 0;
    }
    iter_add(0, 1);
    // SAFETY: the helper checks the socket's type and returns null for non-TCP sockets.
    let tp = unsafe { bpf_skc_to_tcp_sock(skc) };
    if tp.is_null() {
        return 0;
    }
    let mut flags = HDR_FLAGS;
    // SAFETY: `flags` is 4 bytes on the stack.
    let rc = unsafe {
        bpf_setsockopt(
            tp.cast(),
            SOL_TCP,
            TCP_BPF_SOCK_OPS_CB_FLAGS,
            (&raw mut flags).cast(),
            4,
        )
    };
    if rc == 0 {
        iter_add(1, 1);
    } else if let Some(p) = ITER.get_ptr_mut(2) {
        // SAFETY: a valid map slot.
        unsafe { *p = rc.unsigned_abs() };
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

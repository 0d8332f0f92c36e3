//! Probes that load a tiny program through bpf(2) directly, for what aya cannot probe: BPF
//! atomics (an instruction encoding, not a helper) and `tp_btf` programs (aya's tracing probe
//! loads an fentry program, which kernels that refuse trampolines reject, although `tp_btf`
//! needs none).

use super::{Btf, Status};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;
const BPF_TRACE_FEXIT: u32 = 25;

const ST_DW: u8 = 0x7a; // BPF_ST | BPF_MEM | BPF_DW
const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const ATOMIC_DW: u8 = 0xdb; // BPF_STX | BPF_ATOMIC | BPF_DW
const FETCH_ADD: i32 = 0x01; // BPF_ADD | BPF_FETCH
const CMPXCHG: i32 = 0xf1; // BPF_CMPXCHG (includes BPF_FETCH)
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// `union bpf_attr` for `BPF_PROG_LOAD` up to `attach_btf_id` (Linux 5.5); the kernel
/// zero-fills the fields of a shorter attribute.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// One instruction: opcode, dst and src registers, offset, immediate (little-endian).
pub(super) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst & 0xf) << 8
        | u64::from(src & 0xf) << 12
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// Loads the program and closes it at once: `Present` if the kernel took it, `Missing` with
/// the verifier's last word if the verifier refused it, `Unknown` if the load failed before
/// the verifier (no permission, ...).
fn load(prog_type: u32, attach: Option<(u32, u32)>, insns: &[u64], what: &str) -> Status {
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let (expected_attach_type, attach_btf_id) = attach.unwrap_or((0, 0));
    let attr = ProgLoad {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type,
        attach_btf_id,
        ..ProgLoad::default()
    };
    // SAFETY: bpf(2) reads `attr` (its size given) and the instruction and license buffers it
    // points to, all alive until it returns, and writes at most `log_size` bytes to `log`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            std::mem::size_of::<ProgLoad>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the program's fd is ours and closed once.
        unsafe { libc::close(fd as i32) };
        return Status::Present;
    }
    let err = std::io::Error::last_os_error();
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let verifier = String::from_utf8_lossy(&log[..end]);
    let last = verifier.lines().rfind(|l| !l.trim().is_empty());
    match (err.raw_os_error(), last) {
        (Some(libc::EINVAL | libc::EACCES | libc::E2BIG), Some(line)) => {
            Status::Missing(format!("the kernel refuses {what}: {}", line.trim()))
        }
        // No verifier output: the kernel did not know the program type or attach type.
        (Some(libc::EINVAL | libc::E2BIG), None) => {
            Status::Missing(format!("the kernel refuses {what}: {err}"))
        }
        _ => Status::Unknown(format!("loading a probe program: {err}")),
    }
}

/// A socket filter doing a 64-bit fetch-add and a cmpxchg on its stack: the verifier of a
/// kernel without BPF atomics (before 5.12) refuses the encoding.
pub(super) fn atomics() -> Status {
    let insns = [
        insn(ST_DW, 10, 0, -8, 0),
        insn(MOV_K, 1, 0, 0, 1),
        insn(ATOMIC_DW, 10, 1, -8, FETCH_ADD),
        insn(MOV_K, 0, 0, 0, 0),
        insn(ATOMIC_DW, 10, 1, -8, CMPXCHG),
        insn(MOV_K, 0, 0, 0, 0),
        insn(EXIT, 0, 0, 0, 0),
    ];
    load(
        BPF_PROG_TYPE_SOCKET_FILTER,
        None,
        &insns,
        "atomic instructions",
    )
}

/// An empty `tp_btf` program on `sched_switch` (a tracepoint every kernel has), so this check
/// says whether the program type works, apart from whether the sock tracepoints exist.
pub(super) fn btf_tracepoint_programs(btf: Result<&Btf, &str>) -> Status {
    let Ok(btf) = btf else {
        return Status::Missing("needs the kernel BTF".into());
    };
    let Some(id) = btf.typedef_id("btf_trace_sched_switch") else {
        return Status::Missing("no btf_trace_sched_switch in the kernel's BTF".into());
    };
    let insns = [insn(MOV_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
    load(
        BPF_PROG_TYPE_TRACING,
        Some((BPF_TRACE_RAW_TP, id)),
        &insns,
        "a tp_btf program",
    )
}

/// An empty `fexit` program on `function`, after checking in BTF that its parameters start
/// with `params` (the fallback programs read the socket, the flags and the return value at
/// those positions). Loading needs BPF trampolines (`x86_64` since 5.5; refused on some kernels,
/// e.g. with `EPERM`, in which case the fallback is unavailable).
pub(super) fn fexit_on(btf: Result<&Btf, &str>, function: &str, params: &[&str]) -> Status {
    let Ok(btf) = btf else {
        return Status::Missing("needs the kernel BTF".into());
    };
    let Some((id, found)) = btf.function(function) else {
        return Status::Missing(format!("no function {function} in the kernel's BTF"));
    };
    if found.len() < params.len() || found.iter().zip(params).any(|(f, p)| f != p) {
        return Status::Missing(format!(
            "{function}({}) in this kernel, expected ({}, ...)",
            found.join(", "),
            params.join(", ")
        ));
    }
    let insns = [insn(MOV_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)];
    match load(
        BPF_PROG_TYPE_TRACING,
        Some((BPF_TRACE_FEXIT, id)),
        &insns,
        "an fexit program",
    ) {
        // Root and still refused: no trampolines here, not a missing permission.
        Status::Unknown(e) if e.contains("Operation not permitted") && is_root() => {
            Status::Missing(format!("the kernel refuses fexit programs ({e})"))
        }
        other => other,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

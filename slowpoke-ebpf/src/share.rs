//! The tail scheduler's share cap, measured where the kernel knows it (`docs/tail.md`, the
//! share cap): at every context switch, how long the thread switched out ran, if the agent
//! promoted it (`PROMOTED`, agent-written), is added to the CPU's `PromotedRun::used_ns`;
//! the thread switched in, and when, are noted so the agent can add a run still going on.
//!
//! One per-CPU array lookup, one probe read of each thread id and one hash lookup per switch;
//! attached only while a service tracks ages (the agent's `kernel::share`).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use slowpoke_common::{MAX_PROMOTED_THREADS, PromotedRun};

use crate::{ages::OFF_TASK_PID, read_field};

/// tid -> when the agent promoted it (`CLOCK_MONOTONIC` ns), agent-written.
#[map]
static PROMOTED: HashMap<u32, u64> = HashMap::with_max_entries(MAX_PROMOTED_THREADS, 0);

#[map]
static PROMOTED_RUNS: PerCpuArray<PromotedRun> = PerCpuArray::with_max_entries(1, 0);

/// `sched_switch(preempt, prev, next, prev_state)`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let _ = try_sched_switch(prev, next);
    0
}

fn try_sched_switch(prev: *const u8, next: *const u8) -> Result<(), u32> {
    let run = PROMOTED_RUNS.get_ptr_mut(0).ok_or(0u32)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let prev_tid: u32 = read_field(prev, &OFF_TASK_PID)?;
    let next_tid: u32 = read_field(next, &OFF_TASK_PID).unwrap_or(0);
    let run = unsafe { &mut *run };
    if prev_tid != 0
        && let Some(&promoted_at) = unsafe { PROMOTED.get(prev_tid) }
    {
        // Since it was switched in, or promoted if that came later (a running thread's
        // promotion switches nothing).
        run.used_ns += now.saturating_sub(run.switched_in_ns.max(promoted_at));
    }
    run.tid = next_tid;
    run.switched_in_ns = now;
    Ok(())
}

//! Part 4, the agent's overhead at zero delay, measured by the agent benchmark itself:
//! `bench-agent --only hook,tracked`, run before this process's own agent loads the kernel
//! programs (two sets of programs attached at once would measure each other).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use slowpoke_stats::round4 as r;

/// `bench-agent --only hook,tracked` (its binary from `$SLOWPOKE_BENCH_AGENT_BIN`): the hook cost
/// for untracked and tracked socket calls at zero delay. A pointer when it is not available.
pub(crate) fn agent_overhead() -> Value {
    let pointer = |why: String| json!({"see": "cargo xtask bench agent", "why": why});
    let Some(bin) = std::env::var_os("SLOWPOKE_BENCH_AGENT_BIN") else {
        return pointer(
            "SLOWPOKE_BENCH_AGENT_BIN not set (cargo xtask bench whatif sets it)".into(),
        );
    };
    eprintln!("bench-whatif: agent hook cost (bench-agent --only hook,tracked) ...");
    let t = Instant::now();
    let out = match Command::new(&bin).args(["--only", "hook,tracked"]).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => return pointer(format!("bench-agent failed: {}", o.status)),
        Err(e) => return pointer(format!("cannot run {}: {e}", PathBuf::from(bin).display())),
    };
    let secs = t.elapsed().as_secs_f64();
    let full: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return pointer(format!("bench-agent printed no JSON: {e}")),
    };
    let pick = |v: &Value| json!({"mean": r(v["mean"].as_f64().unwrap_or(f64::NAN)), "ci95": r(v["ci95"].as_f64().unwrap_or(f64::NAN))});
    let hook = &full["hook_untracked"];
    let tracked = &full["tracked_call_tcp_loopback"];
    json!({
        "source": "bench-agent --only hook,tracked (kernel programs attached vs detached; tracked vs untracked, zero delay)",
        "runtime_s": r(secs),
        "rounds": full["rounds"],
        "untracked_tcp_overhead_ns_per_call": pick(&hook["tcp_loopback"]["overhead_ns_per_call"]),
        "untracked_tcp_ratio": pick(&hook["tcp_loopback"]["ratio"]),
        "untracked_unix_overhead_ns_per_call": pick(&hook["unix_socketpair"]["overhead_ns_per_call"]),
        "tracked_tcp_overhead_ns_per_call": pick(&tracked["tracked_overhead_ns_per_call"]),
        "tracked_tcp_ns_per_call": pick(&tracked["tracked_ns_per_call"]),
        "untracked_tcp_ns_per_call": pick(&tracked["untracked_ns_per_call"]),
        "program_load_ms": pick(&hook["load_ms"]),
        "loadavg": [full["loadavg_start"].clone(), full["loadavg_end"].clone()],
        "see": "cargo xtask bench agent (throughput loss, pause precision)",
    })
}

//! The tail comparison end to end: the real agent (in-process, kernel programs, its tail
//! scheduler), the emulator (a small thread-per-request fan-out with exponential work) and the
//! open-loop load, with short windows. It checks that every arm ran and measured sensible
//! percentiles, and that no schedule is left on the agent after the run or after a cancel —
//! nothing about which arm wins (that is the tail suite's question, `cargo xtask eval --suite
//! tail`).
//!
//! Needs root, the kernel programs and a release emulator (`SLOWPOKE_EMU_BIN`, as `cargo xtask
//! test` sets it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use slowpoke_api::coordinator::TailArm;
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::tail::{
    DEFAULT_LOAD_PRIORITY, LoadPriority, RealOpenLoad, TailSpec, run_tail,
};
use slowpoke_coordinator::experiment::{App as _, Monitor, RunError, new_id};
use slowpoke_coordinator::lease::Lease;
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_eval::EmuApp;

fn topology() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies/tail-small.json")
}

/// The tests load 2 shared cores: one app at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `f` with an in-process agent and a fresh tail-small app.
fn with_app<T>(
    name: &str,
    f: impl FnOnce(&slowpoke_agent::Agent, &[SharedAgent], &EmuApp) -> T,
) -> T {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: std::env::temp_dir()
            .join(format!("slowpoke-tail-e2e-{}-{name}", std::process::id())),
        ..slowpoke_agent::AgentConfig::default()
    };
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .expect("start the in-process agent (root and the kernel programs are needed)");
    let inner = agent.agent().clone();
    let app = EmuApp::start(&topology(), &[]).expect("start tail-small (is slowpoke-emu built?)");
    let agents = vec![Arc::new(agent) as SharedAgent];
    let r = f(&inner, &agents, &app);
    drop(app);
    drop(agents);
    rt.block_on(inner.shutdown());
    r
}

fn spec(repetitions: usize) -> TailSpec {
    let mut s = TailSpec {
        // tail-small served ~300/s with 0.8 ms median latency while other builds ran: 150/s
        // is well below.
        rate_rps: 150.0,
        window_s: 1.0,
        warmup_s: 0.3,
        repetitions,
        ..TailSpec::default()
    };
    // One connection per worker of the entry (8).
    s.load.connections = 8;
    s
}

#[test]
fn every_arm_runs_and_no_schedule_is_left() {
    with_app("run", |agent, agents, app| {
        let lease = Lease::new(&new_id("tail", "e2e"), Duration::from_secs(5));
        // The load as the CLI and the suite run it: real-time when permitted (root, as here).
        let load = RealOpenLoad::new(LoadPriority::Auto).expect("the default load priority");
        let r = run_tail(&spec(2), app, agents, lease, &load, &Monitor::new())
            .expect("the comparison runs");
        assert_eq!(r.load_priority, Some(DEFAULT_LOAD_PRIORITY));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(
            r.arms.iter().map(|a| a.arm).collect::<Vec<_>>(),
            TailArm::ALL.to_vec()
        );
        for a in &r.arms {
            assert!(a.ran, "{} did not run: {:?}", a.arm, a.error);
            let (p50, p99, p999) = (
                a.p50_us.expect("p50").value,
                a.p99_us.expect("p99").value,
                a.p999_us.expect("p99.9").value,
            );
            assert!(
                0.0 < p50 && p50 <= p99 && p99 <= p999,
                "{}: p50 {p50} p99 {p99} p99.9 {p999}",
                a.arm
            );
            let rps = a.rps.expect("rps").value;
            assert!(rps > 100.0, "{}: {rps} req/s of 150 offered", a.arm);
            assert!(!a.cdf.is_empty(), "{}: no CDF", a.arm);
            assert_eq!(
                a.p99_vs_default.is_some(),
                a.arm != TailArm::Default,
                "{}",
                a.arm
            );
        }
        // Interleaved: default, oldest-first, per-service-fifo, then again.
        let order: Vec<(TailArm, usize)> =
            r.windows.iter().map(|w| (w.arm, w.repetition)).collect();
        assert_eq!(
            order,
            (0..2)
                .flat_map(|rep| TailArm::ALL.iter().map(move |&a| (a, rep)))
                .collect::<Vec<_>>()
        );
        assert_eq!(r.services.len(), app.services().len());
        assert!(
            agent.scheduling().services.is_empty(),
            "a schedule is left: {:?}",
            agent.scheduling()
        );
        assert!(
            agent.services().services.is_empty(),
            "services left registered"
        );
    });
}

#[test]
fn a_cancel_removes_the_schedule() {
    with_app("cancel", |agent, agents, app| {
        let monitor = Monitor::new();
        let lease = Lease::new(&new_id("tail", "cancel"), Duration::from_secs(5));
        std::thread::scope(|s| {
            let m = monitor.clone();
            let run = s.spawn(move || {
                run_tail(&spec(50), app, agents, lease, &RealOpenLoad::default(), &m)
            });
            // Wait until an arm's schedule is in force on the agent, then cancel.
            let deadline = Instant::now() + Duration::from_secs(30);
            while agent.scheduling().services.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "no schedule was ever put in force: {:?}",
                    monitor.progress()
                );
                assert!(!run.is_finished(), "the comparison ended early");
                std::thread::sleep(Duration::from_millis(10));
            }
            monitor.cancel();
            let r = run.join().expect("no panic");
            assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
        });
        assert!(
            agent.scheduling().services.is_empty(),
            "the schedule outlived the cancel: {:?}",
            agent.scheduling()
        );
        assert!(
            agent.services().services.is_empty(),
            "services left registered"
        );
    });
}

//! End to end with the real agent (in-process, kernel programs), the real load generator and the
//! emulator: a 3-service chain whose optimization truly gains ≥ 20 %. The prediction must be within
//! 10 % of the ground truth, and the baseline taken as the prediction ("nothing changes") must miss
//! by more than 10 % — otherwise the test would not show anything.
//!
//! Needs root, the kernel programs and a release emulator: `cargo xtask test` builds it and points
//! `SLOWPOKE_EMU_BIN` at it (a debug emulator spends more per visit on HTTP than chain3's work).

use std::sync::Arc;

use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{
    Backends, LoadConfig, Monitor, ProfileSpec, Repeat, Safety, Timing, WhatIfSpec, new_id,
    run_profile, run_what_if,
};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::{InProcessAgent, RealLoadStarter};
use slowpoke_eval::EmuApp;

fn topology() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies/chain3.json")
}

/// The tests measure throughput on 2 shared cores: one app at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `spec` on a fresh chain3 with the in-process agent.
fn run_on_chain3(
    spec: &WhatIfSpec,
) -> Result<
    slowpoke_coordinator::experiment::WhatIfResult,
    slowpoke_coordinator::experiment::RunError,
> {
    on_chain3(spec.load.connections, |b| {
        run_what_if(spec, b, &Monitor::new())
    })
}

/// Runs `run` on a fresh chain3 with the in-process agent (`connections` names its state dir).
fn on_chain3<T>(connections: usize, run: impl FnOnce(&mut Backends) -> T) -> T {
    on_chain3_with(connections, |_| {}, run)
}

/// As [`on_chain3`], with the in-process agent's settings changed by `agent` first.
fn on_chain3_with<T>(
    connections: usize,
    agent: impl FnOnce(&mut slowpoke_agent::AgentConfig),
    run: impl FnOnce(&mut Backends) -> T,
) -> T {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let state = std::env::temp_dir().join(format!(
        "slowpoke-e2e-{}-{}",
        std::process::id(),
        connections
    ));
    let mut cfg = slowpoke_agent::AgentConfig {
        state_dir: state,
        ..slowpoke_agent::AgentConfig::default()
    };
    agent(&mut cfg);
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .expect("start the in-process agent (root and the kernel programs are needed)");
    let inner = agent.agent().clone();
    let app = EmuApp::start(&topology(), &[]).expect("start chain3 (is slowpoke-emu built?)");
    let mut backends = Backends {
        agents: vec![Arc::new(agent) as SharedAgent],
        app: Box::new(app),
        load: Arc::new(RealLoadStarter),
        lease: Lease::new(&new_id("e2e", "chain3"), DEFAULT_LEASE),
        kubernetes: std::sync::Arc::default(),
    };
    let r = run(&mut backends);
    drop(backends);
    rt.block_on(inner.shutdown());
    r
}

fn timing() -> Timing {
    Timing {
        warmup_s: 2.0,
        window_s: 2.0,
        settle_s: 0.5,
        ..Timing::default()
    }
}

#[test]
fn chain3_prediction_matches_the_ground_truth() {
    // `middle` is the bottleneck (1000 µs on 1 thread); −400 µs gains far more than 20 %.
    let spec = WhatIfSpec {
        target: "middle".into(),
        optimization: Optimization::DeltaUs(400.0),
        // The default load (64 connections): with 32, synchronized pauses (the default
        // actuator) drain the target's queue and predicted −8 to −12 % here (docs/evaluation.md).
        load: LoadConfig::default(),
        timing: timing(),
        repeat: Repeat::fixed(5),
        safety: Safety::default(),
        truth: true,
        entry_service: None,
    };
    let r = run_on_chain3(&spec);
    let r = r.expect("the experiment runs");
    eprintln!("{}", slowpoke_coordinator::report::what_if_table(&r));
    let truth = r.truth_rps.expect("truth");
    let gain = (truth - r.baseline_rps) / r.baseline_rps * 100.0;
    assert!(
        gain >= 20.0,
        "the optimization only gains {gain:.1} %: {r:?}"
    );
    let err = r.error_pct.expect("error");
    assert!(err.abs() <= 10.0, "prediction error {err:+.1} %");
    let base_err = r.baseline_error_pct.expect("baseline error");
    assert!(
        base_err.abs() > 10.0,
        "the baseline misses by only {base_err:+.1} %"
    );
}

/// With 2 requests in flight, synchronized pauses of the other services leave `middle` idle:
/// the what-if says so instead of handing over a prediction that is far too low in silence.
#[test]
fn a_target_that_runs_dry_in_the_slowed_down_runs_is_reported() {
    let spec = WhatIfSpec {
        target: "middle".into(),
        optimization: Optimization::DeltaUs(400.0),
        load: LoadConfig {
            connections: 2,
            ..LoadConfig::default()
        },
        timing: timing(),
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: false,
        entry_service: None,
    };
    let r = run_on_chain3(&spec).expect("the experiment runs");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("ran dry") && w.contains("raise the load's `connections`")),
        "{:#?}",
        r.warnings
    );
    let u = r
        .target_use
        .expect("the agent reports the target's CPU use");
    assert!(
        u.slowed.cores < 0.85 * u.baseline.cores,
        "the warning rests on the recorded use: {u:?}"
    );
    // A profile of the same point says it too, naming the point.
    let spec = ProfileSpec {
        services: Some(vec!["middle".into()]),
        percents: vec![40.0],
        load: spec.load.clone(),
        timing: timing(),
        repetitions: 3,
        ..ProfileSpec::default()
    };
    let p = on_chain3(spec.load.connections, |b| {
        run_profile(&spec, b, &Monitor::new())
    })
    .expect("the profile runs");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.starts_with("middle −40 %") && w.contains("ran dry")),
        "{:#?}",
        p.warnings
    );
}

/// An agent that stops a service at most 30 % of the time, and lets a plan ask for 50 %.
fn low_ceiling(cfg: &mut slowpoke_agent::AgentConfig) {
    cfg.max_stopped_share = 0.3;
    cfg.max_plan_stopped_share = 0.5;
}

/// Removing 90 % of the bottleneck's time needs the others stopped about 80 % of the time:
/// more than the agent lets a plan ask for, so the what-if is refused right after the
/// calibration, before any slowed-down window, saying the share, the ceiling and the options.
#[test]
fn a_what_if_needing_more_stopped_time_than_the_agent_allows_is_refused_up_front() {
    let spec = WhatIfSpec {
        target: "middle".into(),
        optimization: Optimization::Percent(90.0),
        load: LoadConfig::default(),
        timing: timing(),
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: false,
        entry_service: None,
    };
    let monitor = Monitor::new();
    let (r, owed) = on_chain3_with(spec.load.connections, low_ceiling, |b| {
        let r = run_what_if(&spec, b, &monitor);
        let stats = b.agents[0].stats().expect("stats");
        let owed: u64 = stats.services.values().map(|s| s.owed_ns).sum();
        (r, owed)
    });
    let e = r.expect_err("refused").to_string();
    for part in [
        "cannot run this optimization",
        "more than agent in-process lets a plan ask for (50 %",
        "--max-plan-stopped-share",
        "smaller optimization",
    ] {
        assert!(e.contains(part), "`{part}` in: {e}");
    }
    assert_eq!(
        monitor.progress().windows_done,
        1,
        "only the calibration window ran: {e}"
    );
    assert_eq!(owed, 0, "no plan was ever in force");
}

/// A profile runs the points the agent allows — −40 % needs more than the agent's default
/// 30 % and gets it by asking — and marks the point it cannot run with the reason.
#[test]
fn a_profile_marks_the_point_over_the_ceiling_and_runs_the_others() {
    let spec = ProfileSpec {
        services: Some(vec!["middle".into()]),
        percents: vec![40.0, 90.0],
        load: LoadConfig::default(),
        timing: timing(),
        repetitions: 2,
        ..ProfileSpec::default()
    };
    let p = on_chain3_with(spec.load.connections, low_ceiling, |b| {
        run_profile(&spec, b, &Monitor::new())
    })
    .expect("the profile runs");
    eprintln!("{}", slowpoke_coordinator::report::profile_table(&p));
    let points = &p.curves[0].points;
    assert!(
        points[0].predicted_rps.is_some() && points[0].error.is_none(),
        "−40 % runs: {:?}",
        points[0]
    );
    let why = points[1].error.as_deref().unwrap_or_default();
    assert!(
        points[1].slow_rps.is_none() && why.contains("--max-plan-stopped-share"),
        "−90 % is marked with the reason: {:?}",
        points[1]
    );
    assert!(
        !p.warnings.iter().any(|w| w.contains("safety cap")),
        "{:#?}",
        p.warnings
    );
}

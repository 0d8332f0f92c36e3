//! The runner's tests on the fake world (`crate::fake`), which obeys the model exactly: a
//! correct runner predicts its ground truth, and every exit path leaves it clean.

use std::time::Duration;

use slowpoke_api::agent as api;

use super::*;
use crate::fake::FakeWorld;
use crate::model::{ModelError, Optimization};

fn quick_timing() -> Timing {
    Timing {
        warmup_s: 0.0,
        window_s: 0.02,
        settle_s: 0.0,
        quantum_us: None,
        ..Timing::default()
    }
}

fn spec(opt: Optimization) -> WhatIfSpec {
    WhatIfSpec {
        target: "cart".into(),
        optimization: opt,
        load: LoadConfig::default(),
        timing: quick_timing(),
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: true,
        entry_service: None,
    }
}

fn close(a: f64, b: f64, rel: f64) {
    assert!(
        (a - b).abs() <= rel * b.abs(),
        "{a} != {b} (±{} %)",
        rel * 100.0
    );
}

/// Nothing installed, nothing registered, the load stopped.
fn assert_clean(w: &FakeWorld) {
    assert!(
        w.plan().is_empty(),
        "a plan is left installed: {:?}",
        w.plan()
    );
    assert!(
        !w.truth_applied(),
        "the ground-truth change is left applied"
    );
    assert!(
        w.registered().is_empty(),
        "services left registered: {:?}",
        w.registered()
    );
    let log = w.log();
    if let Some(last_set) = log.iter().rposition(|e| e == "set_slowdown") {
        assert!(
            log[last_set..].iter().any(|e| e == "clear_slowdown"),
            "no clear after the last set: {log:?}"
        );
    }
    if log.iter().any(|e| e == "load_start") {
        let last = log.iter().rev().find(|e| *e != "clear_slowdown");
        assert_eq!(last.map(String::as_str), Some("load_stop"), "{log:?}");
    }
}

#[test]
fn what_if_on_the_fake_chain_predicts_the_truth_and_interleaves() {
    let w = FakeWorld::chain();
    let mut b = w.backends();
    // Δ = 200 µs on cart: δ = 200·1/2 = 100 µs; X_base = 1/300 µs = 3333.3 req/s;
    // X_opt = 1/max(100, 400/2, 100) µs = 5000 req/s; X_slow = 1/(200 + 100) µs.
    let r = run_what_if(&spec(Optimization::DeltaUs(200.0)), &mut b, &Monitor::new()).unwrap();
    close(r.delta_ns_per_request, 100_000.0, 0.001);
    close(r.baseline_rps, 3333.33, 0.001);
    close(r.slow_rps, 3333.33, 0.001);
    close(r.predicted_rps, 5000.0, 0.005);
    close(
        r.truth_rps.unwrap(),
        w.true_throughput("cart", 200_000.0),
        1e-9,
    );
    assert!(r.error_pct.unwrap().abs() < 0.5, "{r:?}");
    close(r.baseline_error_pct.unwrap(), -33.33, 0.01);
    assert_eq!(r.entry, "front");
    assert_eq!(r.stop_reason, StopReason::Repetitions);
    assert_eq!((r.repetitions, r.kept), (3, 3));
    let db = r.services.iter().find(|s| s.name == "db").unwrap();
    close(db.r, 2.0, 0.001);
    close(db.d_us.unwrap(), 50.0, 0.002);
    assert!(
        r.services
            .iter()
            .find(|s| s.name == "cart")
            .unwrap()
            .d_us
            .is_none()
    );
    // calibration, then (base, slow, truth) × 3, each slow inside set/clear, each truth
    // inside truth/restore.
    let mut log: Vec<String> = w.log();
    // The runner clears once more on its way out, and its guard once again: harmless.
    while log.len() > 2
        && log[log.len() - 1] == "clear_slowdown"
        && log[log.len() - 2] == "clear_slowdown"
    {
        log.pop();
    }
    let expected_rep = [
        "window:base",
        "set_slowdown",
        "window:slow",
        "clear_slowdown",
        "truth",
        "window:truth",
        "restore",
    ];
    let mut expected = vec!["clear_slowdown", "load_start", "window:base"];
    for _ in 0..3 {
        expected.extend(expected_rep);
    }
    expected.extend(["clear_slowdown", "load_stop", "clear_slowdown"]);
    assert_eq!(log, expected);
    let phases: Vec<&str> = r.windows.iter().map(|w| w.phase.as_str()).collect();
    assert_eq!(
        phases,
        [
            "calibration",
            "base",
            "slow",
            "truth",
            "base",
            "slow",
            "truth",
            "base",
            "slow",
            "truth"
        ]
    );
    assert_clean(&w);
}

#[test]
fn json_has_the_documented_fields() {
    let w = FakeWorld::chain();
    let r = run_what_if(
        &spec(Optimization::Speedup(2.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap();
    let v = serde_json::to_value(&r).unwrap();
    for key in [
        "target",
        "delta_us",
        "delta_ns_per_request",
        "baseline_rps",
        "baseline_ci_low",
        "baseline_ci_high",
        "slow_rps",
        "predicted_rps",
        "predicted_ci_low",
        "predicted_ci_high",
        "truth_rps",
        "error_pct",
        "baseline_error_pct",
        "p99_latency_us",
        "services",
        "stop_reason",
        "warnings",
    ] {
        assert!(
            v.get(key).is_some_and(|x| !x.is_null()),
            "missing {key}: {v}"
        );
    }
    let row = &v["services"][0];
    for key in ["name", "r", "p_us", "c", "d_us"] {
        assert!(row.get(key).is_some(), "service row lacks {key}: {row}");
    }
    assert_eq!(v["stop_reason"], "repetitions");
    // Round trip through the stored form.
    let stored = crate::results::StoredResult::WhatIf(r.clone());
    let back: crate::results::StoredResult =
        serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
    // (serde_json's default float parsing may differ in the last digit: compare fields.)
    let crate::results::StoredResult::WhatIf(b) = back else {
        panic!("a what-if read back as something else")
    };
    assert_eq!(
        (b.id, b.target, b.services.len()),
        (r.id, r.target, r.services.len())
    );
    close(b.predicted_rps, r.predicted_rps, 1e-12);
}

#[test]
fn a_result_with_unbounded_intervals_reads_back() {
    let w = FakeWorld::chain();
    let mut r = run_what_if(
        &spec(Optimization::Speedup(2.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap();
    // One repetition has no interval; an unresolvable top is unbounded.
    r.baseline_ci_low = f64::NAN;
    r.slow_ci_high = f64::NAN;
    r.predicted_ci_high = f64::INFINITY;
    let text = serde_json::to_string(&crate::results::StoredResult::WhatIf(r)).unwrap();
    assert!(text.contains("\"predicted_ci_high\":null"), "{text}");
    let back: crate::results::StoredResult = serde_json::from_str(&text).unwrap();
    let crate::results::StoredResult::WhatIf(b) = back else {
        panic!("a what-if read back as something else")
    };
    assert!(b.baseline_ci_low.is_nan() && b.slow_ci_high.is_nan());
    assert!(b.predicted_ci_high.is_infinite());
}

#[test]
fn precision_reached_stops_early() {
    let w = FakeWorld::chain();
    let mut s = spec(Optimization::Speedup(2.0));
    s.truth = false;
    s.repeat.precision_pct = Some(3.0);
    let r = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap();
    assert_eq!(r.stop_reason, StopReason::PrecisionReached);
    assert_eq!(r.repetitions, 3);
    assert!(r.achieved_precision_pct <= 3.0);
    assert_clean(&w);
}

#[test]
fn noisy_runs_stop_at_the_budget_and_say_so() {
    let w = FakeWorld::chain();
    // Noise on every window, ±20 %; an odd cycle so slow windows see all of it.
    w.set_noise(vec![1.0, 1.2, 0.85]);
    let mut s = spec(Optimization::Percent(30.0));
    s.truth = false;
    s.repeat.precision_pct = Some(0.5);
    s.repeat.max_repetitions = 6;
    let r = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap();
    assert_eq!(r.stop_reason, StopReason::BudgetExhausted);
    assert_eq!(r.repetitions, 6);
    // ⌊6/5⌋ = 1 trimmed at each end.
    assert_eq!(r.kept, 4);
    assert!(r.achieved_precision_pct > 0.5);
    assert!(r.predicted_ci_low < r.predicted_rps && r.predicted_rps < r.predicted_ci_high);
    assert_clean(&w);
}

#[test]
fn load_errors_abort_and_remove_the_plan() {
    let w = FakeWorld::chain();
    w.set_slow_error_ratio(0.05);
    let e = run_what_if(
        &spec(Optimization::DeltaUs(100.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(
        matches!(e, RunError::LoadErrors { ref phase, .. } if phase == "slow"),
        "{e}"
    );
    assert!(e.to_string().contains("5.0 % errors"), "{e}");
    assert_clean(&w);
}

#[test]
fn cap_hit_aborts_and_removes_the_plan() {
    let w = FakeWorld::chain();
    w.set_cap_when_slow(true);
    let e = run_what_if(
        &spec(Optimization::DeltaUs(100.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(matches!(e, RunError::CapHit { .. }), "{e}");
    assert_clean(&w);
}

#[test]
fn agent_failures_leave_no_plan() {
    let w = FakeWorld::chain();
    w.set_fail_set_slowdown(true);
    let e = run_what_if(
        &spec(Optimization::DeltaUs(100.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(matches!(e, RunError::Agent(_)), "{e}");
    assert_clean(&w);

    let w = FakeWorld::chain();
    // Stats fail mid-experiment (calibration takes calls 1-2, base 3-4, slow 5-6).
    w.set_fail_stats_after(6);
    let e = run_what_if(
        &spec(Optimization::DeltaUs(100.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains(
            "agent fake stopped answering during the slowed-down windows: connection refused"
        ) && e.contains("its plan lapses with its lease within 15 s"),
        "{e}"
    );
    assert_clean(&w);
}

#[test]
fn an_agent_restarted_mid_experiment_ends_it_with_a_message_saying_so() {
    // Calibration takes stats calls 1-2, base 3-4, slow 5-6: the agent restarts between the
    // baseline and the slowed-down window (its instance id changes), or within the baseline
    // window (its counters start again too).
    for (at, during) in [(5, "the slowed-down windows"), (4, "the baseline windows")] {
        let w = FakeWorld::chain();
        w.set_restart_at(at);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::AgentRestarted { .. }), "{e}");
        let e = e.to_string();
        assert!(
            e.contains(&format!("agent fake restarted during {during}"))
                && e.contains("instance id changed from `fake-1` to `fake-2`")
                && e.contains("lost its counters"),
            "{e}"
        );
        assert_clean(&w);
    }
}

#[test]
fn cancellation_removes_the_plan() {
    let w = FakeWorld::chain();
    let m = Monitor::new();
    let m2 = m.clone();
    m.on_progress(move |p| {
        if p.phase.contains("ground truth") {
            m2.cancel();
        }
    });
    let e = run_what_if(&spec(Optimization::DeltaUs(100.0)), &mut w.backends(), &m).unwrap_err();
    assert!(matches!(e, RunError::Cancelled), "{e}");
    assert!(m.progress().finished);
    assert_clean(&w);
}

#[test]
fn bad_input_is_named() {
    let w = FakeWorld::chain();
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.target = "checkout".into();
    let e = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown target `checkout`: the app's services are cart, db, front"
    );
    // cart spends 600 µs per visit.
    let e = run_what_if(
        &spec(Optimization::DeltaUs(700.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(
        matches!(e, RunError::Model(ModelError::DeltaTooLarge { .. })),
        "{e}"
    );
    assert!(!w.log().contains(&"set_slowdown".to_owned()));
    assert_clean(&w);

    let w = FakeWorld::chain();
    w.set_probe_fails(true);
    let e = run_what_if(
        &spec(Optimization::DeltaUs(100.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("does not answer"), "{e}");
    assert_clean(&w);

    let e = run_what_if(
        &spec(Optimization::DeltaUs(-1.0)),
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("positive"), "{e}");
}

#[test]
fn a_service_no_agent_resolves_is_an_error() {
    let w = FakeWorld::chain();
    let mut b = w.backends();
    let mut services = b.app.services();
    services.insert(
        "ghost".into(),
        api::ServiceSpec {
            ports: Some(vec![9999]),
            ..Default::default()
        },
    );
    b.app = Box::new(AttachedApp {
        services,
        entry: "http://127.0.0.1:8080/".into(),
        entry_service: None,
    });
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.truth = false;
    let e = run_what_if(&s, &mut b, &Monitor::new()).unwrap_err();
    assert!(
        e.to_string().contains("no agent can resolve `ghost`"),
        "{e}"
    );
    assert_clean(&w);
    // `truth` on an attached app is refused up front.
    s.truth = true;
    let e = run_what_if(&s, &mut b, &Monitor::new()).unwrap_err();
    assert!(
        e.to_string()
            .contains("`truth` needs an app that can really apply"),
        "{e}"
    );
}

#[test]
fn profile_ranks_the_bottleneck_first() {
    let w = FakeWorld::chain();
    let spec = ProfileSpec {
        timing: quick_timing(),
        repetitions: 2,
        ..ProfileSpec::default()
    };
    let r = run_profile(&spec, &mut w.backends(), &Monitor::new()).unwrap();
    assert_eq!(r.curves.len(), 3);
    assert_eq!(r.curves[0].service, "cart");
    // cart −50 %: Δ = 300 µs, δ = 150 µs, X_opt = 1/max(100, 150, 100) µs = 6666.7 req/s.
    let p50 = r.curves[0]
        .points
        .iter()
        .find(|p| (p.percent - 50.0).abs() < 1e-9)
        .unwrap();
    close(p50.predicted_rps.unwrap(), 6666.67, 0.005);
    // front is not the bottleneck: no gain.
    let front = r.curves.iter().find(|c| c.service == "front").unwrap();
    assert!(front.max_gain_pct.unwrap().abs() < 0.5, "{front:?}");
    // 2 × (1 base + 3 services × 5 points) + calibration.
    assert_eq!(r.windows.len(), 2 * 16 + 1);
    assert_clean(&w);
}

#[test]
fn profile_with_a_precision_target_stops_once_every_point_meets_it() {
    // The fake world obeys the model exactly: every sweep gives the same numbers, so any
    // precision target is met right after the configured sweeps.
    let w = FakeWorld::chain();
    let spec = ProfileSpec {
        timing: quick_timing(),
        services: Some(vec!["cart".into()]),
        repetitions: 3,
        precision_pct: Some(3.0),
        ..ProfileSpec::default()
    };
    let r = run_profile(&spec, &mut w.backends(), &Monitor::new()).unwrap();
    assert_eq!(r.repetitions, 3);
    assert_eq!(r.windows.len(), 3 * 6 + 1);
    let p = &r.curves[0].points[0];
    assert!(p.achieved_precision_pct.unwrap() <= 3.0, "{p:?}");
    assert_clean(&w);
}

#[tokio::test]
async fn spawned_experiments_can_be_observed_and_cancelled() {
    let w = FakeWorld::chain();
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.timing.window_s = 0.2;
    s.repeat.repetitions = 50;
    let h = spawn_what_if(s, w.backends());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.progress().phase.is_empty());
    h.cancel();
    let e = h.wait().await.unwrap_err();
    assert!(matches!(e, RunError::Cancelled));
    assert_clean(&w);
}

#[test]
fn bad_specs_name_the_field_and_its_unit() {
    let w = FakeWorld::chain();
    let fails = |s: &WhatIfSpec| {
        run_what_if(s, &mut w.backends(), &Monitor::new())
            .unwrap_err()
            .to_string()
    };
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.timing.window_s = 0.0;
    assert_eq!(
        fails(&s),
        "`timing.window_s`, the length of a measurement window, must be more than 0 seconds (got 0)"
    );
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.timing.quantum_us = Some(-1.0);
    assert_eq!(
        fails(&s),
        "`timing.quantum_us` must be a non-negative number of µs (got -1)"
    );
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.repeat.repetitions = 0;
    assert_eq!(fails(&s), "`repeat.repetitions` must be at least 1 (got 0)");
    let mut s = spec(Optimization::DeltaUs(100.0));
    s.repeat.precision_pct = Some(0.0);
    assert!(fails(&s).starts_with("`repeat.precision_pct` must be a positive percentage"));

    let profile = |p: ProfileSpec| {
        run_profile(&p, &mut w.backends(), &Monitor::new())
            .unwrap_err()
            .to_string()
    };
    let e = profile(ProfileSpec {
        percents: Vec::new(),
        ..ProfileSpec::default()
    });
    assert_eq!(
        e,
        "`percents` is empty: give at least one percentage to sweep"
    );
    let e = profile(ProfileSpec {
        repetitions: 0,
        ..ProfileSpec::default()
    });
    assert!(
        e.starts_with("`repetitions`, the sweeps of a profile"),
        "{e}"
    );
    // Nothing was started for a spec refused up front.
    assert!(w.log().is_empty(), "{:?}", w.log());
}

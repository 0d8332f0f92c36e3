//! The runner's side of plan leases, on the fake world: plans name the experiment as their owner
//! with the lease asked for, and an agent that stops honouring the renewals aborts the experiment
//! with a message naming it (the window measured meanwhile is invalid), every delay removed.

mod server_common;

use std::time::Duration;

use server_common::{APP, QUICK, Server, call, config, status_of, temp_dir, wait_for};
use slowpoke_coordinator::experiment::{
    LoadConfig, Monitor, Repeat, RunError, Safety, Timing, WhatIfSpec, run_what_if,
};
use slowpoke_coordinator::fake::FakeWorld;
use slowpoke_coordinator::lease::{Lease, MIN_LEASE};
use slowpoke_coordinator::model::Optimization;

fn spec(window_s: f64) -> WhatIfSpec {
    WhatIfSpec {
        target: "cart".into(),
        optimization: Optimization::DeltaUs(100.0),
        load: LoadConfig::default(),
        timing: Timing {
            warmup_s: 0.0,
            window_s,
            settle_s: 0.0,
            quantum_us: None,
            ..Timing::default()
        },
        repeat: Repeat::fixed(1),
        safety: Safety::default(),
        truth: false,
        entry_service: None,
    }
}

#[test]
fn plans_name_the_experiment_as_their_owner() {
    let w = FakeWorld::chain();
    let mut b = w.backends();
    b.lease = Lease::new("20261122T043112-123-whatif-cart", Duration::from_secs(7));
    run_what_if(&spec(0.02), &mut b, &Monitor::new()).expect("the what-if runs");
    assert_eq!(
        w.plan_owner().as_deref(),
        Some("20261122T043112-123-whatif-cart")
    );
    assert!(w.plan().is_empty(), "plan removed at the end");
}

#[test]
fn the_servers_experiment_id_owns_its_plans() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("lease-owner"));
    cfg.lease = Duration::from_secs(9);
    let s = Server::start(cfg);
    let a = call(
        "POST",
        &s.url("/v1/experiments"),
        Some(&format!(
            r#"{{{APP}, "target": "cart", "delta_us": 200, {QUICK}, "repetitions": 1, "precision": 0}}"#
        )),
        None,
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().expect("id").to_owned();
    let v = wait_for(&s, &id, 30.0, |v| {
        !matches!(status_of(v), "queued" | "running")
    });
    assert_eq!(status_of(&v), "done", "{v}");
    assert_eq!(w.plan_owner().as_deref(), Some(id.as_str()));
}

#[test]
fn a_lease_the_agent_no_longer_honours_aborts_the_window_naming_the_agent() {
    let w = FakeWorld::chain();
    w.set_fail_renew_lease(true);
    let mut b = w.backends();
    // Renewed every 100 ms; the slowed-down window lasts 400 ms, so a renewal fails inside it.
    b.lease = Lease::new("exp-lost", MIN_LEASE);
    let e = run_what_if(&spec(0.4), &mut b, &Monitor::new()).expect_err("the lease is lost");
    let RunError::LeaseLost {
        ref agent,
        ref phase,
        ..
    } = e
    else {
        panic!("expected LeaseLost, got {e}");
    };
    assert_eq!((agent.as_str(), phase.as_str()), ("fake", "slow"));
    let msg = e.to_string();
    assert!(
        msg.contains("agent fake") && msg.contains("invalid") && msg.contains("--lease"),
        "{msg}"
    );
    assert!(w.plan().is_empty(), "every delay removed: {:?}", w.plan());
    assert_eq!(w.log().last().map(String::as_str), Some("clear_slowdown"));
}

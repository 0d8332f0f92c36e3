//! A dead event reader stops all pausing (issue #13): if the thread reading the kernel's pause
//! requests ends (a failing `poll`), the kernel would keep stopping processes whose requests
//! nobody reads. The agent removes every delay, resumes every member, refuses further delays and
//! says why in `/v1/health` (status `degraded`). Before the issue the reader ended silently.

mod agent_util;

use std::time::Duration;

use agent_util::{TempDir, is_stopped, kill, sleeper, start_agent, wait_for};
use slowpoke_agent::{
    AgentError,
    api::{ServiceSpec, SlowdownPlan},
};

fn plan(service: &str, delay_ns: u64) -> SlowdownPlan {
    serde_json::from_value(serde_json::json!({
        "mode": "pause",
        "services": { service: { "delay_per_visit_ns": delay_ns } }
    }))
    .expect("plan JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_event_reader_stops_all_pausing_and_degrades_health() {
    let p = sleeper();
    let state = TempDir::new("se-reader");
    let agent = start_agent(&state).await;
    assert_eq!(
        agent.health().features.get("kernel").map(String::as_str),
        Some("on"),
        "this test needs the kernel programs (run as root on a kernel with BTF)"
    );
    let spec = ServiceSpec {
        pids: Some(vec![p.pid()]),
        ..ServiceSpec::default()
    };
    agent.put_service("svc", spec).expect("register");
    agent.set_slowdown(plan("svc", 1_000_000)).expect("plan");
    assert_eq!(agent.health().status, "ok", "{:?}", agent.health());
    // A member the kernel stopped just before the reader died (its request is never read).
    kill(p.pid(), libc::SIGSTOP);
    wait_for(Duration::from_secs(2), "stopped", || {
        is_stopped(p.pid()).then_some(())
    });

    assert!(agent.debug_break_event_reader(), "kernel programs loaded");

    let h = wait_for(Duration::from_secs(10), "health to turn degraded", || {
        let h = agent.health();
        (h.status == "degraded").then_some(h)
    });
    assert!(
        h.reasons
            .iter()
            .any(|r| r.contains("pause requests are no longer read") && r.contains("restart")),
        "{h:?}"
    );
    wait_for(Duration::from_secs(5), "the plan removed", || {
        agent
            .slowdown()
            .services
            .values()
            .all(|d| d.delay_per_visit_ns == 0)
            .then_some(())
    });
    wait_for(Duration::from_secs(5), "the member resumed", || {
        (!is_stopped(p.pid())).then_some(())
    });
    match agent.set_slowdown(plan("svc", 1_000_000)) {
        Err(AgentError::Unavailable(m)) => assert!(m.contains("restart the agent"), "{m}"),
        other => panic!("a delay was accepted without a reader: {other:?}"),
    }
    // Registering and removing delays still works.
    agent
        .set_slowdown(plan("svc", 0))
        .expect("a plan without delays");
    agent.shutdown().await;
}

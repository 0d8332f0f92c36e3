//! A plan's own stopped-share cap (`max_stopped_share`), through the HTTP API with the kernel
//! programs: bounded by the operator's ceiling (`--max-plan-stopped-share`), in force while the
//! plan is, and the agent's default back when the plan is removed or its lease lapses. The
//! stopped share is measured from the agent's counters (`pause_ns` over wall time).

mod agent_util;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use agent_util::{AgentProc, TempDir, json, single_threaded_server, wait_for};

/// Sequential HTTP/1.0 GETs (a fresh connection each) for `wall`: every one is a visit that owes
/// the plan's delay, so the server owes more pause than any cap below 1 allows.
fn sequential_gets(port: u16, wall: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < wall {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("receive");
        assert!(buf.starts_with(b"HTTP/1."), "an HTTP answer");
    }
}

fn stats(agent: &AgentProc) -> serde_json::Value {
    let (c, b) = agent.call("GET", "/v1/stats", None);
    assert_eq!(c, 200, "{b}");
    json(&b)
}

/// `stop_cap.in_force` of `GET /v1/stats`, as JSON (the shares are exact decimals on the wire).
fn cap_in_force(agent: &AgentProc) -> serde_json::Value {
    stats(agent)["stop_cap"]["in_force"].clone()
}

fn pause_ns(agent: &AgentProc) -> f64 {
    let s = stats(agent);
    s["services"]["web"]["pause_ns"]
        .as_f64()
        .unwrap_or_else(|| panic!("pause_ns of web in {s}"))
}

/// A plan slowing `web` by 100 ms per visit, with `extra` JSON fields (`"max_stopped_share":
/// 0.85,` ...).
fn plan(extra: &str) -> String {
    format!(
        "{{{extra}\"mode\":\"pause\",\"services\":{{\"web\":{{\"delay_per_visit_ns\":100000000}}}}}}"
    )
}

/// The share of wall time `web` spent stopped while sequential visits, each owing 100 ms, came
/// for 3 s, once their debt is paid or dropped. The cap holds over any 1 s window, so over 3 s
/// the share is the cap give or take the last pause.
fn stopped_share(agent: &AgentProc, port: u16) -> f64 {
    let before = pause_ns(agent);
    let t0 = Instant::now();
    sequential_gets(port, Duration::from_secs(3));
    let s = wait_for(Duration::from_secs(5), "debt settled", || {
        let s = stats(agent)["services"]["web"].clone();
        let n = |k: &str| s[k].as_u64().unwrap_or(0);
        (n("owed_ns") <= n("pause_ns") + n("dropped_ns")).then_some(s)
    });
    let share = (pause_ns(agent) - before) / t0.elapsed().as_nanos() as f64;
    eprintln!("visits at 100 ms: stopped {share:.2} of the time; {s}");
    share
}

#[test]
fn a_plan_raises_the_cap_within_the_ceiling_while_it_is_in_force() {
    let server = single_threaded_server();
    let state = TempDir::new("plan-cap");
    let agent = AgentProc::start(&state, &["--max-plan-stopped-share", "0.85"]);
    let (c, b) = agent.call(
        "PUT",
        "/v1/services/web",
        Some(&format!("{{\"ports\":[{}]}}", server.port)),
    );
    assert_eq!(c, 200, "{b}");
    // The default and the ceiling are readable before any plan.
    let cap = stats(&agent)["stop_cap"].clone();
    assert_eq!(
        cap,
        serde_json::json!({"max_stopped_share": 0.5, "max_plan_stopped_share": 0.85, "in_force": 0.5}),
    );

    // Asking more than the ceiling: 400 with the number, the limit and the flag; the plan in
    // force (none with a cap) stays.
    let (c, b) = agent.call("PUT", "/v1/slowdown", Some(&plan("")));
    assert_eq!(c, 200, "{b}");
    let (c, b) = agent.call(
        "PUT",
        "/v1/slowdown",
        Some(&plan("\"max_stopped_share\":0.95,")),
    );
    assert_eq!(c, 400, "{b}");
    for part in ["0.95", "0.85", "--max-plan-stopped-share"] {
        assert!(b.contains(part), "{part} in {b}");
    }
    let (_, now) = agent.call("GET", "/v1/slowdown", None);
    assert!(json(&now)["max_stopped_share"].is_null(), "{now}");
    assert_eq!(cap_in_force(&agent), serde_json::json!(0.5));
    let default_share = stopped_share(&agent, server.port);

    // Within the ceiling: the service is stopped well above the default 0.5.
    let (c, b) = agent.call(
        "PUT",
        "/v1/slowdown",
        Some(&plan("\"max_stopped_share\":0.85,")),
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(cap_in_force(&agent), serde_json::json!(0.85));
    let raised = stopped_share(&agent, server.port);
    assert!(
        raised > 0.75 && default_share < 0.65,
        "stopped {raised:.2} of the time under the plan's 0.85, {default_share:.2} under the default 0.5"
    );

    // Removed: the default returns.
    let (c, b) = agent.call("DELETE", "/v1/slowdown", None);
    assert!(c == 200 || c == 204, "{c} {b}");
    assert_eq!(cap_in_force(&agent), serde_json::json!(0.5));

    // Lapsed: the default returns too, and a plan without its own cap is held to it again.
    let (c, b) = agent.call(
        "PUT",
        "/v1/slowdown",
        Some(&plan("\"max_stopped_share\":0.85,\"lease_ms\":300,")),
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(cap_in_force(&agent), serde_json::json!(0.85));
    wait_for(Duration::from_secs(5), "the lease lapsed", || {
        (cap_in_force(&agent) == serde_json::json!(0.5)).then_some(())
    });
    let (c, b) = agent.call("PUT", "/v1/slowdown", Some(&plan("")));
    assert_eq!(c, 200, "{b}");
    let after = stopped_share(&agent, server.port);
    assert!(
        after < 0.65,
        "stopped {after:.2} of the time after the plan lapsed, {raised:.2} under it"
    );
}

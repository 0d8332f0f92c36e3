//! Plan leases through the agent daemon's HTTP API, with the kernel programs and a real pre-forked
//! server under load: a plan whose owner stops renewing is removed within lease + 1 s and every
//! member runs again (counted in /metrics); another owner is refused with 409 naming the holder;
//! the owner's renewals keep the plan; the operator's maximum is enforced.

mod agent_util;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use agent_util::{AgentProc, TempDir, call, is_stopped, json, nginx, wait_for};

/// GETs on `port` from two threads until the flag drops (at most 30 s): debt keeps accruing, so
/// the plan keeps stopping the server while it is in force.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                        call("GET", &format!("http://127.0.0.1:{port}/"), None, None);
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn plan(owner: Option<&str>, lease_ms: Option<u64>) -> String {
    let mut p = serde_json::json!({"services": {"web": {"delay_per_visit_ns": 20_000_000}}});
    if let Some(o) = owner {
        p["owner"] = o.into();
    }
    if let Some(l) = lease_ms {
        p["lease_ms"] = l.into();
    }
    p.to_string()
}

fn slowdown(url: &str) -> serde_json::Value {
    let (c, b) = call(
        "GET",
        &format!("{url}/v1/slowdown"),
        None,
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{b}");
    json(&b)
}

fn has_plan(url: &str) -> bool {
    slowdown(url)["services"]
        .as_object()
        .is_some_and(|s| !s.is_empty())
}

fn expired_total(url: &str) -> u64 {
    let (c, m) = call(
        "GET",
        &format!("{url}/metrics"),
        None,
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{m}");
    m.lines()
        .find_map(|l| l.strip_prefix("slowpoke_lease_expired_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slowpoke_lease_expired_total in /metrics:\n{m}"))
}

#[test]
fn an_unrenewed_plan_lapses_and_only_its_owner_may_change_it_meanwhile() {
    let server = nginx(2);
    let members: Vec<u32> = std::iter::once(server.pid())
        .chain(agent_util::children(server.pid()))
        .collect();
    let state = TempDir::new("leases-lapse");
    let agent = AgentProc::start(&state, &["--max-lease-s", "60"]);
    let url = agent.url.clone();
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/services/web"),
        Some(&format!("{{\"ports\":[{}]}}", server.port)),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{b}");
    let _load = Load::start(server.port);

    // The operator's maximum: 60 s here.
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/slowdown"),
        Some(&plan(Some("exp-a"), Some(61_000))),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("maximum of 60000 ms"), "{b}");
    assert!(!has_plan(&url), "a refused plan installs nothing");

    let sent = Instant::now();
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/slowdown"),
        Some(&plan(Some("exp-a"), Some(1000))),
        Some(agent_util::TOKEN),
    );
    let answered = Instant::now();
    assert_eq!(c, 200, "{b}");
    let got = json(&b);
    assert_eq!(got["owner"], "exp-a", "{got}");
    assert_eq!(got["lease_ms"], 1000, "{got}");
    // The plan really stops the server while it is in force.
    wait_for(
        Duration::from_secs(1),
        "a member stopped by the plan",
        || members.iter().any(|&p| is_stopped(p)).then_some(()),
    );

    // Another owner, or someone without one, may neither replace nor remove it.
    for (method, path, body) in [
        ("PUT", "/v1/slowdown", Some(plan(Some("exp-b"), None))),
        ("PUT", "/v1/slowdown", Some(plan(None, None))),
        ("DELETE", "/v1/slowdown", None),
        ("DELETE", "/v1/slowdown?owner=exp-b", None),
    ] {
        let (c, b) = call(
            method,
            &format!("{url}{path}"),
            body.as_deref(),
            Some(agent_util::TOKEN),
        );
        assert_eq!(c, 409, "{method} {path}: {b}");
        let e = json(&b)["error"].as_str().unwrap_or_default().to_owned();
        assert!(
            e.contains("\"exp-a\"") && e.contains("expires in"),
            "{method} {path}: the holder and its expiry are named: {e}"
        );
    }
    let shown = slowdown(&url);
    assert_eq!(shown["owner"], "exp-a", "{shown}");
    let left = shown["lease_remaining_ms"]
        .as_u64()
        .expect("remaining lease");
    assert!(left <= 1000, "{shown}");

    // Nobody renews: the plan is gone within lease + 1 s, and not before the lease ran out.
    wait_for(Duration::from_secs(3), "the lapsed plan removed", || {
        (!has_plan(&url)).then_some(())
    });
    let gone = Instant::now();
    assert!(
        gone - sent >= Duration::from_secs(1),
        "removed after {:?}, before its 1 s lease ran out",
        gone - sent
    );
    assert!(
        gone - answered <= Duration::from_secs(2),
        "removed only {:?} after the PUT (lease 1 s)",
        gone - answered
    );
    // Every member runs again, under load, with nothing left to stop it.
    for _ in 0..50 {
        for &p in &members {
            assert!(
                !is_stopped(p),
                "member {p} still stopped after the lease lapsed"
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(expired_total(&url), 1);
    let shown = slowdown(&url);
    assert!(shown.get("owner").is_none(), "{shown}");
    assert!(shown.get("lease_remaining_ms").is_none(), "{shown}");
    // Renewing a lapsed plan says to put it again.
    let (c, b) = call(
        "POST",
        &format!("{url}/v1/slowdown/renew"),
        Some(r#"{"owner":"exp-a"}"#),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 404, "{b}");
    assert!(b.contains("PUT the plan again"), "{b}");
}

#[test]
fn renewals_keep_a_plan_and_the_operator_may_override() {
    let server = nginx(1);
    let state = TempDir::new("leases-renew");
    let agent = AgentProc::start(&state, &[]);
    let url = agent.url.clone();
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/services/web"),
        Some(&format!("{{\"ports\":[{}]}}", server.port)),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{b}");

    // A person with curl: default lease and the anonymous owner; they may remove it again.
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/slowdown"),
        Some(&plan(None, None)),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["owner"], "anonymous", "{b}");
    assert_eq!(json(&b)["lease_ms"], 15_000, "{b}");
    let (c, b) = call(
        "DELETE",
        &format!("{url}/v1/slowdown"),
        None,
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 204, "{b}");
    assert!(!has_plan(&url));

    // The owner renews every 300 ms: the 1 s lease holds for 2.5 s, plan untouched.
    let t0 = Instant::now();
    let (c, b) = call(
        "PUT",
        &format!("{url}/v1/slowdown"),
        Some(&plan(Some("exp-r"), Some(1000))),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 200, "{b}");
    while t0.elapsed() < Duration::from_millis(2500) {
        std::thread::sleep(Duration::from_millis(300));
        let (c, b) = call(
            "POST",
            &format!("{url}/v1/slowdown/renew"),
            Some(r#"{"owner":"exp-r","lease_ms":1000}"#),
            Some(agent_util::TOKEN),
        );
        assert_eq!(c, 200, "renewal at {:?}: {b}", t0.elapsed());
        assert_eq!(
            json(&b)["services"]["web"]["delay_per_visit_ns"],
            20_000_000
        );
    }
    assert!(has_plan(&url), "renewed plan still in force");
    assert_eq!(expired_total(&url), 0, "nothing lapsed while renewed");
    // Another owner may not renew it.
    let (c, b) = call(
        "POST",
        &format!("{url}/v1/slowdown/renew"),
        Some(r#"{"owner":"exp-x"}"#),
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 409, "{b}");
    assert!(
        json(&b)["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"exp-r\"")),
        "{b}"
    );
    // The operator's override removes it at once.
    let (c, b) = call(
        "DELETE",
        &format!("{url}/v1/slowdown?force=true"),
        None,
        Some(agent_util::TOKEN),
    );
    assert_eq!(c, 204, "{b}");
    assert!(!has_plan(&url));
    assert_eq!(expired_total(&url), 0, "removed, not lapsed");
}

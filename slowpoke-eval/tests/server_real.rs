//! The server over the real backends, as `slowpoke serve` wires them: the in-process agent
//! (root + BPF), the emulated chain3 app started from its topology by [`RealLauncher`], the real
//! closed-loop load; then a tail comparison (`kind: tail`) on tail-small with the open loop. Run
//! as root (`cargo xtask test` is; it takes ~15 s).

use std::sync::Arc;
use std::time::Duration;

use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::lease::DEFAULT_LEASE;
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_coordinator::server::{self, RealLauncher, ServeConfig};
use slowpoke_eval::EmuApps;
use slowpoke_testkit::TempDir;

/// One call to the server: its status and its JSON body.
fn call(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let req = ureq::request(method, url).set("Content-Type", "application/json");
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    (resp.status(), resp.into_json().unwrap())
}

#[test]
fn a_what_if_on_the_emulated_chain_through_the_api() {
    // The emulator binary next to this test's (cargo build -p slowpoke-emu), unless given.
    if std::env::var_os("SLOWPOKE_EMU_BIN").is_none() {
        let exe = std::env::current_exe().unwrap();
        let emu = exe.parent().unwrap().parent().unwrap().join("slowpoke-emu");
        assert!(
            emu.exists(),
            "build the emulator first: cargo build -p slowpoke-emu (or set SLOWPOKE_EMU_BIN)"
        );
        // SAFETY: set before any other thread of this test starts.
        unsafe { std::env::set_var("SLOWPOKE_EMU_BIN", emu) };
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agent = rt
        .block_on(InProcessAgent::start(slowpoke_agent::AgentConfig::default()))
        .expect("the in-process agent starts (root?)");
    let inner = agent.agent().clone();
    let results = TempDir::new("server-real");
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        results_dir: results.path().to_owned(),
        agents: vec![Arc::new(agent) as SharedAgent],
        launcher: Arc::new(RealLauncher::with_emulator(Arc::new(EmuApps))),
        policy: server::ServePolicy {
            topology_dir: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/topologies").into(),
            ),
            ..server::ServePolicy::default()
        },
        lease: DEFAULT_LEASE,
    };
    let (listener, state) = rt.block_on(server::bind(&cfg)).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = rt.spawn(server::serve_on(listener, state, async {
        let _ = stop_rx.await;
    }));

    // A file of the server's --topology-dir.
    let topology = "chain3.json";
    let body = format!(
        r#"{{"topology": "{topology}", "target": "middle", "speedup": 2, "truth": true,
            "connections": 32, "warmup": 1, "window": 1, "repetitions": 3, "precision": 0}}"#
    );
    let (status, a) = call("POST", &format!("{base}/v1/experiments"), Some(&body));
    assert_eq!(status, 202, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/v1/experiments/{id}");
    let v = loop {
        let (_, v) = call("GET", &url, None);
        if !matches!(v["status"].as_str(), Some("queued" | "running")) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(v["status"], "done", "{v}");
    let r = &v["result"];
    eprintln!(
        "baseline {} predicted {} truth {} error {} %",
        r["baseline_rps"], r["predicted_rps"], r["truth_rps"], r["error_pct"]
    );
    assert!(r["predicted_rps"].as_f64().unwrap() > r["baseline_rps"].as_f64().unwrap());
    let (_, agents) = call("GET", &format!("{base}/v1/agents"), None);
    assert_eq!(agents[0]["status"], "ok", "{agents}");
    let plan = inner.slowdown();
    assert!(plan.services.is_empty(), "a plan is left: {plan:?}");

    // A tail comparison through the API on the thread-per-request tail-small (8 workers).
    let body = r#"{"kind": "tail", "topology": "tail-small.json", "rate": 150, "connections": 8,
        "warmup": 0.3, "window": 1, "repetitions": 1}"#;
    let (status, a) = call("POST", &format!("{base}/v1/experiments"), Some(body));
    assert_eq!(status, 202, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    let url = format!("{base}/v1/experiments/{id}");
    let v = loop {
        let (_, v) = call("GET", &url, None);
        if !matches!(v["status"].as_str(), Some("queued" | "running")) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(v["status"], "done", "{v}");
    assert_eq!(v["kind"], "tail", "{v}");
    let arms = v["result"]["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 3, "{v}");
    for arm in arms {
        assert_eq!(arm["ran"], true, "{arm}");
        let p = |k: &str| arm[k]["value"].as_f64().unwrap();
        assert!(
            p("p50_us") <= p("p99_us") && p("p99_us") <= p("p999_us"),
            "{arm}"
        );
    }
    let svg = ureq::get(&format!("{url}/plot.svg"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("oldest-first"),
        "{svg}"
    );
    let schedule = inner.scheduling();
    assert!(
        schedule.services.is_empty(),
        "a schedule is left: {schedule:?}"
    );

    let _ = stop_tx.send(());
    rt.block_on(served).unwrap().unwrap();
    rt.block_on(inner.shutdown());
}

/// A topology request is checked when it arrives: a `set` override that does not parse, or a
/// server built without the emulator, is a `400` that names the fix — not a `202` and an
/// experiment that fails later. (No agent is needed: the app is checked first.)
#[test]
fn a_topology_request_is_checked_on_arrival() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = TempDir::new("server-topology-check");
    let serve = |launcher: RealLauncher| {
        let cfg = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
            results_dir: results.path().to_owned(),
            agents: Vec::new(),
            launcher: Arc::new(launcher),
            policy: server::ServePolicy {
                topology_dir: Some(
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/topologies").into(),
                ),
                ..server::ServePolicy::default()
            },
            lease: DEFAULT_LEASE,
        };
        let (listener, state) = rt.block_on(server::bind(&cfg)).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(server::serve_on(listener, state, std::future::pending()));
        base
    };
    let post = |base: &str, set: &str| {
        let body = format!(
            r#"{{"topology": "chain3.json", "set": [{set}], "target": "middle", "speedup": 2}}"#
        );
        call("POST", &format!("{base}/v1/experiments"), Some(&body))
    };

    let with_emulator = serve(RealLauncher::with_emulator(Arc::new(EmuApps)));
    let (status, a) = post(&with_emulator, r#""middle.cpu_us""#);
    assert_eq!(status, 400, "{a}");
    assert!(
        a["error"].as_str().unwrap().contains("middle.cpu_us"),
        "{a}"
    );
    // A good override passes the check (and meets the missing agents next).
    let (status, a) = post(&with_emulator, r#""middle.cpu_us=500""#);
    assert_eq!(status, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("no agent"), "{a}");

    let without = serve(RealLauncher::default());
    let (status, a) = post(&without, "");
    assert_eq!(status, 400, "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("without the emulator"),
        "{a}"
    );
}

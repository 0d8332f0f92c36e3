//! Shared by the server tests: a real server on an ephemeral port over the library's fake world,
//! and a small blocking HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::Backends;
use slowpoke_coordinator::fake::{FakeAgent, FakeApp, FakeLoadStarter, FakeWorld};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease};
use slowpoke_coordinator::server::{self, Launcher, ServeConfig, request::AppRequest};

/// Builds every experiment on the fake world, whatever app the request names.
pub struct FakeLauncher(pub FakeWorld);

impl Launcher for FakeLauncher {
    fn backends(&self, _app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String> {
        Ok(Backends {
            agents,
            app: Box::new(FakeApp(self.0.clone())),
            load: Arc::new(FakeLoadStarter(self.0.clone())),
            lease: Lease::default(),
            kubernetes: std::sync::Arc::default(),
        })
    }
}

/// A fresh directory under the system's temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "slowpoke-server-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The configuration of a test server on the fake world.
pub fn config(world: &FakeWorld, results_dir: PathBuf) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: None,
        results_dir,
        agents: vec![Arc::new(FakeAgent(world.clone())) as SharedAgent],
        launcher: Arc::new(FakeLauncher(world.clone())),
        // The shipped topologies: requests name them by file name (`chain3.json`).
        policy: server::ServePolicy {
            topology_dir: Some(topologies_dir()),
            ..server::ServePolicy::default()
        },
        lease: DEFAULT_LEASE,
    }
}

/// The repository's `testkit/topologies` directory.
pub fn topologies_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testkit/topologies"
    ))
}

/// A server running on its own runtime; stopped (gracefully) when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    pub fn start(cfg: ServeConfig) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (listener, state) = server::bind(&cfg).await?;
                addr_tx.send(listener.local_addr()?).unwrap();
                server::serve_on(listener, state, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server did not start");
        Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server (as SIGTERM would) and waits for it.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("the server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// An answer: status, headers we look at, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub location: Option<String>,
    pub www_authenticate: Option<String>,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `error` of a 4xx/5xx answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` in {}", self.text))
            .to_owned()
    }
}

/// One call; `body` is sent as JSON.
pub fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    call_with(method, url, body, &headers)
}

/// One call with these headers (the last value of a header wins).
pub fn call_with(method: &str, url: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_mins(1))
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    Answer {
        status: resp.status(),
        content_type: resp.content_type().to_owned(),
        location: resp.header("Location").map(str::to_owned),
        www_authenticate: resp.header("WWW-Authenticate").map(str::to_owned),
        text: resp.into_string().unwrap(),
    }
}

pub fn get(url: &str) -> Answer {
    call("GET", url, None, None)
}

/// Polls `GET /v1/experiments/{id}` until `done(view)`; panics after `secs`.
pub fn wait_for(
    server: &Server,
    id: &str,
    secs: f64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        let v = get(&server.url(&format!("/v1/experiments/{id}"))).json();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting on {id}: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn status_of(v: &serde_json::Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

/// The fake chain's services, as a request names them.
pub const APP: &str = r#""services": {"front": "port:8080", "cart": "port:8081", "db": "port:8082"}, "entry": "http://127.0.0.1:8080/""#;

/// Fast measurement settings for the fake world (its counters run 1000× faster than real time).
pub const QUICK: &str = r#""warmup": 0, "settle": 0, "window": 0.02"#;

pub fn quick() -> slowpoke_coordinator::experiment::Timing {
    slowpoke_coordinator::experiment::Timing {
        warmup_s: 0.0,
        window_s: 0.02,
        settle_s: 0.0,
        quantum_us: None,
        ..Default::default()
    }
}

/// A what-if (cart 2x, with ground truth) as the CLI would have stored it.
pub fn cli_what_if(w: &FakeWorld) -> slowpoke_coordinator::experiment::WhatIfResult {
    use slowpoke_coordinator::experiment::{LoadConfig, Monitor, Repeat, Safety, WhatIfSpec};
    let spec = WhatIfSpec {
        target: "cart".into(),
        optimization: slowpoke_coordinator::model::Optimization::Speedup(2.0),
        load: LoadConfig::default(),
        timing: quick(),
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: true,
        entry_service: None,
    };
    slowpoke_coordinator::experiment::run_what_if(&spec, &mut w.backends(), &Monitor::new())
        .unwrap()
}

/// Equal JSON, numbers within a relative 1e-12 (a float written and read back may move by one
/// unit in the last place).
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value) {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
        use serde_json::Value as V;
        match (a, b) {
            (V::Number(x), V::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                    "{path}: {x} != {y}"
                );
            }
            (V::Array(x), V::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{path}: lengths differ");
                for (i, (x, y)) in x.iter().zip(y).enumerate() {
                    walk(x, y, &format!("{path}[{i}]"));
                }
            }
            (V::Object(x), V::Object(y)) => {
                let kx: Vec<&String> = x.keys().collect();
                let ky: Vec<&String> = y.keys().collect();
                assert_eq!(kx, ky, "{path}: keys differ");
                for (k, v) in x {
                    walk(v, &y[k], &format!("{path}.{k}"));
                }
            }
            _ => assert_eq!(a, b, "{path}"),
        }
    }
    walk(a, b, "");
}

/// A stored tail comparison as `slowpoke tail compare` writes it: `default` and
/// `oldest-first` ran (two repetitions: intervals; the latencies are made up, the shapes are
/// real), `per-service-fifo` did not (an agent refused it).
pub fn tail_result(id: &str) -> slowpoke_api::coordinator::TailResult {
    use slowpoke_api::coordinator::{
        CdfPoint, Interval, TailArm, TailArmResult, TailResult, TailSchedule, TailWindow,
    };
    use slowpoke_coordinator::experiment::tail::interval;
    let windows: Vec<TailWindow> = [(TailArm::Default, 8000.0), (TailArm::OldestFirst, 4000.0)]
        .into_iter()
        .flat_map(|(arm, p99)| {
            (0..2).map(move |rep| TailWindow {
                arm,
                repetition: rep,
                rate_rps: 400.0,
                secs: 1.0,
                completed_ok: 400,
                errors: 0,
                rps: 400.0 - rep as f64,
                p50_us: p99 / 8.0,
                p99_us: p99 + 100.0 * rep as f64,
                p999_us: p99 * 1.5,
                mean_us: p99 / 6.0,
                max_us: p99 * 2.0,
                scheduler_cores: None,
                scheduler_wakeups_per_s: None,
                scheduler_counts: None,
            })
        })
        .collect();
    let arm = |arm: TailArm, ratio: Option<Interval>| {
        let ws: Vec<&TailWindow> = windows.iter().filter(|w| w.arm == arm).collect();
        let of = |f: fn(&TailWindow) -> f64| interval(&ws.iter().map(|w| f(w)).collect::<Vec<_>>());
        TailArmResult {
            arm,
            ran: true,
            error: None,
            p50_us: of(|w| w.p50_us),
            p99_us: of(|w| w.p99_us),
            p999_us: of(|w| w.p999_us),
            mean_us: of(|w| w.mean_us),
            rps: of(|w| w.rps),
            p99_vs_default: ratio,
            mean_vs_default: ratio,
            rps_vs_default: ratio.map(|_| Interval {
                value: 1.0,
                ci_low: Some(1.0),
                ci_high: Some(1.0),
                n: 2,
            }),
            cdf: [0.5, 0.9, 0.99, 0.999, 1.0]
                .iter()
                .map(|&fraction| CdfPoint {
                    latency_us: ws[0].p99_us * fraction * fraction,
                    fraction,
                })
                .collect(),
        }
    };
    let half = Interval {
        value: 0.4938,
        ci_low: Some(0.49),
        ci_high: Some(0.4976),
        n: 2,
    };
    TailResult {
        id: id.to_owned(),
        created: "2026-12-06T12:00:00Z".into(),
        entry_url: "http://127.0.0.1:8080/work".into(),
        services: vec!["front".into(), "leaf1".into()],
        agents: vec!["fake".into()],
        schedule: TailSchedule {
            k: Some(1),
            ..TailSchedule::default()
        },
        rate_rps: 400.0,
        window_s: 1.0,
        repetitions: 2,
        arms: vec![
            arm(TailArm::Default, None),
            arm(TailArm::OldestFirst, Some(half)),
            TailArmResult {
                arm: TailArm::PerServiceFifo,
                ran: false,
                error: Some(
                    "agent fake refused tail scheduling: this agent lacks tail scheduling".into(),
                ),
                p50_us: None,
                p99_us: None,
                p999_us: None,
                mean_us: None,
                rps: None,
                p99_vs_default: None,
                mean_vs_default: None,
                rps_vs_default: None,
                cdf: Vec::new(),
            },
        ],
        windows,
        p99_target_us: None,
        sweep: Vec::new(),
        capacity: Vec::new(),
        load_priority: Some(30),
        warnings: Vec::new(),
    }
}

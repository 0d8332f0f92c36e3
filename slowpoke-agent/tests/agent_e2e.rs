//! End to end through the HTTP API with the kernel programs: visits of a real server, pause
//! accuracy seen from outside, the safety cap, the guardian under a real plan.

mod agent_util;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use agent_util::{AgentProc, TempDir, is_stopped, json, single_threaded_server, wait_for};

/// N sequential HTTP/1.0 GETs (a fresh connection each); returns the elapsed time.
fn sequential_gets(port: u16, n: usize) -> Duration {
    let t0 = Instant::now();
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).expect("receive");
        assert!(buf.starts_with(b"HTTP/1."), "an HTTP answer");
    }
    t0.elapsed()
}

/// N sequential GETs like [`sequential_gets`], each after the server has been left idle for
/// `idle` (the client sleeps, not timed); returns the time of the GETs alone.
fn gets_after_idle(port: u16, n: usize, idle: Duration) -> Duration {
    (0..n)
        .map(|_| {
            std::thread::sleep(idle);
            sequential_gets(port, 1)
        })
        .sum()
}

/// Runs the calling (client) thread at real-time priority: the shared 2-core test machine is
/// often saturated by compilers, whose time slices would otherwise show up as request latency.
fn realtime_client() {
    let param = libc::sched_param { sched_priority: 5 };
    // SAFETY: sets the policy of the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) } != 0 {
        eprintln!("SCHED_FIFO refused for the client: timing may be noisy");
    }
}

fn stats_of(agent: &AgentProc, svc: &str) -> serde_json::Value {
    let (c, b) = agent.call("GET", "/v1/stats", None);
    assert_eq!(c, 200, "{b}");
    json(&b)["services"][svc].clone()
}

fn register(agent: &AgentProc, svc: &str, port: u16) {
    let (c, b) = agent.call(
        "PUT",
        &format!("/v1/services/{svc}"),
        Some(&format!("{{\"ports\":[{port}]}}")),
    );
    assert_eq!(c, 200, "{b}");
}

fn set_delay(agent: &AgentProc, svc: &str, d: u64) {
    let body =
        format!("{{\"mode\":\"pause\",\"services\":{{\"{svc}\":{{\"delay_per_visit_ns\":{d}}}}}}}");
    let (c, b) = agent.call("PUT", "/v1/slowdown", Some(&body));
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["services"][svc]["delay_per_visit_ns"], d);
}

fn u(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn visits_equal_requests_and_pauses_add_exactly_the_plan() {
    let server = single_threaded_server();
    let state = TempDir::new("e2e-acc");
    // Sequential visits to a single-threaded server: it is stopped most of the time; lift the cap.
    let agent = AgentProc::start(&state, &["--max-stopped-share", "1"]);
    register(&agent, "web", server.port);
    let n = std::env::var("E2E_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    realtime_client();
    let before = stats_of(&agent, "web");
    let base1 = sequential_gets(server.port, n);
    let mid = stats_of(&agent, "web");
    assert_eq!(
        u(&mid, "visits") - u(&before, "visits"),
        n as u64,
        "visits == requests"
    );
    let base2 = sequential_gets(server.port, n);
    let base = base1.min(base2);

    let d: u64 = std::env::var("E2E_D")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    // Under the plan the server sits stopped for d before answering each request, and a server
    // that was left alone for d answers its next request slower than one kept busy, paused or
    // not (measured on this VM: ~0.8 ms instead of ~0.15 ms after 20 ms idle; caches and vCPU
    // gone cold). That is not the pause's doing, so the reference is the same requests after
    // the same idle time: what remains is the pause itself.
    let idle_before = gets_after_idle(server.port, n, Duration::from_nanos(d));
    set_delay(&agent, "web", d);
    let s0 = stats_of(&agent, "web");
    let slow = sequential_gets(server.port, n);
    // Debt below the quantum is paid when the service goes idle.
    let s1 = wait_for(Duration::from_secs(5), "the idle debt paid", || {
        let s = stats_of(&agent, "web");
        (u(&s, "owed_ns") - u(&s0, "owed_ns")
            <= u(&s, "pause_ns") - u(&s0, "pause_ns") + u(&s, "dropped_ns"))
        .then_some(s)
    });
    let (c, _) = agent.call("DELETE", "/v1/slowdown", None);
    assert_eq!(c, 204);
    let idle_after = gets_after_idle(server.port, n, Duration::from_nanos(d));
    let idle_base = (idle_before + idle_after) / 2;
    assert_eq!(u(&s1, "visits") - u(&s0, "visits"), n as u64);
    let want = n as f64 * d as f64;
    let growth_hot = slow.as_nanos() as f64 - base.as_nanos() as f64;
    let growth = slow.as_nanos() as f64 - idle_base.as_nanos() as f64;
    let paused = (u(&s1, "pause_ns") - u(&s0, "pause_ns")) as f64;
    let owed = (u(&s1, "owed_ns") - u(&s0, "owed_ns")) as f64;
    eprintln!(
        "base {base:?} (after idle {idle_before:?} / {idle_after:?}), slow {slow:?}: growth {:.1} ms \
         for N·d = {:.1} ms ({:+.2} %; {:+.2} % over the busy baseline), pause_ns {:.1} ms \
         ({:+.2} % of growth), owed {:.1} ms, pauses {}",
        growth / 1e6,
        want / 1e6,
        (growth / want - 1.0) * 100.0,
        (growth_hot / want - 1.0) * 100.0,
        paused / 1e6,
        (paused / growth - 1.0) * 100.0,
        owed / 1e6,
        u(&s1, "pauses") - u(&s0, "pauses")
    );
    assert!((owed - want).abs() < 1.0, "owed {owed} for {want}");
    assert!(
        growth >= 0.95 * want && growth <= 1.05 * want,
        "growth {growth} ns for N·d = {want} ns"
    );
    assert!(
        growth_hot >= 0.95 * want,
        "growth over the busy baseline {growth_hot} ns for N·d = {want} ns"
    );
    assert!(
        (paused / growth - 1.0).abs() <= 0.05,
        "pause_ns {paused} vs growth {growth}"
    );
    assert_eq!(u(&s1, "dropped_ns"), 0);
}

#[test]
fn the_safety_cap_drops_debt_and_warns() {
    let server = single_threaded_server();
    let state = TempDir::new("e2e-cap");
    let agent = AgentProc::start(&state, &["--max-stopped-share", "0.3"]);
    register(&agent, "web", server.port);
    set_delay(&agent, "web", 100_000_000);
    let took = sequential_gets(server.port, 20);
    let s = wait_for(Duration::from_secs(5), "debt settled", || {
        let s = stats_of(&agent, "web");
        (u(&s, "owed_ns") <= u(&s, "pause_ns") + u(&s, "dropped_ns")).then_some(s)
    });
    eprintln!("20 visits at 100 ms: {took:?}, stats {s}");
    assert_eq!(u(&s, "owed_ns"), 2_000_000_000);
    assert!(u(&s, "dropped_ns") > 0, "{s}");
    assert!(
        s["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().is_some_and(|w| w.contains("safety cap")))),
        "{s}"
    );
    // Stopped at most ~30 % of the wall time.
    assert!(
        (u(&s, "pause_ns") as f64) < 0.3 * took.as_nanos() as f64 + 350_000_000.0,
        "{s}"
    );
}

#[test]
fn guardian_resumes_a_service_the_kernel_stopped_when_the_agent_is_killed() {
    let server = single_threaded_server();
    let state = TempDir::new("e2e-guard");
    let mut agent = AgentProc::start(&state, &[]);
    register(&agent, "web", server.port);
    set_delay(&agent, "web", 100_000_000);
    let port = server.port;
    let client = std::thread::spawn(move || sequential_gets(port, 1));
    wait_for(
        Duration::from_secs(5),
        "the server stopped at the visit",
        || is_stopped(server.pid()).then_some(()),
    );
    let t0 = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    while is_stopped(server.pid()) {
        assert!(t0.elapsed() < Duration::from_secs(2), "still stopped");
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = t0.elapsed();
    let _ = agent.child.wait();
    client.join().expect("client");
    eprintln!("resumed {took:?} after SIGKILL");
    assert!(took < Duration::from_millis(100), "{took:?}");
}

#[test]
fn a_prefork_server_is_paused_as_a_whole_under_a_plan() {
    let web = agent_util::nginx(2);
    let mut all = vec![web.pid()];
    all.extend(agent_util::children(web.pid()));
    let state = TempDir::new("e2e-nginx");
    let agent = AgentProc::start(&state, &["--max-stopped-share", "1"]);
    register(&agent, "web", web.port);
    set_delay(&agent, "web", 100_000_000);
    let port = web.port;
    let client = std::thread::spawn(move || sequential_gets(port, 1));
    wait_for(
        Duration::from_secs(5),
        "master and both workers stopped",
        || all.iter().all(|&p| is_stopped(p)).then_some(()),
    );
    let took = client.join().expect("client");
    assert!(all.iter().all(|&p| !is_stopped(p)), "all resumed");
    assert!(
        took >= Duration::from_millis(100),
        "the request waited out the pause: {took:?}"
    );
    let s = stats_of(&agent, "web");
    assert_eq!(u(&s, "visits"), 1);
    assert!(u(&s, "pause_ns") >= 100_000_000, "{s}");
}

#[test]
fn cores_of_a_one_worker_nginx_is_one() {
    let web = agent_util::nginx(1);
    let state = TempDir::new("e2e-cores");
    let agent = AgentProc::start(&state, &[]);
    register(&agent, "web", web.port);
    // Master + worker: two threads on two CPUs, but only the worker serves.
    sequential_gets(web.port, 20);
    let s = wait_for(Duration::from_secs(5), "cores from serving threads", || {
        let s = stats_of(&agent, "web");
        (s["cores"].as_f64() == Some(1.0)).then_some(s)
    });
    assert_eq!(s["pids"].as_array().map(Vec::len), Some(2), "{s}");
}

/// Where B's pauses start relative to A's: for each B pause of `kind`, the time since the start
/// of the latest A quantum pause that started before it (B pauses before any A pause count as
/// −1 s), and whether it started before that A pause ended.
fn skews(
    a: &[slowpoke_agent::actuator::PauseRecord],
    b: &[slowpoke_agent::actuator::PauseRecord],
    kind: slowpoke_agent::actuator::PauseKind,
) -> Vec<(i64, bool)> {
    use slowpoke_agent::actuator::PauseKind;
    b.iter()
        .filter(|p| p.kind == kind)
        .map(|p| {
            a.iter()
                .filter(|x| x.kind == PauseKind::Kernel && x.start_ns <= p.start_ns)
                .max_by_key(|x| x.start_ns)
                .map_or((-1_000_000_000, false), |x| {
                    (p.start_ns as i64 - x.start_ns as i64, p.start_ns < x.end_ns)
                })
        })
        .collect()
}

fn percentile(v: &[i64], q: f64) -> i64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// One plan run: `rounds` × (GET A, GET B) under `{A: d_a, B: d_b}`; the plan is removed at the
/// end (leftover debt paid). Returns the pause records made during the run and the counter
/// deltas per service (`pause_ns`, `owed_ns`, `dropped_ns`, `pauses`).
fn sync_run(
    agent: &slowpoke_agent::Agent,
    ports: (u16, u16),
    delays: (u64, u64),
    synchronized: bool,
    rounds: usize,
) -> (
    Vec<slowpoke_agent::actuator::PauseRecord>,
    Vec<slowpoke_agent::actuator::PauseRecord>,
    [[u64; 4]; 2],
) {
    use slowpoke_agent::api::{Mode, ServiceDelay, SlowdownPlan};
    let counters =
        |s: &slowpoke_agent::api::ServiceStats| [s.pause_ns, s.owed_ns, s.dropped_ns, s.pauses];
    let before = agent.stats();
    let t0 = slowpoke_agent::sys::clock::monotonic_ns();
    let plan = SlowdownPlan {
        mode: Mode::Pause,
        quantum_ns: None,
        synchronized,
        services: [("a", delays.0), ("b", delays.1)]
            .into_iter()
            .map(|(n, d)| {
                (
                    n.to_string(),
                    ServiceDelay {
                        delay_per_visit_ns: d,
                    },
                )
            })
            .collect(),
        ..SlowdownPlan::default()
    };
    agent.set_slowdown(plan).expect("plan");
    assert_eq!(agent.slowdown().synchronized, synchronized);
    for _ in 0..rounds {
        sequential_gets(ports.0, 1);
        sequential_gets(ports.1, 1);
    }
    agent.clear_slowdown().expect("plan removed");
    let after = agent.stats();
    let delta = |n: &str| {
        let (x, y) = (counters(&before.services[n]), counters(&after.services[n]));
        [y[0] - x[0], y[1] - x[1], y[2] - x[2], y[3] - x[3]]
    };
    let recent = |n: &str| -> Vec<_> {
        agent
            .recent_pauses(n)
            .expect("service")
            .into_iter()
            .filter(|p| p.start_ns >= t0)
            .collect()
    };
    (recent("a"), recent("b"), [delta("a"), delta("b")])
}

#[test]
fn synchronized_pauses_start_together_and_each_service_pays_its_own_debt() {
    use slowpoke_agent::actuator::PauseKind;
    let (sa, sb) = (single_threaded_server(), single_threaded_server());
    let state = TempDir::new("e2e-sync");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A is stopped most of the time by design here: lift the cap.
    let agent = rt
        .block_on(slowpoke_agent::Agent::start(slowpoke_agent::AgentConfig {
            max_stopped_share: 1.0,
            ..agent_util::test_config(&state)
        }))
        .expect("agent");
    for (name, port) in [("a", sa.port), ("b", sb.port)] {
        agent
            .put_service(
                name,
                slowpoke_agent::api::ServiceSpec {
                    ports: Some(vec![port]),
                    ..Default::default()
                },
            )
            .expect("register");
    }
    realtime_client();
    let rounds = 40;
    // A: 2 ms per visit, a quantum pause at every visit; B: 0.4 ms per visit, below the 1 ms
    // quantum, so on its own B pays only when idle or at the end.
    let delays = (2_000_000, 400_000);
    let ports = (sa.port, sb.port);

    let (_, b_free, _) = sync_run(&agent, ports, delays, false, rounds);
    let (ra, rb, [da, db]) = sync_run(&agent, ports, delays, true, rounds);

    let sync = skews(&ra, &rb, PauseKind::Synchronized);
    let starts: Vec<i64> = sync.iter().map(|s| s.0).collect();
    let overlapping = sync.iter().filter(|s| s.1).count();
    let kernel_a = ra.iter().filter(|p| p.kind == PauseKind::Kernel).count();
    eprintln!(
        "unsynchronized: B paused {} times ({:?}); synchronized: A {} quantum pauses, B {} \
         synchronized pauses, B start − A start median {} µs, p90 {} µs, max {} µs, {} of them \
         inside A's pause",
        b_free.len(),
        b_free
            .iter()
            .map(|p| p.kind)
            .collect::<std::collections::BTreeSet<_>>(),
        kernel_a,
        sync.len(),
        percentile(&starts, 0.5) / 1000,
        percentile(&starts, 0.9) / 1000,
        percentile(&starts, 1.0) / 1000,
        overlapping
    );
    for (name, d) in [("a", da), ("b", db)] {
        eprintln!(
            "{name}: pause_ns {:.3} ms, owed {:.3} ms, dropped {}, pauses {}",
            d[0] as f64 / 1e6,
            d[1] as f64 / 1e6,
            d[2],
            d[3]
        );
    }
    // Without synchronization B (below the quantum) does not pause at A's pauses.
    assert!(
        b_free.iter().all(|p| p.kind != PauseKind::Synchronized),
        "{b_free:?}"
    );
    // What synchronization means, with bounds a loaded 2-core VM keeps (how close the pauses
    // are — median, p90, overlap — is a goal measured by `cargo xtask bench agent -- --only
    // sync`, not asserted here). Every A visit is a quantum pause (but for a visit that comes
    // before A's pause thread has re-armed the trigger: its debt goes with the next one). B pays
    // at A's pauses but the first (nothing owed yet); when B's pause thread is scheduled late
    // (CI runs saw B start up to 2.8 ms after A, past the end of A's 2 ms pause), B is still
    // paying when A's next pause comes and that one is skipped: B's debt goes with the next
    // (CI runs saw 37 of 40 and 33 of 39). The debt itself is never lost (the exact owed/paid
    // checks below).
    assert!(kernel_a * 5 >= rounds * 4, "{ra:?}");
    assert!(
        sync.len() * 2 >= kernel_a,
        "{} synchronized pauses of B for {kernel_a} quantum pauses of A",
        sync.len()
    );
    // A synchronized pause is caused by A's: B never stops before A, and mostly while A is
    // still stopped (CI's worst run: 27 of 33).
    assert!(
        percentile(&starts, 0.0) >= 0,
        "B never stops before A: {starts:?}"
    );
    assert!(
        overlapping * 2 > sync.len(),
        "B's pauses start inside A's: {sync:?}"
    );
    // Each service still pays exactly its own debt: in this run up to the oversleep carried in
    // from the previous one and out to the next, and in total since registration paid ≥ owed −
    // dropped by less than the last pause's overshoot.
    let total = agent.stats();
    for (name, d, want) in [
        ("a", da, rounds as u64 * delays.0),
        ("b", db, rounds as u64 * delays.1),
    ] {
        assert_eq!(d[1], want, "{name}: owed");
        assert_eq!(d[2], 0, "{name}: nothing dropped");
        assert!(
            d[0].abs_diff(want) <= 1_000_000,
            "{name}: pause_ns {} for {want} owed",
            d[0]
        );
        let t = &total.services[name];
        let over = t.pause_ns as i64 - (t.owed_ns - t.dropped_ns) as i64;
        assert!(
            (0..=1_000_000).contains(&over),
            "{name}: paid {} ns for {} owed − {} dropped",
            t.pause_ns,
            t.owed_ns,
            t.dropped_ns
        );
    }
    rt.block_on(agent.shutdown());
}

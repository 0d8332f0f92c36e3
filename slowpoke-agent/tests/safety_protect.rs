//! Protected processes (issue #13, item 3): the agent never stops pid 1, kernel threads, itself,
//! its guardian, the processes of its cgroup or a protected name (an `sshd`, a `systemd`), nor,
//! when confined, processes outside `--allow-uid` / `--allow-cgroup` — whatever a selector says,
//! at registration, at every later resolution and in the kernel. Pid selectors take process ids,
//! not thread ids.
//!
//! Each test fails on the agent before protection: there pid 1 and thread ids were refused or
//! accepted without a reason, `comm:systemd`, a cgroup holding the agent and an sshd's port were
//! accepted, nothing was listed as excluded, and the kernel stopped a process it counted only
//! through its cgroup.

mod agent_util;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agent_util::{
    AgentProc, Proc, TempDir, call, json, proc_state, single_threaded_server, spawn_listening,
};
use slowpoke_testkit::{cgroup::ScratchCgroup, hostile};

/// `dir/name`, a symlink to `target`: a program started through it is named `name` in
/// `/proc/PID/comm` (the kernel names a process after the path it executed).
fn named(dir: &Path, name: &str, target: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(target, &link).expect("symlink");
    link
}

/// A single-threaded HTTP/1.0 server whose process is named `sshd` (Python started through a
/// link of that name), listening on a free port: what an sshd looks like to a selector.
fn sshd_like_server(dir: &Path) -> Proc {
    let sshd = named(dir, "sshd", "/usr/bin/python3");
    let (child, port) = spawn_listening("an sshd-like server", |port| {
        let script = format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        );
        let mut c = Command::new(&sshd);
        c.args(["-c", &script]).stdout(Stdio::null());
        c
    });
    let p = Proc {
        child,
        port,
        dir: None,
    };
    assert_eq!(comm(p.pid()), "sshd");
    p
}

/// A sleeping process named `name`.
fn named_sleeper(dir: &Path, name: &str) -> Proc {
    let child = Command::new(named(dir, name, "/bin/sleep"))
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning a named sleeper");
    Proc {
        child,
        port: 0,
        dir: None,
    }
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// One HTTP/1.0 GET on a fresh connection; panics unless the server answers.
fn get(port: u16, path: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("receive");
    assert!(buf.starts_with(b"HTTP/1."), "an HTTP answer from :{port}");
}

fn put_service(agent: &AgentProc, name: &str, spec: &str) -> (u16, serde_json::Value) {
    let (code, body) = call(
        "PUT",
        &format!("{}/v1/services/{name}", agent.url),
        Some(spec),
        Some(&agent.token),
    );
    (code, json(&body))
}

/// `excluded` of a service answer as (pid, reason) pairs.
fn excluded(info: &serde_json::Value) -> Vec<(u32, String)> {
    info["excluded"]
        .as_array()
        .unwrap_or_else(|| panic!("no `excluded` list in {info}"))
        .iter()
        .map(|e| {
            (
                e["pid"].as_u64().expect("pid") as u32,
                e["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect()
}

fn pids(info: &serde_json::Value) -> Vec<u32> {
    info["pids"]
        .as_array()
        .unwrap_or_else(|| panic!("no pids in {info}"))
        .iter()
        .map(|p| p.as_u64().expect("pid") as u32)
        .collect()
}

/// Samples the state of processes every 100 µs from its own thread until [`StopWatch::finish`]:
/// a stop of even one pause quantum (1 ms) is seen. The thread runs at real-time priority (when
/// allowed) so that the test servers, which do too, cannot starve it.
struct StopWatch {
    done: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<u32>)>,
}

impl StopWatch {
    /// Returns once the first sample is taken.
    fn start(pids: &[u32]) -> StopWatch {
        let done = Arc::new(AtomicBool::new(false));
        let (d, pids) = (done.clone(), pids.to_vec());
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 10 };
            // SAFETY: sets the policy of the calling thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
            let mut samples = 0;
            let mut stopped = Vec::new();
            while !d.load(Ordering::Relaxed) {
                for &p in &pids {
                    if matches!(proc_state(p), Some('T' | 't')) && !stopped.contains(&p) {
                        stopped.push(p);
                    }
                }
                samples += 1;
                if samples == 1 {
                    let _ = ready.send(());
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            (samples, stopped)
        });
        started.recv().expect("the stop watch started");
        StopWatch { done, thread }
    }

    /// The processes seen stopped (asserting the watch really ran).
    fn finish(self) -> Vec<u32> {
        self.done.store(true, Ordering::Relaxed);
        let (samples, stopped) = self.thread.join().expect("stop watch");
        assert!(samples >= 10, "the stop watch sampled only {samples} times");
        stopped
    }
}

fn set_plan(agent: &AgentProc, service: &str, delay_ns: u64) {
    let body = format!(
        "{{\"mode\":\"pause\",\"services\":{{\"{service}\":{{\"delay_per_visit_ns\":{delay_ns}}}}}}}"
    );
    let (code, b) = call(
        "PUT",
        &format!("{}/v1/slowdown", agent.url),
        Some(&body),
        Some(&agent.token),
    );
    assert_eq!(code, 200, "{b}");
}

fn service_stats(agent: &AgentProc, service: &str) -> serde_json::Value {
    let (code, b) = call(
        "GET",
        &format!("{}/v1/stats", agent.url),
        None,
        Some(&agent.token),
    );
    assert_eq!(code, 200, "{b}");
    json(&b)["services"][service].clone()
}

#[test]
fn pid_1_kernel_threads_thread_ids_and_protected_names_are_refused_with_the_reason() {
    let dir = TempDir::new("protect-names");
    let state = TempDir::new("protect-names-state");
    let agent = AgentProc::start(&state, &[]);

    let (code, e) = put_service(&agent, "init", r#"{"pids":[1]}"#);
    assert_eq!(code, 403, "{e}");
    let msg = e["error"].as_str().expect("error");
    assert!(
        msg.contains("1 (") && msg.contains("pid 1, the node's init"),
        "{msg}"
    );

    if comm(2) == "kthreadd" {
        let (code, e) = put_service(&agent, "kthreadd", r#"{"pids":[2]}"#);
        assert_eq!(code, 403, "{e}");
        assert!(
            e["error"].as_str().unwrap().contains("a kernel thread"),
            "{e}"
        );
    }

    // A thread of a multi-threaded process: refused naming the thread and its process.
    let script = "import threading, time\n\
                  t = threading.Thread(target=time.sleep, args=(1000,), daemon=True); t.start()\n\
                  print(t.native_id, flush=True); time.sleep(1000)\n";
    let mut threaded = Proc {
        child: Command::new("python3")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
        port: 0,
        dir: None,
    };
    let mut line = String::new();
    BufReader::new(threaded.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("thread id");
    let (tid, pid) = (
        line.trim().parse::<u32>().expect("a thread id"),
        threaded.pid(),
    );
    assert_ne!(tid, pid);
    let (code, e) = put_service(&agent, "thread", &format!(r#"{{"pids":[{tid}]}}"#));
    assert_eq!(code, 400, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{tid} is a thread of process {pid} (python3)")),
        "{msg}"
    );
    // Its process is fine.
    let (code, info) = put_service(&agent, "thread", &format!(r#"{{"pids":[{pid}]}}"#));
    assert_eq!((code, pids(&info)), (200, vec![pid]), "{info}");
    assert_eq!(excluded(&info), vec![]);

    // A process named systemd (the default deny list).
    let systemd = named_sleeper(dir.path(), "systemd");
    let (code, e) = put_service(&agent, "systemd", r#"{"comm":"systemd"}"#);
    assert_eq!(code, 403, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!("{} (systemd)", systemd.pid()))
            && msg.contains("the protected name \"systemd\" (--protect-comm)"),
        "{msg}"
    );
    let (code, list) = call(
        "GET",
        &format!("{}/v1/services", agent.url),
        None,
        Some(&agent.token),
    );
    assert_eq!(code, 200);
    let list = json(&list);
    for refused in ["init", "kthreadd", "systemd"] {
        assert!(list["services"].get(refused).is_none(), "{list}");
    }
}

/// The agent in a cgroup of its own, next to a server in a sibling cgroup: a selector of the
/// agent's cgroup is refused; one of the parent (agent + server), with the agent's own API port
/// among its visit ports, keeps the server only, and under a plan the agent is never stopped.
#[test]
fn a_cgroup_holding_the_agent_is_refused_or_leaves_it_out_and_it_is_never_stopped() {
    let mut cgroup = ScratchCgroup::new("protect-agent");
    let agent_dir = cgroup.child("agent");
    let app_dir = cgroup.child("app");
    let state = TempDir::new("protect-agent-state");
    let agent = AgentProc::start(&state, &[]);
    let guardian = agent.guardian_pid();
    cgroup.add(&agent_dir, agent.pid());
    let server = single_threaded_server();
    cgroup.add(&app_dir, server.pid());
    // A process that joined the agent's cgroup is protected with it.
    let sleeper = agent_util::sleeper();
    cgroup.add(&agent_dir, sleeper.pid());

    let (code, e) = put_service(
        &agent,
        "agent",
        &format!(r#"{{"cgroup":"{}"}}"#, agent_dir.display()),
    );
    assert_eq!(code, 403, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "{} (slowpoke-agent): the agent itself",
            agent.pid()
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{} (sleep): in the agent's cgroup", sleeper.pid())),
        "{msg}"
    );

    let api_port: u16 = agent.url.rsplit(':').next().unwrap().parse().unwrap();
    let (code, info) = put_service(
        &agent,
        "app",
        &format!(
            r#"{{"cgroup":"{}","listen_ports":[{},{api_port}]}}"#,
            cgroup.path().display(),
            server.port
        ),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(pids(&info), vec![server.pid()], "{info}");
    let out = excluded(&info);
    assert!(
        out.contains(&(agent.pid(), "the agent itself".into())),
        "{out:?}"
    );
    assert!(out.iter().any(|(p, _)| *p == sleeper.pid()), "{out:?}");

    set_plan(&agent, "app", 20_000_000);
    let watch = StopWatch::start(&[agent.pid(), guardian]);
    for _ in 0..15 {
        get(server.port, "/");
        get(api_port, "/v1/health");
    }
    let stopped = watch.finish();
    let stats = service_stats(&agent, "app");
    assert!(
        stopped.is_empty(),
        "stopped under the plan: {stopped:?} (agent {}, guardian {guardian})",
        agent.pid()
    );
    assert!(
        stats["pauses"].as_u64().unwrap() > 0,
        "the server was paused: {stats}"
    );
    // Resolver passes keep it that way.
    let (code, info) = call(
        "GET",
        &format!("{}/v1/services/app", agent.url),
        None,
        Some(&agent.token),
    );
    assert_eq!(code, 200);
    assert_eq!(pids(&json(&info)), vec![server.pid()], "{info}");
    drop(agent); // out of the scratch cgroup before it is removed
}

/// An sshd-like server: refused by port; left out of a cgroup it shares with a real member, and
/// never stopped under a plan with a large delay while both are visited.
#[test]
fn an_sshd_like_server_is_refused_or_excluded_and_never_stopped_under_a_plan() {
    let dir = TempDir::new("protect-sshd");
    let cgroup = ScratchCgroup::new("protect-sshd");
    let sshd = sshd_like_server(dir.path());
    let server = single_threaded_server();
    cgroup.add(cgroup.path(), sshd.pid());
    cgroup.add(cgroup.path(), server.pid());
    let state = TempDir::new("protect-sshd-state");
    let agent = AgentProc::start(&state, &[]);
    let guardian = agent.guardian_pid();

    let (code, e) = put_service(&agent, "ssh", &format!(r#"{{"ports":[{}]}}"#, sshd.port));
    assert_eq!(code, 403, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "{} (sshd): its name matches the protected name \"sshd*\"",
            sshd.pid()
        )),
        "{msg}"
    );

    let (code, info) = put_service(
        &agent,
        "app",
        &format!(
            r#"{{"cgroup":"{}","listen_ports":[{},{}]}}"#,
            cgroup.path().display(),
            server.port,
            sshd.port
        ),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(pids(&info), vec![server.pid()], "{info}");
    assert_eq!(info["excluded"][0]["comm"], "sshd", "{info}");
    assert_eq!(excluded(&info).len(), 1, "{info}");

    set_plan(&agent, "app", 50_000_000);
    let watch = StopWatch::start(&[sshd.pid(), agent.pid(), guardian]);
    for _ in 0..10 {
        get(server.port, "/");
        get(sshd.port, "/");
    }
    let stopped = watch.finish();
    let stats = service_stats(&agent, "app");
    assert!(stopped.is_empty(), "stopped under the plan: {stopped:?}");
    assert!(
        stats["pauses"].as_u64().unwrap() > 0,
        "the server was paused: {stats}"
    );
    assert!(stats.get("denied_stops").is_some(), "{stats}");
    let (code, metrics) = call(
        "GET",
        &format!("{}/metrics", agent.url),
        None,
        Some(&agent.token),
    );
    assert_eq!(code, 200);
    assert!(
        metrics.contains("slowpoke_denied_stops_total{service=\"app\"}"),
        "{metrics}"
    );
    drop(agent);
}

/// A protected process that appears in a cgroup the kernel counts as a whole, before the next
/// resolution: the kernel counts its visits but refuses to stop it (`denied_stops`), and the next
/// resolution leaves it out.
#[test]
fn the_kernel_never_stops_a_process_the_agent_has_not_listed() {
    let dir = TempDir::new("protect-newcomer");
    let cgroup = ScratchCgroup::new("protect-newcomer");
    let server = single_threaded_server();
    cgroup.add(cgroup.path(), server.pid());
    let sshd = sshd_like_server(dir.path());
    let state = TempDir::new("protect-newcomer-state");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // No resolution but the ones this test asks for.
    let agent = rt
        .block_on(slowpoke_agent::Agent::start(slowpoke_agent::AgentConfig {
            resolve_interval: Duration::from_hours(1),
            max_stopped_share: 1.0,
            ..agent_util::test_config(&state)
        }))
        .expect("agent");
    assert_eq!(
        agent.health().features.get("kernel").map(String::as_str),
        Some("on"),
        "this test needs the kernel programs"
    );
    let spec = slowpoke_agent::api::ServiceSpec {
        cgroup: Some(cgroup.path().display().to_string()),
        listen_ports: Some(vec![server.port, sshd.port]),
        ..Default::default()
    };
    let info = agent.put_service("app", spec).expect("register");
    assert_eq!(info.pids, vec![server.pid()]);
    // The sshd moves in after the resolution: only its cgroup makes it count.
    cgroup.add(cgroup.path(), sshd.pid());
    let quantum = 1_000_000;
    agent
        .set_slowdown(slowpoke_agent::api::SlowdownPlan {
            quantum_ns: Some(quantum),
            services: [(
                "app".to_owned(),
                slowpoke_agent::api::ServiceDelay {
                    delay_per_visit_ns: quantum,
                },
            )]
            .into(),
            ..Default::default()
        })
        .expect("plan");
    let watch = StopWatch::start(&[sshd.pid()]);
    for _ in 0..30 {
        get(sshd.port, "/");
    }
    let stopped = watch.finish();
    let stats = agent.stats().services["app"].clone();
    assert!(stopped.is_empty(), "the kernel stopped the unlisted sshd");
    assert!(stats.visits >= 30, "its visits count: {stats:?}");
    assert!(stats.denied_stops >= 1, "refused in the kernel: {stats:?}");

    agent.resolve_once();
    let info = agent.service("app").expect("service");
    assert_eq!(info.pids, vec![server.pid()]);
    assert!(
        info.excluded
            .iter()
            .any(|e| e.pid == sshd.pid() && e.reason.contains("protected name")),
        "{info:?}"
    );
    rt.block_on(agent.shutdown());
}

/// `--allow-cgroup` and `--allow-uid` confine the agent to one tenant; `--protect-comm` replaces
/// the default names.
#[test]
fn allow_cgroup_and_allow_uid_confine_the_agent_to_one_tenant() {
    let dir = TempDir::new("protect-tenant");
    let tenant = ScratchCgroup::new("protect-tenant");
    let inside = single_threaded_server();
    let outside = single_threaded_server();
    tenant.add(tenant.path(), inside.pid());
    let systemd = named_sleeper(dir.path(), "systemd");
    tenant.add(tenant.path(), systemd.pid());
    let state = TempDir::new("protect-tenant-state");
    let tenant_dir = tenant.path().display().to_string();
    let agent = AgentProc::start(
        &state,
        &["--allow-cgroup", &tenant_dir, "--protect-comm", "sshd"],
    );

    let (code, info) = put_service(
        &agent,
        "web",
        &format!(r#"{{"ports":[{},{}]}}"#, inside.port, outside.port),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(pids(&info), vec![inside.pid()], "{info}");
    assert_eq!(
        excluded(&info),
        vec![(
            outside.pid(),
            "outside the cgroups allowed by --allow-cgroup".to_owned()
        )]
    );
    let (code, e) = put_service(&agent, "out", &format!(r#"{{"ports":[{}]}}"#, outside.port));
    assert_eq!(code, 403, "{e}");
    // The names given replace the default list: systemd may be selected here.
    let (code, info) = put_service(&agent, "named", r#"{"comm":"systemd"}"#);
    assert_eq!((code, pids(&info)), (200, vec![systemd.pid()]), "{info}");
    drop(agent);

    let state = TempDir::new("protect-uid-state");
    let (nobody, _) = hostile::nobody();
    let agent = AgentProc::start(&state, &["--allow-uid", &nobody.to_string()]);
    let mut cmd = Command::new("sleep");
    hostile::as_nobody(cmd.arg("1000"));
    let theirs = Proc {
        child: cmd.spawn().expect("sleep as nobody"),
        port: 0,
        dir: None,
    };
    let root = agent_util::sleeper();
    let (code, info) = put_service(
        &agent,
        "tenant",
        &format!(r#"{{"pids":[{},{}]}}"#, theirs.pid(), root.pid()),
    );
    assert_eq!(code, 200, "{info}");
    assert_eq!(pids(&info), vec![theirs.pid()], "{info}");
    assert_eq!(
        excluded(&info),
        vec![(
            root.pid(),
            "runs as uid 0, not allowed by --allow-uid".to_owned()
        )]
    );
}

/// The agent beats the kernel's heartbeat (item 5): with the agent running the kernel stops the
/// visiting process itself (no stale stop); with the agent stopped by an outsider the beats stop
/// with it and the kernel stops nothing, so a member is never left stopped by a kernel nobody
/// answers.
#[test]
fn the_kernel_heartbeat_lives_and_stops_with_the_agent() {
    let server = single_threaded_server();
    let state = TempDir::new("protect-heartbeat-state");
    let agent = AgentProc::start(&state, &["--max-stopped-share", "1"]);
    let (code, info) = put_service(&agent, "web", &format!(r#"{{"ports":[{}]}}"#, server.port));
    assert_eq!(code, 200, "{info}");
    set_plan(&agent, "web", 5_000_000);
    get(server.port, "/");
    let s = service_stats(&agent, "web");
    assert!(s["pauses"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["stale_stops"], 0, "the heartbeat was fresh: {s}");

    // SAFETY: signals to the agent this test started.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGSTOP) };
    // What is under test is the heartbeat's age: let it pass the kernel's 250 ms maximum.
    std::thread::sleep(Duration::from_millis(400));
    let watch = StopWatch::start(&[server.pid()]);
    for _ in 0..5 {
        get(server.port, "/");
    }
    let stopped = watch.finish();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGCONT) };
    assert!(
        stopped.is_empty(),
        "the kernel stopped a member of a stopped agent"
    );
    let s = service_stats(&agent, "web");
    assert!(s["stale_stops"].as_u64().unwrap() >= 1, "{s}");
}

/// An agent without `CAP_KILL` (a unit or container that dropped it) cannot stop another user's
/// process: that stop is refused (`EPERM`), counted and said, never counted as a pause taken;
/// the root-owned member of the same service is still paused.
#[test]
fn a_stop_the_kernel_refuses_is_counted_and_said_not_taken_for_a_pause() {
    let mut theirs = Command::new("sleep");
    theirs.arg("1000").stdin(Stdio::null());
    hostile::as_nobody(&mut theirs);
    let theirs = Proc {
        child: theirs.spawn().expect("sleep as nobody"),
        port: 0,
        dir: None,
    };
    let ours = agent_util::sleeper();
    let state = TempDir::new("pr-nokill");
    let agent = AgentProc::start_with(&state, &[], |c| {
        hostile::without_cap_kill(c);
    });
    let (code, info) = put_service(
        &agent,
        "mixed",
        &format!("{{\"pids\":[{},{}]}}", ours.pid(), theirs.pid()),
    );
    assert_eq!(code, 200, "{info}");

    let (code, body) = agent.call("POST", "/v1/debug/pause/mixed?ns=200000000", None);
    assert_eq!(code, 200, "{body}");
    let out = json(&body);
    assert_eq!(out["pids"], serde_json::json!([ours.pid()]), "{out}");
    assert_eq!(out["refused"], serde_json::json!([theirs.pid()]), "{out}");
    assert!(out["achieved_ns"].as_u64() >= Some(150_000_000), "{out}");
    assert!(!agent_util::is_stopped(theirs.pid()));
    assert_eq!(agent.call("DELETE", "/v1/services/mixed", None).0, 204);

    // Only the refused member: no pause is taken at all.
    let (code, info) = put_service(
        &agent,
        "theirs",
        &format!("{{\"pids\":[{}]}}", theirs.pid()),
    );
    assert_eq!(code, 200, "{info}");
    let (code, body) = agent.call("POST", "/v1/debug/pause/theirs?ns=200000000", None);
    assert_eq!(code, 200, "{body}");
    let out = json(&body);
    assert_eq!(
        (out["achieved_ns"].as_u64(), out["pids"].clone()),
        (Some(0), serde_json::json!([])),
        "{out}"
    );
    let stats = service_stats(&agent, "theirs");
    assert_eq!(stats["refused_stops"], 1, "{stats}");
    assert!(
        stats["warnings"].to_string().contains("CAP_KILL"),
        "the refusal is said: {stats}"
    );
    let (_, metrics) = agent.call("GET", "/metrics", None);
    assert!(
        metrics.contains("slowpoke_refused_stops_total{service=\"theirs\"} 1\n"),
        "{metrics}"
    );
}

/// The kernel programs stop a visiting process themselves when its service's debt reaches the
/// quantum. An agent without `CAP_KILL` could not resume another user's process stopped that way,
/// and it stayed stopped after the agent was gone (found running the agent's image under podman
/// with the capability dropped: nginx's `nobody` worker). Without `CAP_KILL` the kernel must not
/// stop anything: the agent's own stop is refused and counted, and the server keeps answering.
#[test]
fn without_cap_kill_the_kernel_never_stops_another_users_process() {
    let (child, port) = spawn_listening("python3 -m http.server as nobody", |port| {
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            "/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        hostile::as_nobody(&mut c);
        // Its own session, as a server started by a service manager: SIGCONT from the same
        // session is allowed whatever the user, which would hide the danger.
        // SAFETY: setsid(2) in the child before exec; async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    });
    let server = Proc {
        child,
        port,
        dir: None,
    };
    let state = TempDir::new("pr-nokill-kernel");
    let agent = AgentProc::start_with(&state, &[], |c| {
        hostile::without_cap_kill(c);
    });
    let (code, info) = put_service(&agent, "theirs", &format!("{{\"ports\":[{port}]}}"));
    assert_eq!(code, 200, "{info}");
    // 5 ms owed per visit: the debt passes the quantum within a few requests.
    let plan = r#"{"mode":"pause","services":{"theirs":{"delay_per_visit_ns":5000000}}}"#;
    let (code, body) = agent.call("PUT", "/v1/slowdown", Some(plan));
    assert_eq!(code, 200, "{body}");
    for i in 0..30 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("request {i}: no answer ({e}): the server was stopped"));
        assert!(answer.starts_with(b"HTTP/1.0 200"), "request {i}");
        assert_ne!(
            proc_state(server.pid()),
            Some('T'),
            "stopped after request {i}"
        );
    }
    let stats = service_stats(&agent, "theirs");
    assert!(
        stats["refused_stops"].as_u64() >= Some(1),
        "the agent's own stop was tried and refused: {stats}"
    );
    assert_eq!(agent.call("DELETE", "/v1/slowdown", None).0, 204);
    drop(agent);
    assert_ne!(proc_state(server.pid()), Some('T'));
}

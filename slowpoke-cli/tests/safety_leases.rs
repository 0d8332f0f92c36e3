//! A coordinator killed with SIGKILL in the middle of an experiment leaves nothing slowed down
//! for longer than its lease: `slowpoke what-if --lease 2` runs as a child process against an
//! agent served over HTTP (the agent library with its kernel programs, in this test process) on a
//! real app (nginx + memcached); it is killed while its slowed-down window runs (seen in the
//! agent's `GET /v1/slowdown`, not guessed with a sleep). Within lease + 1 s the plan is gone, the
//! lapse is counted, and every member of every service runs under the app's traffic. Runs as root.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use slowpoke_agent::{Agent, AgentConfig, Auth};
use slowpoke_testkit::{NginxMemcached, TempDir, children, is_stopped, wait_for};

/// The app's own users: GETs from two threads until dropped (at most 30 s).
struct Users {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Users {
    fn start(url: &str) -> Users {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let (stop, url) = (Arc::clone(&stop), url.to_owned());
                std::thread::spawn(move || {
                    let until = Instant::now() + Duration::from_secs(30);
                    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                        let _ = ureq::get(&url).timeout(Duration::from_secs(5)).call();
                    }
                })
            })
            .collect();
        Users { stop, threads }
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

const TOKEN: &str = "lease-test-token";

#[test]
fn a_coordinator_killed_mid_experiment_leaves_nothing_slowed_after_its_lease() {
    let app = NginxMemcached::start(1);
    let members: Vec<u32> = [app.nginx.pid(), app.memcached.pid()]
        .into_iter()
        .chain(children(app.nginx.pid()))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let state = TempDir::new("lease-kill-agent");
    let agent = rt
        .block_on(Agent::start(AgentConfig {
            state_dir: state.path().to_path_buf(),
            ..AgentConfig::default()
        }))
        .expect("start the agent (root and the kernel programs are needed)");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let agent_url = format!("http://{addr}");
    // Over TCP every call needs the token (docs/security.md); the coordinator reads it from a
    // private file.
    let router = agent.router(Auth::for_listen(addr, Some(TOKEN)).expect("auth"));
    rt.spawn(slowpoke_agent::http::serve_tcp(
        listener,
        router,
        std::future::pending(),
    ));

    let results = TempDir::new("lease-kill-results");
    let token_file = results.path().join("agent.token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("token file mode");
    let log = results.path().join("slowpoke.log");
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_slowpoke"))
        .args(["what-if", "--service"])
        .arg(format!("web=port:{}", app.nginx.port))
        .arg("--service")
        .arg(format!("cache=port:{}", app.memcached.port))
        .args(["--entry", &app.url, "--target", "web", "--percent", "30"])
        .args(["--agent", &agent_url, "--lease", "2", "--agent-token-file"])
        .arg(&token_file)
        .args(["--warmup", "0.5", "--duration", "1", "--repetitions", "3"])
        .args(["--precision", "0", "--json", "--results-dir"])
        .arg(results.path())
        .env_remove("SLOWPOKE_AGENT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("running slowpoke");
    let says = || std::fs::read_to_string(&log).unwrap_or_default();

    // The slowed-down window runs when the agent holds the coordinator's plan.
    let held = wait_for(
        Duration::from_mins(1),
        "the coordinator's plan on the agent",
        || {
            if let Ok(Some(st)) = coordinator.try_wait() {
                panic!(
                    "slowpoke ended ({st}) before its plan was seen:\n{}",
                    says()
                );
            }
            let plan = agent.slowdown();
            (!plan.services.is_empty()).then_some(plan)
        },
    );
    let owner = held.owner.clone().unwrap_or_default();
    assert!(owner.contains("-whatif-web"), "owner {owner:?}: {held:?}");
    assert_eq!(held.lease_ms, Some(2000), "{held:?}");
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(coordinator.id() as i32, libc::SIGKILL) },
        0
    );
    let killed = Instant::now();
    let _ = coordinator.wait();
    let _users = Users::start(&app.url);

    // Nobody renews any more: the agent removes the plan within lease + 1 s.
    wait_for(
        Duration::from_secs(3),
        "the dead coordinator's plan removed",
        || agent.slowdown().services.is_empty().then_some(()),
    );
    let gone = killed.elapsed();
    assert!(
        gone <= Duration::from_secs(3),
        "plan removed {gone:?} after the kill"
    );
    assert_eq!(agent.leases_expired(), 1, "the lapse is counted");
    // Every member runs under the app's traffic, with nothing left to stop it.
    for _ in 0..50 {
        for &p in &members {
            assert!(!is_stopped(p), "member {p} stopped after the lease lapsed");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    rt.block_on(agent.shutdown());
}

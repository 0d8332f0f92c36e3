//! Issue #13, transport, the clients' side: `slowpoke` reaches a running agent daemon through its
//! Unix socket (found under the agent's state directory, checked before use, never given a
//! token), still reaches TCP agents with `--agent http://... --agent-token-file`, and never
//! probes a TCP port of its own accord (whatever listens on 127.0.0.1:7171 gets nothing).
//! The real `slowpoke-agent` binary with its kernel programs; runs as root.

use std::{
    io::Read as _,
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use slowpoke_testkit::{TempDir, free_port, python_http_server, wait_for, workspace_bin};

/// A `slowpoke-agent` daemon on `state` (socket `state/agent.sock`), also on TCP with a token
/// file; its log in `state/agent.log`. Killed on drop.
struct Daemon {
    child: Child,
    url: String,
    token_file: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(state: &TempDir) -> Daemon {
        let token_file = state.path().join("token");
        std::fs::write(&token_file, "clients-s3cret\n").expect("token file");
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let log = state.path().join("agent.log");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(workspace_bin("slowpoke-agent"))
            .arg("--state-dir")
            .arg(state.path())
            .args(["--listen", &listen, "--token-file"])
            .arg(&token_file)
            .args(["--log-level", "warn"])
            .env_remove("SLOWPOKE_AGENT_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawning slowpoke-agent");
        let socket = state.path().join("agent.sock");
        wait_for(Duration::from_secs(30), "the agent's socket", || {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "the agent exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            socket.exists().then_some(())
        });
        Daemon {
            child,
            url: format!("http://{listen}"),
            token_file,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slowpoke(args: &[&str]) -> Output {
    let results = TempDir::new("clients-results");
    Command::new(workspace_bin("slowpoke"))
        .args(args)
        .env("SLOWPOKE_RESULTS_DIR", results.path())
        // A token in the environment: it must not travel anywhere unasked.
        .env("SLOWPOKE_AGENT_TOKEN", "clients-s3cret")
        .output()
        .expect("running slowpoke")
}

fn agents_json(args: &[&str]) -> serde_json::Value {
    let out = slowpoke(&[&["agents", "--json"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Counts connections to 127.0.0.1:7171 while it lives (None when the port is taken).
fn watch_7171() -> Option<Arc<AtomicUsize>> {
    let listener = TcpListener::bind("127.0.0.1:7171").ok()?;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut s) = s {
                let mut buf = [0u8; 1024];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut buf);
            }
        }
    });
    Some(seen)
}

#[test]
fn slowpoke_reaches_the_daemon_through_its_socket_and_tcp_agents_with_the_token() {
    let state = TempDir::new("clients-agent");
    let agent = Daemon::start(&state);
    let socket_url = format!("unix:{}", state.path().join("agent.sock").display());

    // Through the socket: the whole health (features), no token needed.
    let rows = agents_json(&["--agent", &socket_url]);
    assert_eq!(rows[0]["healthy"], true, "{rows}");
    assert!(rows[0]["features"]["guardian"].is_string(), "{rows}");
    let triple = format!("unix://{}", state.path().join("agent.sock").display());
    assert_eq!(agents_json(&["--agent", &triple])[0]["healthy"], true);
    // Over TCP with the token file: the same.
    let token_file = agent.token_file.display().to_string();
    let rows = agents_json(&["--agent", &agent.url, "--agent-token-file", &token_file]);
    assert!(rows[0]["features"]["guardian"].is_string(), "{rows}");

    // No --agent: the daemon is found through its socket under --agent-state-dir, and used.
    let watch = watch_7171();
    let entry = python_http_server();
    let entry_url = format!("http://127.0.0.1:{}/", entry.port);
    let out = slowpoke(&[
        "what-if",
        "--service",
        "cart=comm:no-such-proc-zz",
        "--entry",
        &entry_url,
        "--target",
        "cart",
        "--speedup",
        "2x",
        "--warmup",
        "0",
        "--agent-state-dir",
        &state.path().display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("agent {socket_url} refused PUT /v1/services/cart"))
            && err.contains("matches no process"),
        "the daemon, through its socket: {err}"
    );
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("(socket)")
            && l.contains("/v1/services/cart")),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("audit") && l.contains("(tcp)")),
        "nothing over TCP: {log}"
    );
    match watch {
        Some(seen) => assert_eq!(seen.load(Ordering::SeqCst), 0, "127.0.0.1:7171 was probed"),
        None => eprintln!("127.0.0.1:7171 is taken: the no-probe check is skipped"),
    }
}

/// `what-if` with the agent's state directory `dir` and nothing that could run: its error.
fn what_if_error(dir: &Path, entry: &str) -> String {
    let out = slowpoke(&[
        "what-if",
        "--service",
        "cart=comm:no-such-proc-zz",
        "--entry",
        entry,
        "--target",
        "cart",
        "--speedup",
        "2x",
        "--agent-state-dir",
        &dir.display().to_string(),
    ]);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_socket_that_is_not_roots_or_open_to_all_is_refused() {
    let dir = TempDir::new("clients-fake");
    let socket = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let app = python_http_server();
    let entry = format!("http://127.0.0.1:{}/", app.port);
    std::os::unix::fs::chown(&socket, Some(65_534), None).expect("chown");
    let err = what_if_error(dir.path(), &entry);
    assert!(
        err.contains("refusing the agent socket") && err.contains("uid 65534"),
        "{err}"
    );
    std::os::unix::fs::chown(&socket, Some(0), None).expect("chown");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let err = what_if_error(dir.path(), &entry);
    assert!(err.contains("lets anyone write"), "{err}");
}

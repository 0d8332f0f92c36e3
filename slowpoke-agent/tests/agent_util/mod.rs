//! Shared helpers of the agent tests: real servers, agents (library and binary), HTTP calls,
//! polling with deadlines (never sleeps as synchronisation).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use slowpoke_agent::{Agent, AgentConfig};
// The generic pieces come from the shared test kit (crate slowpoke-testkit); not every test binary
// uses every one.
#[allow(unused_imports)]
pub use slowpoke_testkit::{TempDir, children, free_port, is_stopped, proc_state, wait_for};

/// A child process killed on drop (continued first, should a test have left it stopped).
pub struct Proc {
    pub child: Child,
    pub port: u16,
    pub dir: Option<TempDir>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signals to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
            if self.dir.is_some() {
                // nginx: the master takes its workers down with it on SIGTERM... unless stopped.
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the command `make(port)` builds on a free port and waits until that very process (or
/// a child of it) listens there, retrying on another port if it exits first: testkit's
/// [`start_listening`](slowpoke_testkit::start_listening).
pub fn spawn_listening(what: &str, mut make: impl FnMut(u16) -> Command) -> (Child, u16) {
    slowpoke_testkit::start_listening(what, |port| {
        make(port)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what}: {e}"))
    })
}

/// A long sleeper (a process to stop and resume).
pub fn sleeper() -> Proc {
    let child = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawning sleep");
    Proc {
        child,
        port: 0,
        dir: None,
    }
}

/// `python3 -m http.server` on a free port (threaded).
pub fn python_http_server() -> Proc {
    let (child, port) = spawn_listening("python3 -m http.server", |port| {
        let mut c = Command::new("python3");
        c.args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        c
    });
    Proc {
        child,
        port,
        dir: None,
    }
}

/// A single-threaded HTTP/1.0 server (one request at a time, a fresh connection each).
pub fn single_threaded_server() -> Proc {
    let (child, port) = spawn_listening("a single-threaded python server", |port| {
        let script = format!(
            "import http.server\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20   def do_GET(self):\n\
             \x20       self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')\n\
             \x20   def log_message(self, *a): pass\n\
             http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
        );
        // Real-time priority (when allowed): the measurement is about pauses, not about the time
        // slices of unrelated CPU hogs on a shared machine.
        let mut cmd = if Path::new("/usr/bin/chrt").exists() {
            let mut c = Command::new("/usr/bin/chrt");
            c.args(["-f", "5", "python3"]);
            c
        } else {
            Command::new("python3")
        };
        cmd.args(["-c", &script]).stdout(Stdio::null());
        cmd
    });
    Proc {
        child,
        port,
        dir: None,
    }
}

/// Debian's nginx, pre-forked with `workers` worker processes, private config in a temp dir.
pub fn nginx(workers: u32) -> Proc {
    let dir = TempDir::new("nginx");
    std::fs::write(dir.path().join("index.html"), "hello\n").expect("writing index.html");
    let (child, port) = spawn_listening("/usr/sbin/nginx", |port| {
        let d = dir.path().display();
        let conf = format!(
            "daemon off; master_process on; worker_processes {workers}; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("writing nginx.conf");
        let mut c = Command::new("/usr/sbin/nginx");
        c.args(["-p", &dir.path().display().to_string(), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    });
    let master = child.id();
    wait_for(Duration::from_secs(10), "nginx workers", || {
        (children(master).len() == workers as usize).then_some(())
    });
    Proc {
        child,
        port,
        dir: Some(dir),
    }
}

/// A library agent for one test: own state dir; with the `test-hooks` feature (`cargo xtask
/// test`) hooks on, so it runs with or without the kernel programs.
pub async fn start_agent(state: &TempDir) -> Agent {
    Agent::start(test_config(state))
        .await
        .unwrap_or_else(|e| panic!("starting the agent: {e}"))
}

pub fn test_config(state: &TempDir) -> AgentConfig {
    AgentConfig {
        state_dir: state.path().to_path_buf(),
        resolve_interval: Duration::from_millis(50),
        #[cfg(feature = "test-hooks")]
        test_hooks: true,
        ..AgentConfig::default()
    }
}

/// The bearer token of the agents these tests reach over TCP.
pub const TOKEN: &str = "agent-test-token";

/// Serves an agent's router on a free loopback port, TCP with the token [`TOKEN`] (as the
/// binary does with `--listen`); returns its base URL.
pub async fn serve(agent: &Agent) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let auth = slowpoke_agent::Auth::for_listen(addr, Some(TOKEN)).expect("auth");
    let app = agent.router(auth);
    tokio::spawn(slowpoke_agent::http::serve_tcp(
        listener,
        app,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// Writes a private (0600) token file into `dir`.
pub fn token_file(dir: &Path, name: &str, token: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("writing a token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// An HTTP call: (status, body). Never panics on 4xx/5xx.
pub fn call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => {
            let s = r.status();
            (s, r.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The binary's hidden test flag, when the hooks are compiled in (the tests that call a hook
/// declare `required-features = ["test-hooks"]` in Cargo.toml).
pub const TEST_HOOKS: &[&str] = if cfg!(feature = "test-hooks") {
    &["--test-hooks"]
} else {
    &[]
};

/// The `slowpoke-agent` binary as a child process, reached over TCP with its token (it serves
/// its Unix socket `STATE_DIR/agent.sock` too).
pub struct AgentProc {
    pub child: Child,
    pub url: String,
    pub token: String,
}

impl AgentProc {
    /// Starts the binary (test hooks on when compiled in) on a free port with a token file and
    /// waits for /v1/health.
    pub fn start(state: &TempDir, extra: &[&str]) -> AgentProc {
        AgentProc::start_with(state, extra, |_| {})
    }

    /// As [`AgentProc::start`], with `customize` applied to the command first (e.g. the test
    /// kit's `hostile::deny_close_range`).
    pub fn start_with(
        state: &TempDir,
        extra: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> AgentProc {
        let port = free_port();
        let token = token_file(state.path(), "token", TOKEN);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slowpoke-agent"));
        cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--state-dir"])
            .arg(state.path())
            .arg("--token-file")
            .arg(&token)
            .args(TEST_HOOKS)
            .args(["--log-level", "warn,audit=warn"])
            .args(extra)
            .env_remove("SLOWPOKE_AGENT_TOKEN")
            .stdout(Stdio::null());
        customize(&mut cmd);
        let child = cmd.spawn().expect("spawning slowpoke-agent");
        let url = format!("http://127.0.0.1:{port}");
        let mut a = AgentProc {
            child,
            url,
            token: TOKEN.to_owned(),
        };
        wait_for(Duration::from_secs(30), "the agent's /v1/health", || {
            if let Ok(Some(st)) = a.child.try_wait() {
                panic!("the agent exited early: {st}");
            }
            (a.call("GET", "/v1/health", None).0 == 200).then_some(())
        });
        a
    }

    /// A call to this agent with its token: (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        call(
            method,
            &format!("{}{path}", self.url),
            body,
            Some(&self.token),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn guardian_pid(&self) -> u32 {
        let (_, body) = self.call("GET", "/v1/health", None);
        let h = json(&body);
        let g = h["features"]["guardian"]
            .as_str()
            .expect("guardian feature")
            .to_string();
        g.trim_start_matches("on (pid ")
            .trim_end_matches(')')
            .parse()
            .unwrap_or_else(|_| panic!("guardian pid in {g:?}"))
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers `pid` as service `svc` of a binary agent and starts a long manual pause of it (test
/// hook) in a thread; returns once the process is stopped.
pub fn stop_through_agent(agent: &AgentProc, pid: u32) -> std::thread::JoinHandle<(u16, String)> {
    let (code, body) = agent.call(
        "PUT",
        "/v1/services/svc",
        Some(&format!("{{\"pids\":[{pid}]}}")),
    );
    assert_eq!(code, 200, "{body}");
    let url = format!("{}/v1/debug/pause/svc?ns=30000000000", agent.url);
    let token = agent.token.clone();
    let t = std::thread::spawn(move || call("POST", &url, None, Some(&token)));
    wait_for(Duration::from_secs(5), "the service stopped", || {
        is_stopped(pid).then_some(())
    });
    t
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: a signal to a process the test started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Time from `since` until `pid` runs again (polled every 100 µs); panics after `limit`.
pub fn time_to_resume(pid: u32, since: Instant, limit: Duration) -> Duration {
    loop {
        if !is_stopped(pid) {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "pid {pid} still stopped after {limit:?}"
        );
        std::thread::sleep(Duration::from_micros(100));
    }
}

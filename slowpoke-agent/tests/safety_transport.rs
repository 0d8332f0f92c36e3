//! Issue #13, transport: who can reach the agent, and how (docs/security/transport.md).
//!
//! The real binary (with test hooks, so no kernel programs are needed): its root-only Unix
//! socket refuses other users (file mode first, peer credentials second), a `--socket-group`
//! member gets in, TCP needs the token on every call but a status-only health, a foreign `Host`
//! is refused, mutating calls need JSON and a small body, token files must be private and are
//! re-read when rotated, the socket file is replaced when stale and removed at exit, and every
//! mutating call leaves an audit line naming the caller. Unprivileged callers are `curl` run as
//! user `nobody` (the test kit's `as_nobody`).

mod agent_util;

use std::{
    io::{Read as _, Write as _},
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _, symlink},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use agent_util::{TEST_HOOKS, TempDir, free_port, json, sleeper, token_file, wait_for};
use slowpoke_testkit::hostile::{as_nobody, nobody};

/// Who runs the client.
#[derive(Clone, Copy, Debug)]
enum User {
    Root,
    Nobody,
    /// User `nobody` with this primary group (and no other).
    NobodyInGroup(u32),
}

/// One call through a Unix socket with `curl`, as `user`. `Err(curl's exit code)` when no HTTP
/// answer came back (7: the connection was refused, e.g. by the socket file's mode).
fn socket_call(
    socket: &Path,
    user: User,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), i32> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(socket)
        .args(["-X", method, "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if body.is_some() {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    match user {
        User::Root => {}
        User::Nobody => {
            as_nobody(&mut cmd);
        }
        User::NobodyInGroup(gid) => {
            cmd.uid(nobody().0).gid(gid);
        }
    }
    let mut child = cmd.spawn().expect("running curl (apt-get install curl)");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(b) = body {
        stdin.write_all(b.as_bytes()).expect("writing the body");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    Ok((code.trim().parse().expect("status code"), body.to_owned()))
}

/// One TCP call with exactly these extra headers.
fn tcp_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut req = ureq::request(method, url).timeout(Duration::from_secs(20));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let res = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match res {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The agent binary with `args` besides `--state-dir`, the test hooks and the log level; its
/// log (stderr) goes to `STATE_DIR/agent.log`. Killed on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts it and waits until root gets an answer on the socket.
    fn start(state: &TempDir, args: &[&str]) -> Daemon {
        let mut d = Daemon::spawn(state, args);
        wait_for(Duration::from_secs(30), "the agent's socket", || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("the agent exited early ({st}): {}", d.log());
            }
            socket_call(&d.socket, User::Root, "GET", "/v1/health", None)
                .is_ok_and(|(c, _)| c == 200)
                .then_some(())
        });
        d
    }

    fn spawn(state: &TempDir, args: &[&str]) -> Daemon {
        let log = state.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_slowpoke-agent"))
            .arg("--state-dir")
            .arg(state.path())
            .args(TEST_HOOKS)
            .args(["--log-level", "warn"])
            .args(args)
            .env_remove("SLOWPOKE_AGENT_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawning slowpoke-agent");
        Daemon {
            child,
            socket: state.path().join("agent.sock"),
            log,
        }
    }

    /// Runs it to its end (a refusal at start): (exit success, log).
    fn refused(state: &TempDir, args: &[&str]) -> (bool, String) {
        let mut d = Daemon::spawn(state, args);
        let st = d.child.wait().expect("waiting for the agent");
        (st.success(), d.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().expect("waiting for the agent");
        assert!(st.success(), "exit after SIGTERM: {st}: {}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_socket_is_root_only_and_checks_the_callers_credentials() {
    let state = TempDir::new("tr-socket");
    let victim = sleeper();
    let agent = Daemon::start(&state, &[]);
    let meta = std::fs::metadata(&agent.socket).expect("the socket exists");
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode());
    assert_eq!(meta.uid(), 0, "root's socket");

    // Root gets everything.
    let (c, b) = socket_call(&agent.socket, User::Root, "GET", "/v1/health", None).expect("root");
    assert_eq!(c, 200, "{b}");
    assert!(json(&b)["features"]["guardian"].is_string(), "{b}");
    let spec = format!("{{\"pids\":[{}]}}", victim.pid());
    let (c, b) = socket_call(
        &agent.socket,
        User::Root,
        "PUT",
        "/v1/services/victim",
        Some(&spec),
    )
    .expect("root");
    assert_eq!(c, 200, "{b}");

    // `nobody` cannot even connect (the file's mode)...
    for (m, p, body) in [
        ("GET", "/v1/stats", None),
        ("PUT", "/v1/services/mine", Some(spec.as_str())),
    ] {
        assert_eq!(
            socket_call(&agent.socket, User::Nobody, m, p, body),
            Err(7),
            "{m} {p} as nobody"
        );
    }
    // ...and with the mode loosened by mistake, the peer credentials still keep it out.
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let (c, b) = socket_call(
        &agent.socket,
        User::Nobody,
        "PUT",
        "/v1/slowdown",
        Some(r#"{"services":{"victim":{"delay_per_visit_ns":50000000}}}"#),
    )
    .expect("an HTTP answer once the mode allows the connection");
    assert_eq!(c, 403, "{b}");
    assert!(b.contains(&format!("uid {}", nobody().0)), "{b}");
    let (c, _) =
        socket_call(&agent.socket, User::Nobody, "GET", "/v1/stats", None).expect("answer");
    assert_eq!(c, 403, "reads too: stats name every member's pids");
    let (_, plan) =
        socket_call(&agent.socket, User::Root, "GET", "/v1/slowdown", None).expect("root");
    assert_eq!(json(&plan)["services"], serde_json::json!({}), "{plan}");

    // The audit log names the caller and the change, refused attempts included.
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("uid 0")
            && l.contains("register service \\\"victim\\\"")
            && l.contains(&format!("{{\\\"pids\\\":[{}]}}", victim.pid()))
            && l.contains("status=200")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains(&format!("uid {}", nobody().0))
            && l.contains("/v1/slowdown")
            && l.contains("status=403")),
        "{log}"
    );
    let socket = agent.socket.clone();
    agent.stop();
    assert!(!socket.exists(), "the socket is removed at exit");
}

#[test]
fn members_of_the_socket_group_may_call_others_may_not() {
    let state = TempDir::new("tr-group");
    let victim = sleeper();
    let group = nobody().1;
    let agent = Daemon::start(&state, &["--socket-group", &group.to_string()]);
    let meta = std::fs::metadata(&agent.socket).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o660, "mode {:o}", meta.mode());
    assert_eq!(meta.gid(), group);

    let (c, b) =
        socket_call(&agent.socket, User::Nobody, "GET", "/v1/health", None).expect("member");
    assert_eq!(c, 200, "{b}");
    let spec = format!("{{\"pids\":[{}]}}", victim.pid());
    let (c, b) = socket_call(
        &agent.socket,
        User::Nobody,
        "PUT",
        "/v1/services/victim",
        Some(&spec),
    )
    .expect("member");
    assert_eq!(c, 200, "{b}");
    // The same user in another group is refused by the file's mode.
    let other = if group == 1 { 2 } else { 1 };
    assert_eq!(
        socket_call(
            &agent.socket,
            User::NobodyInGroup(other),
            "GET",
            "/v1/stats",
            None
        ),
        Err(7)
    );
    assert!(
        agent.log().lines().any(|l| l.contains("audit")
            && l.contains(&format!("uid {} gid {group}", nobody().0))
            && l.contains("status=200")),
        "{}",
        agent.log()
    );
}

/// An agent listening on TCP with the token `token` in a private file.
fn tcp_agent(state: &TempDir, token: &str, extra: &[&str]) -> (Daemon, String) {
    let port = free_port();
    let file = token_file(state.path(), "token", token);
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--listen",
        &listen,
        "--token-file",
        file.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    (Daemon::start(state, &args), format!("http://{listen}"))
}

#[test]
fn tcp_calls_without_the_token_are_refused_but_health_answers_the_status() {
    let state = TempDir::new("tr-tcp");
    let (_agent, url) = tcp_agent(&state, "s3cret", &[]);
    let plan = r#"{"services":{"x":{"delay_per_visit_ns":1000}}}"#;
    let json_type = ("Content-Type", "application/json");
    for (m, p, body) in [
        ("GET", "/v1/stats", None),
        ("GET", "/v1/services", None),
        ("GET", "/v1/slowdown", None),
        ("PUT", "/v1/slowdown", Some(plan)),
        ("PUT", "/v1/services/x", Some(r#"{"comm":"sleep"}"#)),
        ("DELETE", "/v1/slowdown", None),
        ("GET", "/metrics", None),
    ] {
        let (c, b) = tcp_call(m, &format!("{url}{p}"), &[json_type], body);
        assert_eq!(c, 401, "{m} {p} without the token: {b}");
        assert!(b.contains("Bearer"), "{b}");
        let (c, _) = tcp_call(
            m,
            &format!("{url}{p}"),
            &[json_type, ("Authorization", &bearer("wrong"))],
            body,
        );
        assert_eq!(c, 401, "{m} {p} with a wrong token");
    }
    // A probe: the status, nothing else (no version, no guardian pid).
    let (c, b) = tcp_call("GET", &format!("{url}/v1/health"), &[], None);
    assert_eq!(c, 200, "{b}");
    let h = json(&b);
    let keys: Vec<&String> = h.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["status"], "{b}");
    let (c, b) = tcp_call(
        "GET",
        &format!("{url}/v1/health"),
        &[("Authorization", &bearer("s3cret"))],
        None,
    );
    assert_eq!(c, 200);
    assert!(json(&b)["features"]["guardian"].is_string(), "{b}");
    let (c, b) = tcp_call(
        "GET",
        &format!("{url}/v1/stats"),
        &[("Authorization", &bearer("s3cret"))],
        None,
    );
    assert_eq!(c, 200, "{b}");
}

#[test]
fn foreign_hosts_wrong_content_types_and_large_bodies_are_refused() {
    let state = TempDir::new("tr-host");
    let (_agent, url) = tcp_agent(&state, "s3cret", &["--allowed-host", "agent.example"]);
    let auth = bearer("s3cret");
    let auth = ("Authorization", auth.as_str());
    // DNS rebinding: a page of attacker.example whose name now points at 127.0.0.1.
    let (c, b) = tcp_call(
        "GET",
        &format!("{url}/v1/stats"),
        &[auth, ("Host", "attacker.example:7171")],
        None,
    );
    assert_eq!(c, 421, "{b}");
    assert!(b.contains("--allowed-host"), "{b}");
    for host in ["agent.example", "localhost:7171"] {
        let (c, b) = tcp_call(
            "GET",
            &format!("{url}/v1/stats"),
            &[auth, ("Host", host)],
            None,
        );
        assert_eq!(c, 200, "Host {host}: {b}");
    }
    // A cross-site form or `fetch` without a preflight can only send "simple" content types.
    let spec = r#"{"comm":"sleep"}"#;
    let (c, b) = tcp_call(
        "PUT",
        &format!("{url}/v1/services/x"),
        &[auth, ("Content-Type", "text/plain")],
        Some(spec),
    );
    assert_eq!(c, 415, "{b}");
    assert!(b.contains("application/json"), "{b}");
    let (c, b) = tcp_call("PUT", &format!("{url}/v1/services/x"), &[auth], None);
    assert_eq!(c, 415, "a PUT without a content type: {b}");
    // A method the path lacks is a 405 naming the fix, whatever the body carries (the body
    // rules run on routes only).
    for path in ["/v1/health", "/v1/stats", "/metrics"] {
        let (c, b) = tcp_call("PUT", &format!("{url}{path}"), &[auth], Some("x"));
        assert_eq!(c, 405, "PUT {path}: {b}");
        assert!(b.contains("openapi.json"), "PUT {path}: {b}");
    }
    // A body declared larger than 64 KiB is refused before it is read. (Only the head is sent:
    // the agent answers and closes without reading, so a client still writing 100 KiB may see
    // its pipe broken before it reads the answer.)
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "PUT /v1/services/x HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        auth.1,
        100 * 1024
    )
    .expect("send the head");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let (c, b) = (
        answer
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0),
        answer,
    );
    assert_eq!(c, 413, "{b}");
    assert!(b.contains("64 KiB"), "{b}");
    let (c, b) = tcp_call("GET", &format!("{url}/v1/services"), &[auth], None);
    assert_eq!(
        (c, json(&b)["services"].clone()),
        (200, serde_json::json!({}))
    );
}

#[test]
fn token_files_must_be_private_and_are_reread_when_rotated() {
    let state = TempDir::new("tr-token");
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    // Readable by others: refused at start, naming the mode and the fix.
    let open = state.path().join("open-token");
    std::fs::write(&open, "s3cret\n").expect("write");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (ok, log) = Daemon::refused(
        &state,
        &[
            "--listen",
            &listen,
            "--token-file",
            open.to_str().expect("utf-8"),
        ],
    );
    assert!(
        !ok && log.contains("mode 0644") && log.contains("chmod 600"),
        "{log}"
    );
    // TCP without any token: refused at start.
    let (ok, log) = Daemon::refused(&state, &["--listen", &listen]);
    assert!(!ok && log.contains("without a token"), "{log}");

    // A Kubernetes Secret volume: token -> ..data/token, ..data -> ..<timestamp>, mode 0400.
    let secret = state.path().join("secret");
    let version = |name: &str, token: &str| {
        let dir = secret.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("token");
        std::fs::write(&f, format!("{token}\n")).expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    };
    version("..2026_01_01", "first");
    symlink("..2026_01_01", secret.join("..data")).expect("symlink");
    symlink("..data/token", secret.join("token")).expect("symlink");
    let link = secret.join("token");
    let agent = Daemon::start(
        &state,
        &[
            "--listen",
            &listen,
            "--token-file",
            link.to_str().expect("utf-8"),
        ],
    );
    let stats = |token: &str| {
        tcp_call(
            "GET",
            &format!("http://{listen}/v1/stats"),
            &[("Authorization", &bearer(token))],
            None,
        )
        .0
    };
    assert_eq!(stats("first"), 200);
    // The kubelet's rotation: a new version directory, then `..data` swapped by rename.
    version("..2026_01_02", "second");
    symlink("..2026_01_02", secret.join("..data_tmp")).expect("symlink");
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).expect("swap");
    assert_eq!(stats("first"), 401, "the old token stops working");
    assert_eq!(stats("second"), 200, "the new one works without a restart");
    drop(agent);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not_taken() {
    let state = TempDir::new("tr-stale");
    let socket = state.path().join("agent.sock");
    // What a SIGKILLed agent leaves: the file, nobody listening.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let agent = Daemon::start(&state, &[]);
    assert_eq!(
        std::fs::metadata(&socket).expect("socket").mode() & 0o777,
        0o600
    );
    agent.stop();
    assert!(!socket.exists());

    // Something answers on the socket path asked for: refused, left alone.
    let other = TempDir::new("tr-live");
    let live_path = other.path().join("live.sock");
    let live = std::os::unix::net::UnixListener::bind(&live_path).expect("bind");
    let (ok, log) = Daemon::refused(&state, &["--socket", live_path.to_str().expect("utf-8")]);
    assert!(!ok && log.contains("another process answers"), "{log}");
    assert!(live_path.exists());
    drop(live);
}

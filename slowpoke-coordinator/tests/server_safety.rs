//! The coordinator server's own hardening (issue #13 item 2; docs/security/coordinator.md):
//! a browser cannot be turned against it (Host, Origin, Content-Type), bodies and numbers are
//! bounded, and a request chooses only among the agents, entry hosts and topology files the
//! operator allowed. Real sockets (ephemeral ports) over the library's fake world; no root.

mod server_common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use server_common::{
    APP, Answer, FakeLauncher, QUICK, Server, call, call_with, config, get, status_of, temp_dir,
    wait_for,
};
use slowpoke_coordinator::agents::{HttpAgent, SharedAgent};
use slowpoke_coordinator::experiment::Backends;
use slowpoke_coordinator::fake::FakeWorld;
use slowpoke_coordinator::server::{self, Launcher, MAX_BODY, request::AppRequest};

fn post(s: &Server, body: &str) -> Answer {
    call("POST", &s.url("/v1/experiments"), Some(body), None)
}

/// A what-if over the fake chain that finishes in a few milliseconds.
fn quick_what_if(extra: &str) -> String {
    format!(
        r#"{{{APP}, "target": "cart", "percent": 20, {QUICK}, "repetitions": 1, "precision": 0{extra}}}"#
    )
}

/// A what-if long enough to be caught running (50 repetitions of 0.2 s windows).
fn long_what_if() -> String {
    format!(
        r#"{{{APP}, "target": "cart", "delta_us": 100, "warmup": 0, "settle": 0, "window": 0.2, "repetitions": 50, "precision": 0}}"#
    )
}

#[test]
fn requests_addressed_to_another_name_are_refused_even_with_the_token() {
    let w = FakeWorld::chain();
    // Without a token: only loopback names (DNS rebinding: `evil.example` pointed at 127.0.0.1).
    let s = Server::start(config(&w, temp_dir("rebind")));
    for (method, path) in [
        ("GET", "/v1/experiments"),
        ("POST", "/v1/experiments"),
        ("GET", "/"),
    ] {
        let a = call_with(
            method,
            &s.url(path),
            (method == "POST").then(|| quick_what_if("")).as_deref(),
            &[
                ("Host", "evil.example:7272"),
                ("Content-Type", "application/json"),
            ],
        );
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text);
        assert!(
            a.error().contains("DNS rebinding") && a.error().contains("--allowed-host"),
            "{}",
            a.text
        );
    }
    assert!(w.log().is_empty(), "a refused request reached the runner");

    // With a token the name is checked too: the token stops callers, the Host check stops a
    // browser of someone who has it.
    let mut cfg = config(&w, temp_dir("rebind-token"));
    cfg.token = Some("s3cret".into());
    cfg.policy.allowed_hosts = vec!["slowpoke.internal".into()];
    let s = Server::start(cfg);
    let bearer = "Bearer s3cret";
    let with_host = |host: &str| {
        call_with(
            "GET",
            &s.url("/v1/agents"),
            None,
            &[("Host", host), ("Authorization", bearer)],
        )
    };
    assert_eq!(with_host("evil.example").status, 403);
    assert_eq!(with_host("slowpoke.internal:7272").status, 200);
    assert_eq!(with_host("localhost").status, 200);

    // A name beside loopback without a token would make a token-less server reachable by it:
    // refused at start.
    let mut cfg = config(&w, temp_dir("rebind-no-token"));
    cfg.policy.allowed_hosts = vec!["slowpoke.internal".into()];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(server::bind(&cfg)).err().expect("bind refuses");
    assert!(e.to_string().contains("needs --token-file"), "{e}");
}

#[test]
fn a_cross_site_page_cannot_start_or_cancel_an_experiment() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("origin")));
    let json = ("Content-Type", "application/json");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let a = call_with(
            "POST",
            &s.url("/v1/experiments"),
            Some(&quick_what_if("")),
            &[json, ("Origin", origin)],
        );
        assert_eq!(a.status, 403, "{origin}: {}", a.text);
        assert!(a.error().contains("cross-site"), "{}", a.text);
    }
    // A form post (no preflight) is refused whatever its origin says.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let a = call_with(
            "POST",
            &s.url("/v1/experiments"),
            Some(&quick_what_if("")),
            &[("Content-Type", ct)],
        );
        assert_eq!(a.status, 415, "{ct}: {}", a.text);
        assert!(a.error().contains("Content-Type: application/json"));
    }
    // A method the path lacks is a 405, whatever the body carries.
    for path in ["/v1/agents", "/", "/v1/experiments/x"] {
        let a = call_with(
            "PUT",
            &s.url(path),
            Some("x"),
            &[("Content-Type", "text/plain")],
        );
        assert_eq!(a.status, 405, "PUT {path}: {}", a.text);
    }
    assert!(w.log().is_empty(), "a refused request reached the runner");
    // The page itself (same origin) may; so may a program that sends no Origin.
    let own = format!("http://{}", s.addr);
    let a = call_with(
        "POST",
        &s.url("/v1/experiments"),
        Some(&long_what_if()),
        &[json, ("Origin", &own)],
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/experiments/{id}");
    let d = call_with(
        "DELETE",
        &s.url(&path),
        None,
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(d.status, 403, "{}", d.text);
    let d = call_with("DELETE", &s.url(&path), None, &[("Origin", &own)]);
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(status_of(&d.json()), "cancelled");
    // Nor can it show the page in an invisible frame and have the user click Cancel.
    for path in ["/", "/app.js"] {
        let page = ureq::get(&s.url(path)).call().unwrap();
        assert_eq!(page.header("X-Frame-Options"), Some("DENY"), "{path}");
        assert_eq!(
            page.header("Content-Security-Policy"),
            Some("frame-ancestors 'none'"),
            "{path}"
        );
    }
}

/// Sends `POST /v1/experiments` with this framing header (a length or chunked) and `body`, and
/// reads the whole answer. The body never goes past what the server reads before refusing, so
/// no unread data makes the server's close a reset that could eat its answer.
fn raw_post(s: &Server, framing: &str, body: &[u8]) -> String {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "POST /v1/experiments HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n",
        s.addr
    )
    .unwrap();
    c.write_all(body).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("oversize")));
    // A declared length over the limit is refused before a byte of the body is read.
    let answer = raw_post(&s, &format!("Content-Length: {}", MAX_BODY + 1), b"");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 64 KiB"), "{answer}");
    // Without a length (chunked), the body is cut at the limit while it is read: one chunk one
    // byte longer than the limit.
    let mut chunked = format!("{:x}\r\n", MAX_BODY + 1).into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', MAX_BODY + 1));
    let answer = raw_post(&s, "Transfer-Encoding: chunked", &chunked);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("larger than 64 KiB"), "{answer}");
    // Within the limit, the body is read (and judged on its content).
    let answer = raw_post(&s, "Content-Length: 2", b"{}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        w.log().is_empty(),
        "an oversized request reached the runner"
    );
}

#[test]
fn numbers_and_lists_are_bounded_with_the_field_and_range_named() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("bounds")));
    let many_services = (0..300)
        .map(|i| format!(r#""s{i}": "port:{}""#, 10_000 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let what_if = |field: &str| {
        format!(r#"{{{APP}, "target": "cart", "percent": 20, "precision": 0, {field}}}"#)
    };
    for (body, expect) in [
        (
            what_if(r#""connections": 1000000000"#),
            "`connections` must be at most 4096 (got 1000000000; allowed: 1 to 4096)",
        ),
        (
            what_if(r#""window": 1000000"#),
            "`window` must be at most 600",
        ),
        (what_if(r#""warmup": 601"#), "`warmup` must be at most 600"),
        (what_if(r#""settle": 1e9"#), "`settle` must be at most 600"),
        (
            what_if(r#""timeout": 86400"#),
            "`timeout` must be at most 600",
        ),
        (
            what_if(r#""repetitions": 1000000"#),
            "`repetitions` must be at most 1000",
        ),
        (
            what_if(r#""max_repetitions": 5000"#),
            "`max_repetitions` must be at most 1000",
        ),
        (what_if(r#""budget": 1e7"#), "`budget` must be at most 3600"),
        (
            what_if(r#""quantum_us": 1e9"#),
            "`quantum_us` must be at most 1000000",
        ),
        (
            format!(
                r#"{{"services": {{{many_services}}}, "entry": "http://127.0.0.1:10000/", "target": "s0", "percent": 20}}"#
            ),
            "`services` has 300 entries; at most 256",
        ),
        (
            format!(
                r#"{{{APP}, "kind": "profile", "percents": [{}]}}"#,
                vec!["50"; 101].join(", ")
            ),
            "`percents` has 101 entries; at most 100",
        ),
    ] {
        let a = post(&s, &body);
        assert_eq!(a.status, 400, "{expect}: {}", a.text);
        assert!(
            a.error().contains(expect),
            "want `{expect}` in: {}",
            a.error()
        );
    }
    assert!(w.log().is_empty(), "a refused request reached the runner");
    // The bounds themselves are allowed.
    let a = post(
        &s,
        &what_if(
            r#""connections": 4096, "warmup": 0, "settle": 0, "window": 0.02, "repetitions": 1"#,
        ),
    );
    assert_eq!(a.status, 202, "{}", a.text);
}

/// The fake world, except that an entry path `/fail` fails at once (an experiment that ends
/// the moment it starts).
struct FailOnRequest(FakeLauncher);

impl Launcher for FailOnRequest {
    fn backends(&self, app: &AppRequest, agents: Vec<SharedAgent>) -> Result<Backends, String> {
        if app.entry.as_deref().is_some_and(|e| e.ends_with("/fail")) {
            return Err("the app failed to start (on purpose)".into());
        }
        self.0.backends(app, agents)
    }
}

#[test]
fn the_experiments_kept_in_memory_are_bounded_and_a_running_one_stays() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("bounded-list"));
    cfg.launcher = Arc::new(FailOnRequest(FakeLauncher(w.clone())));
    cfg.policy.keep_experiments = 2;
    let s = Server::start(cfg);
    let failing = r#"{"services": {"front": "port:8080", "cart": "port:8081"}, "entry": "http://127.0.0.1:8080/fail", "target": "cart", "percent": 20}"#;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let a = post(&s, failing);
        assert_eq!(a.status, 202, "{}", a.text);
        let id = a.json()["id"].as_str().unwrap().to_owned();
        wait_for(&s, &id, 10.0, |v| status_of(v) == "failed");
        ids.push(id);
    }
    let listed = |s: &Server| -> Vec<String> {
        get(&s.url("/v1/experiments"))
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&s), vec![ids[3].clone(), ids[2].clone()]);
    for old in &ids[..2] {
        assert_eq!(get(&s.url(&format!("/v1/experiments/{old}"))).status, 404);
    }
    // A running experiment joins the list and pushes out the oldest finished one, not itself.
    let a = post(&s, &long_what_if());
    assert_eq!(a.status, 202, "{}", a.text);
    let running = a.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(listed(&s), vec![running.clone(), ids[3].clone()]);
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{running}")),
        None,
        None,
    );
    assert_eq!(d.status, 200, "{}", d.text);
}

/// A tiny HTTP listener that records the head of every request it gets (and answers 200 `{}`).
struct Recorder {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        });
        Recorder { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

#[test]
fn a_request_cannot_send_the_agent_token_to_a_url_it_names() {
    let w = FakeWorld::chain();
    let trap = Recorder::start();
    // The server's agents: the fake one and an HTTP one (a recorder) holding the agent token.
    let own = Recorder::start();
    let mut cfg = config(&w, temp_dir("agents-allowed"));
    let agent = HttpAgent::new(&format!("{}/", own.url), Some("agent-s3cret".into()));
    cfg.agents.push(Arc::new(agent) as SharedAgent);
    let s = Server::start(cfg);
    let a = post(
        &s,
        &quick_what_if(&format!(r#", "agents": ["{}"]"#, trap.url)),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    let refusal = a.error();
    assert!(
        refusal.contains(&format!(
            "agent `{}` is not one of this server's agents (fake, {})",
            trap.url, own.url
        )),
        "{refusal}"
    );
    // A request naming the server's own agent (here with a trailing slash) runs on it: the
    // token goes there (the recorder is no real agent, so the experiment then fails).
    let a = post(
        &s,
        &quick_what_if(&format!(r#", "agents": ["{}/"]"#, own.url)),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let v = wait_for(&s, &id, 20.0, |v| {
        !matches!(status_of(v), "queued" | "running")
    });
    assert!(v["error"].as_str().unwrap_or("").contains(&own.url), "{v}");
    let to_own = own.heads();
    assert!(
        !to_own.is_empty()
            && to_own.iter().all(|h| h
                .to_ascii_lowercase()
                .contains("\r\nauthorization: bearer agent-s3cret\r\n")),
        "the server's own agent did not get its token: {to_own:?}"
    );
    // Once that experiment ended, nothing was ever sent to the URL the first request named.
    let heads = trap.heads();
    assert!(
        heads.is_empty(),
        "the server called a URL a request named: {heads:?}"
    );
}

#[test]
fn entry_hosts_are_limited_to_what_the_operator_allows() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("entry-default")));
    let with_entry = |entry: &str| {
        format!(
            r#"{{"services": {{"front": "port:8080", "cart": "port:8081"}}, "entry": "{entry}", "target": "cart", "percent": 20, {QUICK}, "repetitions": 1, "precision": 0}}"#
        )
    };
    for entry in [
        "http://10.0.0.1:8080/",
        "http://example.com/",
        "http://127.0.0.1@example.com/",
    ] {
        let a = post(&s, &with_entry(entry));
        assert_eq!(a.status, 400, "{entry}: {}", a.text);
        assert!(a.error().contains("`entry`"), "{}", a.text);
    }
    let a = post(&s, &with_entry("http://10.0.0.1:8080/"));
    assert!(
        a.error()
            .contains("not allowed on this server (allowed: loopback only")
            && a.error().contains("--allow-entry-host"),
        "{}",
        a.text
    );
    assert!(w.log().is_empty(), "a refused request reached the runner");

    let mut cfg = config(&w, temp_dir("entry-allowed"));
    cfg.policy.entry_hosts = vec!["shop.internal:8080".parse().unwrap()];
    let s = Server::start(cfg);
    for (entry, status) in [
        ("http://shop.internal:8080/cart", 202),
        ("http://shop.internal:9090/", 400),
        ("http://127.0.0.1:8080/", 400),
    ] {
        let a = post(&s, &with_entry(entry));
        assert_eq!(a.status, status, "{entry}: {}", a.text);
        if status == 202 {
            let id = a.json()["id"].as_str().unwrap().to_owned();
            wait_for(&s, &id, 20.0, |v| {
                !matches!(status_of(v), "queued" | "running")
            });
        } else {
            assert!(
                a.error().contains("allowed: shop.internal:8080"),
                "{}",
                a.text
            );
        }
    }
}

#[test]
fn topology_paths_stay_inside_the_topology_directory() {
    let w = FakeWorld::chain();
    let topologies = temp_dir("topologies");
    std::fs::write(topologies.join("mine.json"), "{}").unwrap();
    let outside = temp_dir("outside").join("secret.json");
    std::fs::write(&outside, "{}").unwrap();
    std::os::unix::fs::symlink(&outside, topologies.join("link.json")).unwrap();
    let mut cfg = config(&w, temp_dir("topology"));
    cfg.policy.topology_dir = Some(topologies.clone());
    let s = Server::start(cfg);
    let with_topology = |t: &str| {
        format!(
            r#"{{"topology": "{t}", "target": "cart", "percent": 20, {QUICK}, "repetitions": 1, "precision": 0}}"#
        )
    };
    for (t, expect) in [
        ("../outside/secret.json", "contains `..`"),
        ("sub/../../x.json", "contains `..`"),
        ("/etc/passwd", "outside the topology directory"),
        (outside.to_str().unwrap(), "outside the topology directory"),
        ("link.json", "leads outside the topology directory"),
        ("nope.json", "no topology `nope.json`"),
    ] {
        let a = post(&s, &with_topology(t));
        assert_eq!(a.status, 400, "{t}: {}", a.text);
        assert!(
            a.error().contains(expect),
            "{t}: want `{expect}` in {}",
            a.error()
        );
    }
    assert!(
        post(&s, &with_topology("nope.json"))
            .error()
            .contains("link.json, mine.json"),
        "the message lists the directory"
    );
    assert!(w.log().is_empty(), "a refused request reached the runner");
    // Inside the directory, by name or full path.
    for t in [
        "mine.json".to_owned(),
        topologies.join("mine.json").display().to_string(),
    ] {
        let a = post(&s, &with_topology(&t));
        assert_eq!(a.status, 202, "{t}: {}", a.text);
        let id = a.json()["id"].as_str().unwrap().to_owned();
        wait_for(&s, &id, 20.0, |v| {
            !matches!(status_of(v), "queued" | "running")
        });
    }

    // Without --topology-dir no topology is accepted.
    let mut cfg = config(&w, temp_dir("no-topology"));
    cfg.policy.topology_dir = None;
    let s = Server::start(cfg);
    let a = post(&s, &with_topology("chain3.json"));
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.error().contains("--topology-dir"), "{}", a.text);
}

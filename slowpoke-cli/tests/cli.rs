//! Bad input to `slowpoke`: every case exits non-zero with a message naming the problem, and
//! nothing is left installed on the (fake) agent.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn slowpoke(args: &[&str]) -> (i32, String, String) {
    let dir = std::env::temp_dir().join(format!("slowpoke-cli-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_slowpoke"))
        .args(args)
        .env("SLOWPOKE_RESULTS_DIR", &dir)
        .env_remove("SLOWPOKE_AGENT_TOKEN")
        .output()
        .expect("run slowpoke");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fails_with(args: &[&str], needle: &str) {
    let (code, out, err) = slowpoke(args);
    assert_ne!(code, 0, "`slowpoke {}` succeeded: {out}", args.join(" "));
    assert!(
        err.contains(needle),
        "`slowpoke {}`: stderr does not mention {needle:?}:\n{err}",
        args.join(" ")
    );
}

/// A tiny HTTP server on loopback: answers `GET /` with 200 (an app's entry) and the agent API with
/// services that resolve to no process. Records the requests it saw.
struct FakeServer {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

fn fake_server() -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let req = line.trim().to_owned();
            seen2.lock().expect("seen").push(req.clone());
            let mut parts = req.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, json) = match (method, path) {
                ("GET", "/v1/health") => {
                    ("200 OK", r#"{"status":"ok","version":"fake"}"#.to_owned())
                }
                ("PUT", p) if p.starts_with("/v1/services/") => {
                    let name = &p["/v1/services/".len()..];
                    (
                        "200 OK",
                        format!(r#"{{"name":"{name}","spec":{{}},"pids":[],"listen_ports":[]}}"#),
                    )
                }
                // An agent older than tail scheduling: its fallback's 404.
                (_, p) if p.starts_with("/v1/scheduling") => (
                    "404 Not Found",
                    r#"{"error":"no such endpoint; see docs/api.md or GET /v1/openapi.json (/v1/health, /v1/services, /v1/stats, /v1/slowdown, /v1/slowdown/renew, /metrics)"}"#.to_owned(),
                ),
                ("DELETE", _) => ("200 OK", "{}".to_owned()),
                ("GET", "/v1/stats") => {
                    ("200 OK", r#"{"timestamp_ns":1,"services":{}}"#.to_owned())
                }
                _ => ("200 OK", "hello".to_owned()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
        }
    });
    FakeServer { url, seen }
}

#[test]
fn no_app_and_no_optimization_are_named() {
    fails_with(
        &["what-if", "--target", "a", "--speedup", "2x"],
        "--topology FILE",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "a=port:1",
            "--entry",
            "http://127.0.0.1:1/",
            "--target",
            "a",
        ],
        "say what the optimization is",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "a=port:1",
            "--entry",
            "http://127.0.0.1:1/",
            "--speedup",
            "2x",
        ],
        "--target NAME",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "a=port:1",
            "--entry",
            "http://127.0.0.1:1/",
            "--target",
            "a",
            "--speedup",
            "2x",
            "--delta-us",
            "5",
        ],
        "only one of",
    );
}

#[test]
fn zero_and_negative_values_are_refused() {
    let base = [
        "what-if",
        "--service",
        "a=port:1",
        "--entry",
        "http://127.0.0.1:1/",
        "--target",
        "a",
    ];
    for (extra, needle) in [
        (&["--delta-us", "0"][..], "--delta-us must be a positive"),
        (&["--delta-us", "-5"][..], "--delta-us must be a positive"),
        (&["--percent", "150"][..], "cannot lose all of its work"),
        (&["--speedup", "1x"][..], "more than 1x"),
        (&["--speedup", "fast"][..], "write a factor like 2x"),
        (&["--cores", "0"][..], "--cores must be a positive"),
        (&["--capacity", "10:5"][..], "must raise the capacity"),
        (
            &["--delta-us", "5", "--repetitions", "0"][..],
            "--repetitions must be at least 1",
        ),
        (
            &["--delta-us", "5", "--duration", "0"][..],
            "--duration must be a positive",
        ),
        (
            &["--delta-us", "5", "--precision", "-1"][..],
            "--precision must be a positive",
        ),
        (
            &["--delta-us", "5", "--connections", "0"][..],
            "--connections must be at least 1",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        fails_with(&args, needle);
    }
}

/// A what-if of a running app whose entry is port 1 on loopback (nothing listens there).
const ATTACHED: [&str; 9] = [
    "what-if",
    "--service",
    "cart=port:1",
    "--entry",
    "http://127.0.0.1:1/",
    "--target",
    "cart",
    "--speedup",
    "2x",
];

#[test]
fn unknown_target_and_bad_selectors_are_named() {
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:8080",
            "--service",
            "db=port:5432",
            "--entry",
            "http://127.0.0.1:8080/",
            "--target",
            "checkout",
            "--speedup",
            "2x",
        ],
        "unknown target `checkout`: the app's services are cart, db",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=label:shop/app",
            "--entry",
            "http://127.0.0.1:1/",
            "--target",
            "cart",
            "--speedup",
            "2x",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
        ],
        "`app` is not key=value (e.g. label:shop/app=cart)",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=nginx",
            "--entry",
            "http://127.0.0.1:1/",
            "--target",
            "cart",
            "--speedup",
            "2x",
        ],
        "no kind",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:http",
            "--entry",
            "http://127.0.0.1:1/",
            "--target",
            "cart",
            "--speedup",
            "2x",
        ],
        "not a valid TCP port",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:1",
            "--target",
            "cart",
            "--speedup",
            "2x",
        ],
        "--service needs --entry URL",
    );
    fails_with(
        &[&ATTACHED[..], &["--truth"]].concat(),
        "--truth on a running app (--service) needs --truth-cmd CMD and --restore-cmd CMD",
    );
    fails_with(
        &[&ATTACHED[..], &["--truth-cmd", "true"]].concat(),
        "--truth-cmd needs --restore-cmd",
    );
    fails_with(
        &[&ATTACHED[..], &["--restore-cmd", "true"]].concat(),
        "--restore-cmd goes with --truth-cmd",
    );
    fails_with(
        &[
            "what-if",
            "--topology",
            "/nonexistent/topo.json",
            "--target",
            "a",
            "--speedup",
            "2x",
            "--truth-cmd",
            "true",
            "--restore-cmd",
            "true",
        ],
        "--truth-cmd is for running apps (--service)",
    );
    fails_with(
        &[
            "what-if",
            "--topology",
            "/nonexistent/topo.json",
            "--target",
            "a",
            "--speedup",
            "2x",
        ],
        "cannot load the topology /nonexistent/topo.json",
    );
}

#[test]
fn an_entry_that_does_not_answer_is_named() {
    fails_with(
        &ATTACHED,
        "the entry URL http://127.0.0.1:1/ does not answer",
    );
}

#[test]
fn an_unreachable_agent_is_named() {
    let app = fake_server();
    let entry = format!("{}/", app.url);
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:1",
            "--entry",
            &entry,
            "--target",
            "cart",
            "--speedup",
            "2x",
            "--agent",
            "http://127.0.0.1:1",
        ],
        "agent http://127.0.0.1:1 is unreachable",
    );
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:1",
            "--entry",
            &entry,
            "--target",
            "cart",
            "--speedup",
            "2x",
            "--agent",
            "localhost:7171",
        ],
        "is not a URL",
    );
    // `slowpoke eval` warns that a running agent keeps its own safety cap only when the user
    // gave one (its own default is for an agent in this process).
    let eval = ["eval", "--suite", "quick", "--agent", "http://127.0.0.1:1"];
    for (extra, warned) in [
        (&[][..], false),
        (&["--max-stopped-share", "0.9"][..], true),
    ] {
        let args = [&eval[..], extra].concat();
        let (code, _, err) = slowpoke(&args);
        assert_ne!(code, 0, "{err}");
        assert!(
            err.contains("agent http://127.0.0.1:1 is unreachable"),
            "{err}"
        );
        assert_eq!(
            err.contains("--max-stopped-share sets the cap"),
            warned,
            "{err}"
        );
    }
    let (code, out, _) = slowpoke(&["agents", "--agent", "http://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(out.contains("DOWN"), "{out}");
}

#[test]
fn a_service_no_agent_resolves_is_named_and_nothing_is_left_installed() {
    let srv = fake_server();
    let entry = format!("{}/", srv.url);
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:1",
            "--service",
            "db=comm:nosuchdb",
            "--entry",
            &entry,
            "--target",
            "cart",
            "--speedup",
            "2x",
            "--agent",
            &srv.url,
            "--warmup",
            "0",
        ],
        "no agent can resolve `cart`, `db` to processes",
    );
    let seen = srv.seen.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("DELETE /v1/slowdown?owner=") && r.contains("-whatif-cart ")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|r| r.starts_with("PUT /v1/slowdown")),
        "{seen:?}"
    );
    // Registered services are removed again.
    assert!(
        seen.iter()
            .any(|r| r.starts_with("DELETE /v1/services/cart")),
        "{seen:?}"
    );
}

#[test]
fn results_of_an_empty_store() {
    let (code, out, _) = slowpoke(&["results", "list", "--results-dir", "/nonexistent-slowpoke"]);
    assert_eq!(code, 0);
    assert!(out.contains("no results"), "{out}");
    fails_with(
        &[
            "results",
            "show",
            "nope",
            "--results-dir",
            "/nonexistent-slowpoke",
        ],
        "no result `nope`",
    );
}

#[test]
fn an_experiment_file_says_the_same_as_the_options() {
    let dir = std::env::temp_dir().join(format!("slowpoke-cli-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("exp.yaml");
    std::fs::write(
        &f,
        "service: [\"cart=port:8080\"]\nentry: http://127.0.0.1:8080/\ntarget: checkout\nspeedup: 2x\n",
    )
    .expect("write");
    fails_with(
        &["what-if", "--experiment", f.to_str().expect("utf8")],
        "unknown target `checkout`: the app's services are cart",
    );
    // The command line wins over the file.
    fails_with(
        &[
            "what-if",
            "--experiment",
            f.to_str().expect("utf8"),
            "--target",
            "cart",
            "--delta-us",
            "0",
        ],
        "--delta-us must be a positive",
    );
}

#[test]
fn a_cluster_description_names_each_agent_by_its_node() {
    use std::os::unix::fs::PermissionsExt as _;
    let srv = fake_server();
    let dir = std::env::temp_dir().join(format!("slowpoke-cli-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("n1-token");
    std::fs::write(&token, "secret-n1").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("mode");
    let cluster = dir.join("cluster.json");
    std::fs::write(
        &cluster,
        format!(
            r#"{{"nodes": [
                {{"name": "n1", "address": "10.9.0.1", "agent": "{}", "token_file": "n1-token"}},
                {{"name": "n2", "address": "10.9.0.2", "agent": "http://127.0.0.1:1"}}
            ]}}"#,
            srv.url
        ),
    )
    .expect("cluster file");
    let cluster = cluster.to_str().expect("utf-8 path");

    // One row per node, named by the node; the dead one says which node and URL it is.
    let (code, out, err) = slowpoke(&["agents", "--cluster", cluster, "--json"]);
    assert_eq!(code, 1, "one of two agents is down: {out} {err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("JSON rows");
    assert_eq!(rows[0]["agent"], "n1");
    assert_eq!(rows[0]["url"], srv.url.as_str());
    assert_eq!(rows[0]["healthy"], true);
    assert_eq!(rows[1]["agent"], "n2");
    assert_eq!(rows[1]["healthy"], false);
    let status = rows[1]["status"].as_str().expect("status");
    assert!(
        status.contains("agent n2 (http://127.0.0.1:1) is unreachable"),
        "{status}"
    );
    assert!(err.contains("1 of 2 agents are not healthy"), "{err}");

    // --cluster and --agent (or SLOWPOKE_CLUSTER and --agent) cannot both name the agents.
    fails_with(
        &["agents", "--cluster", cluster, "--agent", &srv.url],
        "both name the agents",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_slowpoke"))
        .args(["agents", "--agent", &srv.url])
        .env("SLOWPOKE_CLUSTER", cluster)
        .output()
        .expect("run slowpoke");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("SLOWPOKE_CLUSTER counts as --cluster"),
        "{err}"
    );
    // An experiment reaches the nodes' agents too, and names the one that does not answer.
    let entry = format!("{}/", srv.url);
    fails_with(
        &[
            "what-if",
            "--service",
            "cart=port:1",
            "--entry",
            &entry,
            "--target",
            "cart",
            "--speedup",
            "2x",
            "--cluster",
            cluster,
        ],
        "agent n2 (http://127.0.0.1:1) is unreachable",
    );
    // A token file that is not there names its node.
    std::fs::remove_file(&token).expect("rm token");
    fails_with(&["agents", "--cluster", cluster], "node n1");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_without_tail_scheduling_is_named() {
    let agent = fake_server();
    let url = agent.url.as_str();
    // An agent that predates tail scheduling: every subcommand says so, naming the agent.
    for args in [
        &[
            "tail",
            "enable",
            "--service",
            "web",
            "--agent",
            url,
            "--detach",
        ][..],
        &["tail", "enable", "--service", "web", "--agent", url][..],
        &["tail", "disable", "--agent", url][..],
    ] {
        fails_with(args, "lacks tail scheduling");
    }
    let (code, out, err) = slowpoke(&["tail", "status", "--agent", url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(url) && out.contains("lacks tail scheduling"),
        "{out}"
    );
    assert!(err.contains("1 of 1 agents did not answer"), "{err}");
}

#[test]
fn tail_bad_values_are_named_before_anything_is_touched() {
    let agent = fake_server();
    let app = "--service a=port:1 --entry ENTRY --agent URL";
    for (args, needle) in [
        (
            "enable --service web --k 0 --agent URL",
            "k (requests run first at once) must be 1 to 64",
        ),
        (
            "enable --service web --priority 20 --agent URL",
            "priority must be 1 to 19",
        ),
        (
            "enable --service web --max-share 0.95 --agent URL",
            "at most 0.9",
        ),
        (
            "enable --service web --policy lifo --agent URL",
            "not a policy",
        ),
        (
            "enable --service web --lease 0.01 --agent URL",
            "--lease must be between",
        ),
        (
            "enable --service web --service web --agent URL",
            "given twice",
        ),
        (
            "enable --service web --agent localhost:7171",
            "is not a URL",
        ),
        ("compare --rate 0 APP", "rate must be above 0"),
        (
            "compare --rate 10 --repetitions 0 APP",
            "repetitions must be 1 to 100",
        ),
        ("compare --rate 10 --arms lifo APP", "not an arm"),
        (
            "compare --rate 10 --sweep 5,10 APP",
            "--sweep needs --p99-target-ms",
        ),
        (
            "compare --rate 10 --k 99 APP",
            "k (requests run first at once) must be 1 to 64",
        ),
        ("enable --agent URL", "--service"),
    ] {
        let line = format!("tail {args}")
            .replace("APP", app)
            .replace("ENTRY", &format!("{}/", agent.url))
            .replace("URL", &agent.url);
        let argv: Vec<&str> = line.split_whitespace().collect();
        fails_with(&argv, needle);
    }
    let seen = agent.seen.lock().expect("seen").clone();
    assert!(seen.is_empty(), "bad input reached the agent: {seen:?}");
}

//! The coordinator's HTTP API over real sockets (ephemeral ports) and the library's fake world.

#![allow(clippy::many_single_char_names)]

mod server_common;

use std::time::{Duration, Instant};

use server_common::{
    APP, QUICK, Server, assert_json_close, call, cli_what_if, config, get, quick, status_of,
    temp_dir, wait_for,
};
use slowpoke_api::auth::token_required;
use slowpoke_coordinator::experiment::{Monitor, ProfileSpec, run_profile};
use slowpoke_coordinator::fake::FakeWorld;
use slowpoke_coordinator::results::{ResultStore, StoredResult};
use slowpoke_coordinator::server;
use slowpoke_testkit::openapi::{
    assert_answer_matches, documented_routes, router_paths, served_routes,
};

fn post(s: &Server, body: &str) -> server_common::Answer {
    call("POST", &s.url("/v1/experiments"), Some(body), None)
}

/// A what-if long enough to be caught running (50 repetitions of 0.2 s windows).
fn long_what_if() -> String {
    format!(
        r#"{{{APP}, "target": "cart", "delta_us": 100, "warmup": 0, "settle": 0, "window": 0.2, "repetitions": 50, "precision": 0}}"#
    )
}

fn close(a: f64, b: f64, rel: f64) {
    assert!(
        (a - b).abs() <= rel * b.abs(),
        "{a} != {b} (±{} %)",
        rel * 100.0
    );
}

#[test]
fn a_what_if_runs_to_a_stored_result_listed_and_plotted() {
    let w = FakeWorld::chain();
    let dir = temp_dir("whatif");
    let s = Server::start(config(&w, dir.clone()));
    let a = post(
        &s,
        &format!(
            r#"{{{APP}, "target": "cart", "delta_us": 200, "truth": true, {QUICK}, "repetitions": 3, "precision": 0}}"#
        ),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let v = a.json();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.contains("whatif-cart"), "{id}");
    assert_eq!(v["kind"], "what-if");
    assert!(matches!(status_of(&v), "queued" | "running"), "{v}");
    assert_eq!(
        a.location.as_deref(),
        Some(format!("/v1/experiments/{id}").as_str())
    );

    let v = wait_for(&s, &id, 30.0, |v| {
        status_of(v) != "queued" && status_of(v) != "running"
    });
    assert_eq!(status_of(&v), "done", "{v}");
    assert_eq!(v["progress"]["fraction"], 1.0);
    let r = &v["result"];
    assert_eq!(r["id"], id.as_str());
    // Δ = 200 µs on cart: X_base = 3333 req/s, X_pred = X_true = 5000 req/s (see fake.rs).
    close(r["baseline_rps"].as_f64().unwrap(), 3333.33, 0.001);
    close(r["predicted_rps"].as_f64().unwrap(), 5000.0, 0.005);
    close(r["truth_rps"].as_f64().unwrap(), 5000.0, 0.005);
    assert!(r["error_pct"].as_f64().unwrap().abs() < 0.5, "{r}");
    assert_eq!(r["services"].as_array().unwrap().len(), 3);
    assert_eq!(r["repetitions"], 3);

    // Persisted through the results store, with the same JSON as the CLI's --json.
    let stored = ResultStore::new(&dir).load(&id).unwrap();
    let StoredResult::WhatIf(stored) = stored else {
        panic!("not a what-if")
    };
    assert_json_close(&serde_json::to_value(&stored).unwrap(), r);

    let list = get(&s.url("/v1/experiments")).json();
    let list = list.as_array().unwrap();
    let line = list.iter().find(|l| l["id"] == id.as_str()).unwrap();
    assert_eq!(line["status"], "done");
    assert_eq!(line["kind"], "what-if");
    assert!(
        line["summary"].as_str().unwrap().contains("predicted"),
        "{line}"
    );
    assert!(line["created"].as_str().unwrap().ends_with('Z'));

    let p = get(&s.url(&format!("/v1/experiments/{id}/plot.svg")));
    assert_eq!(p.status, 200);
    assert_eq!(p.content_type, "image/svg+xml");
    assert!(p.text.starts_with("<svg") && p.text.contains("predicted") && p.text.contains("truth"));

    // Nothing left behind on the agent.
    assert!(w.plan().is_empty());
    assert!(w.registered().is_empty());

    // A new server over the same directory still lists and serves it.
    drop(s);
    let s = Server::start(config(&w, dir));
    let v = get(&s.url(&format!("/v1/experiments/{id}"))).json();
    assert_eq!(status_of(&v), "done");
    assert_json_close(&v["result"], r);
}

#[test]
fn a_profile_runs_and_is_plotted() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("profile")));
    let a = post(
        &s,
        &format!(
            r#"{{{APP}, "kind": "profile", "percents": [30, 50], "repetitions": 1, {QUICK}}}"#
        ),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    assert!(id.contains("profile"), "{id}");
    let v = wait_for(&s, &id, 30.0, |v| {
        !matches!(status_of(v), "queued" | "running")
    });
    assert_eq!(status_of(&v), "done", "{v}");
    assert_eq!(v["kind"], "profile");
    assert_eq!(v["result"]["curves"][0]["service"], "cart");
    let p = get(&s.url(&format!("/v1/experiments/{id}/plot.svg")));
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(p.text.contains("<svg"), "{}", p.text);
    assert!(p.text.contains("cart"));
}

#[test]
fn one_experiment_at_a_time_and_cancel_removes_the_plan_before_answering() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("cancel")));
    let a = post(&s, &long_what_if());
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();

    // A second experiment is refused while the first runs.
    let b = post(&s, &long_what_if());
    assert_eq!(b.status, 409, "{}", b.text);
    assert!(
        b.error().contains("one experiment runs at a time"),
        "{}",
        b.text
    );
    assert!(b.error().contains(&id));

    // Wait until the plan is in force (a slowed-down window), then cancel.
    let until = Instant::now() + Duration::from_secs(20);
    while w.plan().is_empty() {
        assert!(Instant::now() < until, "the plan was never installed");
        std::thread::sleep(Duration::from_millis(5));
    }
    let running = get(&s.url(&format!("/v1/experiments/{id}"))).json();
    assert_eq!(status_of(&running), "running");
    assert!(
        running["progress"]["phase"]
            .as_str()
            .unwrap()
            .contains("rep"),
        "{running}"
    );
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{id}")),
        None,
        None,
    );
    // The answer comes after the runner removed every delay.
    assert!(w.plan().is_empty(), "a delay is left: {:?}", w.plan());
    assert!(w.registered().is_empty());
    assert_eq!(d.status, 200, "{}", d.text);
    let v = d.json();
    assert_eq!(status_of(&v), "cancelled");
    assert!(v["error"].as_str().unwrap().contains("cancelled"), "{v}");

    // Nothing to cancel any more; a new experiment may start.
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{id}")),
        None,
        None,
    );
    assert_eq!(d.status, 409, "{}", d.text);
    let list = get(&s.url("/v1/experiments")).json();
    assert_eq!(list[0]["status"], "cancelled");
    let c = post(
        &s,
        &format!(
            r#"{{{APP}, "target": "cart", "percent": 20, {QUICK}, "repetitions": 1, "precision": 0}}"#
        ),
    );
    assert_eq!(c.status, 202, "{}", c.text);
}

#[test]
fn shutdown_cancels_the_running_experiment() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("shutdown")));
    assert_eq!(post(&s, &long_what_if()).status, 202);
    let until = Instant::now() + Duration::from_secs(20);
    while w.plan().is_empty() {
        assert!(Instant::now() < until, "the plan was never installed");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.shutdown().unwrap();
    assert!(w.plan().is_empty(), "a delay is left: {:?}", w.plan());
    assert!(w.registered().is_empty());
    assert!(w.log().contains(&"load_stop".to_owned()));
}

#[test]
fn an_experiment_that_cannot_run_fails_with_the_reason() {
    let w = FakeWorld::chain();
    w.set_probe_fails(true);
    let s = Server::start(config(&w, temp_dir("fails")));
    let a = post(
        &s,
        &format!(r#"{{{APP}, "target": "cart", "speedup": "2x", {QUICK}}}"#),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let v = wait_for(&s, &id, 20.0, |v| {
        !matches!(status_of(v), "queued" | "running")
    });
    assert_eq!(status_of(&v), "failed", "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not answer"),
        "{v}"
    );
    assert!(v["result"].is_null());
    let p = get(&s.url(&format!("/v1/experiments/{id}/plot.svg")));
    assert_eq!(p.status, 409, "{}", p.text);
    assert!(p.error().contains("no result"), "{}", p.text);
    assert!(w.plan().is_empty());
}

#[test]
fn bad_input_gets_a_4xx_that_says_what_to_fix() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("bad")));
    for (body, expect) in [
        ("{\"target\": ".to_owned(), "invalid request body"),
        ("[1, 2]".to_owned(), "invalid request body"),
        (
            format!(r#"{{{APP}, "target": "cart", "speedup": 2, "colour": "red"}}"#),
            "unknown field `colour`",
        ),
        (
            format!(r#"{{{APP}, "target": "cart"}}"#),
            "no optimization given",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "speedup": 2, "cores": 4}}"#),
            "exactly one optimization, not 2 (speedup and cores)",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "delta_us": -100}}"#),
            "positive",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "percent": 10, "window": -1}}"#),
            "`window` must be a positive number",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "percent": 10, "repetitions": 0}}"#),
            "`repetitions` must be at least 1",
        ),
        (
            format!(r#"{{{APP}, "target": "nope", "percent": 10}}"#),
            "not one of `services`",
        ),
        (
            r#"{"target": "cart", "percent": 10}"#.to_owned(),
            "no app given",
        ),
        (
            format!(r#"{{{APP}, "topology": "x.json", "target": "cart", "percent": 10}}"#),
            "not both",
        ),
        (
            format!(r#"{{{APP}, "kind": "benchmark", "target": "cart", "percent": 10}}"#),
            "unknown variant `benchmark`",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "percent": 10, "agents": ["10.0.0.2:7171"]}}"#),
            "must be a URL",
        ),
    ] {
        let a = post(&s, &body);
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        assert_eq!(a.content_type, "application/json");
        let e = a.error();
        assert!(e.contains(expect), "{body}: {e}");
    }
    // Nothing was started by any of them.
    assert!(w.log().is_empty(), "{:?}", w.log());
    assert_eq!(get(&s.url("/v1/experiments")).json(), serde_json::json!([]));

    for path in [
        "/v1/experiments/20261122T000000-000-whatif-nope",
        "/v1/experiments/..%2F..%2Fetc%2Fpasswd",
        "/v1/experiments/nope/plot.svg",
    ] {
        let a = get(&s.url(path));
        assert_eq!(a.status, 404, "{path}: {}", a.text);
        assert!(
            a.error().contains("GET /v1/experiments lists them"),
            "{}",
            a.text
        );
    }
    let a = call("DELETE", &s.url("/v1/experiments/nope"), None, None);
    assert_eq!(a.status, 404, "{}", a.text);
    let a = get(&s.url("/v1/nothing"));
    assert_eq!(a.status, 404);
    assert!(a.error().contains("no such endpoint"));
    // JSON only (a cross-site form cannot start an experiment).
    let a = server_common::call_with(
        "POST",
        &s.url("/v1/experiments"),
        Some(&format!(r#"{{{APP}, "target": "cart", "percent": 10}}"#)),
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(a.status, 415, "{}", a.text);
    assert!(a.error().contains("Content-Type: application/json"));
    // Without a token, only requests addressed to loopback names (no DNS rebinding).
    for host in ["evil.example", "evil.example:7272", "10.0.0.1:7272"] {
        let a = server_common::call_with("GET", &s.url("/v1/experiments"), None, &[("Host", host)]);
        assert_eq!(a.status, 403, "{host}: {}", a.text);
        assert!(a.error().contains("--token-file"));
    }
    for host in ["localhost:7272", "LOCALHOST", "127.0.0.1", "[::1]:80"] {
        let a = server_common::call_with("GET", &s.url("/v1/agents"), None, &[("Host", host)]);
        assert_eq!(a.status, 200, "{host}: {}", a.text);
    }
    let a = call("PUT", &s.url("/v1/experiments"), Some("{}"), None);
    assert_eq!(a.status, 405, "{}", a.text);
    assert!(a.error().contains("method not allowed"));
}

#[test]
fn agents_and_their_health() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("agents"));
    cfg.agents.push(std::sync::Arc::new(
        slowpoke_coordinator::agents::HttpAgent::new("http://127.0.0.1:1", None),
    ));
    let s = Server::start(cfg);
    let v = get(&s.url("/v1/agents")).json();
    assert_eq!(v[0]["name"], "fake");
    assert_eq!(v[0]["status"], "ok");
    assert_eq!(v[0]["health"]["version"], "fake");
    assert_eq!(v[1]["name"], "http://127.0.0.1:1");
    assert_eq!(v[1]["status"], "unreachable");
    assert!(
        v[1]["error"].as_str().unwrap().contains("unreachable"),
        "{v}"
    );
}

#[test]
fn results_of_earlier_runs_are_listed() {
    let w = FakeWorld::chain();
    let dir = temp_dir("earlier");
    let store = ResultStore::new(&dir);
    let wi = cli_what_if(&w);
    store.save(&StoredResult::WhatIf(wi.clone())).unwrap();
    let prof = run_profile(
        &ProfileSpec {
            timing: quick(),
            // With 1 repetition the baseline CI is unbounded, stored as null, and does not read
            // back (a library bug, reported): 2 repetitions.
            repetitions: 2,
            percents: vec![50.0],
            ..ProfileSpec::default()
        },
        &mut w.backends(),
        &Monitor::new(),
    )
    .unwrap();
    store.save(&StoredResult::Profile(prof.clone())).unwrap();
    store.load(&prof.id).expect("the stored profile reads back");
    let s = Server::start(config(&w, dir));
    let list = get(&s.url("/v1/experiments")).json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let line = list.iter().find(|l| l["id"] == wi.id.as_str()).unwrap();
    assert_eq!(line["kind"], "what-if");
    assert_eq!(line["status"], "done");
    assert!(
        list.iter()
            .any(|l| l["id"] == prof.id.as_str() && l["kind"] == "profile")
    );
    let v = get(&s.url(&format!("/v1/experiments/{}", wi.id))).json();
    assert_json_close(&v["result"], &serde_json::to_value(&wi).unwrap());
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{}", wi.id)),
        None,
        None,
    );
    assert_eq!(d.status, 409, "{}", d.text);
    assert!(d.error().contains("already done"));
    let p = get(&s.url(&format!("/v1/experiments/{}/plot.svg", prof.id)));
    assert_eq!(p.status, 200, "{}", p.text);
}

#[test]
fn the_token_rule() {
    let lo: std::net::SocketAddr = "127.0.0.1:7272".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:7272".parse().unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:7272".parse().unwrap();
    let lan: std::net::SocketAddr = "10.1.2.3:7272".parse().unwrap();
    assert!(!token_required(lo) && !token_required(lo6));
    assert!(token_required(any) && token_required(lan));
    let token = |listen, t: Option<&str>| {
        server::bearer_policy(listen, t.map(str::to_owned))
            .map(|p| p.token().map(str::to_owned))
            .map_err(|e| e.to_string())
    };
    assert_eq!(token(lo, None), Ok(None));
    assert_eq!(token(lo, Some("t")), Ok(Some("t".into())));
    assert_eq!(token(any, Some(" t\n")), Ok(Some("t".into())));
    for t in [None, Some(""), Some("  \n")] {
        let e = token(any, t).unwrap_err();
        assert!(
            e.contains("refusing to listen on 0.0.0.0:7272 without a token"),
            "{e}"
        );
    }
}

#[test]
fn the_server_refuses_to_start_off_loopback_without_a_token() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("refuse"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), server::serve(cfg)).await })
        .expect("serve() must refuse at once, not serve")
        .unwrap_err();
    assert!(e.to_string().contains("without a token"), "{e}");
}

#[test]
fn every_api_call_needs_the_token_when_one_is_set() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("token"));
    cfg.token = Some("s3cret".into());
    let s = Server::start(cfg);
    let body = format!(
        r#"{{{APP}, "target": "cart", "percent": 20, {QUICK}, "repetitions": 1, "precision": 0}}"#
    );
    for (method, path, body) in [
        ("GET", "/v1/experiments", None),
        ("POST", "/v1/experiments", Some(body.as_str())),
        ("GET", "/v1/experiments/x", None),
        ("DELETE", "/v1/experiments/x", None),
        ("GET", "/v1/experiments/x/plot.svg", None),
        ("GET", "/v1/agents", None),
        ("GET", "/v1/unknown", None),
    ] {
        for token in [None, Some("wrong"), Some("s3cre")] {
            let a = call(method, &s.url(path), body, token);
            assert_eq!(a.status, 401, "{method} {path} with {token:?}: {}", a.text);
            assert_eq!(a.www_authenticate.as_deref(), Some("Bearer"));
            assert!(a.error().contains("Authorization: Bearer"), "{}", a.text);
        }
    }
    assert!(
        w.log().is_empty(),
        "an unauthorized call reached the runner"
    );
    let a = call("GET", &s.url("/v1/agents"), None, Some("s3cret"));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = call(
        "POST",
        &s.url("/v1/experiments"),
        Some(&body),
        Some("s3cret"),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    // The page itself carries no data; it asks for the token and sends it on every API call.
    let a = get(&s.url("/"));
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("text/html"));
}

#[test]
fn bad_tail_requests_get_a_400_that_says_what_to_fix() {
    let w = FakeWorld::chain();
    let s = Server::start(config(&w, temp_dir("bad-tail")));
    for (body, expect) in [
        (format!(r#"{{{APP}, "kind": "tail"}}"#), "no `rate`"),
        (
            format!(r#"{{{APP}, "kind": "tail", "rate": 0}}"#),
            "`rate` must be a positive number",
        ),
        (
            format!(r#"{{{APP}, "kind": "tail", "rate": 100, "k": 0}}"#),
            "`k` must be 1 to 64",
        ),
        (
            format!(r#"{{{APP}, "kind": "tail", "rate": 100, "arms": ["lifo"]}}"#),
            "unknown variant `lifo`",
        ),
        (
            format!(r#"{{{APP}, "kind": "tail", "rate": 100, "sweep": [50, 100]}}"#),
            "needs `p99_target_us`",
        ),
        (
            format!(r#"{{{APP}, "kind": "tail", "rate": 100, "target": "cart"}}"#),
            "remove `target`",
        ),
        (
            format!(r#"{{{APP}, "target": "cart", "percent": 10, "arms": ["default"]}}"#),
            "remove `rate`",
        ),
    ] {
        let a = post(&s, &body);
        assert_eq!(a.status, 400, "{body}: {}", a.text);
        let e = a.error();
        assert!(e.contains(expect), "{body}: {e}");
    }
    assert!(w.log().is_empty(), "{:?}", w.log());
}

#[test]
fn the_openapi_document_matches_the_server() {
    let w = FakeWorld::chain();
    let cfg = config(&w, temp_dir("openapi"));
    let s = Server::start(cfg.clone());
    // The server serves the document generated from the wire types.
    let a = get(&s.url("/v1/openapi.json"));
    assert_eq!(a.status, 200, "{}", a.text);
    let doc = a.json();
    assert_eq!(
        doc,
        serde_json::to_value(slowpoke_api::openapi::coordinator()).unwrap()
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));

    // Route for route: what the router serves is what the document lists, and nothing else.
    let auth = server::bearer_policy(cfg.listen, None).unwrap();
    let router = server::router(server::AppState::new(&cfg, auth));
    let served = served_routes(&s.url(""), &router_paths(&format!("{router:?}")), None);
    assert_eq!(documented_routes(&doc), served);
    assert!(served.contains(&("POST".to_owned(), "/v1/experiments".to_owned())));

    // Every request field is documented, and nothing else.
    let documented: std::collections::BTreeSet<String> =
        doc["components"]["schemas"]["ExperimentRequest"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    let fields: std::collections::BTreeSet<String> =
        serde_json::to_value(slowpoke_api::coordinator::ExperimentRequest::default())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
    assert_eq!(documented, fields);

    // Real answers match the document's schemas: a what-if and a profile from start to result
    // (one repetition: its intervals are null), the lists, an error.
    let answer = |method: &str, path: &str, a: &server_common::Answer| {
        assert_answer_matches(&doc, method, path, a.status, &a.json());
    };
    for body in [
        format!(
            r#"{{{APP}, "target": "cart", "delta_us": 200, "truth": true, {QUICK}, "repetitions": 1, "precision": 0}}"#
        ),
        format!(r#"{{{APP}, "kind": "profile", "percents": [30], "repetitions": 1, {QUICK}}}"#),
    ] {
        let a = post(&s, &body);
        answer("POST", "/v1/experiments", &a);
        let id = a.json()["id"].as_str().unwrap().to_owned();
        let v = wait_for(&s, &id, 30.0, |v| {
            !matches!(status_of(v), "queued" | "running")
        });
        assert_eq!(status_of(&v), "done", "{v}");
        let a = get(&s.url(&format!("/v1/experiments/{id}")));
        assert!(a.json()["result"].is_object(), "{}", a.text);
        answer("GET", "/v1/experiments/{id}", &a);
    }
    // A stored tail comparison (with a refused arm and null intervals) as the API shows it.
    let tail = server_common::tail_result("20261206T120000-000-tail-app");
    slowpoke_coordinator::results::ResultStore::new(&cfg.results_dir)
        .save(&slowpoke_coordinator::results::StoredResult::Tail(
            tail.clone(),
        ))
        .unwrap();
    let a = get(&s.url(&format!("/v1/experiments/{}", tail.id)));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["kind"], "tail", "{}", a.text);
    answer("GET", "/v1/experiments/{id}", &a);
    let p = get(&s.url(&format!("/v1/experiments/{}/plot.svg", tail.id)));
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(
        p.text.contains("<svg") && p.text.contains("oldest-first"),
        "{}",
        p.text
    );
    answer("GET", "/v1/experiments", &get(&s.url("/v1/experiments")));
    answer("GET", "/v1/agents", &get(&s.url("/v1/agents")));
    answer(
        "GET",
        "/v1/experiments/{id}",
        &get(&s.url("/v1/experiments/nope")),
    );
    answer("POST", "/v1/experiments", &post(&s, "{}"));
}

/// Takes its time to prepare the app (like starting an emulated one), or fails to.
struct SlowLauncher {
    inner: server_common::FakeLauncher,
    delay: Duration,
    fail: Option<&'static str>,
}

impl server::Launcher for SlowLauncher {
    fn backends(
        &self,
        app: &server::request::AppRequest,
        agents: Vec<slowpoke_coordinator::agents::SharedAgent>,
    ) -> Result<slowpoke_coordinator::experiment::Backends, String> {
        std::thread::sleep(self.delay);
        if let Some(f) = self.fail {
            return Err(f.to_owned());
        }
        self.inner.backends(app, agents)
    }
}

#[test]
fn a_queued_experiment_can_be_cancelled_and_a_launch_failure_is_reported() {
    let w = FakeWorld::chain();
    let mut cfg = config(&w, temp_dir("queued"));
    cfg.launcher = std::sync::Arc::new(SlowLauncher {
        inner: server_common::FakeLauncher(w.clone()),
        delay: Duration::from_millis(500),
        fail: None,
    });
    let s = Server::start(cfg);
    let a = post(
        &s,
        &format!(r#"{{"topology": "chain3.json", "target": "cart", "percent": 20, {QUICK}}}"#),
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let v = a.json();
    assert_eq!(status_of(&v), "queued");
    assert_eq!(v["progress"]["phase"], "preparing the app and the load");
    let id = v["id"].as_str().unwrap();
    let d = call(
        "DELETE",
        &s.url(&format!("/v1/experiments/{id}")),
        None,
        None,
    );
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(status_of(&d.json()), "cancelled");
    assert!(w.log().is_empty(), "the runner started: {:?}", w.log());

    let mut cfg = config(&w, temp_dir("launch-fails"));
    cfg.launcher = std::sync::Arc::new(SlowLauncher {
        inner: server_common::FakeLauncher(w.clone()),
        delay: Duration::ZERO,
        fail: Some("cannot load the topology chain3.json: No such file or directory"),
    });
    let s = Server::start(cfg);
    let a = post(
        &s,
        &format!(r#"{{"topology": "chain3.json", "target": "cart", "percent": 20, {QUICK}}}"#),
    );
    let id = a.json()["id"].as_str().unwrap().to_owned();
    let v = wait_for(&s, &id, 10.0, |v| status_of(v) == "failed");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot prepare the experiment: cannot load the topology"),
        "{v}"
    );
    assert_eq!(v["progress"]["phase"], "failed");
}

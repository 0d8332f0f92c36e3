//! The HTTP API: bad input gets a 4xx with a useful message and leaves the plan untouched; the
//! token rule; the binary's start-up refusals; the API document (`/v1/openapi.json`) matches
//! the router.

mod agent_util;

use agent_util::{TOKEN, TempDir, call, json, python_http_server, serve, start_agent, token_file};
use slowpoke_agent::Auth;
use slowpoke_testkit::openapi::{
    assert_answer_matches, documented_routes, router_paths, served_routes,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_leaves_the_plan_untouched() {
    let server = python_http_server();
    let state = TempDir::new("api-bad");
    let agent = start_agent(&state).await;
    let url = serve(&agent).await;
    let port = server.port;
    let checks = tokio::task::spawn_blocking(move || {
        let put = |name: &str, body: &str| {
            call(
                "PUT",
                &format!("{url}/v1/services/{name}"),
                Some(body),
                Some(TOKEN),
            )
        };
        let (c, b) = put("web", &format!("{{\"ports\":[{port}]}}"));
        assert_eq!(c, 200, "{b}");
        assert_eq!(json(&b)["listen_ports"], serde_json::json!([port]));
        let plan_before = call("GET", &format!("{url}/v1/slowdown"), None, Some(TOKEN)).1;
        let cases: Vec<(&str, String, String, u16, &str)> = vec![
            ("PUT", "/v1/services/x".into(), "{not json".into(), 400, "invalid JSON"),
            ("PUT", "/v1/services/x".into(), "{}".into(), 400, "no selectors"),
            ("PUT", "/v1/services/x".into(), "{\"pids\":[]}".into(), 400, "at least one"),
            ("PUT", "/v1/services/x".into(), "{\"pids\":[1234],\"comm\":\"a\"}".into(), 400, "more than one"),
            ("PUT", "/v1/services/x".into(), "{\"comm\":\"no-such-proc-zz\"}".into(), 400, "matches no process"),
            ("PUT", "/v1/services/x".into(), "{\"ports\":[1]}".into(), 400, "matches no process"),
            ("PUT", "/v1/services/x".into(), "{\"cgroup\":\"/sys/fs/cgroup/nope-zz\"}".into(), 400, "not readable"),
            ("PUT", "/v1/services/x".into(), "{\"port\":[80]}".into(), 400, "unknown field"),
            ("PUT", "/v1/services/bad%20name".into(), "{\"comm\":\"a\"}".into(), 400, "invalid service name"),
            ("GET", "/v1/services/nope".into(), String::new(), 404, "no service named"),
            ("DELETE", "/v1/services/nope".into(), String::new(), 404, "no service named"),
            ("PUT", "/v1/slowdown".into(), "{\"mode\":\"pause\",\"services\":{\"nope\":{\"delay_per_visit_ns\":1000}}}".into(), 400, "unknown service"),
            ("PUT", "/v1/slowdown".into(), "{\"mode\":\"pause\",\"services\":{\"web\":{\"delay_per_visit_ns\":100000001}}}".into(), 400, "above the limit"),
            ("PUT", "/v1/slowdown".into(), "{\"mode\":\"warp\",\"services\":{\"web\":{\"delay_per_visit_ns\":1000}}}".into(), 400, "unknown variant"),
            ("PUT", "/v1/slowdown".into(), "{\"mode\":\"pause\",\"quantum_ns\":5,\"services\":{}}".into(), 400, "quantum_ns"),
            ("PUT", "/v1/slowdown".into(), "{\"mode\":\"spin\",\"synchronized\":true,\"services\":{\"web\":{\"delay_per_visit_ns\":1000}}}".into(), 400, "synchronized applies to pauses only"),
            // One good entry and one bad: nothing of the plan is applied.
            ("PUT", "/v1/slowdown".into(), "{\"services\":{\"web\":{\"delay_per_visit_ns\":1000},\"nope\":{\"delay_per_visit_ns\":1000}}}".into(), 400, "unknown service"),
            ("PUT", "/v1/slowdown".into(), "[]".into(), 400, "invalid JSON"),
            ("GET", "/v1/nothing".into(), String::new(), 404, "no such endpoint"),
        ];
        for (method, path, body, want, msg) in cases {
            let (c, b) = call(
                method,
                &format!("{url}{path}"),
                (!body.is_empty()).then_some(body.as_str()),
                Some(TOKEN),
            );
            assert_eq!(c, want, "{method} {path} {body}: {b}");
            let e = json(&b);
            let text = e["error"]
                .as_str()
                .unwrap_or_else(|| panic!("error field in {b}"));
            assert!(
                text.contains(msg),
                "{method} {path} {body}: {text:?} should mention {msg:?}"
            );
            assert_eq!(
                call("GET", &format!("{url}/v1/slowdown"), None, Some(TOKEN)).1,
                plan_before,
                "plan untouched"
            );
        }
        // The service is still there and the rest of the API answers.
        let list = json(&call("GET", &format!("{url}/v1/services"), None, Some(TOKEN)).1);
        assert!(
            list["services"]["web"]["pids"]
                .as_array()
                .is_some_and(|p| !p.is_empty()),
            "{list}"
        );
        let stats = json(&call("GET", &format!("{url}/v1/stats"), None, Some(TOKEN)).1);
        assert!(
            stats["services"]["web"]["cores"]
                .as_f64()
                .is_some_and(|c| c >= 1.0),
            "{stats}"
        );
        assert!(stats["timestamp_ns"].as_u64().is_some());
        let (c, m) = call("GET", &format!("{url}/metrics"), None, Some(TOKEN));
        assert_eq!(c, 200);
        assert!(m.contains("slowpoke_visits_total{service=\"web\"}"), "{m}");
        assert_eq!(json(&plan_before)["synchronized"], false, "{plan_before}");
        // A synchronized pause plan is accepted and shown as such.
        let (c, b) = call(
            "PUT",
            &format!("{url}/v1/slowdown"),
            Some("{\"synchronized\":true,\"services\":{\"web\":{\"delay_per_visit_ns\":1000}}}"),
            Some(TOKEN),
        );
        assert_eq!(c, 200, "{b}");
        assert_eq!(json(&b)["synchronized"], true, "{b}");
        let got = json(&call("GET", &format!("{url}/v1/slowdown"), None, Some(TOKEN)).1);
        assert_eq!(got["synchronized"], true, "{got}");
        assert_eq!(got["mode"], "pause", "{got}");
        let (c, _) = call("DELETE", &format!("{url}/v1/slowdown"), None, Some(TOKEN));
        assert_eq!(c, 204);
        let (c, _) = call(
            "DELETE",
            &format!("{url}/v1/services/web"),
            None,
            Some(TOKEN),
        );
        assert_eq!(c, 204);
        assert_eq!(
            call("GET", &format!("{url}/v1/services/web"), None, Some(TOKEN)).0,
            404
        );
    });
    checks.await.expect("checks");
    agent.shutdown().await;
}

/// Over TCP every call needs the token, reads included (`safety_transport.rs` checks the binary,
/// the Host rule and the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_calls_need_the_token() {
    let server = python_http_server();
    let state = TempDir::new("api-token");
    let agent = start_agent(&state).await;
    let url = serve(&agent).await;
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        let body = format!("{{\"ports\":[{port}]}}");
        let put = |token| call("PUT", &format!("{url}/v1/services/web"), Some(&body), token);
        let (c, b) = put(None);
        assert_eq!(c, 401, "{b}");
        assert!(
            json(&b)["error"]
                .as_str()
                .is_some_and(|e| e.contains("Bearer")),
            "{b}"
        );
        assert_eq!(put(Some("wrong")).0, 401);
        assert_eq!(put(Some(TOKEN)).0, 200);
        assert_eq!(
            call("GET", &format!("{url}/v1/services"), None, None).0,
            401,
            "reads need it too"
        );
        assert_eq!(
            call("DELETE", &format!("{url}/v1/slowdown"), None, None).0,
            401
        );
    })
    .await
    .expect("checks");
    agent.shutdown().await;
}

#[test]
fn binary_refuses_tcp_without_token_and_a_port_in_use() {
    let state = TempDir::new("api-refuse");
    let bin = env!("CARGO_BIN_EXE_slowpoke-agent");
    let out = std::process::Command::new(bin)
        .args(["--listen", "0.0.0.0:0", "--test-hooks", "--state-dir"])
        .arg(state.path())
        .env_remove("SLOWPOKE_AGENT_TOKEN")
        .output()
        .expect("running the agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without a token") && err.contains("--token-file"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let out = std::process::Command::new(bin)
        .args(["--listen", &addr.to_string(), "--test-hooks", "--state-dir"])
        .arg(state.path())
        .env("SLOWPOKE_AGENT_TOKEN", "t")
        .output()
        .expect("running the agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");

    // An empty token file is an error, not "no token" (which would leave the agent open).
    let empty = token_file(state.path(), "empty-token", "");
    let out = std::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--test-hooks", "--state-dir"])
        .arg(state.path())
        .arg("--token-file")
        .arg(&empty)
        .output()
        .expect("running the agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is empty"), "{err}");

    let out = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .expect("--help");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--socket",
        "--socket-group",
        "--listen",
        "--allowed-host",
        "--token-file",
        "--state-dir",
        "--quantum-us",
        "--max-delay-ms",
        "--max-stopped-share",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help explains {flag}: {help}");
    }
    assert!(
        !help.contains("--test-hooks"),
        "the test-only flag is hidden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router() {
    let server = python_http_server();
    let state = TempDir::new("api-openapi");
    let agent = start_agent(&state).await;
    let url = serve(&agent).await;
    let router = format!("{:?}", agent.router(Auth::socket(None)));
    let port = server.port;
    tokio::task::spawn_blocking(move || {
        // The agent serves the document generated from the wire types.
        let (c, b) = call("GET", &format!("{url}/v1/openapi.json"), None, Some(TOKEN));
        assert_eq!(c, 200, "{b}");
        let doc = json(&b);
        let generated = serde_json::to_value(slowpoke_api::openapi::agent()).expect("document");
        assert_eq!(doc, generated);

        // Route for route: what the router serves is what the document lists, and nothing else.
        let mut served = served_routes(&url, &router_paths(&router), Some(TOKEN));
        // The test hook (AgentConfig::test_hooks, on in these tests) is no part of the API.
        served.retain(|(_, path)| !path.starts_with("/v1/debug/"));
        assert_eq!(documented_routes(&doc), served);

        // Real answers match the document's schemas.
        let check = |method: &str, template: &str, path: &str, body: Option<&str>| {
            let (c, b) = call(method, &format!("{url}{path}"), body, Some(TOKEN));
            assert_answer_matches(&doc, method, template, c, &json(&b));
            c
        };
        let spec = format!("{{\"ports\":[{port}]}}");
        assert_eq!(
            check(
                "PUT",
                "/v1/services/{name}",
                "/v1/services/web",
                Some(&spec)
            ),
            200
        );
        assert_eq!(
            check("GET", "/v1/services/{name}", "/v1/services/web", None),
            200
        );
        assert_eq!(check("GET", "/v1/services", "/v1/services", None), 200);
        assert_eq!(check("GET", "/v1/health", "/v1/health", None), 200);
        assert_eq!(check("GET", "/v1/stats", "/v1/stats", None), 200);
        let plan = r#"{"synchronized":true,"services":{"web":{"delay_per_visit_ns":1000}}}"#;
        assert_eq!(
            check("PUT", "/v1/slowdown", "/v1/slowdown", Some(plan)),
            200
        );
        assert_eq!(check("GET", "/v1/slowdown", "/v1/slowdown", None), 200);
        assert_eq!(
            check("GET", "/v1/services/{name}", "/v1/services/nope", None),
            404
        );
        assert_eq!(
            check("PUT", "/v1/slowdown", "/v1/slowdown", Some("[]")),
            400
        );
        assert_eq!(
            call("DELETE", &format!("{url}/v1/slowdown"), None, Some(TOKEN)).0,
            204
        );
        let schedule = r#"{"services":["web"],"k":2}"#;
        assert_eq!(
            check("PUT", "/v1/scheduling", "/v1/scheduling", Some(schedule)),
            200
        );
        assert_eq!(check("GET", "/v1/scheduling", "/v1/scheduling", None), 200);
        assert_eq!(check("GET", "/v1/stats", "/v1/stats", None), 200);
        let renew = r#"{"owner":"anonymous"}"#;
        assert_eq!(
            check(
                "POST",
                "/v1/scheduling/renew",
                "/v1/scheduling/renew",
                Some(renew)
            ),
            200
        );
        assert_eq!(
            check(
                "PUT",
                "/v1/scheduling",
                "/v1/scheduling",
                Some(r#"{"services":[]}"#)
            ),
            400
        );
        assert_eq!(
            call("DELETE", &format!("{url}/v1/scheduling"), None, Some(TOKEN)).0,
            204
        );
    })
    .await
    .expect("checks");
    agent.shutdown().await;
}

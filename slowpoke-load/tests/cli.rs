//! The `slowpoke-load` binary: JSON output, exit codes and error messages.

mod common;

use std::process::{Command, Output};

use common::{TestServer, dead_url};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slowpoke-load"))
        .args(args)
        .output()
        .expect("run slowpoke-load")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn json_report_has_the_fields() {
    let srv = TestServer::start();
    let url = srv.url("/ok");
    let o = cli(&["--json", "-n", "300", "-c", "4", "--warmup", "50ms", &url]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("stdout is one JSON object");
    for field in [
        "secs",
        "completed_ok",
        "rps",
        "non_2xx",
        "timeouts",
        "conn_errors",
        "error_ratio",
        "p50_us",
        "p99_us",
        "p999_us",
        "cpu_share",
        "generator_bound",
        "total_requests",
        "rps_window",
        "rps_workers",
        "warmup_requests",
        "probe_requests",
        "connections",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {v}");
    }
    assert_eq!(v["completed_ok"], 300);
    assert_eq!(v["total_requests"], 300);
    assert_eq!(v["length"]["requests"], 300);
    let sent = v["warmup_requests"].as_u64().unwrap() + v["probe_requests"].as_u64().unwrap() + 300;
    assert_eq!(srv.count("/ok"), sent);
}

#[test]
fn human_summary_and_headers_and_body() {
    let srv = TestServer::start();
    let url = srv.url("/ok");
    let o = cli(&[
        "-n",
        "20",
        "-c",
        "2",
        "--warmup",
        "0s",
        "-m",
        "post",
        "-H",
        "X-Test: 1",
        "-b",
        "hello",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Throughput:") && out.contains("20 2xx"),
        "{out}"
    );
}

#[test]
fn bad_url_is_named() {
    let o = cli(&["-n", "1", "ftp://127.0.0.1/x"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("bad URL") && e.contains("ftp://127.0.0.1/x") && e.contains("http://"),
        "{e}"
    );
}

#[test]
fn bad_header_is_rejected() {
    let o = cli(&["-n", "1", "-H", "no colon here", "http://127.0.0.1:1/"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("Name: value"), "{e}");
}

#[test]
fn unreachable_entry_is_named() {
    let url = dead_url();
    let o = cli(&["-n", "1", &url]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(&url) && e.contains("does not answer"), "{e}");
}

#[test]
fn missing_url_is_a_usage_error() {
    let o = cli(&["-n", "1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn too_many_errors_exit_3() {
    let srv = TestServer::start();
    let url = srv.url("/fail");
    let o = cli(&["--json", "-n", "10", "-c", "2", "--warmup", "0s", &url]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("--max-error-ratio"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON even on failure");
    assert_eq!(v["non_2xx"], 10);
    assert_eq!(v["completed_ok"], 0);
}

#[test]
fn mix_file_is_used() {
    let srv = TestServer::start();
    let dir = std::env::temp_dir().join(format!("slowpoke-load-mix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mix = dir.join("mix.json");
    std::fs::write(
        &mix,
        format!(
            r#"[{{"url":"{}","weight":1}},{{"method":"POST","url":"{}","body":"x","weight":1}}]"#,
            srv.url("/a"),
            srv.url("/b")
        ),
    )
    .unwrap();
    let o = cli(&[
        "--json",
        "-n",
        "100",
        "-c",
        "2",
        "--warmup",
        "0s",
        "--mix",
        mix.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&dir).ok();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(srv.count("/a") - 1 + srv.count("/b"), 100);
    assert!(srv.count("/b") > 0);
}

#[test]
fn open_loop_from_the_command_line() {
    let srv = TestServer::start();
    let url = srv.url("/ok");
    let o = cli(&[
        "--json",
        "--rate",
        "1000",
        "--arrivals",
        "uniform",
        "-n",
        "200",
        "--warmup",
        "0s",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["completed_ok"], 200);
    assert_eq!(v["open_loop"]["arrivals"], "uniform");
    assert_eq!(v["open_loop"]["target_rps"], 1000.0);
    assert!(v["open_loop"]["queue_wait_p99_us"].is_number(), "{v}");

    // A trace: four arrivals 1 ms apart, replayed; the human summary names the open loop.
    let dir = std::env::temp_dir().join(format!("slowpoke-load-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.txt");
    std::fs::write(&trace, "0\n0.001\n0.002\n0.003\n").unwrap();
    let o = cli(&[
        "--trace",
        trace.to_str().unwrap(),
        "-n",
        "100",
        "--warmup",
        "0s",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("open loop at 1000.0 req/s (trace arrivals)"),
        "{out}"
    );
    assert!(
        out.contains("Open loop:  target 1000.0 req/s (trace)"),
        "{out}"
    );

    // Mistakes say what to fix.
    let o = cli(&["--rate", "0", "-n", "10", &url]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("positive number of requests per second"),
        "{}",
        stderr(&o)
    );
    let o = cli(&["--rate", "10", "--arrivals", "bursty", "-n", "10", &url]);
    assert!(
        stderr(&o).contains("use poisson or uniform"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&trace, "0\n0.5\n0.2\n").unwrap();
    let o = cli(&["--trace", trace.to_str().unwrap(), "-n", "10", &url]);
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

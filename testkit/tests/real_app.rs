//! End to end on a real application built from Debian's servers: nginx (1 worker, gzip on, the
//! bottleneck) answering from memcached. The coordinator (`slowpoke what-if`, with its in-process agent and kernel programs)
//! must measure a baseline, predict a gain for an optimization of the bottleneck, and leave no
//! process stopped. Runs as root.

use std::process::Command;

use slowpoke_testkit::{
    NginxMemcached, TempDir, is_stopped, nginx_live_workers, nginx_workers_script, workspace_bin,
};

/// Runs `slowpoke what-if` on `app` (services `web` and `cache`, gzip requests, the in-process
/// agent on private directories) with `args` after them; the JSON result.
fn what_if(app: &NginxMemcached, args: &[&str]) -> serde_json::Value {
    let state = TempDir::new("real-app-agent");
    let results = TempDir::new("real-app-results");
    let out = Command::new(workspace_bin("slowpoke"))
        .args(["what-if", "--service"])
        .arg(format!("web=port:{}", app.nginx.port))
        .arg("--service")
        .arg(format!("cache=port:{}", app.memcached.port))
        .args(["--entry", &app.url, "--header", "Accept-Encoding: gzip"])
        .args(args)
        .args(["--precision", "0", "--json"])
        .arg("--agent-state-dir")
        .arg(state.path())
        .arg("--results-dir")
        .arg(results.path())
        .output()
        .expect("running slowpoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "slowpoke failed: {stderr}\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object expected ({e}): {stdout}"))
}

#[test]
fn what_if_on_nginx_memcached_predicts_a_gain_and_leaves_nothing_stopped() {
    let app = NginxMemcached::start(1);
    // The default 64 connections: enough queued work at nginx to absorb memcached's pauses
    // (with 16, nginx ran dry during 10 ms pauses and the slowed run lost more than δ).
    let result = what_if(
        &app,
        &[
            "--target",
            "web",
            "--percent",
            "30",
            "--warmup",
            "1",
            "--duration",
            "1",
            "--repetitions",
            "5",
        ],
    );

    let baseline = result["baseline_rps"].as_f64().expect("baseline_rps");
    let predicted = result["predicted_rps"].as_f64().expect("predicted_rps");
    assert!(baseline > 0.0, "baseline {baseline}");
    assert!(
        predicted > baseline,
        "a 30 % faster bottleneck must predict a gain: baseline {baseline}, predicted {predicted}"
    );
    // Every request reaches memcached exactly once: r_cache = 1 up to the window edges. r is
    // cache visits / nginx visits between two snapshots of the kernel counters; a request
    // that visited memcached before a snapshot and nginx's send after it counts on one side
    // only, and at most `connections` requests are in flight at a snapshot: |r − 1| ≤
    // connections / (nginx visits in a window). Under a loaded CI machine nginx is sometimes
    // descheduled with many requests past memcached (a run saw r = 1.062 at 1 s windows).
    let services = result["services"].as_array().expect("services");
    let cache = services
        .iter()
        .find(|s| s["name"] == "cache")
        .expect("cache in the result");
    let r = cache["r"].as_f64().expect("r");
    // The what-if's default load (64 connections) and its 1 s windows.
    let (connections, window_s) = (64.0, 1.0);
    let edge = connections / (baseline * window_s);
    eprintln!("baseline {baseline:.0} req/s, r_cache {r:.4}, window-edge bound ±{edge:.4}");
    assert!(
        (r - 1.0).abs() <= edge.max(0.02),
        "r_cache = {r} (bound ±{edge:.4})"
    );
    assert!(
        cache["d_us"].as_f64().expect("d_us") > 0.0,
        "cache was paused"
    );

    let mut pids = app.nginx.pids();
    pids.push(app.memcached.pid());
    for pid in pids {
        assert!(!is_stopped(pid), "process {pid} left stopped");
    }
}

/// A scaling what-if on the real app with a real ground truth: `--truth-cmd` reloads nginx with
/// a second worker before every ground-truth window and `--restore-cmd` reloads it with one
/// after it. Each must run exactly once per repetition, in that order, and the app must end as
/// it started (one worker, nothing stopped).
#[test]
fn a_real_change_is_the_ground_truth_and_is_undone_after_every_truth_window() {
    let app = NginxMemcached::start(1);
    let scripts = TempDir::new("real-app-truth");
    let script = nginx_workers_script(&app.nginx, scripts.path());
    let log = scripts.path().join("calls.log");
    let (s, l) = (script.display(), log.display());
    let apply = format!("echo apply $SLOWPOKE_TARGET $SLOWPOKE_CORES >> {l} && sh {s} 2");
    let restore = format!("echo restore >> {l} && sh {s} 1");
    // Doubling the bottleneck's cores pauses the cache about half of the time.
    let result = what_if(
        &app,
        &[
            "--target",
            "web",
            "--cores",
            "2",
            "--truth-cmd",
            &apply,
            "--restore-cmd",
            &restore,
            "--max-stopped-share",
            "0.95",
            "--warmup",
            "1",
            "--duration",
            "1",
            "--repetitions",
            "2",
        ],
    );
    let truth = result["truth_rps"].as_f64().expect("truth_rps");
    assert!(truth > 0.0, "truth {truth}");
    assert!(
        result["error_pct"].as_f64().is_some_and(f64::is_finite),
        "error_pct: {result}"
    );
    let calls = std::fs::read_to_string(&log).expect("the commands ran");
    assert_eq!(
        calls, "apply web 2\nrestore\napply web 2\nrestore\n",
        "one apply and one restore per repetition"
    );
    assert_eq!(
        nginx_live_workers(app.nginx.pid()),
        1,
        "nginx is back to one worker"
    );
    let mut pids = app.nginx.pids();
    pids.push(app.memcached.pid());
    for pid in pids {
        assert!(!is_stopped(pid), "process {pid} left stopped");
    }
}

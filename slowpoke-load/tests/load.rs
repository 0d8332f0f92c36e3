//! The library against real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{ClosingServer, TestServer, dead_url};
use slowpoke_load::{
    Arrivals, LoadError, LoadGenerator, LoadSpec, RequestTemplate, RunLength, run,
};

fn spec(requests: Vec<RequestTemplate>, connections: usize, warmup_ms: u64) -> LoadSpec {
    LoadSpec {
        requests,
        connections,
        timeout: Duration::from_secs(5),
        warmup: Duration::from_millis(warmup_ms),
        arrivals: Arrivals::Closed,
    }
}

fn weighted(url: String, weight: u32) -> RequestTemplate {
    RequestTemplate {
        weight,
        ..RequestTemplate::get(url)
    }
}

#[test]
fn counted_run_is_exact() {
    let srv = TestServer::start();
    let r = run(
        &spec(vec![RequestTemplate::get(srv.url("/ok"))], 8, 100),
        RunLength::Requests(500),
        false,
    )
    .expect("run");
    assert_eq!(r.completed_ok, 500);
    assert_eq!(r.total_requests, 500);
    assert_eq!((r.non_2xx, r.timeouts, r.conn_errors), (0, 0, 0));
    assert_eq!(r.probe_requests, 1);
    assert!(r.warmup_requests > 0, "a 100 ms warm-up sends something");
    assert_eq!(srv.count("/ok"), 500 + r.warmup_requests + r.probe_requests);
    assert!(r.rps > 0.0 && r.rps_workers > 0.0);
    // rps_workers divides by the mean per-connection time, which is at most the window.
    assert!(
        r.rps_workers >= r.rps_window * 0.999,
        "{} vs {}",
        r.rps_workers,
        r.rps_window
    );
    assert_eq!(r.latency_us.len(), 500);
    assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us);
    assert!(r.cpu_ns > 0);
}

#[test]
fn timed_run_counts_only_the_window() {
    let srv = TestServer::start();
    let r = run(
        &spec(vec![RequestTemplate::get(srv.url("/ok"))], 4, 0),
        RunLength::Duration(Duration::from_millis(300)),
        false,
    )
    .expect("run");
    assert!(r.secs >= 0.3 && r.secs < 1.0, "{}", r.secs);
    assert!(r.completed_ok > 0);
    assert_eq!(r.warmup_requests, 0);
    // The server saw the window's requests plus the probe plus at most one in flight per connection at the end.
    let seen = srv.count("/ok");
    assert!(
        seen > r.completed_ok && seen <= r.completed_ok + 1 + 4,
        "{seen} vs {}",
        r.completed_ok
    );
}

#[test]
fn non_2xx_are_not_throughput() {
    let srv = TestServer::start();
    let r = run(
        &spec(
            vec![
                RequestTemplate::get(srv.url("/ok")),
                RequestTemplate::get(srv.url("/fail")),
            ],
            4,
            0,
        ),
        RunLength::Requests(200),
        false,
    )
    .expect("run");
    assert_eq!(r.completed_ok + r.non_2xx, 200);
    assert!(r.non_2xx > 0 && r.completed_ok > 0);
    assert_eq!(r.non_2xx, srv.count("/fail"));
    assert_eq!(
        r.completed_ok,
        srv.count("/ok") - 1,
        "the probe went to /ok"
    );
    assert_eq!((r.timeouts, r.conn_errors), (0, 0));
    assert!((r.error_ratio - r.non_2xx as f64 / 200.0).abs() < 1e-12);
    assert_eq!(
        r.latency_us.len(),
        r.completed_ok,
        "latency is over 2xx only"
    );
}

#[test]
fn timeouts_are_counted_and_connections_replaced() {
    let srv = TestServer::start();
    let mut s = spec(
        vec![
            RequestTemplate::get(srv.url("/ok")),
            RequestTemplate::get(srv.url("/hang")),
        ],
        8,
        0,
    );
    // Long enough that a 200 on a loaded machine never times out, short enough for a quick test.
    s.timeout = Duration::from_millis(400);
    let r = run(&s, RunLength::Requests(40), false).expect("run");
    assert!(r.timeouts > 0);
    assert_eq!(r.completed_ok + r.timeouts, 40);
    assert_eq!(r.timeouts, srv.count("/hang"));
    assert_eq!(r.completed_ok, srv.count("/ok") - 1);
    assert_eq!((r.non_2xx, r.conn_errors), (0, 0));
}

#[test]
fn connection_errors_are_counted() {
    let srv = ClosingServer::start();
    let r = run(
        &spec(vec![RequestTemplate::get(srv.url())], 2, 0),
        RunLength::Requests(20),
        false,
    )
    .expect("run");
    assert_eq!(r.conn_errors, 20);
    assert_eq!((r.completed_ok, r.non_2xx, r.timeouts), (0, 0, 0));
    assert!((r.error_ratio - 1.0).abs() < 1e-12);
    assert!(r.rps.abs() < 1e-12, "{}", r.rps);
}

#[test]
fn a_kept_alive_connection_closed_before_its_answer_is_retried_once_on_a_new_one() {
    // Every connection's second request crosses the server's close: without the retry every
    // request after a connection's first would fail.
    let srv = ClosingServer::start_idle_closing();
    let r = run(
        &spec(vec![RequestTemplate::get(srv.url())], 2, 0),
        RunLength::Requests(20),
        false,
    )
    .expect("run");
    assert_eq!(r.completed_ok, 20, "{r:?}");
    assert_eq!((r.non_2xx, r.timeouts, r.conn_errors), (0, 0, 0));
    // Each request after the probe was sent twice (closed, then answered on a new connection),
    // except a connection's very first.
    let seen = *srv.seen.lock().unwrap();
    assert!(seen > 21 && seen <= 41, "{seen} request heads");
}

#[test]
fn a_post_is_not_retried() {
    let srv = ClosingServer::start_idle_closing();
    let mut post = RequestTemplate::get(srv.url());
    post.method = hyper::Method::POST;
    let r = run(&spec(vec![post], 1, 0), RunLength::Requests(10), false).expect("run");
    // One connection: its first request answered, its second closed, and so on.
    assert!(r.conn_errors >= 4, "{r:?}");
    assert_eq!(r.completed_ok + r.conn_errors, 10, "{r:?}");
}

#[test]
fn weighted_mix_follows_the_weights() {
    let srv = TestServer::start();
    let r = run(
        &spec(
            vec![weighted(srv.url("/a"), 3), weighted(srv.url("/b"), 1)],
            4,
            0,
        ),
        RunLength::Requests(4000),
        false,
    )
    .expect("run");
    assert_eq!(r.completed_ok, 4000);
    let (a, b) = (srv.count("/a") - 1, srv.count("/b"));
    assert_eq!(a + b, 4000);
    let share = a as f64 / 4000.0;
    assert!((share - 0.75).abs() < 0.03, "share of /a = {share}");
}

#[test]
fn unreachable_entry_fails_naming_the_url() {
    let url = dead_url();
    let err =
        LoadGenerator::start(spec(vec![RequestTemplate::get(url.clone())], 2, 0)).unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
}

#[test]
fn bad_input_is_rejected() {
    let err = LoadGenerator::start(spec(vec![RequestTemplate::get("ftp://127.0.0.1/")], 2, 0))
        .unwrap_err();
    assert!(matches!(err, LoadError::BadUrl { .. }), "{err:?}");
    let mut t = RequestTemplate::get("http://127.0.0.1:1/");
    t.headers.push(("bad header".into(), "x".into()));
    let err = LoadGenerator::start(spec(vec![t], 2, 0)).unwrap_err();
    assert!(matches!(err, LoadError::BadHeader { .. }), "{err:?}");
    let err = LoadGenerator::start(spec(vec![], 2, 0)).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
}

/// The continuous load as the coordinator uses it, started from inside a tokio runtime.
#[test]
fn continuous_load_windows_from_inside_a_runtime() {
    let srv = TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let generator =
            LoadGenerator::start(spec(vec![RequestTemplate::get(srv.url("/ok"))], 4, 0))
                .expect("start");
        let first = generator.warmed_up();
        // Poll (bounded) until the load has made progress.
        let deadline = Instant::now() + Duration::from_secs(10);
        while generator.outcomes() < first.attempts() + 200 {
            assert!(Instant::now() < deadline, "no progress");
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(5));
        }
        let second = generator.snapshot();
        let w = second.window_since(&first);
        assert!(w.completed_ok >= 200, "{}", w.completed_ok);
        assert!(w.rps > 0.0);
        assert!(w.error_ratio.abs() < 1e-12, "{}", w.error_ratio);
        assert!(w.cpu_share > 0.0 && w.cpu_share <= 1.0, "{}", w.cpu_share);
        let last = generator.stop();
        assert!(last.completed_ok >= second.completed_ok);
        // Requests in flight at stop are abandoned uncounted (at most one per connection).
        let seen = srv.count("/ok");
        assert!(
            seen > last.completed_ok && seen <= last.completed_ok + 1 + 4,
            "{seen} vs {}",
            last.completed_ok
        );
    });
}

#[test]
fn counted_run_on_a_multi_thread_generator() {
    let srv = TestServer::start();
    let options = slowpoke_load::GeneratorOptions {
        worker_threads: 2,
        ..slowpoke_load::GeneratorOptions::default()
    };
    let r = slowpoke_load::run_with(
        &spec(vec![RequestTemplate::get(srv.url("/ok"))], 8, 50),
        RunLength::Requests(300),
        false,
        &options,
    )
    .expect("run");
    assert_eq!(r.completed_ok, 300);
    assert_eq!(r.generator_threads, 2);
    assert_eq!(srv.count("/ok"), 300 + r.warmup_requests + r.probe_requests);
}

//! The `thread-per-request` serving model against the default `async` one, on real processes and sockets:
//! a worker thread stays with its request through non-blocking waits and downstream calls, so a service's
//! requests in flight are bounded by its workers, where the async model serves others during the waits.
//! Heavy-tailed CPU work keeps the file's mean.

mod common;

use std::time::Duration;

use common::{start, topo};
use slowpoke_load::{Arrivals, LoadSpec, RequestTemplate, RunLength, run};

/// front (2 workers, each visit waits 10 ms without blocking a thread, then calls back) → back (2 workers:
/// one per caller worker, whose pooled connection holds it — as with real per-connection servers).
fn front_back(serving: &str) -> slowpoke_emu::Topology {
    topo(&format!(
        r#"{{"entry":{{"service":"front","endpoint":"home"}},"services":{{
          "front":{{"threads":2,"serving":"{serving}","endpoints":{{"home":{{"wait_us":10000,
            "calls":[{{"service":"back","endpoint":"get"}}]}}}}}},
          "back":{{"threads":2,"serving":"{serving}","endpoints":{{"get":{{"cpu_us":20}}}}}}}}}}"#
    ))
}

fn closed_loop_rps(url: &str, connections: usize) -> (f64, u64) {
    let spec = LoadSpec {
        connections,
        timeout: Duration::from_secs(10),
        warmup: Duration::from_millis(200),
        arrivals: Arrivals::Closed,
        ..LoadSpec::new(vec![RequestTemplate::get(url)])
    };
    let r = run(
        &spec,
        RunLength::Duration(Duration::from_millis(1500)),
        false,
    )
    .expect("load");
    (r.rps, r.non_2xx + r.timeouts + r.conn_errors)
}

#[test]
fn a_worker_stays_with_its_request_through_waits_and_calls() {
    let (async_rps, async_errors) = closed_loop_rps(&start(front_back("async"), &[]).entry, 16);
    let app = start(front_back("thread-per-request"), &[]);
    let (tpr_rps, tpr_errors) = closed_loop_rps(&app.entry, 16);
    eprintln!("16 connections: async {async_rps:.0}/s, thread-per-request {tpr_rps:.0}/s");
    assert_eq!((async_errors, tpr_errors), (0, 0));
    // Two workers, each held ≥ 10 ms per request: at most 200 requests/s, whatever the 16 connections.
    assert!(
        tpr_rps <= 210.0,
        "thread-per-request served {tpr_rps:.0}/s with 2 workers held 10 ms each"
    );
    assert!(
        tpr_rps >= 100.0,
        "thread-per-request served only {tpr_rps:.0}/s: workers idle or connections starved"
    );
    // Async: the waits overlap (16 in flight), bounded by the 16 connections, not the 2 threads.
    assert!(
        async_rps >= 3.0 * tpr_rps,
        "async {async_rps:.0}/s vs thread-per-request {tpr_rps:.0}/s"
    );
    let stats = app.all_stats().expect("stats");
    // Every front visit calls back once, but for the last request of each of the 16 connections: the load
    // stopped and closed them, so a visit still waiting (or still queued for a worker) is dropped with its
    // connection before its call.
    let (front, back) = (stats["front"].visits["home"], stats["back"].visits["get"]);
    assert!(
        back <= front && front - back <= 16,
        "front {front} visits, back {back}"
    );
}

#[test]
fn more_connections_than_workers_are_all_served() {
    // 8 connections, 1 worker: the worker closes a connection after 100 requests (or 50 ms idle) and takes
    // the next waiting one, so every connection gets answers; none times out.
    let app = start(
        topo(
            r#"{"entry":{"service":"a","endpoint":"x"},"services":{
              "a":{"threads":1,"serving":"thread-per-request","endpoints":{"x":{"cpu_us":50}}}}}"#,
        ),
        &[],
    );
    let spec = LoadSpec {
        connections: 8,
        timeout: Duration::from_secs(10),
        warmup: Duration::ZERO,
        arrivals: Arrivals::Closed,
        ..LoadSpec::new(vec![RequestTemplate::get(&app.entry)])
    };
    let r = run(&spec, RunLength::Requests(2000), false).expect("load");
    assert_eq!(r.completed_ok, 2000);
    assert_eq!((r.non_2xx, r.timeouts, r.conn_errors), (0, 0, 0));
}

#[test]
fn heavy_tailed_work_keeps_its_mean() {
    // Two endpoints of one process, the same mean work: fixed, and Pareto α = 2.5. Measured side by side
    // (interleaved blocks), so the emulator's own per-visit overhead cancels.
    let app = start(
        topo(
            r#"{"entry":{"service":"a","endpoint":"fixed"},"services":{"a":{"threads":1,"endpoints":{
              "fixed":{"cpu_us":200},
              "tail":{"cpu_us":200,"cpu_dist":{"pareto":{"alpha":2.5}}}}}}}"#,
        ),
        &[],
    );
    let pid = app.pids()[0];
    let base = app.service_url("a").expect("url");
    let mut cpu = [0u64; 2];
    for _ in 0..3 {
        for (k, path) in ["fixed", "tail"].iter().enumerate() {
            let before = common::proc_cpu_ns_precise(pid);
            common::drive(&format!("{base}/{path}"), 1000, 2);
            cpu[k] += common::proc_cpu_ns_precise(pid) - before;
        }
    }
    let [fixed, tail] = cpu.map(|ns| ns as f64 / 3000.0 / 1e3);
    // 3000 Pareto draws: the mean's standard error is 1.6 % (CV 0.89); 10 % of 200 µs is > 6 of them.
    assert!(
        (tail - fixed).abs() < 20.0,
        "per visit: fixed {fixed:.1} µs, Pareto {tail:.1} µs (same mean of 200 µs)"
    );
    assert!(fixed > 190.0, "fixed work {fixed:.1} µs per visit");
}

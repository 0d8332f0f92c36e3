//! The open loop against real sockets on 127.0.0.1: requests leave at their due times whatever the
//! responses, and latency counts from the due time, so a server that stalls shows in the latency of every
//! request due during the stall (a closed loop hides all but one per connection: coordinated omission).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use slowpoke_load::{Arrivals, LoadSpec, RequestTemplate, RunLength, Schedule, run};

fn open(url: String, schedule: Schedule, connections: usize) -> LoadSpec {
    LoadSpec {
        connections,
        timeout: Duration::from_secs(5),
        warmup: Duration::ZERO,
        arrivals: Arrivals::Open(schedule),
        ..LoadSpec::new(vec![RequestTemplate::get(url)])
    }
}

#[test]
fn a_counted_open_run_sends_exactly_n_at_the_rate() {
    let srv = TestServer::start();
    let spec = open(srv.url("/ok"), Schedule::uniform(2000.0).unwrap(), 16);
    let r = run(&spec, RunLength::Requests(1000), false).expect("run");
    assert_eq!(r.completed_ok, 1000);
    assert_eq!(srv.count("/ok"), 1000 + r.probe_requests);
    // 1000 requests 0.5 ms apart take 0.5 s: the pacer does not run ahead (however idle the server), and
    // even on a loaded machine it is not far behind.
    assert!(
        (0.45..1.5).contains(&r.secs),
        "1000 requests at 2000/s took {:.3} s",
        r.secs
    );
    let o = r
        .open_loop
        .as_ref()
        .expect("an open loop reports its counters");
    assert_eq!(o.arrivals, "uniform");
    assert!((o.target_rps - 2000.0).abs() < 1e-6);
    assert_eq!(o.shed, 0);
}

#[test]
fn a_stalled_server_shows_in_the_latency_of_every_request_due_meanwhile() {
    let srv = TestServer::start();
    let spec = open(srv.url("/gated"), Schedule::poisson(1000.0).unwrap(), 64);
    let stall = Duration::from_millis(300);
    let report = std::thread::scope(|s| {
        let load = s.spawn(|| run(&spec, RunLength::Duration(Duration::from_secs(2)), false));
        // Stall once the load is well under way (a few hundred requests served), for `stall`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while srv.count("/gated") < 300 {
            assert!(Instant::now() < deadline, "the open loop never got going");
            std::thread::sleep(Duration::from_millis(1));
        }
        srv.close_gate();
        std::thread::sleep(stall); // the length of the injected stall, not a synchronization
        srv.open_gate();
        load.join().expect("load thread").expect("run")
    });
    // ≈ 300 of ≈ 2000 requests were due during the stall, their latency spread from 300 ms down to 0:
    // p90 lies in that range (≈ 90 ms) while the median stays far below. A closed loop would record at
    // most 64 slow requests (one per connection), under p97, and its p90 would look healthy.
    assert!(
        report.p90_us >= 40_000.0,
        "p90 {} µs: the stall is hidden",
        report.p90_us
    );
    assert!(
        report.max_us >= 200_000.0,
        "max {} µs: the first request due in the stall waited ≈ 300 ms",
        report.max_us
    );
    assert!(
        report.p50_us < report.p90_us / 4.0,
        "p50 {} µs vs p90 {} µs",
        report.p50_us,
        report.p90_us
    );
    let o = report.open_loop.as_ref().unwrap();
    assert!(
        o.max_backlog > 64,
        "requests due during the stall beyond the 64 connections waited in the queue ({})",
        o.max_backlog
    );
    assert!(
        o.queue_wait_max_us >= 100_000.0,
        "the wait for a connection is reported apart: {} µs",
        o.queue_wait_max_us
    );
}

#[test]
fn a_timed_open_run_completes_about_rate_times_duration() {
    let srv = TestServer::start();
    let spec = open(srv.url("/ok"), Schedule::poisson(1500.0).unwrap(), 32);
    let r = run(&spec, RunLength::Duration(Duration::from_secs(2)), false).expect("run");
    // Poisson count over 2 s at 1500/s: mean 3000, sd ≈ 55; the bounds also allow a loaded machine.
    assert!(
        (2600..3300).contains(&r.completed_ok),
        "{} completed in 2 s at 1500/s",
        r.completed_ok
    );
    assert_eq!((r.non_2xx, r.timeouts, r.conn_errors), (0, 0, 0));
}

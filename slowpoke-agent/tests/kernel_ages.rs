//! Request ages carried along the call chain by the kernel programs (issue #18 item 1), on real
//! processes and sockets: the emulator's thread-per-request services. Run as root.

mod ages_support;

use std::{sync::Mutex, time::Duration};

use ages_support::{Served, drain_events, exactness, load, served, start_app, track};
use slowpoke_agent::kernel::{DEFAULT_QUANTUM_NS, Kernel};
use slowpoke_common::REQUEST_START;

/// The tests share the node's cgroup root and the machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A clock offset far larger than any age: a raw timestamp carried from one kernel to the other
/// would be off by this much.
const OFFSET_NS: u64 = 1_000_000_000_000_000;
/// How far a callee's origin may be from its caller's: the age is written when a segment is
/// built and turned back into an origin when the callee parses it, so the segment's time in
/// flight (loopback, softirq backlog) is the error.
/// Well above the error seen (p99 4 µs, at most 17 µs on a loaded 2-core machine) and well below
/// the entry's work before its call ([`ENTRY_CPU_US`]): a callee's own arrival, i.e. an age not
/// carried, never passes for its caller's origin.
const TOLERANCE_NS: u64 = 200_000;
const ENTRY_CPU_US: u32 = 400;

fn chain_topology(workers: u32) -> String {
    let svc = |cpu: u32, calls: &str| {
        format!(
            r#"{{"threads":{workers},"serving":"thread-per-request","endpoints":{{"x":{{"cpu_us":{cpu}{calls}}}}}}}"#
        )
    };
    format!(
        r#"{{"entry":{{"service":"a","endpoint":"x"}},"services":{{"a":{},"b":{},"c":{}}}}}"#,
        svc(ENTRY_CPU_US, r#","calls":[{"service":"b","endpoint":"x"}]"#),
        svc(30, r#","calls":[{"service":"c","endpoint":"x"}]"#),
        svc(30, "")
    )
}

fn fanout_topology(workers: u32) -> String {
    let leaf = format!(
        r#"{{"threads":{workers},"serving":"thread-per-request","endpoints":{{"x":{{"cpu_us":30}}}}}}"#
    );
    format!(
        r#"{{"entry":{{"service":"a","endpoint":"x"}},"services":{{
          "a":{{"threads":{workers},"serving":"thread-per-request","endpoints":{{"x":{{
            "cpu_us":{ENTRY_CPU_US},"mode":"async","calls":[{{"service":"b","endpoint":"x"}},
            {{"service":"c","endpoint":"x"}},{{"service":"d","endpoint":"x"}}]}}}}}},
          "b":{leaf},"c":{leaf},"d":{leaf}}}}}"#
    )
}

/// Checks a callee's requests against the entry's; prints the figures the docs quote.
fn check(what: &str, entry: &[Served], callee: &[Served], min_requests: usize) {
    let e = exactness(entry, callee, TOLERANCE_NS);
    // An age that was not carried would make the origin the callee's own arrival, at least
    // the entry's work later.
    let own_arrival = callee
        .iter()
        .filter(|r| r.start_ns - r.origin_ns < u64::from(ENTRY_CPU_US) * 900)
        .count();
    eprintln!(
        "{what}: {} of {} requests match the entry's origin ({:.4}); ambiguous {}; error p50 {} \
         ns, p99 {} ns, p99.9 {} ns, max {} ns; origin = own arrival: {own_arrival}",
        e.matching,
        e.callee_requests,
        e.share(),
        e.ambiguous,
        e.quantile_ns(0.5),
        e.quantile_ns(0.99),
        e.quantile_ns(0.999),
        e.quantile_ns(1.0),
    );
    assert!(
        callee.len() >= min_requests,
        "{what}: {} requests",
        callee.len()
    );
    assert!(e.share() >= 0.999, "{what}: {e:?}");
    assert!(
        own_arrival * 1000 <= callee.len(),
        "{what}: {own_arrival} ages not carried"
    );
}

/// One client first (one entry request in flight: every match is unambiguous), then four.
fn drive(entry: &str) {
    load(entry, 1, 300);
    load(entry, 4, 300);
}

#[test]
fn kernel_ages_chain_of_three_across_two_clocks() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(4));
    // The entry on one "node", the two others on a node whose clock is OFFSET_NS ahead.
    let mut front = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut back = Kernel::load_with_clock_offset(DEFAULT_QUANTUM_NS, OFFSET_NS)
        .expect("loading the kernel programs (root)");
    let mut front_events = front.take_request_events().unwrap();
    let mut back_events = back.take_request_events().unwrap();
    track(&mut front, &app, "a", 0);
    track(&mut back, &app, "b", 0);
    track(&mut back, &app, "c", 1);
    assert_eq!(
        front.features()["request_ages"],
        "on",
        "{:?}",
        front.features()
    );

    drive(&app.entry);
    let front_seen = drain_events(&mut front_events, Duration::from_millis(300));
    let back_seen = drain_events(&mut back_events, Duration::from_millis(300));
    let a = served(&front_seen, 0).remove(&0).unwrap_or_default();
    let mut back_served = served(&back_seen, OFFSET_NS);
    let b = back_served.remove(&0).unwrap_or_default();
    let c = back_served.remove(&1).unwrap_or_default();
    eprintln!(
        "front {:?}\nback {:?}",
        front.age_stats().unwrap(),
        back.age_stats().unwrap()
    );
    assert_eq!(a.len(), 1500, "entry requests");
    check("chain a->b (other clock)", &a, &b, 1500);
    check("chain a->b->c (other clock)", &a, &c, 1500);
    assert_eq!(
        front.age_counters(0).unwrap().carried,
        0,
        "nobody carries an age to the entry"
    );
}

#[test]
fn kernel_ages_fan_out_to_three_leaves() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&fanout_topology(4));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    for (id, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        track(&mut kernel, &app, name, id as u32);
    }
    drive(&app.entry);
    let seen = drain_events(&mut events, Duration::from_millis(300));
    let mut by_service = served(&seen, 0);
    let a = by_service.remove(&0).unwrap_or_default();
    assert_eq!(a.len(), 1500, "entry requests");
    for (id, name) in [(1, "b"), (2, "c"), (3, "d")] {
        let leaf = by_service.remove(&id).unwrap_or_default();
        check(&format!("fan-out a->{name}"), &a, &leaf, 1500);
    }
}

#[test]
fn kernel_ages_requests_start_and_end_without_callers() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(2));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    assert!(kernel.take_request_events().is_err(), "taken once");
    track(&mut kernel, &app, "a", 3);
    load(&app.entry, 1, 50);
    let seen = drain_events(&mut events, Duration::from_millis(200));
    let a = served(&seen, 0).remove(&3).unwrap_or_default();
    assert_eq!(a.len(), 50, "{seen:?}");
    for r in &a {
        assert_eq!(
            r.origin_ns, r.start_ns,
            "no caller carried an age: origin = arrival"
        );
        assert!(r.end_ns > r.start_ns);
    }
    let starts = seen.iter().filter(|e| e.kind == REQUEST_START).count();
    assert_eq!(starts, 50);
    let counters = kernel.age_counters(3).unwrap();
    assert_eq!(
        (counters.requests, counters.ended, counters.carried),
        (50, 50, 0)
    );
    // Off again: no more events.
    kernel.set_track_ages(3, false).unwrap();
    load(&app.entry, 1, 10);
    assert!(drain_events(&mut events, Duration::from_millis(100)).is_empty());
}

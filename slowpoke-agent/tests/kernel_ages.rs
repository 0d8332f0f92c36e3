//! Request ages carried along the call chain by the kernel programs (issue #18 item 1), on real
//! processes and sockets: the emulator's thread-per-request services. Run as root.

mod ages_support;

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ages_support::{
    KeepAlive, Served, drain_events, exactness, load, pair_requests,
    real::{AppInNetns, Netns, PEER_IP},
    served, start_app, track,
};
use slowpoke_agent::kernel::{DEFAULT_QUANTUM_NS, Kernel};
use slowpoke_common::{AgeCounters, REQUEST_START};
use slowpoke_testkit::{apache_proxy, wait_for};

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

/// Checks a callee's requests against the entry's; prints the figures the docs quote. A request
/// no age was carried for starts with its own arrival as origin, exactly (the kernel's rule):
/// none may.
fn check(what: &str, entry: &[Served], callee: &[Served], min_requests: usize) {
    let e = exactness(entry, callee, TOLERANCE_NS);
    let own_arrival = callee.iter().filter(|r| r.origin_ns == r.start_ns).count();
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
        callee.len() + 3 >= min_requests,
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
/// At most 3 of the 1500 answers may be errors (see `load`); their callee requests may be
/// missing.
fn drive(entry: &str) {
    let failed = load(entry, 1, 300) + load(entry, 4, 300);
    assert!(failed <= 3, "{failed} of 1500 answers were not 200");
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
    let front_seen = drain_events(&mut front_events, 1500);
    let back_seen = drain_events(&mut back_events, 3000);
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
    let seen = drain_events(&mut events, 4 * 1500);
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
    assert_eq!(load(&app.entry, 1, 50), 0);
    let seen = drain_events(&mut events, 50);
    let a = served(&seen, 0).remove(&3).unwrap_or_default();
    assert_eq!(a.len(), 50, "{seen:?}");
    for r in &a {
        assert_eq!(
            r.origin_ns, r.start_ns,
            "no caller carried an age: origin = arrival"
        );
        assert!(r.end_ns > r.start_ns);
    }
    let starts: Vec<_> = seen.iter().filter(|e| e.kind == REQUEST_START).collect();
    assert_eq!(starts.len(), 50);
    // Each start names its thread's creation time, as /proc gives it (the guardian's identity
    // of a promoted thread), so a promotion need not read /proc.
    let tick = slowpoke_agent::sys::procfs::ns_per_tick();
    for e in &starts {
        assert_eq!(
            Some(e.thread_start_ns / tick),
            slowpoke_agent::sys::rawfs::thread_start_ticks(e.tgid, e.tid),
            "{e:?}"
        );
    }
    let counters = kernel.age_counters(3).unwrap();
    assert_eq!(
        (counters.requests, counters.ended, counters.carried),
        (50, 50, 0)
    );
    // Off again: no more events.
    kernel.set_track_ages(3, false).unwrap();
    assert_eq!(load(&app.entry, 1, 10), 0);
    let mut after = Vec::new();
    events.drain(&mut after);
    assert!(after.is_empty(), "events after tracking stopped: {after:?}");
    // Removing the service forgets its counters and its flag.
    kernel.set_track_ages(3, true).unwrap();
    kernel.remove_service(3).unwrap();
    assert!(!kernel.tracks_ages(3));
    assert_eq!(kernel.age_counters(3).unwrap(), AgeCounters::default());
}

/// The scheduler's wake-up filter (`REQUEST_WAKE`): events of requests later than the threshold
/// stay in the ring without waking a reader blocked in `poll`; earlier ones wake it at once.
#[test]
fn kernel_ages_wake_filter_lets_only_older_requests_wake_the_reader() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(2));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let events = Mutex::new(kernel.take_request_events().unwrap());
    track(&mut kernel, &app, "a", 3);

    // Threshold now: every request from here on is later, so none wakes the reader.
    let now = slowpoke_agent::sys::clock::monotonic_ns();
    let quiet = poll_during(&events, now, || load(&app.entry, 1, 5), 1_000);
    // (`poll` checks the ring once more at its timeout and then reports it readable.)
    assert!(
        quiet.waited_ms >= 1_000,
        "woken after {} ms by a request later than the threshold (the timeout is 1 s)",
        quiet.waited_ms
    );
    assert_eq!(quiet.events, 10, "5 starts and 5 ends wait in the ring");

    // Threshold far ahead: every request is earlier, the first event wakes the reader.
    let woke = poll_during(&events, u64::MAX / 2, || load(&app.entry, 1, 1), 10_000);
    assert!(
        woke.woke,
        "not woken by a request earlier than the threshold"
    );
    assert!(
        woke.waited_ms < 5_000,
        "woken after {} ms (the timeout is 10 s)",
        woke.waited_ms
    );
    assert_eq!(woke.events, 2);
}

struct Polled {
    woke: bool,
    waited_ms: u128,
    events: usize,
}

/// With service 3's filter at `up_to_ns` and the ring empty, one thread blocks in `poll` (at most
/// `timeout_ms`) while `traffic` runs once it is blocked; then what it saw, and how many events
/// the ring held.
fn poll_during(
    events: &Mutex<slowpoke_agent::kernel::RequestEvents>,
    up_to_ns: u64,
    traffic: impl FnOnce() -> usize,
    timeout_ms: i32,
) -> Polled {
    let mut ring = events.lock().unwrap();
    ring.wake_only_up_to(3, up_to_ns, false).unwrap();
    let mut stale = Vec::new();
    ring.drain(&mut stale);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&*ring);
    let tid = AtomicUsize::new(0);
    let (woke, waited_ms) = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() } as usize, Ordering::SeqCst);
            let mut fds = [libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }];
            let t = std::time::Instant::now();
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
            (n > 0, t.elapsed().as_millis())
        });
        // Traffic only once the poller sleeps in `poll` (syscall 7 on x86-64): a ring with
        // data in it would make `poll` return at once, whatever the wake-ups.
        wait_for(
            Duration::from_secs(10),
            "the poller to block in poll",
            || {
                let t = tid.load(Ordering::SeqCst);
                (t != 0
                    && std::fs::read_to_string(format!("/proc/self/task/{t}/syscall"))
                        .is_ok_and(|s| s.starts_with("7 ")))
                .then_some(())
            },
        );
        assert_eq!(traffic(), 0, "requests failed");
        poller.join().unwrap()
    });
    let mut seen = Vec::new();
    ring.drain(&mut seen);
    Polled {
        woke,
        waited_ms,
        events: seen.len(),
    }
}

/// A request starts when its bytes reach the connection (`sock:sk_data_ready`, then the wake-up
/// of the connection's thread, `sched:sched_waking`), not when the thread next runs: the server
/// is pinned to one CPU that a real-time thread of this test holds for 300 ms; a request sent
/// meanwhile is reported started at its arrival, before the server could run, and the receive
/// after the hold starts nothing more.
#[test]
fn kernel_ages_request_starts_when_its_data_arrives() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&leaf_topology(1));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    track(&mut kernel, &app, "leaf", 3);
    let status = kernel.features()["request_ages"].clone();
    assert_eq!(status, "on", "this kernel has sock:sk_data_ready");
    let cpu = 1 % std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    for &pid in &app.services["leaf"].pids {
        pin_threads(pid, cpu);
    }
    // The data's arrival must wake the worker, so the worker must be asleep when the CPU is
    // taken. It closes a connection idle for 50 ms (`workers::IDLE_CLOSE`), and a worker whose
    // idle timer already woke it is runnable: the request is sent within 30 ms of the
    // connection's last answer. And a worker that had not blocked again after that answer
    // when the hold began (preempted on a loaded machine) stays runnable under the hold: no
    // leaf thread may be runnable then. Otherwise the attempt is dropped (nothing sent) and made
    // again on a new connection.
    let mut gets = 0;
    let (mut conn, before, sent, hold_end) = loop {
        assert!(
            gets < 10,
            "the CPU was never held within 30 ms of an answer with the leaf's threads asleep"
        );
        let mut conn = KeepAlive::connect(&app.entry);
        conn.get(); // the worker now serves this connection
        gets += 1;
        let answered = slowpoke_agent::sys::clock::monotonic_ns();
        let before = kernel.age_stats().unwrap().started_at_arrival;
        let held = AtomicBool::new(false);
        // The worker blocks again right after its answer, unless something else ran first on
        // its CPU: take the CPU once it has.
        wait_for(Duration::from_secs(2), "the leaf's threads asleep", || {
            runnable_threads(&app.services["leaf"].pids)
                .is_empty()
                .then_some(())
        });
        let (sent, hold_end) = std::thread::scope(|scope| {
            let hog = scope.spawn(|| hold_cpu(cpu, Duration::from_millis(300), &held));
            wait_for(Duration::from_secs(10), "the CPU to be held", || {
                held.load(Ordering::SeqCst).then_some(())
            });
            let runnable = runnable_threads(&app.services["leaf"].pids);
            let sent = slowpoke_agent::sys::clock::monotonic_ns();
            let asleep = sent - answered < 30_000_000 && runnable.is_empty();
            if asleep {
                conn.send();
            }
            (asleep.then_some(sent).ok_or(runnable), hog.join().unwrap())
        });
        match sent {
            Ok(sent) => break (conn, before, sent, hold_end),
            Err(runnable) => eprintln!(
                "the leaf's worker may not have been asleep when the CPU was held \
                 (runnable: {runnable:?}): again"
            ),
        }
    };
    conn.receive();
    let seen: Vec<_> = drain_events(&mut events, 2)
        .into_iter()
        .filter(|e| e.at_ns >= sent)
        .collect();
    let starts: Vec<_> = seen.iter().filter(|e| e.kind == REQUEST_START).collect();
    assert_eq!(starts.len(), 1, "one start for the request: {seen:?}");
    let start = starts[0];
    assert!(
        start.arrival_ns >= sent && start.arrival_ns < hold_end,
        "stamped {} ms after the send, the CPU was held for {} ms after it",
        (start.arrival_ns as f64 - sent as f64) / 1e6,
        (hold_end - sent) / 1_000_000
    );
    assert_eq!(
        start.origin_ns, start.arrival_ns,
        "no caller: origin = arrival"
    );
    assert_eq!(kernel.age_stats().unwrap().started_at_arrival, before + 1);
    let counters = kernel.age_counters(3).unwrap();
    assert_eq!(
        (counters.requests, counters.ended),
        (gets + 1, gets + 1),
        "every answered get, and the request"
    );

    // The two programs run at every data arrival and wake-up of the node: attached only while
    // a service tracks ages.
    let attached = |kernel: &Kernel| {
        let stats = kernel.program_stats();
        let ids: Vec<u32> = ["sk_data_ready", "sched_waking"]
            .iter()
            .map(|name| stats[*name].id)
            .collect();
        aya::programs::loaded_links()
            .filter_map(Result::ok)
            .filter(|link| ids.contains(&link.program_id()))
            .count()
    };
    assert_eq!(attached(&kernel), 2, "attached while tracking");
    kernel.set_track_ages(3, false).unwrap();
    assert_eq!(attached(&kernel), 0, "detached once nothing tracks ages");
    kernel.set_track_ages(3, true).unwrap();
    assert_eq!(attached(&kernel), 2, "attached again");
}

/// Every thread of process `pid` on `cpu` only.
/// The threads of `pids` that are runnable (state `R`: on a CPU or waiting for one), by name.
fn runnable_threads(pids: &[u32]) -> Vec<String> {
    use slowpoke_agent::sys::procfs;
    pids.iter()
        .flat_map(|&p| procfs::threads(p))
        .filter(|&t| procfs::stat(t).is_some_and(|s| s.state == 'R'))
        .map(|t| format!("{t} {}", procfs::comm(t).unwrap_or_default()))
        .collect()
}

fn pin_threads(pid: u32, cpu: usize) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads") {
        let tid: i32 = task.unwrap().file_name().to_string_lossy().parse().unwrap();
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity get valid pointers.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            assert_eq!(
                libc::sched_setaffinity(
                    tid,
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &raw const set
                ),
                0,
                "pinning thread {tid}"
            );
        }
    }
}

/// Holds `cpu` for `hold` with a `SCHED_FIFO` thread (nothing of normal priority runs there
/// meanwhile); sets `held` once it runs there; returns when it let go (`CLOCK_MONOTONIC` ns).
fn hold_cpu(cpu: usize, hold: Duration, held: &AtomicBool) -> u64 {
    // SAFETY: as in `pin_threads`, for the calling thread (0); then its own policy.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set),
            0
        );
        let param = libc::sched_param { sched_priority: 10 };
        assert_eq!(
            libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param),
            0
        );
    }
    held.store(true, Ordering::SeqCst);
    let t = std::time::Instant::now();
    while t.elapsed() < hold {
        std::hint::spin_loop();
    }
    let end = slowpoke_agent::sys::clock::monotonic_ns();
    // SAFETY: back to the normal policy before the thread ends.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_OTHER, &raw const param);
    }
    end
}

/// Connections opened before tracking started get no socket callbacks until the `iter/tcp`
/// program switches them on: the entry's pooled connection to its callee, reused after.
#[test]
fn kernel_ages_pooled_connection_opened_before_tracking() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(1));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    for (id, name) in [(0, "a"), (1, "b")] {
        let info = &app.services[name];
        kernel.set_members(id, &info.pids).unwrap();
        kernel
            .set_server_ports(id, &[info.port], &[info.control_port])
            .unwrap();
    }
    // One client paced every 5 ms keeps the connections busy (the emulator closes one after 50
    // ms idle or 100 requests) while tracking starts: a's one worker opens its connection to b
    // with the first request and reuses it to the end.
    let done = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let after = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut client = ages_support::KeepAlive::connect(&app.entry);
            while !stop.load(Ordering::SeqCst) {
                client.get();
                done.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        wait_for(Duration::from_secs(10), "10 requests", || {
            (done.load(Ordering::SeqCst) >= 10).then_some(())
        });
        kernel.set_track_ages(0, true).unwrap();
        kernel.set_track_ages(1, true).unwrap();
        let after = done.load(Ordering::SeqCst);
        wait_for(Duration::from_secs(10), "30 more requests", || {
            (done.load(Ordering::SeqCst) >= after + 30).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        after
    });
    let total = done.load(Ordering::SeqCst);
    assert!(
        total < 95,
        "{total} requests: the emulator may have recycled the connection"
    );
    let stats = kernel.age_stats().unwrap();
    eprintln!("pooled: {stats:?}; features {:?}", kernel.features());
    assert_eq!(
        stats.connections_enabled, 0,
        "no connection opened after tracking: {stats:?}"
    );
    assert!(
        stats.connections_enabled_later >= 2,
        "both ends switched on: {stats:?}"
    );
    let seen = drain_events(&mut events, 2 * (total - after));
    let mut by_service = served(&seen, 0);
    let a = by_service.remove(&0).unwrap_or_default();
    let b = by_service.remove(&1).unwrap_or_default();
    // a starts tracking first: only a request already in flight then reaches b uncarried.
    let carried = kernel.age_counters(1).unwrap().carried as usize;
    assert!(
        carried + 1 >= b.len() && b.len() >= 30,
        "{carried} of {} carried",
        b.len()
    );
    let e = exactness(&a, &b, TOLERANCE_NS);
    eprintln!("pooled a->b: {} of {} match", e.matching, e.callee_requests);
    assert!(e.matching + 1 >= b.len(), "{e:?}");
    assert_eq!(kernel.features()["request_ages_pooled_connections"], "on");
}

fn leaf_topology(workers: u32) -> String {
    format!(
        r#"{{"entry":{{"service":"leaf","endpoint":"x"}},"services":{{"leaf":{{"threads":{workers},
          "serving":"thread-per-request","endpoints":{{"x":{{"cpu_us":30}}}}}}}}}}"#
    )
}

/// Debian's apache2 (worker MPM: a thread per request; and prefork: a process per request)
/// as the entry, proxying to an emulated leaf in another network namespace (a veth hop) whose
/// kernel's clock is `OFFSET_NS` ahead.
fn apache_to_leaf_in_netns(mpm: &str) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let netns = Netns::create();
    let leaf_app = AppInNetns::start(&netns, &leaf_topology(8));
    let (leaf_pids, leaf_port, leaf_control) = leaf_app.services["leaf"].clone();
    let apache = apache_proxy(&format!("http://{PEER_IP}:{leaf_port}"), mpm);
    let mut front = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut back = Kernel::load_with_clock_offset(DEFAULT_QUANTUM_NS, OFFSET_NS)
        .expect("loading the kernel programs (root)");
    let mut front_events = front.take_request_events().unwrap();
    let mut back_events = back.take_request_events().unwrap();
    front.set_members(0, &apache.pids()).unwrap();
    front.set_server_ports(0, &[apache.port], &[]).unwrap();
    front.set_track_ages(0, true).unwrap();
    back.set_members(0, &leaf_pids).unwrap();
    back.set_server_ports(0, &[leaf_port], &[leaf_control])
        .unwrap();
    back.set_track_ages(0, true).unwrap();

    let url = format!("http://127.0.0.1:{}/x", apache.port);
    drive(&url);
    let front_seen = drain_events(&mut front_events, 1500);
    let back_seen = drain_events(&mut back_events, 1500);
    let entry = served(&front_seen, 0).remove(&0).unwrap_or_default();
    let leaf = served(&back_seen, OFFSET_NS).remove(&0).unwrap_or_default();
    let mut gaps: Vec<u64> = leaf.iter().map(|r| r.start_ns - r.origin_ns).collect();
    gaps.sort_unstable();
    eprintln!(
        "apache {mpm}: leaf arrival - origin p50 {} ns (apache's own time before the call); \
         front {:?}",
        gaps.get(gaps.len() / 2).copied().unwrap_or(0),
        front.age_stats().unwrap()
    );
    assert_eq!(entry.len(), 1500, "apache requests");
    // apache2 calls right away (its own time before the call is within the tolerance): the
    // leaf's counter says that the ages were carried.
    let what = format!("apache2 {mpm} -> leaf over veth (other clock)");
    check(&what, &entry, &leaf, 1500);
    let carried = back.age_counters(0).unwrap().carried as usize;
    assert!(
        carried * 1000 >= leaf.len() * 999,
        "{carried} of {} carried",
        leaf.len()
    );
}

#[test]
fn kernel_ages_apache_worker_to_a_leaf_in_another_namespace() {
    apache_to_leaf_in_netns("worker");
}

#[test]
fn kernel_ages_apache_prefork_to_a_leaf_in_another_namespace() {
    apache_to_leaf_in_netns("prefork");
}

/// A fan-out of Debian's servers: apache2 prefork + `mod_php` as the entry, whose PHP calls three
/// such leaves at once with `curl_multi` (a fresh connection per call, opened while the programs
/// are loaded); the leaves under a kernel whose clock is `OFFSET_NS` ahead.
#[test]
fn kernel_ages_php_fanout_of_apache_prefork_servers() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = slowpoke_testkit::php::PhpFanout {
        workers: 4,
        // Mean 1 ms before the calls (exponential): a leaf that took its own arrival as origin
        // would be off by more than the tolerance for most requests.
        front_us: 1000.0,
        leaf_us: 50.0,
        leaves: 3,
    }
    .start();
    let mut front = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut back = Kernel::load_with_clock_offset(DEFAULT_QUANTUM_NS, OFFSET_NS)
        .expect("loading the kernel programs (root)");
    let mut front_events = front.take_request_events().unwrap();
    let mut back_events = back.take_request_events().unwrap();
    front.set_members(0, &app.front.pids()).unwrap();
    front.set_server_ports(0, &[app.front.port], &[]).unwrap();
    front.set_track_ages(0, true).unwrap();
    for (id, leaf) in app.leaves.iter().enumerate() {
        let id = id as u32;
        back.set_members(id, &leaf.pids()).unwrap();
        back.set_server_ports(id, &[leaf.port], &[]).unwrap();
        back.set_track_ages(id, true).unwrap();
    }

    drive(&app.entry);
    let front_seen = drain_events(&mut front_events, 1500);
    let back_seen = drain_events(&mut back_events, 3 * 1500);
    let entry = served(&front_seen, 0).remove(&0).unwrap_or_default();
    let mut leaves = served(&back_seen, OFFSET_NS);
    eprintln!(
        "php fan-out: front {:?}; back {:?}",
        front.age_stats().unwrap(),
        back.age_stats().unwrap()
    );
    assert_eq!(entry.len(), 1500, "front requests");
    for id in 0..3u32 {
        let leaf = leaves.remove(&id).unwrap_or_default();
        check(
            &format!("php front -> leaf {id} (curl_multi, other clock)"),
            &entry,
            &leaf,
            1500,
        );
        let counters = back.age_counters(id).unwrap();
        let carried = counters.carried as usize;
        assert!(
            carried * 1000 >= leaf.len() * 999,
            "leaf {id}: {carried} of {} carried",
            leaf.len()
        );
        assert_eq!(counters.requests, counters.ended, "leaf {id}: {counters:?}");
    }
}

/// Dropping the `Kernel` unloads the carrying programs (their links, on the cgroup root too, go
/// with them): nothing keeps writing or parsing options after the agent is gone.
#[test]
fn kernel_ages_programs_go_with_the_kernel() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(1));
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    assert_eq!(
        kernel.features()["request_ages"],
        "available (loaded when a service tracks ages)"
    );
    track(&mut kernel, &app, "a", 0);
    let stats = kernel.program_stats();
    let ids: Vec<u32> = ["request_ages", "tcp_sendmsg_locked", "request_ages_iter"]
        .iter()
        .map(|name| {
            stats
                .get(*name)
                .unwrap_or_else(|| panic!("{name} loaded"))
                .id
        })
        .collect();
    let loaded = || -> Vec<u32> {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect()
    };
    assert_eq!(loaded().len(), 3, "{ids:?}");
    drop(kernel);
    // The kernel frees a released tracing program after an RCU grace period (seen: a few ms for
    // `tcp_sendmsg_locked`): poll for it.
    wait_for(Duration::from_secs(10), "the age programs unloaded", || {
        loaded().is_empty().then_some(())
    });
}

/// Kernels before 6.17 lack `tcp:tcp_sendmsg_locked`: the socket callbacks then take a call's
/// origin from the thread that builds its segments (its own `sendmsg` for a request/response
/// call). The chain again, the kernel behaving as there.
#[test]
fn kernel_ages_chain_without_the_sendmsg_tracepoint() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = start_app(&chain_topology(4));
    let mut kernel = Kernel::load_without_sendmsg_tracepoint(DEFAULT_QUANTUM_NS)
        .expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    for (id, name) in ["a", "b", "c"].into_iter().enumerate() {
        track(&mut kernel, &app, name, id as u32);
    }
    let status = &kernel.features()["request_ages"];
    assert!(
        status.starts_with("on, without tcp:tcp_sendmsg_locked"),
        "{status}"
    );
    assert!(
        !kernel.program_stats().contains_key("tcp_sendmsg_locked"),
        "the tracepoint program is not loaded"
    );
    drive(&app.entry);
    let seen = drain_events(&mut events, 3 * 1500);
    let mut by_service = served(&seen, 0);
    let a = by_service.remove(&0).unwrap_or_default();
    assert_eq!(a.len(), 1500, "entry requests");
    for (id, name) in [(1, "a->b"), (2, "a->b->c")] {
        let callee = by_service.remove(&id).unwrap_or_default();
        check(
            &format!("chain {name} (no tcp_sendmsg_locked)"),
            &a,
            &callee,
            1500,
        );
    }
}

/// The same fan-out on one node, with enough clients to keep the prefork pools busy: every
/// request that started also ended, and none is left open once the load stops. A worker woken
/// for a fresh connection's data but beaten to it by another worker used to be handed that
/// request and sleep on holding it (4–7 per leaf were left open in a run of this load), which
/// made it the node's oldest request to the scheduler.
#[test]
fn kernel_ages_php_fanout_leaves_no_request_open() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let app = slowpoke_testkit::php::PhpFanout {
        workers: 32,
        ..slowpoke_testkit::php::PhpFanout::default()
    }
    .start();
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut events = kernel.take_request_events().unwrap();
    let servers = std::iter::once(&app.front).chain(app.leaves.iter());
    for (id, server) in servers.enumerate() {
        let id = id as u32;
        kernel.set_members(id, &server.pids()).unwrap();
        kernel.set_server_ports(id, &[server.port], &[]).unwrap();
        kernel.set_track_ages(id, true).unwrap();
    }
    let failed = load(&app.entry, 16, 60);
    assert!(failed <= 3, "{failed} of 960 answers were not 200");
    let seen = drain_events(&mut events, 4 * 960);
    let open = pair_requests(&seen, |_, _| {});
    assert!(open.is_empty(), "requests left open: {open:?}");
    for id in 0..4 {
        let c = kernel.age_counters(id).unwrap();
        assert_eq!(c.requests, c.ended, "service {id}: {c:?}");
        assert!(c.requests >= 957, "service {id}: {c:?}");
        if id > 0 {
            assert_eq!(c.carried, c.requests, "leaf {id}: {c:?}");
        }
    }
}

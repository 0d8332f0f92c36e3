//! The generator's threads at a real-time priority (`GeneratorOptions::realtime_priority`). A file of its own:
//! the test reads the policy of every thread named `slowpoke-load*` in this process, so no other test's
//! generator may run beside it. Needs root or `CAP_SYS_NICE`, as `cargo xtask test` runs.

mod common;

use std::time::Duration;

use common::TestServer;
use slowpoke_load::{
    Arrivals, GeneratorOptions, LoadError, LoadGenerator, LoadSpec, RequestTemplate, Schedule,
};

/// (name, policy, priority) of every thread of this process whose name starts with `slowpoke-load`.
fn generator_threads() -> Vec<(String, i32, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("listing this process's threads") {
        let path = entry.expect("a thread entry").path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let name = name.trim().to_owned();
        if !name.starts_with("slowpoke-load") {
            continue;
        }
        let tid: i32 = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .expect("a numeric thread id");
        if let Some((policy, priority)) = policy_of(tid) {
            out.push((name, policy, priority));
        } // else the thread ended meanwhile
    }
    out
}

/// (policy, real-time priority) of thread `tid` (0: the calling thread), None if it is gone.
fn policy_of(tid: i32) -> Option<(i32, i32)> {
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: reading a thread's scheduling settings into an owned sched_param.
    let (policy, rc) = unsafe {
        (
            libc::sched_getscheduler(tid),
            libc::sched_getparam(tid, &raw mut param),
        )
    };
    (policy >= 0 && rc == 0).then_some((policy, param.sched_priority))
}

#[test]
fn every_thread_of_a_generator_runs_at_the_real_time_priority_asked_for_and_others_do_not() {
    let srv = TestServer::start();
    let spec = LoadSpec {
        connections: 4,
        timeout: Duration::from_secs(5),
        warmup: Duration::ZERO,
        arrivals: Arrivals::Open(Schedule::poisson(500.0).unwrap()),
        ..LoadSpec::new(vec![RequestTemplate::get(srv.url("/ok"))])
    };
    let caller = policy_of(0);

    // Two workers: a multi-thread runtime, whose threads the driver starts; the pacer too.
    let options = GeneratorOptions {
        worker_threads: 2,
        realtime_priority: Some(31),
        ..GeneratorOptions::default()
    };
    let load = LoadGenerator::start_with(spec.clone(), &options).expect("start at priority 31");
    let threads = generator_threads();
    let _ = load.stop();
    let names: Vec<&str> = threads.iter().map(|t| t.0.as_str()).collect();
    // The kernel keeps 15 bytes of a name: the pacer and the workers.
    for want in ["slowpoke-load", "slowpoke-load-p", "slowpoke-load-w"] {
        assert!(names.contains(&want), "no thread {want} among {names:?}");
    }
    for (name, policy, priority) in &threads {
        assert_eq!(
            (*policy, *priority),
            (libc::SCHED_FIFO, 31),
            "thread {name} (policy, priority) in {threads:?}"
        );
    }
    assert!(srv.count("/ok") > 0, "the load sent nothing");
    assert_eq!(policy_of(0), caller, "the caller's own policy changed");

    // Without the option: normal scheduling.
    let load = LoadGenerator::start_with(spec.clone(), &GeneratorOptions::default())
        .expect("start at normal priority");
    let threads = generator_threads();
    let _ = load.stop();
    assert!(!threads.is_empty());
    for (name, policy, _) in &threads {
        assert_eq!(*policy, libc::SCHED_OTHER, "thread {name} in {threads:?}");
    }

    // Out of range: refused before any thread starts.
    let bad = GeneratorOptions {
        realtime_priority: Some(100),
        ..GeneratorOptions::default()
    };
    let e = LoadGenerator::start_with(spec, &bad).expect_err("priority 100");
    assert!(
        matches!(e, LoadError::Invalid(ref m) if m.contains("1 to 99")),
        "{e}"
    );
}

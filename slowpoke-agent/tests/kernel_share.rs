//! The tail scheduler's share cap as the kernel measures it (`tp_btf/sched_switch`,
//! `kernel::share`): the time of the marked (promoted) threads on the node's CPUs, exact to the
//! context switch — a thread that sleeps most of the time is charged its CPU time, not the time
//! it was promoted. Real threads, the real scheduler. Run as root.

use std::{
    sync::{Arc, Barrier, mpsc},
    time::{Duration, Instant},
};

use slowpoke_agent::{
    kernel::{DEFAULT_QUANTUM_NS, Kernel, share::PromotedRuns},
    sys::clock::{monotonic_ns, thread_cpu_ns},
};

/// The promoted time summed over every CPU (no thread is marked and running when it is read).
fn used_ns(runs: &PromotedRuns) -> u64 {
    runs.read()
        .expect("reading PROMOTED_RUNS")
        .iter()
        .map(|r| r.used_ns)
        .sum()
}

/// Runs `work` on a new thread once it is marked; returns the thread's CPU time during `work`.
fn marked_thread(runs: &mut PromotedRuns, work: fn()) -> u64 {
    let (tx, rx) = mpsc::channel();
    let go = Arc::new(Barrier::new(2));
    let gate = go.clone();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid has no failure mode.
        tx.send(unsafe { libc::gettid() } as u32).expect("tid");
        gate.wait();
        let before = thread_cpu_ns();
        work();
        thread_cpu_ns() - before
    });
    let tid = rx.recv().expect("tid");
    runs.mark(tid, monotonic_ns()).expect("marking");
    go.wait();
    let cpu = thread.join().expect("the marked thread");
    runs.unmark(tid);
    cpu
}

#[test]
fn kernel_share_charges_a_promoted_thread_its_cpu_time_not_its_sleep() {
    let mut kernel = Kernel::load(DEFAULT_QUANTUM_NS).expect("loading the kernel programs (root)");
    let mut runs = kernel.take_promoted_runs().expect("the share-cap maps");
    assert!(kernel.take_promoted_runs().is_err(), "taken once");
    let before = used_ns(&runs);
    // Not attached while no service tracks ages.
    marked_thread(&mut runs, || spin(Duration::from_millis(50)));
    assert_eq!(used_ns(&runs), before, "nothing measured while detached");

    kernel.set_track_ages(0, true).expect("tracking ages");
    let before = used_ns(&runs);
    let sleeper_cpu = marked_thread(&mut runs, || {
        for _ in 0..100 {
            spin(Duration::from_micros(500));
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let sleeper_charged = used_ns(&runs) - before;
    eprintln!("sleeper: cpu {sleeper_cpu} ns, charged {sleeper_charged} ns");
    // 250 ms promoted, ~50 ms of CPU: the charge is the CPU time. The kernel counts a woken
    // thread's CPU time from its enqueue, a switch from its switch-in: on this VM ~10 µs less a
    // wake-up (the CPU's exit from idle), so 20 µs a wake-up of slack below, 2 % above.
    let error = sleeper_charged.abs_diff(sleeper_cpu);
    assert!(
        error < sleeper_cpu / 50 + 100 * 20_000,
        "a sleeping thread charged {sleeper_charged} ns for {sleeper_cpu} ns of CPU"
    );

    let before = used_ns(&runs);
    let spinner_cpu = marked_thread(&mut runs, || spin(Duration::from_millis(300)));
    let spinner_charged = used_ns(&runs) - before;
    eprintln!("spinner: cpu {spinner_cpu} ns, charged {spinner_charged} ns");
    let error = spinner_charged.abs_diff(spinner_cpu);
    assert!(
        error < spinner_cpu / 50 + 2_000_000,
        "a spinning thread charged {spinner_charged} ns for {spinner_cpu} ns of CPU"
    );

    kernel.set_track_ages(0, false).expect("untracking");
    let before = used_ns(&runs);
    marked_thread(&mut runs, || spin(Duration::from_millis(50)));
    assert_eq!(
        used_ns(&runs),
        before,
        "detached with the last tracked service"
    );
}

fn spin(wall: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < wall {
        std::hint::spin_loop();
    }
}

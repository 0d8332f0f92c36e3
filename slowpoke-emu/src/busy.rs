//! CPU work measured on the calling thread's own CPU clock, so time spent preempted (other services, other
//! engineers' compilers on the same cores) does not count: a visit burns exactly its configured CPU time.

use std::cell::Cell;

/// CPU time consumed so far by the calling thread (ns, `CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> i64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time consumed so far by the whole process (ns, `CLOCK_PROCESS_CPUTIME_ID`).
pub fn process_cpu_ns() -> i64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

thread_local! {
    /// Work already done in excess by this thread (ns): the busy loop stops at the first clock reading past its
    /// target, and the excess is credited to the next visit on the same thread so the long-run mean is exact.
    static OVERSHOOT_NS: Cell<i64> = const { Cell::new(0) };
}

/// Burns `ns` nanoseconds of this thread's CPU time (minus the overshoot carried from earlier calls).
pub fn burn(ns: u64) {
    if ns == 0 {
        return;
    }
    let want = ns as i64 - OVERSHOOT_NS.get();
    if want <= 0 {
        OVERSHOOT_NS.set(-want);
        return;
    }
    let start = thread_cpu_ns();
    let deadline = start + want;
    let mut now = start;
    while now < deadline {
        // A little arithmetic between clock reads keeps the vDSO call rate sane without losing precision.
        for i in 0..64u32 {
            std::hint::black_box(i);
        }
        now = thread_cpu_ns();
    }
    OVERSHOOT_NS.set(now - deadline);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burns_thread_cpu_time_exactly_on_average() {
        // 20 ms requested per trial in visits of 400 µs (the emulator's visits are hundreds of
        // µs); every overshoot but the last is paid back by the next call, and the last one is
        // carried: used = requested + carried, up to what the loop cannot see — the clock
        // reads and the caller's code between calls (≈ 1 µs a call under load; a CI run saw
        // +1.2 µs a call with 200 calls of 100 µs). Interrupts serviced while this thread runs
        // are charged to it and only ever add CPU time: the best of three trials is the loop's
        // own error.
        let excess = |_| {
            OVERSHOOT_NS.set(0);
            let t0 = thread_cpu_ns();
            for _ in 0..50 {
                burn(400_000);
            }
            let used = thread_cpu_ns() - t0;
            used - 20_000_000 - OVERSHOOT_NS.get()
        };
        let trials: Vec<i64> = (0..3).map(excess).collect();
        let best = trials.iter().copied().min_by_key(|e| e.abs()).unwrap();
        assert!(
            best.abs() < 200_000,
            "used − requested − carried: {trials:?} ns"
        );
    }

    #[test]
    fn an_overshoot_is_paid_back_by_the_next_calls() {
        // Each loop overshoots its 1 ns target by a whole clock read and more (~1 µs); without
        // the carry 10 000 calls would burn ≥ 10 ms. With it, the calls after an overshoot
        // return at once until it is used up.
        OVERSHOOT_NS.set(0);
        let t0 = thread_cpu_ns();
        for _ in 0..10_000 {
            burn(1);
        }
        let used = thread_cpu_ns() - t0;
        assert!(used < 2_000_000, "10 000 × 1 ns burned {used} ns");
    }
}

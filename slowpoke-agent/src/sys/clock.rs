//! `CLOCK_MONOTONIC`: reading it and sleeping to an absolute point of it, precisely.
//!
//! The kernel programs stamp events with `bpf_ktime_get_ns`, which is this clock, so a pause can
//! start at the kernel's own stop time and end at an absolute deadline without conversions.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// `CLOCK_MONOTONIC` in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    read_ns(libc::CLOCK_MONOTONIC)
}

/// CPU time the calling thread has used, ns (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_ns() -> u64 {
    read_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn read_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into `ts`.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute; restarts after signals).
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: reads `ts`; no remaining-time output with TIMER_ABSTIME.
        let r = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &raw const ts,
                std::ptr::null_mut(),
            )
        };
        if r != libc::EINTR {
            return;
        }
    }
}

/// How often a long cancellable sleep checks whether it was cancelled (agent shutdown).
pub const CANCEL_CHECK: Duration = Duration::from_millis(5);

/// Sleeps until `deadline_ns`, waking every [`CANCEL_CHECK`] to look at `cancel` (the last
/// wake is at the absolute deadline, so precision is unaffected). Returns early when cancelled.
pub fn sleep_cancellable(deadline_ns: u64, cancel: Option<&AtomicBool>) {
    let Some(cancel) = cancel else {
        sleep_until(deadline_ns);
        return;
    };
    let step = CANCEL_CHECK.as_nanos() as u64;
    loop {
        let now = monotonic_ns();
        if now >= deadline_ns || cancel.load(Ordering::SeqCst) {
            return;
        }
        sleep_until(deadline_ns.min(now + step));
    }
}

/// Sleeps until `deadline_ns − early_ns`, then busy-waits on `CLOCK_MONOTONIC` until
/// `deadline_ns`. Returns how late the sleep woke relative to its own target (the timer's wake
/// latency, what the caller learns its next `early_ns` from), or `None` when cancelled.
pub fn sleep_then_spin(
    deadline_ns: u64,
    early_ns: u64,
    cancel: Option<&AtomicBool>,
) -> Option<u64> {
    let target = deadline_ns.saturating_sub(early_ns);
    sleep_cancellable(target, cancel);
    let woke = monotonic_ns();
    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
        return None;
    }
    let mut now = woke;
    while now < deadline_ns {
        std::hint::spin_loop();
        now = monotonic_ns();
    }
    Some(woke.saturating_sub(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_then_spin_ends_at_the_deadline() {
        let deadline = monotonic_ns() + 2_000_000;
        let late = sleep_then_spin(deadline, 300_000, None).expect("not cancelled");
        let now = monotonic_ns();
        assert!(now >= deadline, "never before the deadline");
        assert!(late < 1_000_000_000);
        // Cancelled: returns at once, without spinning.
        let cancel = AtomicBool::new(true);
        let t0 = monotonic_ns();
        assert!(sleep_then_spin(t0 + 50_000_000, 100_000, Some(&cancel)).is_none());
        assert!(monotonic_ns() - t0 < 40_000_000);
    }
}

//! CPU time of the generator's own threads, so a run where the generator was the bottleneck can be flagged.
//!
//! Each thread the generator owns registers its CPU-time clock (`pthread_getcpuclockid`) when it starts; any
//! thread can then read all of them with `clock_gettime` (ns resolution, no /proc parsing). A thread that exits
//! adds its final CPU time to a retired total under the same lock, so the sum never goes backwards.
//!
//! The same registry sums the time the threads spent runnable but waiting for a CPU (second field of
//! `/proc/self/task/TID/schedstat`): on a machine shared with the system under test, a generator that waits a lot
//! for a CPU delays its requests, which CPU time alone does not show.

use std::sync::Mutex;
use std::thread::{self, ThreadId};

#[derive(Debug, Default)]
pub(crate) struct ThreadCpu {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Vec<Registered>,
    retired_ns: u64,
    retired_wait_ns: u64,
}

#[derive(Debug)]
struct Registered {
    id: ThreadId,
    clock: libc::clockid_t,
    tid: libc::pid_t,
}

/// CPU time and run-queue wait of the generator's threads, ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub cpu_ns: u64,
    pub wait_ns: u64,
}

/// Run-queue wait of a thread (schedstat's second field), ns; `None` where schedstats are unavailable.
fn read_wait(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

fn read_clock(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; an invalid clock id only makes the call fail.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl ThreadCpu {
    /// Called on a thread the generator owns, when it starts.
    pub fn register_current(&self) {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self() is the calling, live thread; `clock` is writable.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &raw mut clock) };
        if rc == 0 {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            self.inner
                .lock()
                .expect("cpu registry lock")
                .live
                .push(Registered {
                    id: thread::current().id(),
                    clock,
                    tid,
                });
        }
    }

    /// Called on a registered thread just before it exits.
    pub fn retire_current(&self) {
        let id = thread::current().id();
        let mut inner = self.inner.lock().expect("cpu registry lock");
        if let Some(pos) = inner.live.iter().position(|r| r.id == id) {
            let r = inner.live.swap_remove(pos);
            inner.retired_ns += read_clock(r.clock)
                .or_else(|| read_clock(libc::CLOCK_THREAD_CPUTIME_ID))
                .unwrap_or(0);
            inner.retired_wait_ns += read_wait("/proc/thread-self/schedstat").unwrap_or(0);
        }
    }

    /// CPU time and run-queue wait of all registered threads, live and retired.
    pub fn totals(&self) -> Totals {
        let inner = self.inner.lock().expect("cpu registry lock");
        let mut t = Totals {
            cpu_ns: inner.retired_ns,
            wait_ns: inner.retired_wait_ns,
        };
        for r in &inner.live {
            t.cpu_ns += read_clock(r.clock).unwrap_or(0);
            t.wait_ns += read_wait(&format!("/proc/self/task/{}/schedstat", r.tid)).unwrap_or(0);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counts_busy_thread_after_it_exits() {
        let cpu = Arc::new(ThreadCpu::default());
        let c = Arc::clone(&cpu);
        thread::spawn(move || {
            c.register_current();
            let start = std::time::Instant::now();
            let mut x = 0u64;
            while start.elapsed() < std::time::Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            c.retire_current();
        })
        .join()
        .unwrap();
        let ns = cpu.totals().cpu_ns;
        // Busy for 30 ms of wall time; on a shared machine it may have run less, but surely > 1 ms.
        assert!(ns > 1_000_000, "{ns}");
        assert!(ns < 10_000_000_000, "{ns}");
    }
}

//! CPU time of the generator's own threads, so a run where the generator was the bottleneck can be flagged.
//!
//! Each thread the generator owns registers its CPU-time clock (`pthread_getcpuclockid`) when it starts; any
//! thread can then read all of them with `clock_gettime` (ns resolution, no /proc parsing). A thread that exits
//! adds its final CPU time to a retired total under the same lock, so the sum never goes backwards.

use std::sync::Mutex;
use std::thread::{self, ThreadId};

#[derive(Debug, Default)]
pub(crate) struct ThreadCpu {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    live: Vec<(ThreadId, libc::clockid_t)>,
    retired_ns: u64,
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
            self.inner
                .lock()
                .expect("cpu registry lock")
                .live
                .push((thread::current().id(), clock));
        }
    }

    /// Called on a registered thread just before it exits.
    pub fn retire_current(&self) {
        let id = thread::current().id();
        let mut inner = self.inner.lock().expect("cpu registry lock");
        if let Some(pos) = inner.live.iter().position(|(t, _)| *t == id) {
            let (_, clock) = inner.live.swap_remove(pos);
            inner.retired_ns += read_clock(clock)
                .or_else(|| read_clock(libc::CLOCK_THREAD_CPUTIME_ID))
                .unwrap_or(0);
        }
    }

    /// CPU time of all registered threads, live and retired, in ns.
    pub fn total_ns(&self) -> u64 {
        let inner = self.inner.lock().expect("cpu registry lock");
        inner.retired_ns
            + inner
                .live
                .iter()
                .filter_map(|(_, c)| read_clock(*c))
                .sum::<u64>()
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
        let ns = cpu.total_ns();
        // Busy for 30 ms of wall time; on a shared machine it may have run less, but surely > 1 ms.
        assert!(ns > 1_000_000, "{ns}");
        assert!(ns < 10_000_000_000, "{ns}");
    }
}

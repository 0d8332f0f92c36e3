//! What the node and its processes spent, read from the kernel: CPU time of a process (all its
//! threads) and of the calling thread, the busy and total ticks of all CPUs, the load average.
//! CPU time rather than wall time because the benchmarks share a small machine with other work:
//! CPU time per request is what other tenants inflate least.

/// CPU time of every thread of process `pid`, ns: the sum of `sum_exec_runtime` (first field of
/// `/proc/PID/task/TID/schedstat`) over its threads; `/proc/PID/stat` counts 10 ms ticks, too
/// coarse for windows of a few seconds. 0 when the process is gone.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time the calling thread has used, ns (the agent's reading of `CLOCK_THREAD_CPUTIME_ID`).
pub use slowpoke_agent::sys::clock::thread_cpu_ns;

/// Busy and total clock ticks of all CPUs together (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

impl CpuTicks {
    /// Now (zeros when `/proc/stat` cannot be read).
    pub fn read() -> CpuTicks {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("cpu "))
            .map(CpuTicks::parse)
            .unwrap_or_default()
    }

    /// From the `cpu` line: user nice system idle iowait irq softirq steal (guest time is
    /// already inside user and nice); idle and iowait are not busy.
    fn parse(line: &str) -> CpuTicks {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        CpuTicks {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// `(busy, total)` ticks since `earlier`.
    pub fn since(&self, earlier: &CpuTicks) -> (u64, u64) {
        (
            self.busy.saturating_sub(earlier.busy),
            self.total.saturating_sub(earlier.total),
        )
    }

    /// The busy share of all CPUs since `earlier` (NaN when no tick passed).
    pub fn busy_share_since(&self, earlier: &CpuTicks) -> f64 {
        match self.since(earlier) {
            (_, 0) => f64::NAN,
            (busy, total) => busy as f64 / total as f64,
        }
    }
}

/// `/proc/loadavg`: the text as read and its 1, 5 and 15 minute averages (NaN where unreadable).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadAvg {
    pub raw: String,
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

impl LoadAvg {
    pub fn read() -> LoadAvg {
        LoadAvg::parse(&std::fs::read_to_string("/proc/loadavg").unwrap_or_default())
    }

    fn parse(text: &str) -> LoadAvg {
        let raw = text.trim().to_owned();
        let mut it = raw
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(f64::NAN));
        let mut next = || it.next().unwrap_or(f64::NAN);
        let (one, five, fifteen) = (next(), next(), next());
        LoadAvg {
            raw,
            one,
            five,
            fifteen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_from_the_cpu_line() {
        // user 100, nice 10, system 50, idle 800, iowait 40, irq 0, softirq 5, steal 0; guest
        // columns are not counted again.
        let t = CpuTicks::parse("cpu  100 10 50 800 40 0 5 0 7 7");
        assert_eq!(
            t,
            CpuTicks {
                busy: 165,
                total: 1005
            }
        );
        let later = CpuTicks {
            busy: 265,
            total: 1405,
        };
        assert_eq!(later.since(&t), (100, 400));
        assert!((later.busy_share_since(&t) - 0.25).abs() < 1e-12);
        assert!(t.busy_share_since(&t).is_nan());
    }

    #[test]
    fn load_average_fields() {
        let l = LoadAvg::parse("0.52 1.10 2.00 3/411 12345\n");
        assert_eq!(l.raw, "0.52 1.10 2.00 3/411 12345");
        assert_eq!((l.one, l.five, l.fifteen), (0.52, 1.10, 2.00));
        assert!(LoadAvg::parse("").one.is_nan());
    }

    #[test]
    fn this_process_has_spent_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(5) {}
        assert!(thread_cpu_ns() > 0);
        assert!(process_cpu_ns(std::process::id()) > 0);
        assert_eq!(process_cpu_ns(u32::MAX), 0, "no such process");
    }
}

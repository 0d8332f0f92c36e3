//! Scheduling policy of any thread by its id, through `sched_setattr(2)` (the one call that sets
//! every policy, `SCHED_DEADLINE` included, and nice of `SCHED_OTHER` at once), plus the clock and
//! CPU affinity the measurements need.

use std::io;

/// A thread's scheduling policy as the agent would set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER` with a nice value (-20..=19).
    Other { nice: i32 },
    /// `SCHED_IDLE`: runs only when nothing else on the CPU wants to.
    Idle,
    /// `SCHED_FIFO` at a real-time priority (1..=99).
    Fifo(u32),
    /// `SCHED_RR` at a real-time priority (1..=99).
    Rr(u32),
    /// `SCHED_DEADLINE`: `runtime_ns` of CPU every `period_ns` (the kernel's own bounded share).
    Deadline { runtime_ns: u64, period_ns: u64 },
}

/// `struct sched_attr` (`SCHED_ATTR_SIZE_VER1`, 56 bytes), which libc does not export.
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

const SCHED_DEADLINE: u32 = 6;

impl Policy {
    fn attr(self) -> SchedAttr {
        let mut a = SchedAttr {
            size: size_of::<SchedAttr>() as u32,
            ..SchedAttr::default()
        };
        match self {
            Policy::Other { nice } => {
                a.policy = libc::SCHED_OTHER as u32;
                a.nice = nice;
            }
            Policy::Idle => a.policy = libc::SCHED_IDLE as u32,
            Policy::Fifo(p) => {
                a.policy = libc::SCHED_FIFO as u32;
                a.priority = p;
            }
            Policy::Rr(p) => {
                a.policy = libc::SCHED_RR as u32;
                a.priority = p;
            }
            Policy::Deadline {
                runtime_ns,
                period_ns,
            } => {
                a.policy = SCHED_DEADLINE;
                a.runtime = runtime_ns;
                a.deadline = period_ns;
                a.period = period_ns;
            }
        }
        a
    }
}

/// Sets thread `tid`'s policy (0 = the calling thread).
pub fn set_policy(tid: i32, policy: Policy) -> io::Result<()> {
    let attr = policy.attr();
    // SAFETY: sched_setattr reads a fully initialised sched_attr of the size it states.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &raw const attr, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets only the nice value of thread `tid` (`setpriority(PRIO_PROCESS, tid)`, per thread on Linux).
pub fn set_nice(tid: i32, nice: i32) -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no failure mode.
    unsafe { libc::gettid() }
}

/// Pins thread `tid` (0 = the caller) to one CPU.
pub fn pin(tid: i32, cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET stays inside it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in ns (vDSO, ~20 ns): the one clock every thread of a spike compares.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_has_the_kernels_size() {
        assert_eq!(size_of::<SchedAttr>(), 56);
        let a = Policy::Deadline {
            runtime_ns: 1,
            period_ns: 3,
        }
        .attr();
        assert_eq!((a.policy, a.runtime, a.deadline, a.period), (6, 1, 3, 3));
    }

    #[test]
    fn nice_and_idle_round_trip_on_the_calling_thread() {
        // Lowering one's own priority needs no privilege; restore nothing: the thread ends.
        std::thread::spawn(|| {
            set_policy(0, Policy::Other { nice: 5 }).unwrap();
            // SAFETY: plain syscall.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(nice, 5);
            set_policy(0, Policy::Idle).unwrap();
            // SAFETY: plain syscall.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }
}

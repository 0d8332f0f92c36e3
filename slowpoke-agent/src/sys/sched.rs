//! Scheduling of the agent's own latency-critical threads (resumers, the pause-request reader).

/// Real-time priority of the resumer threads (above normal work, below kernel-critical threads).
pub const REALTIME_PRIORITY: i32 = 20;

/// Makes the calling thread a precise sleeper: 1 ns timer slack and `SCHED_FIFO`. Returns why
/// real-time priority is off, if it is (the thread still works, with less precision under load).
pub fn make_thread_precise() -> Result<(), String> {
    // SAFETY: prctl/sched_setscheduler on the calling thread with valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0);
        let param = libc::sched_param {
            sched_priority: REALTIME_PRIORITY,
        };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) != 0 {
            return Err(format!(
                "SCHED_FIFO refused ({}); resumes may be late on a saturated machine (run as root or \
                 grant CAP_SYS_NICE)",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Tries `SCHED_FIFO` on a throw-away thread: "on" or why not.
pub fn probe_realtime() -> String {
    std::thread::spawn(|| match make_thread_precise() {
        Ok(()) => "on".to_string(),
        Err(why) => format!("off: {why}"),
    })
    .join()
    .unwrap_or_else(|_| "off: probe failed".into())
}

/// `SCHED_DEADLINE` (libc does not name it on every target).
pub const SCHED_DEADLINE: u32 = 6;
/// `SCHED_FLAG_RESET_ON_FORK`: children of the thread start with the default policy.
pub const SCHED_FLAG_RESET_ON_FORK: u64 = 1;

/// A thread's own scheduling policy as `sched_getattr` reports it: what the tail scheduler
/// (`agent/scheduling/`) saves before it promotes a thread and restores afterwards, exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadPolicy {
    /// `SCHED_OTHER` (0), `SCHED_FIFO` (1), `SCHED_RR` (2), `SCHED_BATCH` (3), `SCHED_IDLE` (5),
    /// `SCHED_DEADLINE` (6).
    pub policy: u32,
    /// Real-time priority (0 for the non-real-time policies).
    pub priority: u32,
    /// Nice value of `SCHED_OTHER`/`SCHED_BATCH`.
    pub nice: i32,
    /// `sched_flags` (only [`SCHED_FLAG_RESET_ON_FORK`] is kept).
    pub flags: u64,
}

impl ThreadPolicy {
    /// `SCHED_FIFO` at `priority`, children reset to the default policy (a promoted thread that
    /// forks must not hand real-time to a process nobody restores).
    pub const fn fifo(priority: u32) -> ThreadPolicy {
        ThreadPolicy {
            policy: libc::SCHED_FIFO as u32,
            priority,
            nice: 0,
            flags: SCHED_FLAG_RESET_ON_FORK,
        }
    }

    /// Real-time or deadline: a thread the tail scheduler leaves alone.
    pub const fn is_realtime(&self) -> bool {
        matches!(self.policy, 1 | 2 | SCHED_DEADLINE)
    }
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

/// Thread `tid`'s policy (`sched_getattr`). Errors: ESRCH when the thread is gone.
pub fn get_policy(tid: u32) -> std::io::Result<ThreadPolicy> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes into the struct we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid as libc::pid_t,
            &raw mut attr,
            size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ThreadPolicy {
        policy: attr.policy,
        priority: attr.priority,
        nice: attr.nice,
        flags: attr.flags & SCHED_FLAG_RESET_ON_FORK,
    })
}

/// Sets thread `tid`'s policy (`sched_setattr`): async-signal-safe (one system call on a stack
/// struct), so the guardian's forked child restores policies with it too. Returns 0 or the errno.
pub fn set_policy(tid: u32, p: ThreadPolicy) -> i32 {
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: p.policy,
        flags: p.flags,
        nice: p.nice,
        priority: p.priority,
        ..SchedAttr::default()
    };
    // SAFETY: sched_setattr reads a fully initialised sched_attr of the size it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            tid as libc::pid_t,
            &raw const attr,
            0u32,
        )
    };
    if rc == 0 {
        0
    } else {
        // SAFETY: reading errno.
        unsafe { *libc::__errno_location() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_has_the_kernels_size() {
        assert_eq!(size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn a_thread_policy_round_trips() {
        std::thread::spawn(|| {
            // SAFETY: gettid has no failure mode.
            let tid = unsafe { libc::gettid() } as u32;
            let before = get_policy(tid).expect("own policy");
            assert_eq!(before.policy, libc::SCHED_OTHER as u32);
            // Lowering one's own priority needs no privilege.
            let nicer = ThreadPolicy { nice: 7, ..before };
            assert_eq!(set_policy(tid, nicer), 0);
            assert_eq!(get_policy(tid).expect("policy").nice, 7);
        })
        .join()
        .expect("thread");
        assert_eq!(
            get_policy(u32::MAX >> 1).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ESRCH))
        );
    }
}

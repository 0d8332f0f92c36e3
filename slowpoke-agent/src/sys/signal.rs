//! Stopping and resuming whole processes (`SIGSTOP` / `SIGCONT` to a thread group).

/// What a `SIGSTOP` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Stopped,
    /// No such process any more.
    Gone,
    /// The kernel refused the signal (the errno: `EPERM` when the agent lacks `CAP_KILL` for a
    /// process of another user), or the pid is 0 or 1, which is never signalled.
    Refused(i32),
}

/// SIGSTOP one process (the whole thread group).
pub fn stop_pid(pid: u32) -> Stop {
    if pid <= 1 {
        return Stop::Refused(libc::EPERM);
    }
    // SAFETY: kill with a positive pid signals exactly that process.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) } == 0 {
        return Stop::Stopped;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ESRCH) => Stop::Gone,
        e => Stop::Refused(e.unwrap_or(libc::EPERM)),
    }
}

/// SIGCONT one process. False when it is gone.
pub fn resume_pid(pid: u32) -> bool {
    // SAFETY: as in `stop_pid`.
    pid > 1 && unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) } == 0
}

/// What [`resume_if_same`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identified {
    /// Still the same process: SIGCONT sent.
    Resumed,
    /// No such process any more.
    Gone,
    /// The pid now names another process (a later start time): left alone.
    Reused,
}

/// SIGCONT `pid` only if it is still the process that started at `start_ticks` (field 22 of
/// `/proc/PID/stat`, see [`super::rawfs::start_ticks`]), so a pid the kernel gave to a newer
/// process is never resumed by mistake. Async-signal-safe and allocation-free (the guardian calls
/// it in its forked child).
///
/// A pidfd is opened *before* the start time is checked and the signal goes through it, so the
/// check and the signal address the same process even if the pid is reused in between (the
/// pidfd of a process that died in between refuses the signal). On kernels without pidfds
/// (before 5.3) it falls back to `kill`, with that small window.
pub fn resume_if_same(pid: u32, start_ticks: u64) -> Identified {
    if pid <= 1 {
        return Identified::Gone;
    }
    // SAFETY: pidfd_open, pidfd_send_signal, kill and close are plain system calls on a pid and
    // a descriptor this function owns (closed before returning).
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) as libc::c_int;
        if pidfd < 0 && *libc::__errno_location() == libc::ESRCH {
            return Identified::Gone;
        }
        let found = match super::rawfs::start_ticks(pid) {
            None => Identified::Gone,
            Some(t) if t != start_ticks => Identified::Reused,
            Some(_) => {
                let sent = if pidfd >= 0 {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd,
                        libc::SIGCONT,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    ) == 0
                } else {
                    libc::kill(pid as libc::pid_t, libc::SIGCONT) == 0
                };
                if sent {
                    Identified::Resumed
                } else {
                    Identified::Gone
                }
            }
        };
        if pidfd >= 0 {
            libc::close(pidfd);
        }
        found
    }
}

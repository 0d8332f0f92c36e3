//! Stopping and resuming whole processes (`SIGSTOP` / `SIGCONT` to a thread group).

/// SIGSTOP one process (the whole thread group). False when it is gone.
pub fn stop_pid(pid: u32) -> bool {
    // SAFETY: kill with a positive pid signals exactly that process.
    pid > 1 && unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) } == 0
}

/// SIGCONT one process. False when it is gone.
pub fn resume_pid(pid: u32) -> bool {
    // SAFETY: as in `stop_pid`.
    pid > 1 && unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) } == 0
}

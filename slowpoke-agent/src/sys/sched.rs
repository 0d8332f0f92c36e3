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

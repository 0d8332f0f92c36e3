//! The generator's threads at a real-time priority, so that a load sharing its CPUs with the app under test
//! is not delayed by it.
//!
//! A generator on the app's own machine competes with the app for the CPUs; when the app's threads run
//! `SCHED_FIFO` (a tail-latency schedule promotes the threads of the oldest requests), a generator at normal
//! priority gets what they leave: its sends go out late and a kept-alive connection it reuses may meanwhile have
//! been closed as idle by the server. Clients on other machines see none of that. At a real-time priority above
//! the app's, the generator behaves as such a client. Its CPU use is bounded by the load it sends (an open loop
//! at a set rate, or one request in flight per connection), and the kernel's real-time throttling
//! (`sched_rt_runtime_us`) leaves the rest of the machine its share in any case.

/// The highest priority accepted (`SCHED_FIFO` ranges 1 to 99 on Linux).
pub(crate) const MAX_REALTIME_PRIORITY: u8 = 99;

/// Puts the calling thread under `SCHED_FIFO` at `priority` (1 to 99). Fails with the OS error (`EPERM`
/// without root or `CAP_SYS_NICE`, `EINVAL` for a priority out of range).
pub fn set_current_thread(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: sched_setscheduler with pid 0 changes only the calling thread's policy; `param` is a valid
    // sched_param that lives across the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a thread of this process may run at `priority`: tried on a short-lived thread of its own, so the
/// caller's policy is untouched.
pub fn permitted(priority: u8) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("slowpoke-load-rt-probe".into())
        .spawn(move || set_current_thread(priority))?
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the probe thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy and real-time priority.
    fn current_thread_policy() -> (i32, i32) {
        let mut param = libc::sched_param { sched_priority: 0 };
        // SAFETY: both calls read the calling thread's own settings into a valid, owned sched_param.
        unsafe {
            let policy = libc::sched_getscheduler(0);
            libc::sched_getparam(0, &raw mut param);
            (policy, param.sched_priority)
        }
    }

    #[test]
    fn an_out_of_range_priority_is_refused_and_the_caller_keeps_its_policy() {
        let before = current_thread_policy();
        let e = permitted(100).expect_err("priority 100 is out of SCHED_FIFO's range");
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        assert_eq!(current_thread_policy(), before);
    }
}

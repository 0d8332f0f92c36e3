//! A thread that forwards the kernel's pause requests (ring buffer) to a channel and drains the
//! kernel log. A plain thread, so the kernel wrapper needs no tokio runtime of its own and the
//! requests arrive as soon as the kernel submits them.
//!
//! If it cannot go on (`poll` fails, the ring buffer's descriptor reports an error) it records
//! why ([`EventReader::failure`]) and ends, which closes the channel: the agent's dispatcher sees
//! the end and stops all pausing. A silent end would be dangerous: the kernel would keep stopping
//! processes whose pause request nobody reads, so nobody would resume them.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
};

use aya::maps::{MapData, RingBuf};
use slowpoke_common::PauseEvent;
use tokio::sync::mpsc::UnboundedSender;

use super::PauseRequest;

/// The kernel log's descriptor and what drains it (a closure owning the `aya_log::EbpfLogger`).
pub type LogDrain = (RawFd, Box<dyn FnMut() + Send>);

pub struct EventReader {
    stop: OwnedFd,
    thread: JoinHandle<()>,
    /// Why the thread ended on its own (`None` while it runs or after a requested stop).
    failure: Arc<Mutex<Option<String>>>,
    /// TEST ONLY: makes the thread end as if `poll` had failed.
    #[cfg(feature = "test-hooks")]
    inject_failure: Arc<std::sync::atomic::AtomicBool>,
}

impl EventReader {
    pub fn spawn(
        ring: RingBuf<MapData>,
        logger: Option<LogDrain>,
        requests: UnboundedSender<PauseRequest>,
    ) -> io::Result<EventReader> {
        // SAFETY: eventfd returns a new descriptor that we own (or -1).
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a valid descriptor owned by nobody else.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let stop_copy = stop.try_clone()?;
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        #[cfg(feature = "test-hooks")]
        let inject_failure = Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(feature = "test-hooks")]
        let injected = inject_failure.clone();
        let thread = std::thread::Builder::new()
            .name("slowpoke-kernel-events".into())
            .spawn(move || {
                #[cfg(not(feature = "test-hooks"))]
                let stopped = || None;
                #[cfg(feature = "test-hooks")]
                let stopped = || {
                    injected
                        .load(std::sync::atomic::Ordering::SeqCst)
                        .then(|| "poll failed (injected by a test hook)".to_string())
                };
                if let Err(why) = run(ring, logger, &requests, &stop_copy, stopped) {
                    tracing::error!(
                        "kernel event reader: {why}; pause requests are no longer read"
                    );
                    *failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
                }
            })?;
        Ok(EventReader {
            stop,
            thread,
            failure,
            #[cfg(feature = "test-hooks")]
            inject_failure,
        })
    }

    /// Why the reader ended on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// TEST ONLY: ends the reader as a failing `poll` would.
    #[cfg(feature = "test-hooks")]
    pub fn inject_failure(&self) {
        self.inject_failure
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Wakes the thread, waits for it to finish (it drops the ring buffer and the logger).
    pub fn stop(self) {
        self.wake();
        let _ = self.thread.join();
    }
}

/// Forwards requests until asked to stop (`Ok`) or until it cannot go on (`Err` with why).
/// `stopped`: on a wake-up of the stop descriptor, `Some(why)` turns the stop into a failure
/// (test hook), `None` is a requested stop.
fn run(
    mut ring: RingBuf<MapData>,
    mut logger: Option<LogDrain>,
    requests: &UnboundedSender<PauseRequest>,
    stop: &OwnedFd,
    stopped: impl Fn() -> Option<String>,
) -> Result<(), String> {
    // Every pause starts here: a saturated machine must not delay the request (the stop of the
    // service's other processes, and of the other services of a synchronized plan, waits on it).
    if let Err(why) = crate::sys::sched::make_thread_precise() {
        tracing::debug!("kernel event reader: {why}");
    }
    let fd = |raw: i32| libc::pollfd {
        fd: raw,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let mut fds = [
            fd(stop.as_raw_fd()),
            fd(ring.as_fd().as_raw_fd()),
            fd(logger.as_ref().map_or(-1, |(raw, _)| *raw)),
        ];
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        if fds[0].revents != 0 {
            return stopped().map_or(Ok(()), Err);
        }
        if fds[1].revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0 {
            return Err(format!(
                "the ring buffer's descriptor reported an error (poll revents {:#x})",
                fds[1].revents
            ));
        }
        while let Some(item) = ring.next() {
            if item.len() < size_of::<PauseEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole `PauseEvent` (plain data) into this record.
            let event: PauseEvent = unsafe { item.as_ptr().cast::<PauseEvent>().read_unaligned() };
            let _ = requests.send(PauseRequest {
                service: event.service,
                stopped_tgid: (event.stopped_tgid != 0).then_some(event.stopped_tgid),
                at_ns: event.at_ns,
                owed_ns: event.owed_ns,
            });
        }
        if fds[2].revents != 0
            && let Some((_, flush)) = logger.as_mut()
        {
            flush();
        }
    }
}

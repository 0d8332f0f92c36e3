//! The watchdog: what lets the guardian act while the agent is still alive but makes no progress
//! (stopped by an outsider's SIGSTOP, hung, or starved), and what the guardian reports back.
//!
//! The pipe the guardian waits on closes only when the agent process ends; a stopped agent keeps
//! it open, and with it every member it stopped mid-pause. So agent and guardian also share one
//! anonymous page (`mmap(MAP_SHARED)` before the fork, [`SharedPage`]):
//! - the agent writes a **progress stamp** (`CLOCK_MONOTONIC`) into it every ~50 ms from a
//!   [`Feeder`] thread, but only while its [`Progress`] is fresh — the resolver thread ticks it
//!   every pass, and a pass takes the registry and kernel locks, so a deadlocked or hung agent
//!   stops the stamps as surely as a stopped one;
//! - the guardian polls its pipe with a timeout and, whenever the stamp is older than the
//!   page's `stale_after` (default 1 s), resumes everything listed, again every poll tick while
//!   the stamp stays old. It cannot log (async-signal-safe only), so it counts what it did in
//!   the page, which the agent reports once it runs again (`/v1/health` warnings, `/metrics`).
//!
//! The kernel programs' heartbeat (`kernel/safety.rs`) follows the same notion of "alive" (a
//! fresh [`Progress`]) with a shorter limit (a few hundred ms), so a stuck agent's kernel stops
//! nothing well before the guardian starts resuming: the two never fight over a process.
//!
//! The guardian also records in the page how it set itself up (how it closed the inherited
//! descriptors, whether `oom_score_adj` -1000 was accepted), so the agent can say so.

use std::{
    io,
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::promoted::PromotedTable;
use crate::sys::clock::monotonic_ns;

/// Default: the guardian resumes what is listed once the agent made no progress for this long.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(1);
/// How often the [`Feeder`] stamps the page.
pub const FEED_PERIOD: Duration = Duration::from_millis(50);

/// How the guardian closed the descriptors it inherited (every one but its pipe's read end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMethod {
    /// Not reported yet.
    Unknown,
    /// `close_range(2)`.
    CloseRange,
    /// `close_range` failed: walked `/proc/self/fd` with `getdents64`.
    ProcWalk,
    /// `close_range` failed and `/proc/self/fd` was unreadable: `close` up to `RLIMIT_NOFILE`.
    UpToLimit,
}

/// The guardian's own report of its set-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardianSetup {
    pub close: CloseMethod,
    /// errno of the failed `close_range` (0: it worked).
    pub close_range_errno: i32,
    /// The agent's copy of the pipe's write end is closed in the guardian (checked with
    /// `fcntl`): without that the guardian would never see the pipe's end.
    pub write_end_closed: bool,
    /// errno of writing -1000 to `/proc/self/oom_score_adj` (0: accepted).
    pub oom_errno: i32,
}

/// What the watchdog did so far (monotonic counters, for `/metrics` and `/v1/health`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchdogCounts {
    /// Times the stamp went stale (the agent stopped making progress).
    pub episodes: u64,
    /// Resume passes made while it was stale (one per poll tick).
    pub passes: u64,
    /// `CLOCK_MONOTONIC` of the last pass (0: none).
    pub last_pass_ns: u64,
}

/// The page's layout: plain atomics, so both processes read and write it lock-free (64-bit
/// atomics are address-free on every target the agent runs on).
#[repr(C)]
pub(super) struct PageData {
    pub(super) stamp_ns: AtomicU64,
    /// 0: watchdog off (a guardian nobody stamps for, e.g. in tests).
    pub(super) stale_after_ns: AtomicU64,
    pub(super) episodes: AtomicU64,
    pub(super) passes: AtomicU64,
    pub(super) last_pass_ns: AtomicU64,
    /// Set-up report: 0 until the guardian wrote it, then its pid.
    pub(super) ready_pid: AtomicU32,
    pub(super) close_method: AtomicU32,
    pub(super) close_range_errno: AtomicU32,
    pub(super) write_end_closed: AtomicU32,
    pub(super) oom_errno: AtomicU32,
    /// The threads the tail scheduler promoted (see `promoted.rs`).
    pub(super) promoted: PromotedTable,
}

/// The shared mapping's length: [`PageData`] rounded up to whole pages.
const MAP_LEN: usize = size_of::<PageData>().div_ceil(4096) * 4096;

/// One page of anonymous memory shared with every guardian forked after it was made.
pub struct SharedPage {
    data: NonNull<PageData>,
}

// SAFETY: the page is only accessed through atomics; it lives until `drop`.
unsafe impl Send for SharedPage {}
// SAFETY: as above.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    /// Maps the page. `stale_after`: `None` turns the watchdog off.
    pub fn new(stale_after: Option<Duration>) -> io::Result<SharedPage> {
        // SAFETY: a fresh anonymous shared mapping of one page; checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let data = NonNull::new(ptr.cast::<PageData>()).ok_or_else(io::Error::last_os_error)?;
        // The mapping is page-aligned, zero-filled and large enough for `PageData`, whose
        // fields are all atomics: all zero is a valid value (an empty promoted table).
        let page = SharedPage { data };
        page.data().stamp_ns.store(monotonic_ns(), Ordering::SeqCst);
        page.data().stale_after_ns.store(
            stale_after.map_or(0, |d| d.as_nanos().max(1) as u64),
            Ordering::SeqCst,
        );
        Ok(page)
    }

    pub(super) fn data(&self) -> &PageData {
        // SAFETY: mapped in `new`, unmapped only in `drop`.
        unsafe { self.data.as_ref() }
    }

    /// The raw page, for the forked guardian (its copy of the mapping shares the memory).
    pub(super) fn as_ptr(&self) -> *const PageData {
        self.data.as_ptr()
    }

    /// The agent is making progress now.
    pub fn stamp(&self) {
        self.data().stamp_ns.store(monotonic_ns(), Ordering::SeqCst);
    }

    pub fn counts(&self) -> WatchdogCounts {
        let d = self.data();
        WatchdogCounts {
            episodes: d.episodes.load(Ordering::SeqCst),
            passes: d.passes.load(Ordering::SeqCst),
            last_pass_ns: d.last_pass_ns.load(Ordering::SeqCst),
        }
    }

    pub fn stale_after(&self) -> Option<Duration> {
        match self.data().stale_after_ns.load(Ordering::SeqCst) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The set-up report of the guardian that last wrote one (`None`: none did yet).
    pub fn setup(&self) -> Option<GuardianSetup> {
        let d = self.data();
        if d.ready_pid.load(Ordering::SeqCst) == 0 {
            return None;
        }
        Some(GuardianSetup {
            close: match d.close_method.load(Ordering::SeqCst) {
                1 => CloseMethod::CloseRange,
                2 => CloseMethod::ProcWalk,
                3 => CloseMethod::UpToLimit,
                _ => CloseMethod::Unknown,
            },
            close_range_errno: d.close_range_errno.load(Ordering::SeqCst) as i32,
            write_end_closed: d.write_end_closed.load(Ordering::SeqCst) == 1,
            oom_errno: d.oom_errno.load(Ordering::SeqCst) as i32,
        })
    }

    /// Forgets the previous guardian's set-up report (before forking a new one).
    pub(super) fn reset_setup(&self) {
        self.data().ready_pid.store(0, Ordering::SeqCst);
    }

    /// The threads the tail scheduler promoted, which the guardian restores.
    pub fn promoted(&self) -> &PromotedTable {
        &self.data().promoted
    }

    pub(super) fn ready_pid(&self) -> u32 {
        self.data().ready_pid.load(Ordering::SeqCst)
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; nothing borrows it any more. A guardian keeps its
        // own mapping of the same memory.
        unsafe { libc::munmap(self.data.as_ptr().cast(), MAP_LEN) };
    }
}

impl CloseMethod {
    pub(super) const fn code(self) -> u32 {
        match self {
            CloseMethod::Unknown => 0,
            CloseMethod::CloseRange => 1,
            CloseMethod::ProcWalk => 2,
            CloseMethod::UpToLimit => 3,
        }
    }
}

/// The agent's progress (`CLOCK_MONOTONIC` stamps): the one notion of "alive" behind both the
/// guardian's watchdog ([`Feeder`]) and the kernel heartbeat (`agent/heartbeat.rs`), each with its
/// own limit. Two threads must keep working for a pause to end well:
/// - the **resolver** stamps every tick of its loop and after every pass; each pass takes the
///   `state` and `kernel` locks, so a fresh stamp also says neither is stuck;
/// - the **dispatcher** hands the kernel's pause requests to the pause threads; it is idle
///   between requests, so it marks when it starts one and when it is done: a dispatcher stuck in
///   the middle of one would leave the process the kernel stopped to nobody.
#[derive(Debug)]
pub struct Progress {
    resolver_ns: AtomicU64,
    /// When the dispatcher started the request it is handling; 0 when idle.
    dispatch_busy_since_ns: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            resolver_ns: AtomicU64::new(monotonic_ns()),
            dispatch_busy_since_ns: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// The resolver loop is turning.
    pub fn resolver_tick(&self) {
        self.resolver_ns.store(monotonic_ns(), Ordering::Relaxed);
    }

    /// The dispatcher took a pause request.
    pub fn dispatch_started(&self) {
        self.dispatch_busy_since_ns
            .store(monotonic_ns().max(1), Ordering::Relaxed);
    }

    /// The dispatcher handed it on and waits for the next.
    pub fn dispatch_done(&self) {
        self.dispatch_busy_since_ns.store(0, Ordering::Relaxed);
    }

    /// Both threads made progress within `limit`.
    pub fn within(&self, limit: Duration) -> bool {
        let now = monotonic_ns();
        let limit = limit.as_nanos() as u64;
        let busy = self.dispatch_busy_since_ns.load(Ordering::Relaxed);
        now.saturating_sub(self.resolver_ns.load(Ordering::Relaxed)) < limit
            && (busy == 0 || now.saturating_sub(busy) < limit)
    }
}

/// The thread that stamps the shared page; dropping it stops the stamps (and joins it).
pub struct Feeder {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Feeder {
    /// Stamps `page` now and then every `period` while `alive()` holds. An agent that is
    /// stopped stops this thread with it; a hung one makes `alive()` false.
    pub fn start(
        page: Arc<SharedPage>,
        period: Duration,
        alive: impl Fn() -> bool + Send + 'static,
    ) -> io::Result<Feeder> {
        page.stamp();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("slowpoke-watchdog".into())
            .spawn(move || {
                while matches!(
                    stopped.recv_timeout(period),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    if alive() {
                        page.stamp();
                    }
                }
            })?;
        Ok(Feeder {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_survives_a_fork_shared() {
        let page = SharedPage::new(Some(Duration::from_secs(1))).expect("mmap");
        // SAFETY: the child only touches atomics in the shared page and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            page.data().passes.store(7, Ordering::SeqCst);
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        assert_eq!(page.counts().passes, 7);
        assert_eq!(page.stale_after(), Some(Duration::from_secs(1)));
        assert!(page.setup().is_none());
    }

    #[test]
    fn stale_resolver_or_stuck_dispatcher_is_not_progress() {
        let limit = Duration::from_secs(1);
        let p = Progress::default();
        assert!(p.within(limit));
        p.dispatch_started();
        assert!(p.within(limit), "a request being handled now");
        p.dispatch_done();
        let old = monotonic_ns() - 1_000_000_001;
        p.dispatch_busy_since_ns.store(old, Ordering::Relaxed);
        assert!(!p.within(limit), "a dispatcher stuck on one request");
        assert!(
            p.within(Duration::from_secs(5)),
            "the same, with a longer limit"
        );
        p.dispatch_done();
        p.resolver_ns.store(old, Ordering::Relaxed);
        assert!(!p.within(limit), "a resolver that stopped turning");
        p.resolver_tick();
        assert!(p.within(limit));
    }
}

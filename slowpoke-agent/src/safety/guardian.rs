//! The guardian: a forked child that resumes every listed process when the agent process ends,
//! or while it makes no progress.
//!
//! At start the agent forks a child that waits on a pipe. The agent holds the write end
//! (close-on-exec, so no exec'd program inherits it); the kernel closes it however the agent
//! process ends (exit, panic, SIGTERM, SIGKILL, OOM kill). The guardian then reads EOF, resumes
//! everything the state file lists (see `state.rs` and `listing.rs`), waits ~20 ms and does it
//! once more (a pause that was in flight may have stopped a process between the two), and exits.
//! Every 100 ms it also checks that its parent is still the agent (a guardian that somehow kept
//! a copy of the write end would otherwise never see EOF) and, through the page it shares with
//! the agent, that the agent still makes progress (the watchdog, see `watchdog.rs`).
//!
//! What the guardian cannot be fooled by:
//! - **a copy of the write end**: it closes every descriptor but its read end — `close_range`,
//!   or where that fails (ENOSYS on kernels before 5.9, EPERM/ENOSYS under seccomp) a walk of
//!   `/proc/self/fd` with `getdents64` on a stack buffer, or `close` up to the hard
//!   `RLIMIT_NOFILE` — and checks with `fcntl` that the write end is gone;
//! - **a reused pid**: processes are listed with their start time and resumed through a pidfd
//!   only if they are still that process;
//! - **the OOM killer**: it sets its own `oom_score_adj` to -1000 (it is tiny, but right after
//!   the fork it counts the agent's memory as its own; needs `CAP_SYS_RESOURCE`, else reported);
//! - **a stopped or hung agent**: the watchdog resumes what is listed while the agent's progress
//!   stamp is stale;
//! - **a Ctrl-C on the agent's terminal**: it runs in its own session and ignores the terminal
//!   and termination signals. SIGKILL of the guardian itself is covered by the agent (it forks a
//!   new one) or, if both die, by the next agent start, which resumes what the file lists.
//!
//! Why a forked child and not a re-exec of the agent binary: the agent is also a library embedded
//! in other binaries (the coordinator), where `/proc/self/exe` is not `slowpoke-agent`. Why that is
//! safe although the parent is multi-threaded (tokio): after `fork` only the calling thread exists
//! in the child and any lock may be held by a vanished thread, so the child runs only
//! async-signal-safe system calls on memory prepared before the fork (the state file path as a C
//! string, the shared page) and on its own stack. It never allocates, locks, logs or returns into
//! Rust code of the parent: `child.rs` holds all of it.

mod child;

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use super::watchdog::{GuardianSetup, SharedPage};

/// How long [`Guardian::spawn_with`] waits for the child's set-up report.
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The forked watcher. Dropping it (or [`Guardian::stop`]) closes the pipe: the guardian runs its
/// repair pass once and exits.
pub struct Guardian {
    pid: libc::pid_t,
    write_end: Option<OwnedFd>,
    page: Arc<SharedPage>,
}

impl std::fmt::Debug for Guardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardian")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Guardian {
    /// Forks a guardian for the state file at `state_file`, without watchdog (nobody stamps a
    /// page for it): it acts when this process ends.
    pub fn spawn(state_file: &Path) -> io::Result<Guardian> {
        Guardian::spawn_with(state_file, Arc::new(SharedPage::new(None)?))
    }

    /// Forks a guardian that shares `page` with this process: the watchdog acts when the page's
    /// stamp is older than its `stale_after`. Returns once the child reported its set-up (at
    /// most ~2 s).
    pub fn spawn_with(state_file: &Path, page: Arc<SharedPage>) -> io::Result<Guardian> {
        let path = CString::new(state_file.as_os_str().as_encoded_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "state file path has a NUL byte",
            )
        })?;
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        page.reset_setup();
        let args = child::Args {
            read_fd: read_end.as_raw_fd(),
            write_fd: write_end.as_raw_fd(),
            // SAFETY: getpid has no preconditions.
            parent: unsafe { libc::getpid() },
            path: path.as_ptr(),
            page: page.as_ptr(),
        };
        // SAFETY: fork; the child branch only calls `child::run`, which is async-signal-safe
        // and never returns (see the module documentation).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child right after fork; `path` and the page live in the copied
            // address space (the page is shared with the parent).
            unsafe { child::run(&args) }
        }
        drop(read_end);
        let guardian = Guardian {
            pid,
            write_end: Some(write_end),
            page,
        };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while guardian.page.ready_pid() != pid as u32
            && Instant::now() < deadline
            && guardian.alive()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(guardian)
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// How the guardian set itself up (`None` until it reported).
    pub fn setup(&self) -> Option<GuardianSetup> {
        (self.page.ready_pid() == self.pid as u32)
            .then(|| self.page.setup())
            .flatten()
    }

    /// True while the guardian process runs (reaps it when it has exited).
    pub fn alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG.
        let r = unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) };
        r == 0
    }

    /// Closes the pipe (the guardian resumes whatever is listed and exits) and reaps it, waiting at
    /// most `timeout`.
    pub fn stop(mut self, timeout: Duration) {
        self.write_end = None;
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: as in `alive`.
            let r = unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) };
            if r != 0 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl GuardianSetup {
    /// One line per aspect for `/v1/health` features: (`guardian_close`, `guardian_oom`).
    pub fn describe(&self) -> (String, String) {
        use super::watchdog::CloseMethod;
        let how = match self.close {
            CloseMethod::CloseRange => "close_range".to_string(),
            CloseMethod::ProcWalk => format!(
                "walked /proc/self/fd (close_range failed: {})",
                errno_name(self.close_range_errno)
            ),
            CloseMethod::UpToLimit => format!(
                "closed up to RLIMIT_NOFILE (close_range failed: {}, /proc/self/fd unreadable)",
                errno_name(self.close_range_errno)
            ),
            CloseMethod::Unknown => "unknown".to_string(),
        };
        let close = if self.write_end_closed {
            format!("on: {how}")
        } else {
            format!(
                "off: the pipe's write end is still open in the guardian after {how}; it \
                 notices the agent's death by its parent pid only (within 100 ms)"
            )
        };
        let oom = match self.oom_errno {
            0 => "on: oom_score_adj -1000".to_string(),
            e => format!(
                "off: oom_score_adj -1000 refused ({}); the OOM killer may pick the guardian \
                 (the agent then forks a new one); grant CAP_SYS_RESOURCE to the agent",
                errno_name(e)
            ),
        };
        (close, oom)
    }
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOSYS => "ENOSYS".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        libc::EINVAL => "EINVAL".into(),
        e => io::Error::from_raw_os_error(e).to_string(),
    }
}

//! The guardian: a forked child that resumes every listed process when the agent process ends.
//!
//! At start the agent forks a child that only waits on a pipe. The agent holds the write end
//! (close-on-exec, so no exec'd program inherits it); the kernel closes it however the agent
//! process ends (exit, panic, SIGTERM, SIGKILL, OOM kill). The guardian then reads EOF, sends
//! SIGCONT to every pid listed in the state file (see `state.rs`), waits ~20 ms and does it once
//! more (a pause that was in flight may have stopped a process between the two), and exits.
//!
//! Why a forked child and not a re-exec of the agent binary: the agent is also a library embedded
//! in other binaries (the coordinator), where `/proc/self/exe` is not `slowpoke-agent`. Why that is
//! safe although the parent is multi-threaded (tokio): after `fork` only the calling thread exists
//! in the child and any lock may be held by a vanished thread, so the child runs only
//! async-signal-safe system calls (`sigaction`, `setsid`, `prctl`, `close_range`, `read`, `open`,
//! `kill`, `nanosleep`, `_exit`) on memory prepared before the fork (the state file path as a C
//! string) and on its own stack (a fixed read buffer, a digit-by-digit parser). It never
//! allocates, locks, logs or returns into Rust code of the parent.
//!
//! The child closes every other descriptor (so it does not keep the agent's listening socket or
//! lock file), moves to its own session (a Ctrl-C on the agent's terminal must not kill it before
//! it repaired) and ignores the terminal and termination signals. SIGKILL of the guardian itself
//! is covered by the next agent start, which resumes whatever the state file lists.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
    time::{Duration, Instant},
};

/// The forked watcher. Dropping it (or [`Guardian::stop`]) closes the pipe: the guardian runs its
/// repair pass once and exits.
#[derive(Debug)]
pub struct Guardian {
    pid: libc::pid_t,
    write_end: Option<OwnedFd>,
}

impl Guardian {
    /// Forks the guardian for the state file at `state_file`.
    pub fn spawn(state_file: &Path) -> io::Result<Guardian> {
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
        // SAFETY: fork; the child branch only calls `guardian_main`, which is async-signal-safe
        // and never returns (see the module documentation).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child right after fork; `path` lives in the copied address space.
            unsafe { guardian_main(read_end.as_raw_fd(), path.as_ptr()) }
        }
        drop(read_end);
        Ok(Guardian {
            pid,
            write_end: Some(write_end),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
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

/// The guardian child. Async-signal-safe only: see the module documentation.
unsafe fn guardian_main(read_fd: RawFd, path: *const libc::c_char) -> ! {
    // SAFETY (whole body): raw system calls on the child's own descriptors, stack buffers and
    // memory that was fully initialised before the fork.
    unsafe {
        let mut ign: libc::sigaction = std::mem::zeroed();
        ign.sa_sigaction = libc::SIG_IGN;
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaction(sig, &raw const ign, std::ptr::null_mut());
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
        libc::setsid();
        libc::prctl(libc::PR_SET_NAME, c"slowpoke-guard".as_ptr(), 0, 0, 0);
        if read_fd > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (read_fd - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (read_fd + 1) as u32, u32::MAX, 0u32);
        let mut byte = 0u8;
        loop {
            let n = libc::read(read_fd, (&raw mut byte).cast(), 1);
            if n == 0 {
                break;
            }
            if n < 0 && *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        resume_listed(path);
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        libc::nanosleep(&raw const ts, std::ptr::null_mut());
        resume_listed(path);
        libc::_exit(0)
    }
}

/// SIGCONT to every run of digits (> 1) in the file. No allocation.
unsafe fn resume_listed(path: *const libc::c_char) {
    // SAFETY: see `guardian_main`.
    unsafe {
        let fd = libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 4096];
        let mut cur: u64 = 0;
        let mut in_num = false;
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            let n = if n <= 0 { 0 } else { n as usize };
            for &b in &buf[..n] {
                if b.is_ascii_digit() {
                    cur = cur.saturating_mul(10).saturating_add(u64::from(b - b'0'));
                    in_num = true;
                } else if in_num {
                    signal_cont(cur);
                    cur = 0;
                    in_num = false;
                }
            }
            if n == 0 {
                break;
            }
        }
        if in_num {
            signal_cont(cur);
        }
        libc::close(fd);
    }
}

fn signal_cont(pid: u64) {
    if pid > 1 && i32::try_from(pid).is_ok() {
        // SAFETY: kill is async-signal-safe; pid > 1 never addresses a process group.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGCONT);
        }
    }
}

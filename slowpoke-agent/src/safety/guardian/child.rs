//! The guardian child itself. Everything here runs in a forked copy of a multi-threaded process:
//! async-signal-safe system calls only (`sigaction`, `sigprocmask`, `setsid`, `prctl`,
//! `close_range`, `open`, `getdents64`, `lseek`, `close`, `getrlimit`, `fcntl`, `write`, `read`,
//! `poll`, `getppid`, `clock_gettime`, `kill`, `pidfd_open`, `pidfd_send_signal`, `sched_setattr`, `nanosleep`,
//! `_exit`), atomics in the shared page, and stack buffers. No allocation, no lock, no logging.

use std::{ffi::CStr, sync::atomic::Ordering};

use crate::{
    safety::{
        listing::resume_listed,
        watchdog::{CloseMethod, PageData},
    },
    sys::{clock::monotonic_ns, rawfs::parse_decimal},
};

/// How often the guardian checks its parent and the watchdog stamp.
const TICK_MS: libc::c_int = 100;

/// What the child needs, all prepared before the fork.
pub(super) struct Args {
    pub read_fd: libc::c_int,
    /// The agent's end: closed in the child, which checks that it is.
    pub write_fd: libc::c_int,
    /// The agent's pid: a different parent means the agent is gone.
    pub parent: libc::pid_t,
    /// The state file (NUL-terminated, in memory copied by the fork).
    pub path: *const libc::c_char,
    pub page: *const PageData,
}

/// The guardian's main: set-up, then wait for the pipe's end while watching parent and stamp,
/// then resume twice and exit.
///
/// # Safety
/// Call only in the child right after `fork`, with `args` prepared before it.
pub(super) unsafe fn run(args: &Args) -> ! {
    // SAFETY (whole body): raw system calls on the child's own descriptors, stack buffers and
    // memory that was fully initialised before the fork (the path, the shared page).
    unsafe {
        detach();
        let page = &*args.page;
        let (method, close_range_errno) = close_all_but(args.read_fd);
        let write_end_closed = libc::fcntl(args.write_fd, libc::F_GETFD) == -1
            && *libc::__errno_location() == libc::EBADF;
        let oom_errno = set_oom_score_adj();
        page.close_method.store(method.code(), Ordering::SeqCst);
        page.close_range_errno
            .store(close_range_errno as u32, Ordering::SeqCst);
        page.write_end_closed
            .store(u32::from(write_end_closed), Ordering::SeqCst);
        page.oom_errno.store(oom_errno as u32, Ordering::SeqCst);
        page.ready_pid
            .store(libc::getpid() as u32, Ordering::SeqCst);

        let path = CStr::from_ptr(args.path);
        let mut stale = false;
        loop {
            let mut pfd = libc::pollfd {
                fd: args.read_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let r = libc::poll(&raw mut pfd, 1, TICK_MS);
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                break; // cannot wait any more: repair now and let the agent fork a new guardian
            }
            if r > 0 && pipe_ended(args.read_fd) {
                break;
            }
            if libc::getppid() != args.parent {
                break; // the agent is gone although the pipe did not say so
            }
            watchdog_tick(page, path, &mut stale);
        }
        resume_listed(path, &mut |_| {});
        page.promoted.restore_all();
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        libc::nanosleep(&raw const ts, std::ptr::null_mut());
        resume_listed(path, &mut |_| {});
        libc::_exit(0)
    }
}

/// Own session, own name, terminal and termination signals ignored, nothing blocked.
unsafe fn detach() {
    // SAFETY: sigaction/sigprocmask/setsid/prctl on this process with stack values.
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
    }
}

/// True when the pipe says the agent is gone (EOF or an error other than EINTR).
unsafe fn pipe_ended(fd: libc::c_int) -> bool {
    let mut byte = 0u8;
    // SAFETY: a one-byte read into a stack variable.
    let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
    // SAFETY: reading errno.
    n == 0 || (n < 0 && unsafe { *libc::__errno_location() } != libc::EINTR)
}

/// While the agent's stamp is stale: resume everything listed (every tick), count it.
fn watchdog_tick(page: &PageData, path: &CStr, stale: &mut bool) {
    let limit = page.stale_after_ns.load(Ordering::SeqCst);
    if limit == 0 {
        return;
    }
    let now = monotonic_ns();
    if now.saturating_sub(page.stamp_ns.load(Ordering::SeqCst)) <= limit {
        *stale = false;
        return;
    }
    if !*stale {
        *stale = true;
        page.episodes.fetch_add(1, Ordering::SeqCst);
    }
    resume_listed(path, &mut |_| {});
    page.promoted.restore_all();
    page.passes.fetch_add(1, Ordering::SeqCst);
    page.last_pass_ns.store(now, Ordering::SeqCst);
}

/// Closes every descriptor but `keep`: `close_range`, else a walk of `/proc/self/fd`, else
/// `close` up to the hard `RLIMIT_NOFILE`. Returns the method and `close_range`'s errno.
unsafe fn close_all_but(keep: libc::c_int) -> (CloseMethod, i32) {
    // SAFETY: close_range on this process's own descriptor table.
    unsafe {
        let below = if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (keep - 1) as u32, 0u32)
        } else {
            0
        };
        let above = if below == 0 {
            libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32)
        } else {
            -1
        };
        if below == 0 && above == 0 {
            return (CloseMethod::CloseRange, 0);
        }
        let errno = *libc::__errno_location();
        if close_by_walking_proc(keep) {
            (CloseMethod::ProcWalk, errno)
        } else {
            close_up_to_limit(keep);
            (CloseMethod::UpToLimit, errno)
        }
    }
}

/// Closes every descriptor `/proc/self/fd` lists but `keep`, pass after pass (closing while
/// reading a directory may hide entries) until a pass finds nothing to close. False when the
/// directory cannot be read.
unsafe fn close_by_walking_proc(keep: libc::c_int) -> bool {
    // SAFETY: open/getdents64/lseek/close on descriptors of this process; `buf` is a stack
    // buffer and every dirent is read within the length getdents64 returned.
    unsafe {
        let dir = libc::open(
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if dir < 0 {
            return false;
        }
        let mut buf = [0u8; 2048];
        loop {
            let mut closed = 0;
            libc::lseek(dir, 0, libc::SEEK_SET);
            loop {
                let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
                if n < 0 {
                    libc::close(dir);
                    return false;
                }
                if n == 0 {
                    break;
                }
                let mut off = 0usize;
                while off + 19 < n as usize {
                    // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name[].
                    let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
                    if reclen == 0 {
                        break;
                    }
                    let name = &buf[off + 19..(off + reclen).min(n as usize)];
                    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                    if let Some(fd) =
                        parse_decimal(name).and_then(|f| libc::c_int::try_from(f).ok())
                        && fd != keep
                        && fd != dir
                    {
                        libc::close(fd);
                        closed += 1;
                    }
                    off += reclen;
                }
            }
            if closed == 0 {
                break;
            }
        }
        libc::close(dir);
        true
    }
}

/// Closes every descriptor number below the hard `RLIMIT_NOFILE` (at most 2^20, the kernel's
/// default `fs.nr_open`) but `keep`. The last resort: ~1 ms per 10 000 descriptors.
unsafe fn close_up_to_limit(keep: libc::c_int) {
    // SAFETY: getrlimit into a stack struct; close on numbers of this process's table.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_max.min(1 << 20) as libc::c_int
        } else {
            1 << 20
        };
        for fd in 0..max {
            if fd != keep {
                libc::close(fd);
            }
        }
    }
}

/// Writes -1000 to `/proc/self/oom_score_adj`. Returns 0 or the errno.
unsafe fn set_oom_score_adj() -> i32 {
    // SAFETY: open/write/close with a static path and value.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return *libc::__errno_location();
        }
        let value = b"-1000";
        let n = libc::write(fd, value.as_ptr().cast(), value.len());
        let errno = if n == value.len() as isize {
            0
        } else if n < 0 {
            *libc::__errno_location()
        } else {
            libc::EIO
        };
        libc::close(fd);
        errno
    }
}

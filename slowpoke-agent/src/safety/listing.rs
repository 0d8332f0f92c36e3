//! The resume list (`STATE_DIR/resume.list`): its format, and the allocation-free pass that
//! resumes what it names — run by the guardian in its forked child and by the next agent at start.
//!
//! One entry per line, made for a reader that may not allocate (see `guardian.rs`):
//!
//! ```text
//! # slowpoke resume list: ...
//! p 4242 987654                       a process: pid and start time (clock ticks after boot)
//! c /sys/fs/cgroup/unified/app.slice  a cgroup directory: every process in it now
//! ```
//!
//! A process is named by pid **and** start time (field 22 of `/proc/PID/stat`) so that a pid the
//! kernel hands to a newer process after the listed one died is never resumed (a process stopped
//! by its owner, a debugger or a test must stay stopped). A cgroup covers the processes that join
//! it after the agent last looked (a fork, a new container process): the kernel programs may
//! stop those too, since they know the service by cgroup. Their start time is not needed: being
//! in the cgroup at repair time is what makes them the service's.

use std::{ffi::CStr, os::unix::ffi::OsStrExt as _, path::Path};

use crate::sys::{
    rawfs::{StackPath, parse_decimal},
    signal::{Identified, resume_if_same},
};

/// First line of every list the agent writes (`#` lines are comments).
pub const HEADER: &str = "# slowpoke resume list: if the agent dies, its guardian (or the next agent) sends SIGCONT to \
     `p PID START_TICKS` if still that process, and to every process of `c CGROUP_DIR`\n";

/// Longest line the reader accepts (a cgroup path up to `PATH_MAX` plus its prefix); longer
/// lines are skipped, and the writer never writes them.
pub const MAX_LINE: usize = 4096 + 8;

/// One entry of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Process {
        pid: u32,
        start_ticks: u64,
    },
    /// A cgroup directory (raw bytes of the path).
    Cgroup(&'a [u8]),
}

/// Parses one line (without its newline); comments, blank and malformed lines give `None`.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    match line {
        [b'p', b' ', rest @ ..] => {
            let mut f = rest.split(|&b| b == b' ').filter(|f| !f.is_empty());
            let pid = u32::try_from(parse_decimal(f.next()?)?).ok()?;
            let start_ticks = parse_decimal(f.next()?)?;
            (pid > 1).then_some(Entry::Process { pid, start_ticks })
        }
        [b'c', b' ', path @ ..] if path.first() == Some(&b'/') && !path.contains(&0) => {
            Some(Entry::Cgroup(path))
        }
        _ => None,
    }
}

/// Appends one process line.
pub fn write_process(out: &mut Vec<u8>, pid: u32, start_ticks: u64) {
    out.extend_from_slice(format!("p {pid} {start_ticks}\n").as_bytes());
}

/// Appends one cgroup line; false (nothing written) for a path the reader could not take back
/// (a newline or NUL in it, or longer than `PATH_MAX`).
pub fn write_cgroup(out: &mut Vec<u8>, dir: &Path) -> bool {
    let bytes = dir.as_os_str().as_bytes();
    if bytes.first() != Some(&b'/')
        || bytes.len() + 2 > MAX_LINE
        || bytes.iter().any(|&b| b == b'\n' || b == 0)
    {
        return false;
    }
    out.extend_from_slice(b"c ");
    out.extend_from_slice(bytes);
    out.push(b'\n');
    true
}

/// What one resume pass did to one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A listed process, still the same one: SIGCONT sent.
    Resumed(u32),
    /// A listed pid that now names another process: left alone.
    Reused(u32),
    /// A listed process that is gone.
    Gone(u32),
    /// A process found in a listed cgroup: SIGCONT sent.
    InCgroup(u32),
}

/// Resumes everything the list at `path` names, reporting each process to `report`. Returns
/// false when the list cannot be opened (none written yet, or removed).
///
/// Async-signal-safe and allocation-free as long as `report` is (the guardian passes a closure
/// that does nothing): `open`, `read`, `close`, `kill`, `pidfd_open`, `pidfd_send_signal` on
/// stack buffers.
pub fn resume_listed(path: &CStr, report: &mut dyn FnMut(Outcome)) -> bool {
    let mut line = [0u8; MAX_LINE];
    let mut len = 0usize;
    let mut too_long = false;
    let opened = for_each_byte_of(path, &mut |b| {
        if b == b'\n' {
            if !too_long {
                resume_entry(&line[..len], report);
            }
            len = 0;
            too_long = false;
        } else if len < line.len() {
            line[len] = b;
            len += 1;
        } else {
            too_long = true;
        }
    });
    if opened && !too_long && len > 0 {
        resume_entry(&line[..len], report);
    }
    opened
}

fn resume_entry(line: &[u8], report: &mut dyn FnMut(Outcome)) {
    match parse_line(line) {
        Some(Entry::Process { pid, start_ticks }) => {
            report(match resume_if_same(pid, start_ticks) {
                Identified::Resumed => Outcome::Resumed(pid),
                Identified::Reused => Outcome::Reused(pid),
                Identified::Gone => Outcome::Gone(pid),
            });
        }
        Some(Entry::Cgroup(dir)) => {
            let mut procs = StackPath::<{ MAX_LINE + 16 }>::new();
            procs.push(dir).push(b"/cgroup.procs");
            if let Some(procs) = procs.as_c_str() {
                resume_pids_in(procs, report);
            }
        }
        None => {}
    }
}

/// SIGCONT to every pid (> 1) a `cgroup.procs` file lists now.
fn resume_pids_in(procs: &CStr, report: &mut dyn FnMut(Outcome)) {
    let mut cur: u64 = 0;
    let mut digits = false;
    let send = |pid: u64, report: &mut dyn FnMut(Outcome)| {
        if let Ok(pid) = u32::try_from(pid)
            && pid > 1
            // SAFETY: kill with a positive pid signals exactly that process.
            && unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) } == 0
        {
            report(Outcome::InCgroup(pid));
        }
    };
    for_each_byte_of(procs, &mut |b| {
        if b.is_ascii_digit() {
            cur = cur.saturating_mul(10).saturating_add(u64::from(b - b'0'));
            digits = true;
        } else if digits {
            send(cur, report);
            cur = 0;
            digits = false;
        }
    });
    if digits {
        send(cur, report);
    }
}

/// Streams a file through a 4 KiB stack buffer. False when it cannot be opened.
fn for_each_byte_of(path: &CStr, f: &mut dyn FnMut(u8)) -> bool {
    // SAFETY: open/read/close on a NUL-terminated path and a stack buffer; the descriptor is
    // closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            for &b in &buf[..n as usize] {
                f(b);
            }
        }
        libc::close(fd);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_junk_is_skipped() {
        let mut out = HEADER.as_bytes().to_vec();
        write_process(&mut out, 4242, 987_654);
        assert!(write_cgroup(&mut out, Path::new("/sys/fs/cgroup/a b")));
        assert!(!write_cgroup(&mut out, Path::new("/sys/fs/cgroup/a\nb")));
        assert!(!write_cgroup(&mut out, Path::new("relative")));
        let entries: Vec<Entry<'_>> = out.split(|&b| b == b'\n').filter_map(parse_line).collect();
        assert_eq!(
            entries,
            vec![
                Entry::Process {
                    pid: 4242,
                    start_ticks: 987_654
                },
                Entry::Cgroup(b"/sys/fs/cgroup/a b"),
            ]
        );
        for junk in [
            &b"p 1 5"[..],
            b"p 12",
            b"p x 5",
            b"p 99999999999 5",
            b"c relative",
            b"q 12 5",
            b"",
        ] {
            assert_eq!(parse_line(junk), None, "{}", String::from_utf8_lossy(junk));
        }
    }
}

//! Allocation-free readers of kernel files, for code that runs in a forked child of a
//! multi-threaded process (the guardian, see `safety/guardian.rs`): after `fork` only the calling
//! thread exists and any lock (the allocator's included) may be held by a vanished thread, so
//! such code may only make async-signal-safe system calls on its own stack.
//!
//! Everything here is built from `open`, `read`, `close` and stack buffers. The agent uses the
//! same functions where it applies the guardian's rules itself (its start-up repair), so the two
//! can never disagree on, say, which field of `/proc/PID/stat` is the start time.

use std::ffi::CStr;

/// A NUL-terminated path built on the stack from pieces (`/proc/` + a number + `/stat`).
pub struct StackPath<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> StackPath<N> {
    pub const fn new() -> Self {
        StackPath {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// Appends bytes (a NUL byte inside makes the path unusable, see [`StackPath::as_c_str`]).
    pub fn push(&mut self, bytes: &[u8]) -> &mut Self {
        if self.len + bytes.len() >= N {
            self.overflow = true;
            return self;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        self
    }

    /// Appends a number in decimal.
    pub fn push_decimal(&mut self, mut n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    /// The path, or `None` when it did not fit or holds a NUL byte.
    pub fn as_c_str(&mut self) -> Option<&CStr> {
        if self.overflow {
            return None;
        }
        self.buf[self.len] = 0;
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).ok()
    }
}

impl<const N: usize> Default for StackPath<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the start of a file into `buf` (as much as fits). `None` when it cannot be opened.
pub fn read_start_of(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: open/read/close on a NUL-terminated path and a buffer we own; the descriptor is
    // closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
        Some(len)
    }
}

/// Start time of process `pid` (field 22 of `/proc/PID/stat`: clock ticks after boot). With the
/// pid it names one process for the node's uptime: a pid reused by a later process comes with a
/// later start time.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let mut path = StackPath::<32>::new();
    path.push(b"/proc/")
        .push_decimal(u64::from(pid))
        .push(b"/stat");
    // Field 22 comes well within the first 512 bytes: `comm` is at most 15 bytes (parenthesised)
    // and the 19 numbers before it at most 20 digits each.
    let mut buf = [0u8; 512];
    let n = read_start_of(path.as_c_str()?, &mut buf)?;
    parse_start_ticks(&buf[..n])
}

/// Start time of thread `tid` of process `tgid` (`/proc/TGID/task/TID/stat`, field 22): names
/// one thread for the node's uptime, as [`start_ticks`] names a process (the guardian restores
/// a promoted thread's policy only if it is still that thread of that process).
pub fn thread_start_ticks(tgid: u32, tid: u32) -> Option<u64> {
    let mut path = StackPath::<48>::new();
    path.push(b"/proc/")
        .push_decimal(u64::from(tgid))
        .push(b"/task/")
        .push_decimal(u64::from(tid))
        .push(b"/stat");
    let mut buf = [0u8; 512];
    let n = read_start_of(path.as_c_str()?, &mut buf)?;
    parse_start_ticks(&buf[..n])
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` text. `comm` (field 2) may contain spaces and
/// parentheses: fields are counted after the last `)`.
pub fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    // After ')': state is field 3, so starttime (22) is the 20th field.
    let field = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(22 - 3)?;
    parse_decimal(field)
}

/// A whole run of ASCII digits as a number (`None` for anything else or an overflow).
pub fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_is_field_22_even_with_spaces_and_parens_in_comm() {
        let stat =
            b"4242 (a) b (c d) S 1 4242 4242 0 -1 4194560 100 0 0 0 3 4 0 0 20 0 1 0 987654 \
                     1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks(b"4242 (x) S 1 2"), None);
    }

    #[test]
    fn start_ticks_of_this_process_is_stable_and_of_a_missing_one_none() {
        let me = std::process::id();
        let a = start_ticks(me).expect("own stat");
        assert_eq!(start_ticks(me), Some(a));
        // pid_max is at most 2^22: this pid never exists.
        assert_eq!(start_ticks(u32::MAX - 1), None);
    }

    #[test]
    fn stack_paths_are_nul_terminated_and_refuse_overflow() {
        let mut p = StackPath::<16>::new();
        p.push(b"/proc/").push_decimal(0).push_decimal(1234);
        assert_eq!(p.as_c_str(), Some(c"/proc/01234"));
        let mut p = StackPath::<8>::new();
        p.push(b"/proc/").push_decimal(12345);
        assert_eq!(p.as_c_str(), None);
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"12a"), None);
    }
}

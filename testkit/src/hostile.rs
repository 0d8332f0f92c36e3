//! Processes that make a safety mechanism's life hard, for the agent's safety tests:
//!
//! - [`spawn_with_pid`]: a process with a pid of the test's choosing (`clone3` with `set_tid`),
//!   e.g. the pid a stopped member had before it died — a resume must not reach the newcomer;
//! - [`deny_close_range`]: a child whose `close_range(2)` fails with `ENOSYS` (a seccomp filter),
//!   as on old kernels and in sandboxes — the guardian must still close what it must;
//! - [`as_nobody`]: a child running as user `nobody` — an unprivileged caller;
//! - [`without_cap_kill`]: a root child without `CAP_KILL` — an agent that may not signal other
//!   users' processes (a container or unit that dropped it).
//!
//! All need root (`clone3`'s `set_tid` needs `CAP_SYS_ADMIN` in the pid namespace).

use std::{
    ffi::CString,
    io,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
};

/// A process started by [`spawn_with_pid`]. On drop it is continued (a test may have left it
/// stopped), killed and reaped.
pub struct ChosenPid {
    pid: u32,
    reaped: bool,
}

impl ChosenPid {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills (SIGKILL) and reaps it, so that its pid is free again.
    pub fn kill_and_wait(&mut self) {
        if self.reaped {
            return;
        }
        // SAFETY: kill(2) and waitpid(2) on our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGCONT);
            libc::kill(self.pid as i32, libc::SIGKILL);
            libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
        }
        self.reaped = true;
    }
}

impl Drop for ChosenPid {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// The kernel's `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`, Linux 5.5).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Runs `argv` (`argv[0]` looked up in `PATH`) as a child whose pid is `pid`, through `clone3`
/// with `set_tid`. Fails with `EEXIST` when the pid is in use, `EPERM` without `CAP_SYS_ADMIN`.
pub fn spawn_with_pid(pid: u32, argv: &[&str]) -> io::Result<ChosenPid> {
    let program = argv
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let path = find_program(program)?;
    // Everything the child touches is prepared here: between clone3 and execv the child (a
    // copy of a multi-threaded process) may only make async-signal-safe calls.
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(*a))
        .collect::<Result<_, _>>()?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());
    let tids = [libc::pid_t::try_from(pid).map_err(io::Error::other)?];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork; the child only calls execv and _exit on memory
    // prepared above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => unsafe {
            libc::execv(c_path.as_ptr(), c_argv.as_ptr());
            libc::_exit(127)
        },
        r if r < 0 => Err(io::Error::last_os_error()),
        r => Ok(ChosenPid {
            pid: r as u32,
            reaped: false,
        }),
    }
}

fn find_program(program: &str) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{program} not in PATH")))
}

/// A pid no process uses now, far from where the kernel hands out new pids (it counts up from
/// the last one it gave): from the top of `pid_max` down.
pub fn unused_pid() -> u32 {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32_768);
    // Different test processes start at different places.
    let start = pid_max - 1 - (std::process::id() % 1_000) * 16;
    (300..start)
        .rev()
        .find(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .expect("every pid is in use")
}

/// `offsetof(struct seccomp_data, nr)` and `offsetof(struct seccomp_data, arch)`.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // EM_X86_64 | 64-bit | little-endian
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // EM_AARCH64 | 64-bit | little-endian

const fn bpf_stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn bpf_jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Classic BPF seccomp filter: `close_range` on this architecture returns `ENOSYS`, every other
/// system call (and every other architecture's) is allowed.
const CLOSE_RANGE_ENOSYS: [libc::sock_filter; 6] = [
    bpf_stmt(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        SECCOMP_DATA_ARCH,
    ),
    bpf_jump(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        AUDIT_ARCH,
        0,
        3,
    ),
    bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, SECCOMP_DATA_NR),
    bpf_jump(
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::SYS_close_range as u32,
        0,
        1,
    ),
    bpf_stmt(
        libc::BPF_RET | libc::BPF_K,
        libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ),
    bpf_stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
];

/// Makes `close_range(2)` fail with `ENOSYS` in the command's process and everything it starts
/// (a seccomp filter installed just before exec; 6 classic-BPF instructions, so no crate).
/// Sets `no_new_privs`, which seccomp needs once the child dropped root (e.g. [`as_nobody`]).
pub fn deny_close_range(cmd: &mut Command) -> &mut Command {
    let hook = || {
        let prog = libc::sock_fprog {
            len: CLOSE_RANGE_ENOSYS.len() as u16,
            filter: CLOSE_RANGE_ENOSYS.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with a filter that lives in this process's (static) memory; the kernel
        // copies it.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog,
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook makes two prctl calls, both async-signal-safe, and allocates nothing.
    unsafe { cmd.pre_exec(hook) }
}

/// User and group ids of `nobody` (65534 where the passwd database has no such user).
pub fn nobody() -> (u32, u32) {
    let name = CString::new("nobody").expect("no NUL");
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwnam_r fills `pwd` and `buf`, both owned here and large enough (ERANGE
    // otherwise, treated as not found).
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwnam_r(
            name.as_ptr(),
            &raw mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut found,
        ) == 0
            && !found.is_null()
        {
            return (pwd.pw_uid, pwd.pw_gid);
        }
    }
    (65_534, 65_534)
}

/// Runs the command as user `nobody`: supplementary groups dropped, then `setgid`, `setuid`
/// before exec (the standard library's order).
pub fn as_nobody(cmd: &mut Command) -> &mut Command {
    let (uid, gid) = nobody();
    cmd.uid(uid).gid(gid)
}

/// `CAP_KILL` in `<linux/capability.h>`.
const CAP_KILL: libc::c_ulong = 5;

/// Runs the command as root without `CAP_KILL`: the capability leaves the bounding set before
/// exec, so the exec'd program (uid 0) does not get it back (its permitted set is the bounding
/// set), and it may signal only processes of its own user.
pub fn without_cap_kill(cmd: &mut Command) -> &mut Command {
    let hook = || {
        // SAFETY: prctl(PR_CAPBSET_DROP) changes only this (child) process; async-signal-safe.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_KILL, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook makes one prctl call and allocates nothing.
    unsafe { cmd.pre_exec(hook) }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn comm(pid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    #[test]
    fn spawn_with_pid_gives_the_chosen_pid_and_reuses_it() {
        let pid = unused_pid();
        let mut first = spawn_with_pid(pid, &["sleep", "30"]).expect("clone3 with set_tid");
        assert_eq!(first.pid(), pid);
        crate::wait_for(Duration::from_secs(5), "sleep running", || {
            (comm(pid).as_deref() == Some("sleep")).then_some(())
        });
        assert!(
            spawn_with_pid(pid, &["sleep", "30"])
                .is_err_and(|e| e.raw_os_error() == Some(libc::EEXIST)),
            "a pid in use must be refused"
        );
        // The pid of a dead process, given to a new one.
        first.kill_and_wait();
        assert!(comm(pid).is_none());
        let second = spawn_with_pid(pid, &["cat"]).expect("reusing the pid");
        assert_eq!(second.pid(), pid);
        crate::wait_for(Duration::from_secs(5), "cat running", || {
            (comm(pid).as_deref() == Some("cat")).then_some(())
        });
    }

    /// `close_range(1000, 1000, 0)` in a Python child: "ret errno".
    fn close_range_in_child(deny: bool, nobody: bool) -> String {
        let mut cmd = Command::new("python3");
        if nobody {
            as_nobody(&mut cmd);
        }
        cmd.args([
            "-c",
            &format!(
                "import ctypes; libc = ctypes.CDLL(None, use_errno=True); \
                 r = libc.syscall({}, 1000, 1000, 0); print(r, ctypes.get_errno())",
                libc::SYS_close_range
            ),
        ]);
        if deny {
            deny_close_range(&mut cmd);
        }
        let out = cmd.output().expect("running python3");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn close_range_fails_with_enosys_under_the_filter_only() {
        assert_eq!(close_range_in_child(false, false), "0 0");
        assert_eq!(
            close_range_in_child(true, false),
            format!("-1 {}", libc::ENOSYS)
        );
    }

    #[test]
    fn as_nobody_runs_the_child_as_uid_65534_without_root_groups() {
        let id = |flag: &str| {
            let out = as_nobody(Command::new("id").arg(flag))
                .output()
                .expect("running id");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        assert_eq!(id("-u"), "65534");
        assert_eq!(id("-g"), nobody().1.to_string());
        assert!(
            id("-G").split_whitespace().all(|g| g != "0"),
            "root's group kept"
        );
    }

    /// The filter is installed after the child dropped root (no `CAP_SYS_ADMIN` left): it needs
    /// `no_new_privs`.
    #[test]
    fn as_nobody_and_deny_close_range_combine() {
        assert_eq!(
            close_range_in_child(true, true),
            format!("-1 {}", libc::ENOSYS)
        );
    }
}

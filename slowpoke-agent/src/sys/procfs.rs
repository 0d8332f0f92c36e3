//! Small, allocation-light readers of `/proc` and the cgroup filesystems: process lists, `comm`,
//! CPU time, process state, listening TCP sockets and their owners, cgroup members, usable CPUs.
//!
//! Every reader tolerates processes that disappear while being read (they are simply skipped):
//! the registry re-resolves periodically, so a racing exit is corrected on the next pass.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    io::{self, Read as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::sockdiag;

/// `statfs` magic of cgroup2 (`CGROUP2_SUPER_MAGIC`).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Every thread-group id (process) currently in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// True when `/proc/PID` exists (the process or a zombie of it).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `/proc/PID/comm` without the newline.
pub fn comm(pid: u32) -> Option<String> {
    let mut s = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if s.ends_with('\n') {
        s.pop();
    }
    Some(s)
}

/// The fields of `/proc/PID/stat` the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state: `R`, `S`, `D`, `T` (stopped), `t` (traced), `Z`, ...
    pub state: char,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    /// cutime + cstime in clock ticks: the children it has reaped (0 if the text stops short).
    pub reaped_cpu_ticks: u64,
    /// The kernel's per-process flags (`PF_*`, e.g. [`PF_KTHREAD`]).
    pub flags: u32,
}

/// `PF_KTHREAD` of `/proc/PID/stat`'s flags: a kernel thread (no user space to stop).
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Parses `/proc/PID/stat` (the `comm` field may contain spaces and parentheses: parse after the
/// last `)`).
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// See [`stat`].
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8) flags(9) minflt(10)
    // cminflt(11) majflt(12) cmajflt(13) utime(14) stime(15) cutime(16) cstime(17).
    let state = fields.next()?.chars().next()?;
    let mut fields = fields.skip(5);
    let flags: u32 = fields.next()?.parse().ok()?;
    let mut fields = fields.skip(4);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let reaped: u64 = fields.take(2).map(|f| f.parse::<u64>().unwrap_or(0)).sum();
    Some(ProcStat {
        state,
        cpu_ticks: utime + stime,
        reaped_cpu_ticks: reaped,
        flags,
    })
}

/// True for a kernel thread (`PF_KTHREAD`): it has no user space, no `/proc/PID/exe`, and
/// stopping one (kthreadd, a worker) can hang the node.
pub fn is_kernel_thread(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.flags & PF_KTHREAD != 0)
}

/// The fields of `/proc/PID/status` the agent's safety rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// The thread-group id: equal to the id asked for when it names a process, the process's
    /// id when it names one of its other threads.
    pub tgid: u32,
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
}

/// Reads `/proc/ID/status` of a process or thread (`/proc/TID` exists for every thread id too,
/// although `/proc` does not list it).
pub fn status(id: u32) -> Option<ProcStatus> {
    parse_status(&fs::read_to_string(format!("/proc/{id}/status")).ok()?)
}

/// See [`status`].
pub fn parse_status(text: &str) -> Option<ProcStatus> {
    let mut tgid = None;
    let mut uids = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Tgid:") {
            tgid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let u: Vec<u32> = v
                .split_ascii_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            uids = u.try_into().ok();
        }
    }
    Some(ProcStatus {
        tgid: tgid?,
        uids: uids?,
    })
}

/// The process's cgroup v2 path relative to the cgroup2 root (`/` for the root), from the
/// `0::` line of `/proc/PID/cgroup`; `None` when it has none (pure v1) or is gone.
pub fn cgroup2_path(pid: u32) -> Option<String> {
    proc_cgroups(pid).remove("")
}

/// A thread's scheduler statistics, from `/proc/PID/task/TID/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedstat {
    /// Time on a CPU, ns.
    pub cpu_ns: u64,
    /// Time runnable but waiting on a run queue (`run_delay`), ns.
    pub wait_ns: u64,
    /// Timeslices run on a CPU (`pcount`): one per time the thread was put on a CPU, so mostly
    /// one per wake-up.
    pub timeslices: u64,
}

/// Appends `(tid, schedstat)` for every thread of process `pid`. Threads that vanish while being
/// read are skipped; nothing is appended without scheduler statistics.
pub fn thread_schedstats(pid: u32, out: &mut Vec<(u32, Schedstat)>) {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some(s) = fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|t| parse_schedstat(&t))
        {
            out.push((tid, s));
        }
    }
}

/// Parses a `schedstat` line, `"<on-cpu ns> <run-queue wait ns> <timeslices>"`.
pub fn parse_schedstat(text: &str) -> Option<Schedstat> {
    let mut f = text.split_ascii_whitespace();
    Some(Schedstat {
        cpu_ns: f.next()?.parse().ok()?,
        wait_ns: f.next()?.parse().ok()?,
        timeslices: f.next()?.parse().ok()?,
    })
}

/// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`, 100 Hz almost everywhere).
pub fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// The node's CPU counters from /proc/stat: (CPUs, busy ns, total ns), summed over `only`'s
/// CPUs (a node's cpuset, `--node-cpus`) or, when None, over every online CPU.
pub fn node_cpu(only: Option<&[u32]>) -> Option<(u32, u64, u64)> {
    parse_proc_stat(&fs::read_to_string("/proc/stat").ok()?, ns_per_tick(), only)
}

/// CPU time of every process in a cgroup v2 directory, ns (`usage_usec` of its `cpu.stat`).
pub fn cgroup_cpu_ns(dir: &Path) -> Option<u64> {
    parse_cpu_stat_usage(&fs::read_to_string(dir.join("cpu.stat")).ok()?)
}

/// `usage_usec` of a `cpu.stat`, in ns.
pub fn parse_cpu_stat_usage(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us.saturating_mul(1000))
}

/// Sums /proc/stat's CPU lines: the aggregate `cpu` line and the count of `cpuN` lines when
/// `only` is None; else the `cpuN` lines whose N is in `only`, and their count (a listed CPU
/// that is offline has no line and is not counted). None when no line matches.
pub fn parse_proc_stat(
    text: &str,
    ns_per_tick: u64,
    only: Option<&[u32]>,
) -> Option<(u32, u64, u64)> {
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let busy_total = |fields: &str| {
        let ticks: Vec<u64> = fields
            .split_ascii_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let field = |i: usize| ticks.get(i).copied().unwrap_or(0);
        let total: u64 = (0..8).map(field).sum();
        (total - (field(3) + field(4)), total)
    };
    let per_cpu = text.lines().filter_map(|l| {
        let rest = l.strip_prefix("cpu")?;
        let (n, fields) = rest.split_once(' ')?;
        Some((n.parse::<u32>().ok()?, fields))
    });
    let (cpus, busy, total) = match only {
        None => {
            let (busy, total) = busy_total(text.lines().next()?.strip_prefix("cpu ")?);
            (per_cpu.count() as u32, busy, total)
        }
        Some(set) => {
            per_cpu
                .filter(|(n, _)| set.contains(n))
                .fold((0, 0, 0), |(c, b, t), (_, f)| {
                    let (busy, total) = busy_total(f);
                    (c + 1, b + busy, t + total)
                })
        }
    };
    (cpus > 0).then_some((cpus, busy * ns_per_tick, total * ns_per_tick))
}

/// Thread ids of a process.
pub fn threads(pid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The inode of every socket a process holds (`/proc/PID/fd/* -> socket:[INODE]`).
pub fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let link = fs::read_link(e.ok()?.path()).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    })
    .collect()
}

/// Listening TCP sockets (v4 and v6) of one network namespace: socket inode -> local port.
/// `proc_net` is `/proc/net` (the agent's namespace) or `/proc/PID/net` (that process's).
pub fn listening_sockets(proc_net: &Path) -> HashMap<u64, u16> {
    let mut out = HashMap::new();
    for file in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(proc_net.join(file)) {
            parse_listening(&text, &mut out);
        }
    }
    out
}

/// Parses one `/proc/net/tcp{,6}` table, keeping sockets in state `0A` (LISTEN).
pub fn parse_listening<S: std::hash::BuildHasher>(text: &str, out: &mut HashMap<u64, u16, S>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" {
            continue;
        }
        let Some((_, port_hex)) = f[1].rsplit_once(':') else {
            continue;
        };
        let (Ok(port), Ok(inode)) = (u16::from_str_radix(port_hex, 16), f[9].parse::<u64>()) else {
            continue;
        };
        if inode != 0 {
            out.insert(inode, port);
        }
    }
}

/// Processes owning a listening TCP socket on one of `ports` (in the agent's network namespace),
/// and the ports each one listens on.
pub fn pids_listening_on(ports: &[u16]) -> BTreeSet<u32> {
    let listening = own_listening_sockets();
    let wanted: HashMap<u64, u16> = listening
        .into_iter()
        .filter(|(_, p)| ports.contains(p))
        .collect();
    if wanted.is_empty() {
        return BTreeSet::new();
    }
    all_pids()
        .into_iter()
        .filter(|&pid| socket_inodes(pid).iter().any(|i| wanted.contains_key(i)))
        .collect()
}

/// Listening sockets of the agent's own network namespace: from `sock_diag` (cheap however
/// many `TIME_WAIT` sockets the node holds), else from `/proc/net/tcp{,6}`.
pub fn own_listening_sockets() -> HashMap<u64, u16> {
    sockdiag::listening_sockets().unwrap_or_else(|e| {
        tracing::debug!("sock_diag unavailable ({e}); reading /proc/net/tcp");
        listening_sockets(Path::new("/proc/net"))
    })
}

/// The TCP ports the given processes listen on, read from each process's own network namespace.
pub fn listen_ports_of(pids: &[u32]) -> Vec<u16> {
    let ports: BTreeSet<u16> = listening_ports_by_pid(pids)
        .into_iter()
        .map(|(_, port)| port)
        .collect();
    ports.into_iter().collect()
}

/// Every (process, port) where one of `pids` owns a listening TCP socket, read from the
/// process's own network namespace (a pod's ports are in the pod's, not the agent's).
pub fn listening_ports_by_pid(pids: &[u32]) -> BTreeSet<(u32, u16)> {
    // One table per network namespace, not per process; the agent's own one from sock_diag.
    let own_ns = fs::read_link("/proc/self/ns/net").ok();
    let mut tables: HashMap<PathBuf, HashMap<u64, u16>> = HashMap::new();
    let mut out = BTreeSet::new();
    for &pid in pids {
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let own = own_ns.as_ref() == Some(&ns);
        let table = tables.entry(ns).or_insert_with(|| {
            if own {
                own_listening_sockets()
            } else {
                listening_sockets(Path::new(&format!("/proc/{pid}/net")))
            }
        });
        for inode in socket_inodes(pid) {
            if let Some(&port) = table.get(&inode) {
                out.insert((pid, port));
            }
        }
    }
    out
}

/// True when `path` is on a cgroup2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; `c` is a valid C string.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &raw mut st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC
    }
}

/// A cgroup directory and its descendants.
pub fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// Every process of a cgroup (v1 or v2) and its descendants.
pub fn cgroup_pids(dir: &Path) -> io::Result<BTreeSet<u32>> {
    // The top directory must be a cgroup: its cgroup.procs must be readable.
    fs::metadata(dir.join("cgroup.procs"))?;
    let mut pids = BTreeSet::new();
    for d in cgroup_tree(dir) {
        pids.extend(cgroup_procs(&d));
    }
    Ok(pids)
}

/// The processes directly in one cgroup directory (its `cgroup.procs`; empty when unreadable).
pub fn cgroup_procs(dir: &Path) -> BTreeSet<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| {
            text.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup v2 id of a directory on the cgroup2 filesystem (its inode number, what
/// `bpf_get_current_cgroup_id` returns for its processes).
pub fn cgroup_id(dir: &Path) -> Option<u64> {
    fs::metadata(dir).ok().map(|m| m.ino())
}

/// CPUs a thread may run on (`sched_getaffinity`; already restricted by its cpuset).
pub fn affinity(tid: u32) -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(
            tid as libc::pid_t,
            size_of::<libc::cpu_set_t>(),
            &raw mut set,
        ) != 0
        {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

/// `/proc/PID/cgroup`: controller list ("" for v2) -> path inside the hierarchy.
pub fn proc_cgroups(pid: u32) -> BTreeMap<String, String> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some((ctrls.to_string(), path.to_string()))
        })
        .collect()
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on pure v2, `/sys/fs/cgroup/unified`
/// on hybrid systems).
pub fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// The CPU bandwidth limit (quota / period, in CPUs) that applies to a process: the smallest
/// over its cgroup and every ancestor, v2 `cpu.max` and v1 `cpu.cfs_quota_us`. `None` when
/// unlimited.
pub fn cpu_quota(pid: u32) -> Option<f64> {
    let cgroups = proc_cgroups(pid);
    let mut best: Option<f64> = None;
    let mut take = |q: Option<f64>| {
        if let Some(q) = q {
            best = Some(best.map_or(q, |b: f64| b.min(q)));
        }
    };
    if let (Some(root), Some(rel)) = (cgroup2_root(), cgroups.get("")) {
        for dir in ancestors(&root, rel) {
            take(
                fs::read_to_string(dir.join("cpu.max"))
                    .ok()
                    .and_then(|t| parse_cpu_max(&t)),
            );
        }
    }
    if let Some((_, rel)) = cgroups
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == "cpu"))
    {
        for base in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"] {
            let base = Path::new(base);
            if !base.join("cpu.cfs_quota_us").exists() {
                continue;
            }
            for dir in ancestors(base, rel) {
                let quota = read_i64(&dir.join("cpu.cfs_quota_us"));
                let period = read_i64(&dir.join("cpu.cfs_period_us"));
                if let (Some(q), Some(p)) = (quota, period)
                    && q > 0
                    && p > 0
                {
                    take(Some(q as f64 / p as f64));
                }
            }
            break;
        }
    }
    best
}

/// Parses cgroup v2 `cpu.max` (`"max 100000"` or `"50000 100000"`) into CPUs.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_ascii_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

fn read_i64(path: &Path) -> Option<i64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `root/rel` and every ancestor up to `root`.
fn ancestors(root: &Path, rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut p = root.join(rel.trim_start_matches('/'));
    loop {
        out.push(p.clone());
        if p == root || !p.pop() || !p.starts_with(root) {
            break;
        }
    }
    out
}

/// Reads a small file fully (used for the state file).
pub fn read_small(path: &Path) -> io::Result<String> {
    let mut s = String::new();
    fs::File::open(path)?.read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_stat_usage_in_ns() {
        let text = "usage_usec 69210739\nuser_usec 17960009\nsystem_usec 51250729\n";
        assert_eq!(parse_cpu_stat_usage(text), Some(69_210_739_000));
        assert_eq!(parse_cpu_stat_usage("user_usec 1\n"), None);
        assert_eq!(parse_cpu_stat_usage("usage_usec x\n"), None);
    }

    #[test]
    fn node_cpu_sums_busy_and_counts_cpus() {
        let text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n\
                    cpu1 50 3 25 400 10 2 1 0 0 0\nintr 1 2 3\n";
        // busy = user+nice+system+irq+softirq+steal = 100+5+50+3+2+0; total adds idle+iowait.
        assert_eq!(parse_proc_stat(text, 10, None), Some((2, 1600, 9800)));
    }

    #[test]
    fn node_cpu_of_a_cpuset_counts_only_its_lines() {
        let text = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n\
                    cpu1 50 3 25 300 10 2 1 0 0 0\ncpu2 1 1 1 1 1 1 1 1 0 0\nintr 1 2 3\n";
        // cpu1: busy 50+3+25+2+1+0 = 81, total adds idle 300 + iowait 10 = 391.
        assert_eq!(parse_proc_stat(text, 10, Some(&[1])), Some((1, 810, 3910)));
        // cpu0 + cpu2: busy 79 + 6, total 489 + 8; an offline CPU (7) has no line.
        assert_eq!(
            parse_proc_stat(text, 10, Some(&[0, 2, 7])),
            Some((2, 850, 4970))
        );
        assert_eq!(parse_proc_stat(text, 10, Some(&[9])), None);
    }

    use super::*;

    #[test]
    fn stat_with_parens_in_comm() {
        let text = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 1 1 1";
        let s = parse_stat(text).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.cpu_ticks, 22);
        assert_eq!(s.flags, 4_194_560);
        assert_eq!(s.flags & PF_KTHREAD, 0);
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 1 0 0 20 0 1 0 12 0 0";
        assert_ne!(parse_stat(kthreadd).expect("parses").flags & PF_KTHREAD, 0);
    }

    #[test]
    fn status_of_a_thread_names_its_process() {
        let text = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1234\n\
                    Ngid:\t0\nPid:\t1240\nPPid:\t1\nUid:\t1000\t1000\t0\t1000\n";
        let s = parse_status(text).expect("parses");
        assert_eq!(s.tgid, 1234);
        assert_eq!(s.uids, [1000, 1000, 0, 1000]);
        assert_eq!(parse_status("Tgid:\t1\n"), None);
        let me = std::process::id();
        assert_eq!(status(me).expect("own status").tgid, me);
        assert!(!is_kernel_thread(me));
    }

    #[test]
    fn listening_table() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 635 1 0 100 0 0 10 0\n\
   1: 020200C0:8632 507100CB:01BB 01 00000000:00000000 00:00000000 00000000     0        0 29872 1 0 20 4 3 38 -1\n";
        let mut out = HashMap::new();
        parse_listening(text, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[&635], 2024);
    }

    #[test]
    fn schedstat_line() {
        assert_eq!(
            parse_schedstat("2345 678 9\n"),
            Some(Schedstat {
                cpu_ns: 2345,
                wait_ns: 678,
                timeslices: 9
            })
        );
        assert_eq!(parse_schedstat("2345 678\n"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
        let mut threads = Vec::new();
        thread_schedstats(std::process::id(), &mut threads);
        assert!(
            !threads.is_empty(),
            "this test's own threads have schedstat"
        );
        assert!(
            threads.iter().any(|(_, s)| s.timeslices > 0),
            "this test's own thread ran at least once"
        );
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
    }

    #[test]
    fn ancestor_chain() {
        let a = ancestors(Path::new("/sys/fs/cgroup/cpu"), "/a/b");
        assert_eq!(
            a,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/a/b"),
                PathBuf::from("/sys/fs/cgroup/cpu/a"),
                PathBuf::from("/sys/fs/cgroup/cpu"),
            ]
        );
        assert_eq!(ancestors(Path::new("/r"), "/"), vec![PathBuf::from("/r")]);
    }

    /// `sock_diag` (in `sockdiag.rs`) against the socket inodes of this process read here.
    #[test]
    fn sock_diag_sees_a_listener_of_this_process_and_not_its_connections() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").ok();
        let table = sockdiag::listening_sockets().unwrap();
        // Every entry is a LISTEN socket: the connected pair's inodes are not in it.
        let mine: Vec<u16> = socket_inodes(std::process::id())
            .iter()
            .filter_map(|i| table.get(i).copied())
            .collect();
        let mut expected = vec![port];
        if let Some(l) = &v6 {
            expected.push(l.local_addr().unwrap().port());
        }
        let mut got = mine.clone();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected, "this process's listening ports");
    }
}

//! Helpers for the emulator's integration tests: real processes, real sockets, ephemeral ports.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use slowpoke_emu::{RunningApp, Set, StartOptions, Topology};

/// The binary under test: `$SLOWPOKE_EMU_BIN` if set (e.g. a release build for the throughput test), else the
/// one cargo built for these tests.
pub fn bin() -> PathBuf {
    std::env::var_os(slowpoke_emu::client::BIN_ENV).map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_slowpoke-emu")),
        PathBuf::from,
    )
}

pub fn topologies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies")
}

pub fn start(topo: impl Into<slowpoke_emu::TopologySource>, sets: &[Set]) -> RunningApp {
    // The services' warnings reach the test's output through the library's `tracing` (shown when it fails).
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut o = StartOptions::new(topo);
    o.sets = sets.to_vec();
    o.binary = Some(bin());
    RunningApp::start_with(&o).expect("starting the app")
}

/// A topology from JSON text (panics with the parse error).
pub fn topo(json: &str) -> Topology {
    let t = slowpoke_emu::topology::parse(json, "inline").expect("parse");
    t.validate().expect("valid");
    t
}

/// A minimal blocking HTTP/1.1 keep-alive client on one connection.
pub struct Client {
    host: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// `url` like `http://127.0.0.1:PORT/whatever` (the path is ignored here).
    pub fn connect(url: &str) -> Client {
        let host = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host")
            .to_owned();
        let s = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client {
            host,
            reader: BufReader::new(s.try_clone().expect("clone")),
            writer: s,
        }
    }

    /// GET `path`; returns the status code (body read and dropped).
    pub fn get(&mut self, path: &str) -> u16 {
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.host
        )
        .expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).expect("body");
        status
    }
}

/// Sends `n` GETs to `url` over `conns` keep-alive connections in parallel; panics on a non-200 answer.
pub fn drive(url: &str, n: usize, conns: usize) {
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |x| x.1)
    );
    std::thread::scope(|s| {
        for c in 0..conns {
            let share = n / conns + usize::from(c < n % conns);
            let path = path.clone();
            s.spawn(move || {
                let mut cl = Client::connect(url);
                for _ in 0..share {
                    assert_eq!(cl.get(&path), 200, "GET {url}");
                }
            });
        }
    });
}

/// Closed-loop throughput (requests/s) of `url` with `conns` keep-alive connections over `dur`.
pub fn throughput(url: &str, conns: usize, dur: Duration) -> f64 {
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |x| x.1)
    );
    let start = Instant::now();
    let deadline = start + dur;
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let path = path.clone();
                s.spawn(move || {
                    let mut cl = Client::connect(url);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        assert_eq!(cl.get(&path), 200);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client")).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// CPU time (user + system) of a process from /proc/<pid>/stat, in ns (clock-tick resolution).
pub fn proc_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised comm: state is field 3; utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000_000 / hz
}

/// CPU time of a process in ns at full precision: the sum of `sum_exec_runtime` (first field of
/// /proc/<pid>/task/<tid>/schedstat) over its threads. /proc/<pid>/stat counts in 10 ms clock ticks, too coarse
/// for blocks of a few hundred visits; the tests cross-check both.
pub fn proc_cpu_ns_precise(pid: u32) -> u64 {
    schedstat_sum(pid, 1)
}

/// The first `fields` fields of every thread's /proc/<pid>/task/<tid>/schedstat, summed (a
/// thread that exits while they are listed is skipped).
fn schedstat_sum(pid: u32, fields: usize) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .map(|s| {
            s.split_whitespace()
                .take(fields)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Whether a pid is gone (or a zombie waiting to be reaped: it no longer runs).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|c| c == 'Z' || c == 'X'),
    }
}

/// Polls until every pid is dead; panics naming the survivors after `timeout`.
pub fn wait_dead(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| !is_dead(*p)).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes still alive after {timeout:?}: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Time the threads of a process were runnable, in ns: running (`sum_exec_runtime`, first field of
/// /proc/<pid>/task/<tid>/schedstat) plus waiting on a run queue for a CPU (`run_delay`, second field).
/// Its rate over a window is the process's CPU *demand* in threads, which, unlike the CPU it got, does not
/// depend on how busy other processes keep the machine.
pub fn proc_runnable_ns(pid: u32) -> u64 {
    schedstat_sum(pid, 2)
}

/// Busy time of the whole machine in ns, summed over CPUs (/proc/stat `cpu` line minus idle and iowait).
pub fn machine_busy_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let line = stat.lines().next().expect("cpu line");
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f[3] + f.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (total - idle) * 1_000_000_000 / hz
}

/// Keeps `conns` closed-loop keep-alive connections busy on `url` until `stop` is set; every answer must be
/// 200. Returns the requests completed.
pub fn load_until(url: &str, conns: usize, stop: &std::sync::atomic::AtomicBool) -> usize {
    use std::sync::atomic::Ordering;
    let path = format!(
        "/{}",
        url.trim_start_matches("http://")
            .split_once('/')
            .map_or("", |x| x.1)
    );
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                let path = path.clone();
                s.spawn(move || {
                    let mut cl = Client::connect(url);
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        assert_eq!(cl.get(&path), 200, "GET {url}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client")).sum()
    })
}

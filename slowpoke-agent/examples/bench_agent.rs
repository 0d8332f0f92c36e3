//! Cost of the kernel programs and precision of the pauses, printed as one JSON object (run as
//! root, release build; `cargo xtask bench agent [-- ARGS]` runs the same):
//!
//! ```text
//! cargo run --release -p slowpoke-agent --example bench_agent [-- --rounds 7 --seconds 2]
//!     [--pauses 200] [--time-wait 10000] [--sync-visits 200]
//!     [--only hook,tracked,echo,nginx,pause,resolve,sync]
//! ```
//!
//! 1. `hook`: time per socket call of a process no service tracks, programs attached vs.
//!    detached (a tight 1-byte send/recv loop on a loopback TCP pair and on a unix socketpair),
//!    interleaved (the order alternates each round), repeated; mean and 95 % CI of the
//!    per-round difference (ns per call) and ratio.
//! 2. `throughput_echo`, `throughput_nginx`: a loopback request/response server (a child
//!    process answering 64-byte messages; Debian's nginx serving a small file), several
//!    keep-alive connections, untracked vs. tracked at zero delay (and with the programs
//!    detached), interleaved; mean and 95 % CI of the per-round loss in requests/s and in CPU
//!    time per request (server + client threads).
//! 3. `pause_precision`: pauses as the paused process experiences them. A probe child (this
//!    binary, `--probe`) spins on `CLOCK_MONOTONIC` and records every gap longer than 20 µs
//!    (the moments it did not run); a library `Agent` registers it as a service and pauses it
//!    with `pause_now` (`--pauses` pauses of 1 ms and of 10 ms per round, in random order, 1–5 ms
//!    apart). Each pause is matched with the probe's gap that overlaps it; per requested size:
//!    mean, median, p99 and max of |gap − requested| and of gap − achieved (the agent's
//!    `pause_ns` delta), pooled and as per-round statistics with 95 % CIs over the rounds.
//! 4. `resolve`: what the resolver pays to list the node's listening sockets, with
//!    `--time-wait` `TIME_WAIT` sockets on the node (an app that opens a connection per request
//!    leaves tens of thousands): `sock_diag` (what the agent uses) vs. reading
//!    `/proc/net/tcp{,6}` (what it used to), interleaved, per round `--lists` calls of each;
//!    mean and 95 % CI of the time per call and of the per-round ratio.
//! 5. `sync`: how close synchronized pauses are. Two echo server processes A and B are services
//!    of a library `Agent`; a pause plan gives A 2 ms per visit (a quantum pause at every
//!    visit) and B 0.4 ms (below the 1 ms quantum); one client visits A then B, `--sync-visits`
//!    times per run. Each round runs the plan synchronized and not (the order alternates), and
//!    from the agent's pause records takes: the share of A's quantum pauses at which B paid
//!    (a synchronized pause), the delay of each such B pause after A's start (median, p90,
//!    max), the share that started while A was still stopped, and the share of B's stopped
//!    time that overlapped A's; mean and 95 % CI over the rounds, and of the per-round
//!    difference of the overlap shares (synchronized − not, percentage points; without
//!    synchronization B pays once, at the end, so a ratio would divide by ≈ 0).

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use slowpoke_agent::{Agent, AgentConfig, api::ServiceSpec, sys::clock::monotonic_ns};

use kernel_support::KeepAlive;
use serde_json::json;
use slowpoke_agent::kernel::{DEFAULT_QUANTUM_NS, Kernel};

#[path = "../tests/kernel_support/mod.rs"]
mod kernel_support;

const MESSAGE: usize = 64;

/// Cost of the kernel programs and precision of the pauses, as one JSON object.
#[derive(clap::Parser)]
struct Options {
    /// Interleaved rounds of every measurement.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Socket calls per hook measurement.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Keep-alive connections of the throughput measurements.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Pauses of each size per round (pause precision).
    #[arg(long, default_value_t = 200)]
    pauses: usize,
    /// `TIME_WAIT` sockets made for the resolve measurement.
    #[arg(long, default_value_t = 10_000)]
    time_wait: usize,
    /// Listings of each kind per round (resolve measurement).
    #[arg(long, default_value_t = 20)]
    lists: usize,
    /// Visits of each service per run (sync measurement).
    #[arg(long, default_value_t = 200)]
    sync_visits: usize,
    /// Parts to run (all by default).
    #[arg(long, value_delimiter = ',', value_parser = ["hook", "tracked", "echo", "nginx", "pause", "resolve", "sync"])]
    only: Vec<String>,
    /// Internal: be the echo server child on this port.
    #[arg(long, hide = true, value_name = "PORT")]
    server: Option<String>,
    /// Internal: be the pause-precision probe child (minimum gap, ns).
    #[arg(long, hide = true, value_name = "NS")]
    probe: Option<u64>,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// Mean and half-width of its 95 % interval (Student's t; null below two samples).
fn summary(xs: &[f64]) -> serde_json::Value {
    let s = slowpoke_tests::bench::summarize(xs);
    let ci95 = s.half_width();
    json!({"mean": s.mean, "ci95": ci95.is_finite().then_some(ci95), "samples": xs})
}

fn load_kernel() -> Kernel {
    Kernel::load(DEFAULT_QUANTUM_NS)
        .unwrap_or_else(|e| panic!("loading the kernel programs (run as root): {e}"))
}

/// CPU time of the calling thread (ns): what other tenants of a shared machine do not inflate
/// as much as wall time.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU ns per socket call of a 1-byte send/recv loop run by one thread (the loopback delivery
/// runs in the sender's context, so every kernel cycle lands on this thread).
fn ping_pong<S: Read + Write>(a: &mut S, b: &mut S, calls: usize) -> f64 {
    let mut byte = [0u8; 1];
    let start = thread_cpu_ns();
    for _ in 0..calls / 2 {
        a.write_all(&byte).unwrap();
        b.read_exact(&mut byte).unwrap();
    }
    (thread_cpu_ns() - start) as f64 / (calls / 2 * 2) as f64
}

/// CPU ns per socket call of a 1-byte request/response loop run by one thread: the client
/// sends, the server receives and answers, the client receives (4 calls per exchange).
fn request_response(client: &mut TcpStream, server: &mut TcpStream, calls: usize) -> f64 {
    let mut byte = [0u8; 1];
    let start = thread_cpu_ns();
    for _ in 0..calls / 4 {
        client.write_all(&byte).unwrap();
        server.read_exact(&mut byte).unwrap();
        server.write_all(&byte).unwrap();
        client.read_exact(&mut byte).unwrap();
    }
    (thread_cpu_ns() - start) as f64 / (calls / 4 * 4) as f64
}

/// CPU time (ns) of every thread of a process, from /proc/PID/task/*/schedstat.
fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

fn hook_overhead(o: &Options) -> serde_json::Value {
    let (mut ta, mut tb) = tcp_pair();
    let (mut ua, mut ub) = UnixStream::pair().unwrap();
    // Warm-up.
    ping_pong(&mut ta, &mut tb, o.calls / 4);
    ping_pong(&mut ua, &mut ub, o.calls / 4);
    let mut result = serde_json::Map::new();
    let mut load_ms = Vec::new();
    for (kind, run) in [
        ("tcp_loopback", &mut |c| ping_pong(&mut ta, &mut tb, c)),
        ("unix_socketpair", &mut |c| ping_pong(&mut ua, &mut ub, c)),
    ] as [(&str, &mut dyn FnMut(usize) -> f64); 2]
    {
        let (mut detached, mut attached) = (Vec::new(), Vec::new());
        for round in 0..o.rounds {
            // Alternate the order (ABBA) so that drift cancels out.
            for attached_now in [round % 2 == 1, round % 2 == 0] {
                if attached_now {
                    let start = Instant::now();
                    let kernel = load_kernel();
                    load_ms.push(start.elapsed().as_secs_f64() * 1e3);
                    attached.push(run(o.calls));
                    drop(kernel);
                } else {
                    detached.push(run(o.calls));
                }
            }
        }
        let diff: Vec<f64> = attached.iter().zip(&detached).map(|(a, d)| a - d).collect();
        let ratio: Vec<f64> = attached.iter().zip(&detached).map(|(a, d)| a / d).collect();
        result.insert(
            kind.into(),
            json!({
                "detached_ns_per_call": summary(&detached),
                "attached_ns_per_call": summary(&attached),
                "overhead_ns_per_call": summary(&diff),
                "ratio": summary(&ratio),
            }),
        );
    }
    result.insert("load_ms".into(), summary(&load_ms));
    serde_json::Value::Object(result)
}

/// Cost of a tracked socket call: a 1-byte request/response loop on a TCP pair whose accepting
/// side is a server socket of a service made of this very process (each exchange is one visit;
/// the connecting side is client-side: one call out and an endpoint record per exchange), vs.
/// the same with the process untracked (programs attached in both arms).
fn tracked_call_cost(o: &Options) -> serde_json::Value {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    let mut kernel = load_kernel();
    kernel.set_listen_ports(0, &[port]).unwrap();
    request_response(&mut client, &mut server, o.calls / 4);
    let (mut untracked, mut tracked) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for tracked_now in [round % 2 == 1, round % 2 == 0] {
            if tracked_now {
                kernel.set_members(0, &[std::process::id()]).unwrap();
                tracked.push(request_response(&mut client, &mut server, o.calls));
                kernel.set_members(0, &[]).unwrap();
            } else {
                untracked.push(request_response(&mut client, &mut server, o.calls));
            }
        }
    }
    let c = kernel.counters(0).unwrap();
    let diff: Vec<f64> = tracked.iter().zip(&untracked).map(|(t, u)| t - u).collect();
    json!({
        "untracked_ns_per_call": summary(&untracked),
        "tracked_ns_per_call": summary(&tracked),
        "tracked_overhead_ns_per_call": summary(&diff),
        "visits": c.visits,
        "calls_out": c.calls_out,
    })
}

/// The request/response server (child process mode): 64-byte request -> 64-byte response.
fn serve(port: &str) {
    let listener = TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    println!("ready");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            stream.set_nodelay(true).unwrap();
            let mut buf = [0u8; MESSAGE];
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
}

struct ServerProcess(Child, u16);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server() -> ServerProcess {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--server", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the server process");
    let mut ready = [0u8; 6];
    child
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .expect("server ready line");
    ServerProcess(child, port)
}

struct Run {
    rps: f64,
    requests: u64,
    /// Server + client CPU time per request (ns).
    cpu_ns_per_request: f64,
}

/// One client connection: 64-byte echo, or HTTP/1.1 keep-alive `GET /hello.txt`.
enum Conn {
    Echo(TcpStream),
    Http(Box<KeepAlive>),
}

impl Conn {
    fn open(port: u16, http: bool) -> Conn {
        if http {
            return Conn::Http(Box::new(KeepAlive::connect(port)));
        }
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Conn::Echo(s)
    }

    fn request(&mut self, buf: &mut [u8; MESSAGE]) {
        match self {
            Conn::Echo(s) => {
                s.write_all(buf).unwrap();
                s.read_exact(buf).unwrap();
            }
            Conn::Http(client) => assert_eq!(client.get("/hello.txt"), 200),
        }
    }
}

/// `connections` closed-loop clients for `seconds` against the server process `pid`.
fn load(pid: u32, port: u16, http: bool, connections: usize, seconds: f64) -> Run {
    let client_cpu = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut streams: Vec<Conn> = (0..connections).map(|_| Conn::open(port, http)).collect();
    let server_cpu = process_cpu_ns(pid);
    let start = Instant::now();
    let threads: Vec<_> = streams
        .drain(..)
        .map(|mut s| {
            let (stop, done, client_cpu) = (stop.clone(), done.clone(), client_cpu.clone());
            std::thread::spawn(move || {
                let cpu = thread_cpu_ns();
                let mut buf = [7u8; MESSAGE];
                while !stop.load(Ordering::Relaxed) {
                    s.request(&mut buf);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                client_cpu.fetch_add(thread_cpu_ns() - cpu, Ordering::Relaxed);
                s // closed only after the server's CPU time was read
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let open: Vec<Conn> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let elapsed = start.elapsed().as_secs_f64();
    // Before the connections close, while the server's connection threads still exist.
    let server_cpu = process_cpu_ns(pid) - server_cpu;
    drop(open);
    let requests = done.load(Ordering::Relaxed);
    Run {
        rps: requests as f64 / elapsed,
        requests,
        cpu_ns_per_request: (server_cpu + client_cpu.load(Ordering::Relaxed)) as f64
            / requests as f64,
    }
}

fn throughput(o: &Options, http: bool) -> serde_json::Value {
    let (echo, nginx);
    let (pid, port) = if http {
        nginx = kernel_support::nginx_server();
        (nginx.pid(), nginx.port)
    } else {
        echo = start_server();
        (echo.0.id(), echo.1)
    };
    load(pid, port, http, o.connections, 0.5); // warm-up
    let mut runs: [Vec<Run>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut visits_match = true;
    for round in 0..o.rounds {
        // Arms in a rotating order: detached, untracked, tracked at zero delay.
        for arm in 0..3 {
            let arm = (arm + round) % 3;
            let run = match arm {
                0 => load(pid, port, http, o.connections, o.seconds),
                1 => {
                    let _kernel = load_kernel();
                    load(pid, port, http, o.connections, o.seconds)
                }
                _ => {
                    let mut kernel = load_kernel();
                    kernel.set_members(0, &[pid]).unwrap();
                    kernel.set_listen_ports(0, &[port]).unwrap();
                    let run = load(pid, port, http, o.connections, o.seconds);
                    visits_match &= kernel.counters(0).unwrap().visits == run.requests;
                    run
                }
            };
            runs[arm].push(run);
        }
    }
    let [detached, untracked, tracked] = &runs;
    let loss = |a: &[Run], b: &[Run], f: fn(&Run, &Run) -> f64| -> serde_json::Value {
        summary(&a.iter().zip(b).map(|(x, y)| f(x, y)).collect::<Vec<_>>())
    };
    let rps_loss = |t: &Run, u: &Run| 100.0 * (1.0 - t.rps / u.rps);
    // Under saturation throughput is inversely proportional to the CPU time per request.
    let cpu_loss = |t: &Run, u: &Run| 100.0 * (1.0 - u.cpu_ns_per_request / t.cpu_ns_per_request);
    let rps = |r: &[Run]| summary(&r.iter().map(|x| x.rps).collect::<Vec<_>>());
    let cpu = |r: &[Run]| summary(&r.iter().map(|x| x.cpu_ns_per_request).collect::<Vec<_>>());
    json!({
        "server": if http { "nginx (1 process), GET /hello.txt keep-alive" } else { "64-byte echo (child process, thread per connection)" },
        "connections": o.connections,
        "seconds_per_run": o.seconds,
        "rps": {"detached": rps(detached), "untracked": rps(untracked), "tracked_zero_delay": rps(tracked)},
        "cpu_ns_per_request": {"detached": cpu(detached), "untracked": cpu(untracked), "tracked_zero_delay": cpu(tracked)},
        "loss_pct_tracked_vs_untracked": {
            "rps": loss(tracked, untracked, rps_loss),
            "cpu": loss(tracked, untracked, cpu_loss),
        },
        "loss_pct_untracked_vs_detached": {
            "rps": loss(untracked, detached, rps_loss),
            "cpu": loss(untracked, detached, cpu_loss),
        },
        "visits_equal_requests": visits_match,
    })
}

/// Most gaps the probe keeps (pauses plus scheduling noise).
const PROBE_CAPACITY: usize = 1 << 18;

/// The probe (child process mode): spins on `CLOCK_MONOTONIC` and records every gap longer than
/// `min_gap_ns` (the moments it was not running) until its stdin reaches EOF, then prints one
/// `start_ns gap_ns` line per gap (and `overflow N` if it ran out of room).
fn probe(min_gap_ns: u64) {
    // Touched up front: no page fault while spinning.
    let mut gaps = vec![(u64::MAX, u64::MAX); PROBE_CAPACITY];
    let mut len = 0;
    let mut overflow = 0u64;
    {
        let mut out = std::io::stdout().lock();
        out.write_all(b"ready\n").unwrap();
        out.flush().unwrap();
    }
    let mut stdin = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut last = monotonic_ns();
    let mut next_check = last;
    loop {
        let now = monotonic_ns();
        if now - last > min_gap_ns {
            if len < PROBE_CAPACITY {
                gaps[len] = (last, now - last);
                len += 1;
            } else {
                overflow += 1;
            }
        }
        last = now;
        if now >= next_check {
            next_check = now + 5_000_000;
            // SAFETY: one valid pollfd, no wait (about 1 µs, well below the gap threshold).
            if unsafe { libc::poll(&raw mut stdin, 1, 0) } != 0 {
                break;
            }
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (start, gap) in &gaps[..len] {
        writeln!(out, "{start} {gap}").unwrap();
    }
    writeln!(out, "overflow {overflow}").unwrap();
}

struct ProbeProcess(Child);

impl Drop for ProbeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_probe(min_gap_ns: u64) -> ProbeProcess {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--probe", &min_gap_ns.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the probe process");
    let mut ready = [0u8; 6];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .expect("probe ready line");
    ProbeProcess(child)
}

/// Ends the probe (EOF on its stdin) and reads its gaps, sorted by start: `(start_ns, gap_ns)`
/// and the number it could not keep.
fn finish_probe(mut probe: ProbeProcess) -> (Vec<(u64, u64)>, u64) {
    drop(probe.0.stdin.take());
    let mut text = String::new();
    probe
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .expect("probe output");
    let mut gaps = Vec::new();
    let mut overflow = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("overflow"), Some(n)) => overflow = n.parse().unwrap(),
            (Some(a), Some(b)) => gaps.push((a.parse().unwrap(), b.parse().unwrap())),
            _ => {}
        }
    }
    gaps.sort_unstable();
    (gaps, overflow)
}

/// xorshift64*: the order of the pauses and the gaps between them.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mean, median, p99 (nearest rank) and max.
fn stats4(xs: &[f64]) -> [f64; 4] {
    if xs.is_empty() {
        return [f64::NAN; 4];
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    };
    let p99 = v[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1];
    [v.iter().sum::<f64>() / n as f64, median, p99, v[n - 1]]
}

/// Pooled statistics over every pause, and the per-round statistics with their 95 % CIs.
fn distribution(per_round: &[Vec<f64>]) -> serde_json::Value {
    let pooled: Vec<f64> = per_round.iter().flatten().copied().collect();
    let [mean, median, p99, max] = stats4(&pooled);
    let rounds: Vec<[f64; 4]> = per_round.iter().map(|r| stats4(r)).collect();
    let column = |i: usize| summary(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>());
    json!({
        "mean": mean, "median": median, "p99": p99, "max": max,
        "per_round": {"mean": column(0), "median": column(1), "p99": column(2), "max": column(3)},
    })
}

/// One pause as the agent and the probe saw it.
struct PauseSample {
    requested_ns: u64,
    start_ns: u64,
    end_ns: u64,
    /// Delta of the service's `pause_ns` in the agent's stats.
    achieved_ns: u64,
    outcome_achieved_ns: u64,
    round: usize,
}

/// A library agent of the bench's own (temporary state dir, its runtime).
struct BenchAgent {
    agent: Agent,
    rt: tokio::runtime::Runtime,
    state_dir: std::path::PathBuf,
}

impl BenchAgent {
    /// The default config with a fresh state dir named after `part`, and `max_stopped_share`
    /// when given.
    fn start(part: &str, max_stopped_share: Option<f64>) -> BenchAgent {
        let state_dir =
            std::env::temp_dir().join(format!("slowpoke-bench-{part}-{}", std::process::id()));
        std::fs::create_dir_all(&state_dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let agent = rt
            .block_on(Agent::start(AgentConfig {
                state_dir: state_dir.clone(),
                max_stopped_share: max_stopped_share
                    .unwrap_or(AgentConfig::default().max_stopped_share),
                ..AgentConfig::default()
            }))
            .unwrap_or_else(|e| panic!("starting the agent (run as root): {e}"));
        BenchAgent {
            agent,
            rt,
            state_dir,
        }
    }

    fn shutdown(self) {
        self.rt.block_on(self.agent.shutdown());
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn pause_ns(agent: &Agent, name: &str) -> u64 {
    agent.stats().services.get(name).map_or(0, |s| s.pause_ns)
}

#[expect(
    clippy::too_many_lines,
    reason = "one benchmark part measured top to bottom: set-up, interleaved rounds, figures"
)]
fn pause_precision(o: &Options) -> serde_json::Value {
    const MIN_GAP_NS: u64 = 20_000;
    const SIZES_NS: [u64; 2] = [1_000_000, 10_000_000];
    const NAME: &str = "probe";
    let loadavg_start = loadavg();
    let bench = BenchAgent::start("agent", None);
    let agent = &bench.agent;
    let probe = start_probe(MIN_GAP_NS);
    let pid = probe.0.id();
    let info = agent
        .put_service(
            NAME,
            ServiceSpec {
                pids: Some(vec![pid]),
                ..ServiceSpec::default()
            },
        )
        .unwrap();
    assert_eq!(
        info.pids,
        vec![pid],
        "the probe service resolves to the probe"
    );
    let mut rng = Rng((monotonic_ns() ^ (u64::from(pid) << 32)) | 1);
    let mut samples = Vec::new();
    std::thread::sleep(Duration::from_millis(20));
    for round in 0..o.rounds {
        let mut order: Vec<u64> = SIZES_NS
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, o.pauses))
            .collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for requested_ns in order {
            let before = pause_ns(agent, NAME);
            let out = agent.pause_now(NAME, requested_ns).unwrap();
            let achieved_ns = pause_ns(agent, NAME) - before;
            samples.push(PauseSample {
                requested_ns,
                start_ns: out.start_ns,
                end_ns: out.end_ns,
                achieved_ns,
                outcome_achieved_ns: out.achieved_ns,
                round,
            });
            std::thread::sleep(Duration::from_micros(1_000 + rng.below(4_000)));
        }
    }
    let (gaps, overflow) = finish_probe(probe);
    agent.delete_service(NAME).unwrap();
    bench.shutdown();

    // Match: the gap with the largest overlap with [start, end] of the pause (the probe's gaps
    // are disjoint and sorted, so their ends are sorted too).
    let mut matched = vec![false; gaps.len()];
    let mut unmatched_pauses = 0;
    let mut by_size = serde_json::Map::new();
    let mut rows: Vec<(u64, usize, [f64; 5])> = Vec::new();
    for s in &samples {
        let first_after = gaps.partition_point(|g| g.0 <= s.end_ns);
        let best = gaps[..first_after]
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, g)| g.0 + g.1 > s.start_ns)
            .map(|(i, g)| {
                let overlap = (g.0 + g.1).min(s.end_ns) as i64 - g.0.max(s.start_ns) as i64;
                (overlap, i)
            })
            .filter(|&(overlap, _)| overlap > 0)
            .max();
        let Some((_, i)) = best else {
            unmatched_pauses += 1;
            continue;
        };
        matched[i] = true;
        let (g_start, gap) = gaps[i];
        let us = |ns: i64| ns as f64 / 1e3;
        rows.push((
            s.requested_ns,
            s.round,
            [
                us((gap as i64 - s.requested_ns as i64).abs()),
                us(gap as i64 - s.achieved_ns as i64),
                us(s.achieved_ns as i64 - s.requested_ns as i64),
                us(g_start as i64 - s.start_ns as i64),
                us((g_start + gap) as i64 - s.end_ns as i64),
            ],
        ));
    }
    for size in SIZES_NS {
        let metric = |m: usize| {
            let per_round: Vec<Vec<f64>> = (0..o.rounds)
                .map(|r| {
                    rows.iter()
                        .filter(|x| x.0 == size && x.1 == r)
                        .map(|x| x.2[m])
                        .collect()
                })
                .collect();
            distribution(&per_round)
        };
        let of_size: Vec<&PauseSample> =
            samples.iter().filter(|s| s.requested_ns == size).collect();
        by_size.insert(
            format!("{}ms", size / 1_000_000),
            json!({
                "pauses": of_size.len(),
                "matched": rows.iter().filter(|x| x.0 == size).count(),
                "abs_gap_minus_requested_us": metric(0),
                "gap_minus_achieved_us": metric(1),
                "achieved_minus_requested_us": metric(2),
                "stop_latency_us": metric(3),
                "resume_latency_us": metric(4),
                "stats_delta_equals_outcome": of_size.iter().all(|s| s.achieved_ns == s.outcome_achieved_ns),
            }),
        );
    }
    let noise: Vec<f64> = gaps
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(g, _)| g.1 as f64 / 1e3)
        .collect();
    let [_, noise_median, noise_p99, noise_max] = stats4(&noise);
    json!({
        "probe": "child process (this binary, --probe) spinning on CLOCK_MONOTONIC, one thread, no affinity",
        "min_gap_us": MIN_GAP_NS / 1000,
        "pauses_per_size_per_round": o.pauses,
        "interval_between_pauses_ms": [1, 5],
        "goal": "p99 |gap - requested| < 50 us (a plain Python supervisor here: median 58 us, p99 933 us)",
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "by_size": by_size,
        "unmatched_pauses": unmatched_pauses,
        "other_gaps": {
            "count": noise.len(),
            "median_us": noise_median,
            "p99_us": noise_p99,
            "max_us": noise_max,
            "overflow": overflow,
        },
    })
}

/// Leaves `n` client sockets in `TIME_WAIT`: connect to a loopback listener and close the
/// client side first.
fn make_time_wait(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..n {
        let client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        drop(client);
        // Wait for the client's FIN, so that the client, which closed first, holds `TIME_WAIT`.
        let mut byte = [0u8; 1];
        let _ = server.read(&mut byte);
    }
}

/// Sockets in the TCP tables of the agent's namespace, `TIME_WAIT` and others.
fn tcp_table_rows() -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.lines().count().saturating_sub(1))
        .sum()
}

fn resolve_cost(o: &Options) -> serde_json::Value {
    use slowpoke_agent::sys::{procfs, sockdiag};
    let started = Instant::now();
    make_time_wait(o.time_wait);
    let made_s = started.elapsed().as_secs_f64();
    let rows = tcp_table_rows();
    let time = |f: &dyn Fn() -> usize| -> (f64, usize) {
        let t = Instant::now();
        let mut found = 0;
        for _ in 0..o.lists {
            found = f();
        }
        (t.elapsed().as_secs_f64() * 1e3 / o.lists as f64, found)
    };
    let diag = || sockdiag::listening_sockets().expect("sock_diag").len();
    let proc_net = || procfs::listening_sockets(std::path::Path::new("/proc/net")).len();
    let (mut d_ms, mut p_ms, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let mut listeners = (0, 0);
    for round in 0..o.rounds {
        let ((d, nd), (p, np)) = if round % 2 == 0 {
            let d = time(&diag);
            (d, time(&proc_net))
        } else {
            let p = time(&proc_net);
            (time(&diag), p)
        };
        listeners = (nd, np);
        d_ms.push(d);
        p_ms.push(p);
        ratio.push(p / d);
    }
    json!({
        "time_wait_made": o.time_wait,
        "seconds_to_make_them": made_s,
        "tcp_table_rows": rows,
        "listening_sockets_found": {"sock_diag": listeners.0, "proc_net_tcp": listeners.1},
        "ms_per_listing_sock_diag": summary(&d_ms),
        "ms_per_listing_proc_net_tcp": summary(&p_ms),
        "ratio_proc_over_sock_diag": summary(&ratio),
    })
}

/// The sync measurement's plan: A's and B's delay per visit (ns).
const SYNC_DELAYS_NS: [(&str, u64); 2] = [("a", 2_000_000), ("b", 400_000)];

/// What one run of the sync measurement saw (shares in %, delays in µs).
#[derive(Default)]
struct SyncRun {
    a_quantum_pauses: usize,
    /// B's synchronized pauses per A quantum pause.
    b_paid_at_a_pct: f64,
    delay_us: Vec<f64>,
    /// B's synchronized pauses that started while A was stopped.
    inside_pct: f64,
    /// B's stopped time that overlapped A's.
    overlap_pct: f64,
}

fn sync_run(
    agent: &Agent,
    conns: &mut [TcpStream; 2],
    synchronized: bool,
    visits: usize,
) -> SyncRun {
    use slowpoke_agent::actuator::PauseKind;
    use slowpoke_agent::api::{Mode, ServiceDelay, SlowdownPlan};
    let services = SYNC_DELAYS_NS
        .into_iter()
        .map(|(n, d)| {
            let delay = ServiceDelay {
                delay_per_visit_ns: d,
            };
            (n.to_string(), delay)
        })
        .collect();
    let t0 = monotonic_ns();
    agent
        .set_slowdown(SlowdownPlan {
            mode: Mode::Pause,
            quantum_ns: None,
            synchronized,
            services,
            ..SlowdownPlan::default()
        })
        .unwrap();
    let mut buf = [7u8; MESSAGE];
    for _ in 0..visits {
        for c in conns.iter_mut() {
            c.write_all(&buf).unwrap();
            c.read_exact(&mut buf).unwrap();
        }
    }
    agent.clear_slowdown().unwrap();
    let recent = |n: &str| -> Vec<_> {
        let mut v = agent.recent_pauses(n).unwrap();
        v.retain(|p| p.start_ns >= t0);
        v
    };
    let (a, b) = (recent("a"), recent("b"));
    let a_quantum: Vec<_> = a.iter().filter(|p| p.kind == PauseKind::Kernel).collect();
    let mut run = SyncRun {
        a_quantum_pauses: a_quantum.len(),
        ..SyncRun::default()
    };
    let mut inside = 0;
    let b_sync: Vec<_> = b
        .iter()
        .filter(|p| p.kind == PauseKind::Synchronized)
        .collect();
    for p in &b_sync {
        if let Some(x) = a_quantum
            .iter()
            .filter(|x| x.start_ns <= p.start_ns)
            .max_by_key(|x| x.start_ns)
        {
            run.delay_us.push((p.start_ns - x.start_ns) as f64 / 1e3);
            inside += usize::from(p.start_ns < x.end_ns);
        }
    }
    let pct = |x: usize, of: usize| 100.0 * x as f64 / of.max(1) as f64;
    run.b_paid_at_a_pct = pct(b_sync.len(), a_quantum.len());
    run.inside_pct = pct(inside, b_sync.len());
    let (mut stopped, mut overlap) = (0u64, 0u64);
    for p in &b {
        stopped += p.end_ns.saturating_sub(p.start_ns);
        overlap += a
            .iter()
            .map(|x| {
                p.end_ns
                    .min(x.end_ns)
                    .saturating_sub(p.start_ns.max(x.start_ns))
            })
            .sum::<u64>();
    }
    run.overlap_pct = 100.0 * overlap as f64 / stopped.max(1) as f64;
    run
}

fn sync_closeness(o: &Options) -> serde_json::Value {
    // A is stopped most of the time by design: no cap.
    let bench = BenchAgent::start("sync", Some(1.0));
    let agent = &bench.agent;
    let servers = [start_server(), start_server()];
    for ((name, _), s) in SYNC_DELAYS_NS.into_iter().zip(&servers) {
        let info = agent
            .put_service(
                name,
                ServiceSpec {
                    ports: Some(vec![s.1]),
                    ..ServiceSpec::default()
                },
            )
            .unwrap();
        assert_eq!(info.pids, vec![s.0.id()], "service {name} is its server");
    }
    let mut conns = servers.each_ref().map(|s| {
        let c = TcpStream::connect(("127.0.0.1", s.1)).unwrap();
        c.set_nodelay(true).unwrap();
        c
    });
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for synchronized in [round % 2 == 0, round % 2 == 1] {
            let r = sync_run(agent, &mut conns, synchronized, o.sync_visits);
            if synchronized { &mut on } else { &mut off }.push(r);
        }
    }
    drop(conns);
    for (name, _) in SYNC_DELAYS_NS {
        agent.delete_service(name).unwrap();
    }
    bench.shutdown();
    let per_run = |runs: &[SyncRun]| {
        let q =
            |f: fn(&[f64]) -> f64| -> Vec<f64> { runs.iter().map(|r| f(&r.delay_us)).collect() };
        json!({
            "a_quantum_pauses": summary(&runs.iter().map(|r| r.a_quantum_pauses as f64).collect::<Vec<_>>()),
            "b_paid_at_a_pct": summary(&runs.iter().map(|r| r.b_paid_at_a_pct).collect::<Vec<_>>()),
            "delay_us_median": summary(&q(|d| quantile(d, 0.5))),
            "delay_us_p90": summary(&q(|d| quantile(d, 0.9))),
            "delay_us_max": summary(&q(|d| quantile(d, 1.0))),
            "inside_a_pct": summary(&runs.iter().map(|r| r.inside_pct).collect::<Vec<_>>()),
            "b_stopped_overlapping_a_pct": summary(&runs.iter().map(|r| r.overlap_pct).collect::<Vec<_>>()),
        })
    };
    let gain: Vec<f64> = on
        .iter()
        .zip(&off)
        .map(|(s, u)| s.overlap_pct - u.overlap_pct)
        .collect();
    json!({
        "visits_per_run": o.sync_visits,
        "delays_ns": SYNC_DELAYS_NS.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "synchronized": per_run(&on),
        "unsynchronized": per_run(&off),
        "overlap_gain_pct_points": summary(&gain),
    })
}

/// The `q` quantile (nearest rank) of `xs`; NaN when empty.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    if let Some(port) = &o.server {
        return serve(port);
    }
    if let Some(min_gap_ns) = o.probe {
        return probe(min_gap_ns);
    }
    let loadavg_start = loadavg();
    let mut report = serde_json::Map::new();
    report.insert("rounds".into(), json!(o.rounds));
    report.insert("calls_per_measurement".into(), json!(o.calls));
    report.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, usize::from)),
    );
    report.insert("loadavg_start".into(), json!(loadavg_start));
    if o.runs("hook") {
        report.insert("hook_untracked".into(), hook_overhead(&o));
    }
    if o.runs("tracked") {
        report.insert("tracked_call_tcp_loopback".into(), tracked_call_cost(&o));
    }
    if o.runs("echo") {
        report.insert("throughput_echo".into(), throughput(&o, false));
    }
    if o.runs("nginx") {
        report.insert("throughput_nginx".into(), throughput(&o, true));
    }
    if o.runs("pause") {
        report.insert("pause_precision".into(), pause_precision(&o));
    }
    if o.runs("resolve") {
        report.insert("resolve".into(), resolve_cost(&o));
    }
    if o.runs("sync") {
        report.insert("synchronized_pauses".into(), sync_closeness(&o));
    }
    report.insert("loadavg_end".into(), json!(loadavg()));
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap()
    );
}

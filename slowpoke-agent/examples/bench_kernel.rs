//! Cost of the kernel programs, printed as one JSON object (run as root, release build):
//!
//! ```text
//! cargo run --release -p slowpoke-agent --example bench_kernel [-- --rounds 7 --seconds 2]
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

use kernel_support::KeepAlive;
use serde_json::json;
use slowpoke_agent::kernel::{DEFAULT_QUANTUM_NS, Kernel};

#[path = "../tests/kernel_support/mod.rs"]
mod kernel_support;

const MESSAGE: usize = 64;

struct Options {
    rounds: usize,
    calls: usize,
    seconds: f64,
    connections: usize,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 7,
        calls: 100_000,
        seconds: 2.0,
        connections: 4,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--rounds" => o.rounds = value.parse().expect("--rounds N"),
            "--calls" => o.calls = value.parse().expect("--calls N"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// Mean and half-width of the 95 % confidence interval (Student's t).
fn mean_ci(xs: &[f64]) -> (f64, f64) {
    const T95: [f64; 10] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    ];
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let t = T95.get(xs.len() - 2).copied().unwrap_or(2.0);
    (mean, t * (var / n).sqrt())
}

fn summary(xs: &[f64]) -> serde_json::Value {
    let (mean, ci95) = mean_ci(xs);
    json!({"mean": mean, "ci95": ci95, "samples": xs})
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--server") {
        serve(&args[2]);
        return;
    }
    let o = options();
    let hook = hook_overhead(&o);
    let tracked_call = tracked_call_cost(&o);
    let echo = throughput(&o, false);
    let nginx = throughput(&o, true);
    let report = json!({
        "rounds": o.rounds,
        "calls_per_measurement": o.calls,
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "hook_untracked": hook,
        "tracked_call_tcp_loopback": tracked_call,
        "throughput_echo": echo,
        "throughput_nginx": nginx,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}

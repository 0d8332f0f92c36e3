//! Part 2, `throughput_echo` and `throughput_nginx`: what the kernel programs cost a loaded
//! server. Several keep-alive connections of closed-loop clients against the echo server child
//! or Debian's nginx; arms in a rotating order: programs detached, attached but the server
//! untracked, the server tracked at zero delay. Throughput and CPU time per request (server and
//! client threads), and their per-round losses.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use slowpoke_bench::machine::{process_cpu_ns, thread_cpu_ns};
use slowpoke_testkit::{KeepAlive, Nginx};

use crate::{
    Options,
    echo::{MESSAGE, start_server},
    harness::load_kernel,
    summary,
};

/// One load run against the server.
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

/// Requests/s and CPU per request of one server, programs detached vs. attached (untracked) vs.
/// tracked at zero delay.
pub(crate) fn throughput(o: &Options, http: bool) -> serde_json::Value {
    let (echo, nginx);
    let (pid, port) = if http {
        // One process (no master), so that its CPU time is one process's.
        nginx = Nginx {
            workers: 0,
            ..Nginx::default()
        }
        .start();
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

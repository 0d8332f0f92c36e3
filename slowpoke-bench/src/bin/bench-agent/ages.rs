//! Parts `ages` and `ages-servers` (request ages, issue #18 item 1; docs/tail.md).
//!
//! `ages`: what tracking request ages adds to a call. One thread plays client, relay and leaf
//! of a service made of this process: per exchange the client sends 64 bytes to the relay's
//! server socket (a visit: a request starts), the relay calls the leaf on a client socket (its
//! segment carries the age: `tcp_sendmsg_locked`, `sock_ops` reserve and write, the leaf's parse),
//! the leaf answers (its request ends), the relay answers the client — 8 socket calls. Arms:
//! the service tracked with ages off vs. on, fresh connections in each arm (callbacks are chosen
//! at connect), interleaved ABBA; CPU ns of the one thread per exchange (loopback delivery runs
//! in the sender's context). The kernel's own accounting (BPF run-time statistics) gives the
//! cost of one call of each program.
//!
//! `ages-servers`: which request's age a real server's calls carry. A proxy (apache2 worker
//! MPM: a thread per request; nginx and haproxy: event loops, one thread many requests) sits
//! between a front and a leaf of this process, both thread-per-connection servers that log
//! which request (`?id=N`) each of their threads received. The front serves one request per
//! thread, so the kernel's `REQUEST_START` of the thread that received id N gives N's true
//! origin; the leaf's `REQUEST_START` for N gives the origin the proxy's call carried. Per
//! request: `right` (the true origin nearest to the one seen is N's own, or N's is within 5 µs:
//! the carrying's own error; its error is the carrying's), `other` (another request's is nearer: the proxy carried another request's age),
//! `not_carried` (the leaf's own arrival); `right_but_another_within_20us` counts right ones
//! another request's true origin was close to.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use slowpoke_agent::{
    kernel::{Kernel, RequestEvents},
    sys::clock::monotonic_ns,
};
use slowpoke_bench::machine::thread_cpu_ns;
use slowpoke_common::{REQUEST_START, RequestEvent};
use slowpoke_testkit::{Nginx, apache_proxy, haproxy};

use crate::{Options, harness::load_kernel, summary};

const MSG: usize = 64;

fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// CPU ns of this thread per client → relay → leaf → relay → client exchange.
fn exchanges(
    (client, relay_in): &mut (TcpStream, TcpStream),
    (relay_out, leaf): &mut (TcpStream, TcpStream),
    n: usize,
) -> f64 {
    let mut buf = [7u8; MSG];
    let start = thread_cpu_ns();
    for _ in 0..n {
        client.write_all(&buf).unwrap();
        relay_in.read_exact(&mut buf).unwrap();
        relay_out.write_all(&buf).unwrap();
        leaf.read_exact(&mut buf).unwrap();
        leaf.write_all(&buf).unwrap();
        relay_out.read_exact(&mut buf).unwrap();
        relay_in.write_all(&buf).unwrap();
        client.read_exact(&mut buf).unwrap();
    }
    (thread_cpu_ns() - start) as f64 / n as f64
}

/// Reads the request events on a thread of its own until stopped (the ring buffer must not
/// fill: a dropped event costs less than a submitted one and would flatter the figures).
struct Drainer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<RequestEvent>>,
}

impl Drainer {
    fn start(mut events: RequestEvents, keep: bool) -> Drainer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut scratch = Vec::new();
            loop {
                let mut fds = [libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&events),
                    events: libc::POLLIN,
                    revents: 0,
                }];
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(fds.as_mut_ptr(), 1, 20) };
                events.drain(if keep { &mut kept } else { &mut scratch });
                scratch.clear();
                if stopping.load(Ordering::SeqCst) {
                    events.drain(&mut kept);
                    return kept;
                }
            }
        });
        Drainer { stop, thread }
    }

    fn finish(self) -> Vec<RequestEvent> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Calls and ns of each program during `f`.
fn program_delta(kernel: &Kernel, f: impl FnOnce()) -> BTreeMap<String, (u64, u64)> {
    let before = kernel.program_stats();
    f();
    kernel
        .program_stats()
        .into_iter()
        .map(|(name, after)| {
            let (c0, n0) = before
                .get(&name)
                .map_or((0, 0), |b| (b.run_count, b.run_time_ns));
            (name, (after.run_count - c0, after.run_time_ns - n0))
        })
        .collect()
}

/// Part `ages`.
pub(crate) fn cost(o: &Options) -> serde_json::Value {
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let leaf = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [
        relay.local_addr().unwrap().port(),
        leaf.local_addr().unwrap().port(),
    ];
    let mut kernel = load_kernel();
    kernel.set_members(0, &[std::process::id()]).unwrap();
    kernel.set_server_ports(0, &ports, &[]).unwrap();
    let drainer = Drainer::start(kernel.take_request_events().unwrap(), false);
    // Run-time statistics stay on while the descriptor lives.
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    let n = o.calls / 8;
    let arms = ["off", "on", "on_no_wakeup"];
    let mut ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut per_call: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut calls_per_exchange: BTreeMap<String, f64> = BTreeMap::new();
    for round in 0..o.rounds {
        // A rotating order, so that drift cancels out.
        for i in 0..arms.len() {
            let arm = arms[(round + i) % arms.len()];
            kernel.set_track_ages(0, arm != "off").unwrap();
            kernel
                .set_request_event_wakeups(arm != "on_no_wakeup")
                .unwrap();
            let (mut front, mut back) = (pair(&relay), pair(&leaf));
            exchanges(&mut front, &mut back, n / 10);
            let mut cpu = 0.0;
            let delta = program_delta(&kernel, || cpu = exchanges(&mut front, &mut back, n));
            ns.entry(arm).or_default().push(cpu);
            for (name, (calls, run_ns)) in delta {
                if calls > 0 {
                    let key = format!("{arm}: {name}");
                    calls_per_exchange.insert(key.clone(), calls as f64 / n as f64);
                    per_call
                        .entry(key)
                        .or_default()
                        .push(run_ns as f64 / calls as f64);
                }
            }
        }
    }
    drop(stats_fd);
    drainer.finish();
    let c = kernel.age_counters(0).unwrap();
    let s = kernel.age_stats().unwrap();
    let diff =
        |arm: &str| -> Vec<f64> { ns[arm].iter().zip(&ns["off"]).map(|(a, b)| a - b).collect() };
    let programs: serde_json::Map<String, serde_json::Value> = per_call
        .iter()
        .map(|(name, xs)| (name.clone(), summary(xs)))
        .collect();
    json!({
        "exchange": "client -> relay -> leaf -> relay -> client, 64 bytes, one thread, loopback: 8 socket calls, 2 request starts, 1 end, 1 age written and parsed",
        "exchanges_per_measurement": n,
        "arms": "off: service tracked, ages off; on: ages on, events wake their reader (blocked in poll on another thread); on_no_wakeup: ages on, GLOBAL_REQUEST_EVENTS_NO_WAKEUP",
        "cpu_ns_per_exchange": ns.iter().map(|(arm, xs)| (arm.to_string(), summary(xs))).collect::<serde_json::Map<_, _>>(),
        "cost_cpu_ns_per_exchange_on": summary(&diff("on")),
        "cost_cpu_ns_per_exchange_on_no_wakeup": summary(&diff("on_no_wakeup")),
        "program_ns_per_call": programs,
        "program_calls_per_exchange": calls_per_exchange,
        "requests": c.requests,
        "carried": c.carried,
        "dropped_events": c.dropped_events,
        "options_written": s.options_written,
        "options_parsed": s.options_parsed,
    })
}

/// A thread-per-connection HTTP/1.1 keep-alive server of this process that logs which request
/// (`GET /x?id=N`) each of its threads received and when; with `forward`, each thread passes
/// the request on to that port over a connection of its own (a front) and relays the answer.
struct IdServer {
    port: u16,
    log: Arc<Mutex<Vec<(u32, u64, u64)>>>,
}

impl IdServer {
    fn start(forward: Arc<Mutex<Option<u16>>>) -> IdServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = shared.clone();
                let to = *forward.lock().unwrap();
                std::thread::spawn(move || serve_ids(stream, &log, to));
            }
        });
        IdServer { port, log }
    }
}

fn serve_ids(stream: TcpStream, log: &Mutex<Vec<(u32, u64, u64)>>, forward: Option<u16>) {
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut upstream = forward.map(|port| {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        (BufReader::new(s.try_clone().unwrap()), s)
    });
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let id = line
            .split("id=")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(u64::MAX);
        let mut header = String::new();
        while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
            header.clear();
        }
        log.lock().unwrap().push((tid, id, monotonic_ns()));
        if let Some((up_reader, up_writer)) = upstream.as_mut() {
            write!(up_writer, "GET /x?id={id} HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
            read_ok(up_reader);
        }
        if writer
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// `clients` keep-alive clients sending `requests` GETs each, ids `client * requests + i`.
fn id_load(port: u16, clients: usize, requests: usize) {
    std::thread::scope(|scope| {
        for client in 0..clients {
            scope.spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for i in 0..requests {
                    let id = client * requests + i;
                    write!(writer, "GET /x?id={id} HTTP/1.1\r\nHost: bench\r\n\r\n").unwrap();
                    read_ok(&mut reader);
                }
            });
        }
    });
}

fn read_ok(reader: &mut BufReader<TcpStream>) {
    let (mut length, mut first) = (0usize, true);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the proxy closed");
        if first {
            assert!(line.contains(" 200 "), "proxy answered {line:?}");
            first = false;
        } else if line == "\r\n" {
            break;
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
}

/// The origin the kernel gave each logged request: the `REQUEST_START` of the logging thread
/// that precedes the log entry; id -> (origin, whether it was the thread's own arrival).
fn origins(events: &[RequestEvent], log: &[(u32, u64, u64)]) -> BTreeMap<u64, (u64, bool)> {
    let mut starts: BTreeMap<u32, Vec<&RequestEvent>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == REQUEST_START) {
        starts.entry(e.tid).or_default().push(e);
    }
    log.iter()
        .filter_map(|&(tid, id, at)| {
            let start = starts.get(&tid)?.iter().rev().find(|e| e.at_ns <= at)?;
            Some((id, (start.origin_ns, start.origin_ns == start.at_ns)))
        })
        .collect()
}

/// Classifies each request the leaf served (see the module doc).
fn classify(
    events: &[RequestEvent],
    front_log: &[(u32, u64, u64)],
    leaf_log: &[(u32, u64, u64)],
) -> serde_json::Value {
    const AMBIGUITY_NS: u64 = 20_000;
    const INDISTINCT_NS: u64 = 5_000;
    let truth = origins(events, front_log);
    let seen = origins(events, leaf_log);
    let mut by_origin: Vec<(u64, u64)> = truth.iter().map(|(id, (o, _))| (*o, *id)).collect();
    by_origin.sort_unstable();
    let (mut right, mut other, mut not_carried, mut ambiguous, mut unmatched) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut right_err_us, mut other_err_us) = (Vec::new(), Vec::new());
    for (id, (origin, own_arrival)) in &seen {
        let Some((true_origin, _)) = truth.get(id) else {
            unmatched += 1;
            continue;
        };
        if *own_arrival {
            not_carried += 1;
            continue;
        }
        // The request whose true origin is nearest to the origin the leaf saw.
        let i = by_origin.partition_point(|&(o, _)| o < *origin);
        let nearest = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter_map(|j| by_origin.get(j))
            .min_by_key(|(o, _)| o.abs_diff(*origin))
            .map(|(_, nearest_id)| *nearest_id);
        let err_us = origin.abs_diff(*true_origin) as f64 / 1e3;
        // Within the carrying's own error of N's origin (two arrivals microseconds apart are
        // indistinguishable), or nearer to it than to any other request's.
        if nearest == Some(*id) || origin.abs_diff(*true_origin) <= INDISTINCT_NS {
            right += 1;
            right_err_us.push(err_us);
            let lo = by_origin.partition_point(|&(o, _)| o + AMBIGUITY_NS < *origin);
            let hi = by_origin.partition_point(|&(o, _)| o <= origin + AMBIGUITY_NS);
            if hi - lo > 1 {
                ambiguous += 1;
            }
        } else {
            other += 1;
            other_err_us.push(err_us);
        }
    }
    for v in [&mut right_err_us, &mut other_err_us] {
        v.sort_by(f64::total_cmp);
    }
    let q = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let n = seen.len().max(1) as f64;
    json!({
        "leaf_requests": leaf_log.len(),
        "right_request": right,
        "right_share": right as f64 / n,
        "right_error_us_p50_p99_max": [q(&right_err_us, 0.5), q(&right_err_us, 0.99), q(&right_err_us, 1.0)],
        "right_but_another_within_20us": ambiguous,
        "other_request": other,
        "other_share": other as f64 / n,
        "other_off_by_us_p50": q(&other_err_us, 0.5),
        "not_carried": not_carried,
        "not_carried_share": not_carried as f64 / n,
        "unmatched": unmatched,
    })
}

/// Part `ages-servers`.
pub(crate) fn servers(o: &Options) -> serde_json::Value {
    let leaf = IdServer::start(Arc::new(Mutex::new(None)));
    let forward = Arc::new(Mutex::new(None));
    let front = IdServer::start(forward.clone());
    let backend = format!("http://127.0.0.1:{}", leaf.port);
    let requests = (o.calls / 200).max(100);
    let mut out = serde_json::Map::new();
    for server in ["apache2-worker", "nginx", "haproxy"] {
        let proxy = match server {
            "apache2-worker" => apache_proxy(&backend, "worker"),
            "nginx" => Nginx {
                workers: 1,
                http_extra: format!(
                    "upstream leaf {{ server 127.0.0.1:{}; keepalive 32; }}",
                    leaf.port
                ),
                server_extra: "location /x { proxy_pass http://leaf; \
                               proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
                    .into(),
            }
            .start(),
            _ => haproxy(leaf.port),
        };
        *forward.lock().unwrap() = Some(proxy.port);
        let mut per_clients = serde_json::Map::new();
        for clients in [1, 4, 16] {
            let mut kernel = load_kernel();
            let drainer = Drainer::start(kernel.take_request_events().unwrap(), true);
            kernel.set_members(0, &proxy.pids()).unwrap();
            kernel.set_server_ports(0, &[proxy.port], &[]).unwrap();
            // Front and leaf: one process, so one service.
            kernel.set_members(1, &[std::process::id()]).unwrap();
            kernel
                .set_server_ports(1, &[front.port, leaf.port], &[])
                .unwrap();
            kernel.set_track_ages(0, true).unwrap();
            kernel.set_track_ages(1, true).unwrap();
            leaf.log.lock().unwrap().clear();
            front.log.lock().unwrap().clear();
            id_load(front.port, clients, requests);
            // Every logged request's start was submitted before it was logged.
            let events = drainer.finish();
            let front_log = front.log.lock().unwrap().clone();
            let leaf_log = leaf.log.lock().unwrap().clone();
            per_clients.insert(
                format!("clients_{clients}"),
                classify(&events, &front_log, &leaf_log),
            );
        }
        out.insert(server.into(), serde_json::Value::Object(per_clients));
    }
    out.insert("requests_per_client".into(), json!(requests));
    serde_json::Value::Object(out)
}

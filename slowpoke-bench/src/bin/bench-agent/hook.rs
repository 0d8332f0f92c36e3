//! Part 1, `hook`: what the kernel programs add to a socket call of a process no service tracks
//! (attached vs. detached); and `tracked`: what they add to a call of a tracked service (tracked
//! vs. untracked, programs attached in both arms). CPU time of the one measuring thread, arms
//! interleaved.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::net::UnixStream,
    time::Instant,
};

use serde_json::json;
use slowpoke_bench::machine::thread_cpu_ns;

use crate::{Options, harness::load_kernel, summary};

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

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

/// Time per socket call of a process no service tracks, programs attached vs. detached.
pub(crate) fn hook_overhead(o: &Options) -> serde_json::Value {
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
pub(crate) fn tracked_call_cost(o: &Options) -> serde_json::Value {
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

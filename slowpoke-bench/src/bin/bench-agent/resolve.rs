//! Part 4, `resolve`: what the resolver pays to list the node's listening sockets with many
//! `TIME_WAIT` sockets on the node (an app that opens a connection per request leaves tens of
//! thousands): `sock_diag` (what the agent uses) vs. reading `/proc/net/tcp{,6}` (what it used
//! to), interleaved, `--lists` listings of each per round.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    time::Instant,
};

use serde_json::json;
use slowpoke_agent::sys::{procfs, sockdiag};

use crate::{Options, summary};

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

pub(crate) fn resolve_cost(o: &Options) -> serde_json::Value {
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

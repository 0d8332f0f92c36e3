//! Part 4, `resolve`: what the resolver pays to list the node's listening sockets with many
//! `TIME_WAIT` sockets on the node (an app that opens a connection per request leaves tens of
//! thousands): `sock_diag` (what the agent uses) vs. reading `/proc/net/tcp{,6}` (what it used
//! to), interleaved, `--lists` listings of each per round.
//!
//! Part `owners`: what one resolver pass pays to find who listens on the services' ports, with
//! `--owner-services` servers each holding `--owner-connections` connections: reading every
//! process's descriptors for every port service (what a pass did before
//! `registry::Listeners`) vs. the index kept across passes, interleaved, `--lists` passes of
//! each per round (20: one full stagger of the index); the thread's CPU time per pass.

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    time::Instant,
};

use serde_json::json;
use slowpoke_agent::{
    registry::{Listeners, listeners::YOUNG_PASSES},
    sys::{clock::thread_cpu_ns, procfs, sockdiag},
};

use crate::{Options, echo, summary};

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

/// The owners of each port and the ports each service's members listen on, read afresh (what a
/// pass did for every port service before the index).
fn owners_by_full_reads(ports: &[u16]) -> Vec<(Vec<u32>, Vec<u16>)> {
    ports
        .iter()
        .map(|&p| {
            let pids: Vec<u32> = procfs::pids_listening_on(&[p]).into_iter().collect();
            let theirs = procfs::listen_ports_of(&pids);
            (pids, theirs)
        })
        .collect()
}

/// The same from the index, after its pass.
fn owners_by_index(index: &mut Listeners, ports: &[u16]) -> Vec<(Vec<u32>, Vec<u16>)> {
    index.refresh(ports);
    ports
        .iter()
        .map(|&p| {
            let pids: Vec<u32> = index.owners(&[p]).into_iter().collect();
            let theirs = index.ports_of(&pids);
            (pids, theirs)
        })
        .collect()
}

pub(crate) fn owners_cost(o: &Options) -> serde_json::Value {
    let servers: Vec<echo::ServerProcess> = (0..o.owner_services)
        .map(|_| echo::start_server())
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.1).collect();
    let _conns: Vec<TcpStream> = ports
        .iter()
        .flat_map(|&p| (0..o.owner_connections).map(move |_| p))
        .map(|p| TcpStream::connect(("127.0.0.1", p)).expect("connecting to a server"))
        .collect();
    let mut index = Listeners::new();
    // Past the young passes of every process here: the index's steady state.
    for _ in 0..=YOUNG_PASSES {
        owners_by_index(&mut index, &ports);
    }
    let same = owners_by_index(&mut index, &ports) == owners_by_full_reads(&ports);
    let per_pass = |f: &mut dyn FnMut()| -> f64 {
        let t = thread_cpu_ns();
        for _ in 0..o.lists {
            f();
        }
        (thread_cpu_ns() - t) as f64 / 1e6 / o.lists as f64
    };
    let (mut full_ms, mut index_ms, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let mut full = || {
            owners_by_full_reads(&ports);
        };
        let (f, i) = if round % 2 == 0 {
            let f = per_pass(&mut full);
            (
                f,
                per_pass(&mut || {
                    owners_by_index(&mut index, &ports);
                }),
            )
        } else {
            let i = per_pass(&mut || {
                owners_by_index(&mut index, &ports);
            });
            (per_pass(&mut full), i)
        };
        full_ms.push(f);
        index_ms.push(i);
        ratio.push(f / i);
    }
    let fds: usize = procfs::all_pids()
        .iter()
        .map(|&p| std::fs::read_dir(format!("/proc/{p}/fd")).map_or(0, Iterator::count))
        .sum();
    json!({
        "port_services": ports.len(),
        "connections_per_service": o.owner_connections,
        "processes_on_node": procfs::all_pids().len(),
        "open_files_on_node": fds,
        "passes_per_round": o.lists,
        "same_owners_and_ports": same,
        "cpu_ms_per_pass_full_reads": summary(&full_ms),
        "cpu_ms_per_pass_index": summary(&index_ms),
        "ratio_full_over_index": summary(&ratio),
    })
}

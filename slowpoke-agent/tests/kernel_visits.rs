//! Visits, bytes, outgoing calls and endpoints, HTTP/2 flag: exact counts on real servers.
//! Run as root (the tests load the kernel programs).

mod kernel_support;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use kernel_support::{KeepAlive, get_once, load_kernel, nginx_server, python_server, serial};
use slowpoke_agent::kernel::cgroup_v2_id;
use slowpoke_testkit::cgroup::ScratchCgroup;

const SERVER: u32 = 0;
const CLIENT: u32 = 1;

#[test]
fn kernel_visits_python_http_server_one_request_per_connection() {
    let _serial = serial();
    let server = python_server();
    let mut kernel = load_kernel();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    // The test process itself: a client-side-only service.
    kernel.set_members(CLIENT, &[std::process::id()]).unwrap();

    let n = 20;
    let (mut sent, mut received) = (0, 0);
    for _ in 0..n {
        let (s, r) = get_once(server.port, "/hello.txt");
        sent += s;
        received += r;
    }
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!(c.visits, n, "server visits: {c:?}");
    assert_eq!(c.bytes_in, sent, "server bytes_in: {c:?}");
    assert_eq!(c.bytes_out, received, "server bytes_out: {c:?}");
    assert_eq!(c.calls_out, 0);
    assert!(!c.visits_approximate);
    let client = kernel.counters(CLIENT).unwrap();
    assert_eq!(client.visits, 0, "client-side-only service: {client:?}");
    assert_eq!(client.calls_out, n, "client calls: {client:?}");
    assert_eq!((client.bytes_in, client.bytes_out), (0, 0));
    assert!(kernel.serving_threads(SERVER, 0) >= 1);
    assert_eq!(kernel.serving_threads(CLIENT, 0), 0);
}

#[test]
fn kernel_visits_nginx_keep_alive() {
    let _serial = serial();
    let server = nginx_server();
    let mut kernel = load_kernel();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    kernel.set_members(CLIENT, &[std::process::id()]).unwrap();

    let n = 50;
    let mut client = KeepAlive::connect(server.port);
    for _ in 0..n {
        assert_eq!(client.get("/hello.txt"), 200);
    }
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!(c.visits, n, "server visits: {c:?}");
    assert_eq!(c.bytes_in, client.sent, "server bytes_in: {c:?}");
    assert_eq!(c.bytes_out, client.received, "server bytes_out: {c:?}");
    assert!(!c.visits_approximate, "no pipelining here: {c:?}");
    let cc = kernel.counters(CLIENT).unwrap();
    assert_eq!(cc.visits, 0, "client-side-only service: {cc:?}");
    assert_eq!(cc.calls_out, n);
    // One worker process, one thread.
    assert_eq!(kernel.serving_threads(SERVER, 0), 1);

    let endpoints = kernel.outgoing_endpoints();
    let mine: Vec<_> = endpoints
        .iter()
        .filter(|e| e.tgid == std::process::id() && e.port == server.port)
        .collect();
    assert_eq!(mine.len(), 1, "{endpoints:?}");
    assert_eq!(mine[0].service, CLIENT);
    assert_eq!(mine[0].calls, n);
    assert_eq!(mine[0].addr, std::net::IpAddr::from([127, 0, 0, 1]));

    // Forgetting the service resets its counters.
    kernel.remove_service(SERVER).unwrap();
    assert_eq!(kernel.counters(SERVER).unwrap().visits, 0);
    assert_eq!(client.get("/hello.txt"), 200);
    assert_eq!(kernel.counters(SERVER).unwrap().visits, 0);
}

#[test]
fn kernel_outgoing_endpoint_of_untracked_server() {
    let _serial = serial();
    let server = python_server(); // not registered
    let mut kernel = load_kernel();
    kernel.set_members(CLIENT, &[std::process::id()]).unwrap();
    for _ in 0..3 {
        get_once(server.port, "/hello.txt");
    }
    let endpoints = kernel.outgoing_endpoints();
    let hit: Vec<_> = endpoints.iter().filter(|e| e.port == server.port).collect();
    assert_eq!(hit.len(), 1, "{endpoints:?}");
    assert_eq!(hit[0].tgid, std::process::id());
    assert_eq!(hit[0].service, CLIENT);
    assert_eq!(hit[0].calls, 3);
    assert!(hit[0].addr.is_loopback());
    assert!(
        endpoints.iter().all(|e| e.tgid == std::process::id()),
        "{endpoints:?}"
    );
}

#[test]
fn kernel_http2_preface_flags_visits_approximate() {
    let _serial = serial();
    let server = nginx_server();
    let mut kernel = load_kernel();
    assert_eq!(
        kernel.features().get("http2_detection").map(String::as_str),
        Some("on")
    );
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();

    let mut client = KeepAlive::connect(server.port);
    assert_eq!(client.get("/hello.txt"), 200);
    assert!(!kernel.counters(SERVER).unwrap().visits_approximate);

    let mut h2 = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    // nginx without http2 answers 400 and closes: once it has, it has read the preface.
    let mut answer = Vec::new();
    let _ = h2.read_to_end(&mut answer);
    let c = kernel.counters(SERVER).unwrap();
    assert!(c.visits_approximate, "{c:?}");
}

#[test]
fn kernel_visits_by_cgroup_membership() {
    let _serial = serial();
    let server = nginx_server();
    let cgroup = ScratchCgroup::new("kernel-visits");
    cgroup.add(cgroup.path(), server.pid());
    let mut kernel = load_kernel();
    let id = cgroup_v2_id(cgroup.path()).unwrap();
    kernel.set_cgroup_members(SERVER, &[id]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();

    let n = 10;
    let mut client = KeepAlive::connect(server.port);
    for _ in 0..n {
        assert_eq!(client.get("/hello.txt"), 200);
    }
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!(c.visits, n, "{c:?}");
    assert_eq!((c.bytes_in, c.bytes_out), (client.sent, client.received));

    kernel.set_cgroup_members(SERVER, &[]).unwrap();
    assert_eq!(client.get("/hello.txt"), 200);
    assert_eq!(kernel.counters(SERVER).unwrap().visits, n);
    drop(client);
    drop(server);
    drop(cgroup);
}

#[test]
fn kernel_pipelined_requests_flag_visits_approximate() {
    let _serial = serial();
    let server = nginx_server();
    let mut kernel = load_kernel();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();

    let mut client = KeepAlive::connect(server.port);
    for _ in 0..3 {
        assert_eq!(client.get("/hello.txt"), 200);
    }
    assert!(!kernel.counters(SERVER).unwrap().visits_approximate);

    // Three requests in one write: nginx reads them at once and answers three times.
    let request = "GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";
    client
        .stream()
        .write_all(request.repeat(3).as_bytes())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(client.read_response(), 200);
    }
    let c = kernel.counters(SERVER).unwrap();
    assert!(c.visits_approximate, "{c:?}");
    assert!(c.visits < 6, "pipelined requests are under-counted: {c:?}");
}

/// A service's other listening port (an admin/control port, not its visit port) is server side:
/// its traffic is neither visits nor calls to an unregistered dependency — unless the agent
/// leaves it out, which is what made such ports show up as dependencies before.
#[test]
fn kernel_other_listening_ports_are_neither_visits_nor_calls() {
    let _serial = serial();
    let admin = slowpoke_testkit::free_port();
    let server = slowpoke_testkit::Nginx {
        workers: 0,
        http_extra: format!(
            "server {{ listen 127.0.0.1:{admin}; location / {{ return 200 \"admin\"; }} }}"
        ),
        ..slowpoke_testkit::Nginx::default()
    }
    .start();
    let mut kernel = load_kernel();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();

    // Only the visit port known: the admin port's answers look like outgoing calls.
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    slowpoke_testkit::get_once(admin, "/");
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!((c.visits, c.calls_out), (0, 1), "{c:?}");

    // Both known: visits on the service port, nothing on the admin port.
    kernel.remove_service(SERVER).unwrap();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel
        .set_server_ports(SERVER, &[server.port], &[admin])
        .unwrap();
    for _ in 0..5 {
        assert_eq!(slowpoke_testkit::get_once(admin, "/").0, 200);
    }
    for _ in 0..3 {
        assert_eq!(slowpoke_testkit::get_once(server.port, "/hello.txt").0, 200);
    }
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!((c.visits, c.calls_out), (3, 0), "{c:?}");
    assert!(
        kernel
            .outgoing_endpoints()
            .iter()
            .all(|e| e.service != SERVER),
        "{:?}",
        kernel.outgoing_endpoints()
    );
}

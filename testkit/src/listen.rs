//! Starting a server on a free loopback port without racing other tests.
//!
//! [`free_port`](crate::free_port) binds port 0 and releases it, so between that and the server's
//! own `bind` a test running at the same time (nextest runs test binaries in parallel, and tests
//! within a binary in parallel too) may take the same port. Then one server fails to bind and
//! exits, and a readiness check that only connects to the port reaches the *other* test's server:
//! the test goes on with a dead server and fails later, far from the cause ("connecting to
//! memcached: Connection refused" once its neighbour stopped). So readiness here means a
//! listening socket on the port that belongs to the child or one of its descendants, and
//! [`start_listening`] starts a server that exits before listening again on a fresh port.

use std::{
    collections::HashSet,
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use crate::children;

/// How many times [`start_listening`] tries a fresh port before giving up.
const ATTEMPTS: u32 = 5;

/// Starts a server with `spawn_on(port)` on a free port and waits until it listens there itself;
/// when it exits first (most likely another test took the port), starts it again on another port.
/// Returns the child and its port.
pub fn start_listening(what: &str, mut spawn_on: impl FnMut(u16) -> Child) -> (Child, u16) {
    let mut failures = Vec::new();
    for _ in 0..ATTEMPTS {
        let port = crate::free_port();
        let mut child = spawn_on(port);
        match wait_own_listener(&mut child, port, what) {
            Ok(()) => return (child, port),
            Err(status) => failures.push(format!("port {port}: {status}")),
        }
    }
    panic!(
        "{what} exited before listening, {ATTEMPTS} times on fresh ports ({}): run it by hand \
         with the same arguments to see why",
        failures.join("; ")
    )
}

/// Waits until the child (or one of its descendants) listens on 127.0.0.1:`port`; panics when
/// it exits first or after 15 s.
pub fn wait_listening(child: &mut Child, port: u16, what: &str) {
    if let Err(status) = wait_own_listener(child, port, what) {
        panic!("{what} exited before listening on {port}: {status} (port taken by another test?)");
    }
}

/// Ok once the child's process tree owns a TCP listener on `port`; Err with its exit status when
/// it exits first. Panics after 15 s.
fn wait_own_listener(child: &mut Child, port: u16, what: &str) -> Result<(), ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        if owns_listener(child.id(), port) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 15 s waiting for {what} to listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True when `pid` or one of its descendants holds a listening TCP socket on `port` (in this
/// network namespace).
pub fn owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listener_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if holds_any_socket(p, &inodes) {
            return true;
        }
        todo.extend(children(p));
    }
    false
}

/// Socket inodes of the TCP listeners on `port` (IPv4 and IPv6), from /proc/net/tcp{,6}.
fn listener_inodes(port: u16) -> HashSet<u64> {
    let mut out = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(|l| listener_inode(l, port)));
    }
    out
}

/// The inode of one /proc/net/tcp line when it is a listener (state 0A) on `port`.
fn listener_inode(line: &str, port: u16) -> Option<u64> {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let local_port = fields.get(1)?.rsplit_once(':')?.1;
    let listening = *fields.get(3)? == "0A";
    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
}

/// True when one of `pid`'s file descriptors is one of these sockets.
fn holds_any_socket(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
                .is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_line_of_proc_net_tcp_is_read() {
        let line = "   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_inode(line, 8080), Some(123_456));
        assert_eq!(listener_inode(line, 8081), None);
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(listener_inode(&established, 8080), None);
    }

    #[test]
    fn our_own_listener_is_ours_and_not_our_childs() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(owns_listener(std::process::id(), port));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(
            !owns_listener(child.id(), port),
            "a process that does not hold the socket must not count as its owner"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        drop(listener);
        assert!(!owns_listener(std::process::id(), port));
    }

    #[test]
    fn a_server_that_loses_its_port_is_started_again_elsewhere() {
        // The first attempt's port is taken by us before the server starts: exactly the race.
        let mut taken = Vec::new();
        let (mut child, port) = start_listening("python3 -m http.server", |port| {
            if taken.is_empty() {
                taken.push(TcpListener::bind(("127.0.0.1", port)).unwrap());
            }
            std::process::Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        });
        assert_ne!(port, taken[0].local_addr().unwrap().port());
        assert!(owns_listener(child.id(), port));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

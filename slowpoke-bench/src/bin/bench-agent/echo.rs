//! The request/response server the throughput and sync parts load: this binary re-run with
//! `--server PORT`, a thread per connection answering each 64-byte message with itself. A child
//! process, so that a service made of it can be paused without pausing the bench.

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Child, Command, Stdio},
};

/// Bytes of one request and of its response.
pub(crate) const MESSAGE: usize = 64;

/// The request/response server (child process mode): 64-byte request -> 64-byte response. On
/// loopback at `PORT`, or on `IP:PORT` (a cluster node's address, `sync-cluster`).
pub(crate) fn serve(port: &str) {
    let listener = match port.parse::<std::net::SocketAddr>() {
        Ok(addr) => TcpListener::bind(addr),
        Err(_) => TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap())),
    }
    .unwrap();
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

/// The server child and its port; killed on drop.
pub(crate) struct ServerProcess(pub(crate) Child, pub(crate) u16);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary as the server child on a free port and waits for its `ready` line.
pub(crate) fn start_server() -> ServerProcess {
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

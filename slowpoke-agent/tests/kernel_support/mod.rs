//! Real servers and clients for the kernel tests (run as root: they load eBPF programs).
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use slowpoke_agent::kernel::Kernel;
// The generic pieces come from the shared test kit (crate slowpoke-testkit).
use slowpoke_testkit::{TempDir, start_listening};

/// The tests of one binary track the test process itself: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn load_kernel() -> Kernel {
    Kernel::load(slowpoke_agent::kernel::DEFAULT_QUANTUM_NS)
        .unwrap_or_else(|e| panic!("loading the kernel programs (run the tests as root): {e}"))
}

/// For tests that are not about the heartbeat: one beat that stays fresh for an hour, so the
/// kernel's in-kernel stop and spin work as if an agent were beating.
pub fn heartbeat_forever(kernel: &mut Kernel) {
    kernel.set_heartbeat_max_age(3_600_000_000_000).unwrap();
    kernel.beat().unwrap();
}

/// A server process, killed (and continued first, should a test have left it stopped) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub _dir: TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGCONT);
            libc::kill(pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

pub const BODY: &str = "hello from slowpoke's kernel tests\n";

fn write_site(dir: &Path) {
    std::fs::write(dir.join("hello.txt"), BODY).expect("writing hello.txt");
}

/// `python3 -m http.server` (HTTP/1.0: one request per connection).
pub fn python_server() -> Server {
    let dir = TempDir::new("python");
    write_site(dir.path());
    let (child, port) = start_listening("python3 -m http.server", |port| {
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server")
    });
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// Debian's nginx, one process (`master_process off`), keep-alive on, private paths.
pub fn nginx_server() -> Server {
    let dir = TempDir::new("nginx");
    write_site(dir.path());
    let (child, port) = start_listening("nginx", |port| {
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         keepalive_requests 100000;\n  server {{\n    listen 127.0.0.1:{port};\n    root {d};\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).expect("writing nginx.conf");
        Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting /usr/sbin/nginx")
    });
    Server {
        child,
        port,
        _dir: dir,
    }
}

/// One request on a fresh connection, read to EOF: (bytes sent, bytes received).
pub fn get_once(port: u16, path: &str) -> (u64, u64) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("sending the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("reading the response");
    assert!(response.starts_with(b"HTTP/1."), "unexpected response");
    (request.len() as u64, response.len() as u64)
}

/// An HTTP/1.1 keep-alive client on one connection.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    pub sent: u64,
    pub received: u64,
}

impl KeepAlive {
    pub fn connect(port: u16) -> KeepAlive {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        KeepAlive {
            reader: BufReader::new(stream),
            sent: 0,
            received: 0,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn send_request(&mut self, path: &str) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("sending the request");
        self.sent += request.len() as u64;
    }

    /// Reads one whole response (headers and a Content-Length body); returns the status.
    pub fn read_response(&mut self) -> u16 {
        let mut status = 0;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("reading a header line");
            assert!(n > 0, "connection closed mid-response");
            self.received += n as u64;
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("content-length");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("reading the body");
        self.received += length as u64;
        status
    }

    pub fn get(&mut self, path: &str) -> u16 {
        self.send_request(path);
        self.read_response()
    }
}

/// The state letter of /proc/PID/stat ('R', 'S', 'T', ...).
pub fn proc_state(pid: u32) -> char {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    let after = stat.rsplit_once(')').expect("stat format").1;
    after.trim_start().chars().next().expect("state")
}

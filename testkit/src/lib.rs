//! Test kit shared by every crate's integration tests: real servers from Debian's packages
//! (nginx, memcached, haproxy, Python's http.server) on private configs and free loopback ports,
//! child processes that never outlive a test (and are continued before being killed, should a
//! test leave them stopped), and polling with deadlines instead of sleeps.
//!
//! The integration tests that span crates live in `testkit/tests/`. [`cgroup`] holds scratch cgroup
//! v2 directories, [`cluster`] N nodes on this machine (network namespaces on a bridge, cpusets),
//! [`hostile`] processes that test the agent's safety (a chosen pid, a failing `close_range`, user
//! `nobody`), [`swap`] live configuration changes of running servers (the real-server evaluation's
//! ground truth), [`php`] a fan-out of apache2 + `mod_php` instances (the tail suite's real
//! app), and `openapi` (feature `openapi`) checks a server against its API document. The
//! benchmarks (`slowpoke-bench`) use the real servers too; their statistics live in
//! `slowpoke-stats`.

pub mod cgroup;
pub mod cluster;
pub mod cluster_agent;
pub mod hostile;
pub mod listen;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod php;
pub mod swap;

pub use listen::{start_listening, wait_listening};

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a free port")
        .port()
}

/// Polls `f` every millisecond until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One-letter process state from /proc/PID/stat (`R`, `S`, `T`...), None when it is gone.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// True when the process is stopped (SIGSTOP or traced).
pub fn is_stopped(pid: u32) -> bool {
    matches!(proc_state(pid), Some('T' | 't'))
}

/// Direct children of a process.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("slowpoke-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process owned by a test. On drop it and its children are continued (a test may
/// have left them stopped), then killed.
pub struct Proc {
    pub child: Child,
    /// The port it listens on (0 when none).
    pub port: u16,
    home: Option<TempDir>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its private directory (config, pid file, logs), when it has one.
    pub fn dir(&self) -> Option<&Path> {
        self.home.as_ref().map(TempDir::path)
    }

    /// The process and its direct children (e.g. nginx's master and workers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid()];
        pids.extend(children(self.pid()));
        pids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The master first: killed after its workers, an nginx master forks new ones in between,
        // and those outlive the test. Stopped, it forks nothing while its children are listed
        // (once it is gone they belong to init); SIGKILL then ends it, stopped or not.
        let master = self.pid() as i32;
        // SAFETY: kill(2) on processes this test started.
        unsafe { libc::kill(master, libc::SIGSTOP) };
        let workers = children(self.pid());
        // SAFETY: as above.
        unsafe {
            libc::kill(master, libc::SIGKILL);
            for pid in workers {
                libc::kill(pid as i32, libc::SIGCONT);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting {what} ({cmd:?}): {e} (cargo xtask setup installs it)")
        })
}

/// The body every static test site serves.
pub const BODY: &str = "hello from slowpoke's tests\n";

/// How to run Debian's nginx.
#[derive(Clone, Debug)]
pub struct Nginx {
    /// Worker processes (with a master process when > 0; 0 = a single process, no master).
    pub workers: u32,
    /// Extra directives inside `server { ... }` (default: serve `BODY` at /hello.txt).
    pub server_extra: String,
    /// Extra directives inside `http { ... }` (e.g. an `upstream`).
    pub http_extra: String,
}

impl Default for Nginx {
    fn default() -> Self {
        Nginx {
            workers: 1,
            server_extra: String::new(),
            http_extra: String::new(),
        }
    }
}

impl Nginx {
    /// Starts nginx on a free port with a private prefix; waits until it listens and, with a
    /// master, until all workers are up.
    pub fn start(&self) -> Proc {
        let dir = TempDir::new("nginx");
        std::fs::write(dir.path().join("hello.txt"), BODY).expect("writing hello.txt");
        let (child, port) = start_listening("nginx", |port| {
            let d = dir.path().display();
            let (master, workers) = if self.workers == 0 {
                ("off", 1)
            } else {
                ("on", self.workers)
            };
            let conf = format!(
                "daemon off; master_process {master}; worker_processes {workers}; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {http_extra}\n\
             server {{ listen 127.0.0.1:{port}; root {d}; {server_extra} }} }}\n",
                http_extra = self.http_extra,
                server_extra = self.server_extra,
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).expect("writing nginx.conf");
            spawn(
                Command::new("/usr/sbin/nginx")
                    .arg("-p")
                    .arg(dir.path())
                    .arg("-c")
                    .arg(dir.path().join("nginx.conf"))
                    .args(["-e", "stderr"]),
                "/usr/sbin/nginx",
            )
        });
        if self.workers > 0 {
            let master = child.id();
            wait_for(Duration::from_secs(15), "nginx workers", || {
                (children(master).len() == self.workers as usize).then_some(())
            });
        }
        Proc {
            child,
            port,
            home: Some(dir),
        }
    }
}

/// Writes `dir/nginx-workers.sh`, a script that gives the running `nginx` (started by
/// [`Nginx::start`], with a master) N worker processes: `sh nginx-workers.sh N` rewrites its
/// `worker_processes`, reloads it (SIGHUP to the master) and returns once exactly N workers run
/// and none of the old ones is still shutting down (exit 1 after 30 s). A real, live change
/// for `slowpoke what-if --truth-cmd`.
pub fn nginx_workers_script(nginx: &Proc, dir: &Path) -> PathBuf {
    let home = nginx
        .dir()
        .expect("an nginx started by Nginx::start has a directory");
    let text = format!(
        r#"#!/bin/sh
set -e
n=$1; m=$(cat '{pid}')
sed -i "s/worker_processes [0-9]*;/worker_processes $n;/" '{conf}'
kill -HUP "$m"
i=0
until [ "$(ps --ppid "$m" -o args= | grep -c 'worker process$')" = "$n" ] && ! ps --ppid "$m" -o args= | grep -q 'shutting down'; do
  i=$((i+1)); [ $i -lt 1200 ] || {{ echo "nginx did not reload to $n workers" >&2; exit 1; }}
  sleep 0.025
done
"#,
        pid = home.join("nginx.pid").display(),
        conf = home.join("nginx.conf").display()
    );
    let path = dir.join("nginx-workers.sh");
    std::fs::write(&path, text).expect("writing nginx-workers.sh");
    path
}

/// The live (not shutting down) worker processes of an nginx master.
pub fn nginx_live_workers(master: u32) -> usize {
    children(master)
        .into_iter()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("worker process") && !c.contains("shutting down")
            })
        })
        .count()
}

/// `python3 -m http.server` on a free port (HTTP/1.0: one request per connection), serving
/// `BODY` at /hello.txt.
pub fn python_http_server() -> Proc {
    let dir = TempDir::new("python");
    std::fs::write(dir.path().join("hello.txt"), BODY).expect("writing hello.txt");
    let (child, port) = start_listening("python3 -m http.server", |port| {
        spawn(
            Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                ])
                .arg(dir.path()),
            "python3 -m http.server",
        )
    });
    Proc {
        child,
        port,
        home: Some(dir),
    }
}

/// Debian's memcached on a free loopback port with `threads` worker threads.
pub fn memcached(threads: u32) -> Proc {
    let (child, port) = start_listening("memcached", |port| {
        spawn(
            Command::new("/usr/bin/memcached").args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-t",
                &threads.to_string(),
                "-m",
                "64",
                "-u",
                "root",
            ]),
            "/usr/bin/memcached",
        )
    });
    Proc {
        child,
        port,
        home: None,
    }
}

/// Stores `key` = `value` in the memcached at `port` (text protocol).
pub fn memcached_set(port: u16, key: &str, value: &[u8]) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to memcached");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut msg = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
    msg.extend_from_slice(value);
    msg.extend_from_slice(b"\r\n");
    stream.write_all(&msg).expect("memcached set");
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .expect("memcached answer");
    assert_eq!(line.trim(), "STORED", "memcached set {key}");
}

/// A real two-tier app from Debian's servers: nginx (`workers` workers) answering `GET /item`
/// from memcached (key `/item`: 32 KiB of text by default; `memcached_pass` opens a connection
/// per request) and gzip-compressing it for clients that send
/// `Accept-Encoding: gzip` — so that nginx's CPU work per request dominates and a 1-worker nginx
/// is the app's bottleneck.
pub struct NginxMemcached {
    pub nginx: Proc,
    pub memcached: Proc,
    /// URL of the cached page.
    pub url: String,
}

impl NginxMemcached {
    pub fn start(workers: u32) -> NginxMemcached {
        NginxMemcached::with_page(workers, 32 * 1024)
    }

    /// The same app with a page of `page_bytes` (nginx's CPU work per request grows with it).
    pub fn with_page(workers: u32, page_bytes: usize) -> NginxMemcached {
        NginxMemcached::with_location(workers, page_bytes, GZIP_6)
    }

    /// The same app with `directives` in the page's `location` instead of [`GZIP_6`] (the
    /// real-server evaluation's per-request savings: another compression level, body rewrites).
    pub fn with_location(workers: u32, page_bytes: usize, directives: &str) -> NginxMemcached {
        let memcached = memcached(2);
        memcached_set(memcached.port, "/item", &compressible_text(page_bytes));
        let nginx = Nginx {
            workers,
            server_extra: format!(
                "location /item {{ set $memcached_key $uri; memcached_pass 127.0.0.1:{}; \
                 default_type text/plain; {directives} }}",
                memcached.port
            ),
            http_extra: String::new(),
        }
        .start();
        let url = format!("http://127.0.0.1:{}/item", nginx.port);
        NginxMemcached {
            nginx,
            memcached,
            url,
        }
    }
}

/// The page's default treatment: gzip at level 6 for clients that accept it.
pub const GZIP_6: &str = "gzip on; gzip_comp_level 6; gzip_min_length 0; gzip_types text/plain;";

/// `len` bytes of text made of a few words in a fixed pseudo-random order (compresses ~4:1).
pub fn compressible_text(len: usize) -> Vec<u8> {
    const WORDS: [&str; 10] = [
        "cart", "checkout", "shop", "item", "price", "slow", "poke", "service", "kernel", "visit",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut x: u32 = 12345;
    while out.len() < len {
        // A linear congruential generator: reproducible, no dependency.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(WORDS[(x >> 16) as usize % WORDS.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// Debian's haproxy in front of `backend_port`, on a free port.
pub fn haproxy(backend_port: u16) -> Proc {
    let dir = TempDir::new("haproxy");
    let (child, port) = start_listening("haproxy", |port| {
        let conf = format!(
            "global\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
         backend be\n  http-reuse always\n  server s1 127.0.0.1:{backend_port}\n"
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, conf).expect("writing haproxy.cfg");
        spawn(
            Command::new("/usr/sbin/haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&cfg),
            "/usr/sbin/haproxy",
        )
    });
    Proc {
        child,
        port,
        home: Some(dir),
    }
}

/// Debian's apache2 proxying `/x` to `backend` (`http://HOST:PORT`) with `mod_proxy_http`;
/// `mpm` `worker` (one child process, a thread per connection, so per request) or `prefork`
/// (four processes, one request each at a time): servers that serve a request start to finish
/// on one thread (request ages, docs/tail.md). [`Proc::pids`] lists the parent and children.
pub fn apache_proxy(backend: &str, mpm: &str) -> Proc {
    let dir = TempDir::new("apache2");
    let (child, port) = start_listening("apache2", |port| {
        let d = dir.path().display();
        let modules = "/usr/lib/apache2/modules";
        let processes = if mpm == "prefork" {
            "StartServers 4\nServerLimit 4\nMaxRequestWorkers 4\n"
        } else {
            "StartServers 1\nServerLimit 1\nThreadsPerChild 8\nMaxRequestWorkers 8\n\
             MinSpareThreads 1\nMaxSpareThreads 8\n"
        };
        let conf = format!(
            "LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so\n\
             LoadModule authz_core_module {modules}/mod_authz_core.so\n\
             LoadModule proxy_module {modules}/mod_proxy.so\n\
             LoadModule proxy_http_module {modules}/mod_proxy_http.so\n\
             ServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
             ErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex posixsem\n\
             User www-data\nGroup www-data\n{processes}MaxConnectionsPerChild 0\n\
             KeepAlive On\nMaxKeepAliveRequests 0\nProxyPass \"/x\" \"{backend}/x\"\n"
        );
        spawn_apache(dir.path(), &conf)
    });
    let children_expected = if mpm == "prefork" { 4 } else { 1 };
    let parent = child.id();
    wait_for(Duration::from_secs(15), "apache2's children", || {
        (children(parent).len() >= children_expected).then_some(())
    });
    Proc {
        child,
        port,
        home: Some(dir),
    }
}

/// Debian's apache2 in the foreground on `conf`, written to `dir`/httpd.conf.
fn spawn_apache(dir: &Path, conf: &str) -> Child {
    let cfg = dir.join("httpd.conf");
    std::fs::write(&cfg, conf).expect("writing httpd.conf");
    spawn(
        Command::new("/usr/sbin/apache2")
            .arg("-f")
            .arg(&cfg)
            .arg("-DFOREGROUND"),
        "/usr/sbin/apache2",
    )
}

/// One HTTP/1.0 GET on a fresh connection, read to EOF: (status, bytes sent, bytes received).
pub fn get_once(port: u16, path: &str) -> (u16, u64, u64) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("sending");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reading");
    (
        status_of(&response),
        request.len() as u64,
        response.len() as u64,
    )
}

fn status_of(response: &[u8]) -> u16 {
    std::str::from_utf8(response.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// An HTTP/1.1 keep-alive client on one connection, counting the bytes it moves.
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
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        KeepAlive {
            reader: BufReader::new(stream),
            sent: 0,
            received: 0,
        }
    }

    /// GET `path`; returns the status. Reads exactly the response (Content-Length bodies).
    pub fn get(&mut self, path: &str) -> u16 {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("sending");
        self.sent += request.len() as u64;
        let mut status = 0;
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("reading headers");
            assert!(n > 0, "the server closed the connection");
            self.received += n as u64;
            if first {
                status = status_of(line.as_bytes());
                first = false;
            } else if line == "\r\n" {
                break;
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("reading the body");
        self.received += length as u64;
        status
    }
}

/// A binary of this workspace (`slowpoke`, `slowpoke-agent`...) next to the running test binary
/// (`target/<profile>/deps/..` -> `target/<profile>/NAME`). `cargo xtask test` builds them all
/// before running the tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return candidate;
        }
        dir = d.parent();
    }
    panic!(
        "binary `{name}` not found near {}: run `cargo build --bins` first",
        exe.display()
    );
}

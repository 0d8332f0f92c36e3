//! Real servers and a second network namespace for the request-age tests: Debian's apache2
//! (threads serving one request each, `mod_proxy` calling a backend) and an emulated leaf service
//! in its own network namespace behind a veth pair.

use std::{
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use slowpoke_testkit::{TempDir, children, start_listening, wait_for};

/// Namespace and interface names: apart from testkit's cluster (`spk-*`), whose tests may run
/// at the same time on this machine and clean up what they think is theirs.
const NETNS: &str = "spages";
const HOST_DEV: &str = "spages0";
const PEER_DEV: &str = "spages1";
pub const HOST_IP: &str = "10.204.0.1";
pub const PEER_IP: &str = "10.204.0.2";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the root one by a veth pair ([`HOST_IP`] ↔ [`PEER_IP`]),
/// removed on drop.
pub struct Netns;

impl Netns {
    pub fn create() -> Netns {
        // Leftovers of an interrupted run.
        let _ = ip(&["link", "del", HOST_DEV]);
        let _ = ip(&["netns", "del", NETNS]);
        let steps: &[&[&str]] = &[
            &["netns", "add", NETNS],
            &[
                "link", "add", HOST_DEV, "type", "veth", "peer", "name", PEER_DEV,
            ],
            &["link", "set", PEER_DEV, "netns", NETNS],
            &["addr", "add", "10.204.0.1/24", "dev", HOST_DEV],
            &["link", "set", HOST_DEV, "up"],
            &["-n", NETNS, "addr", "add", "10.204.0.2/24", "dev", PEER_DEV],
            &["-n", NETNS, "link", "set", PEER_DEV, "up"],
            &["-n", NETNS, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("creating the test namespace: {e}"));
        }
        Netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", HOST_DEV]);
        let _ = ip(&["netns", "del", NETNS]);
    }
}

/// An emulated app started by `slowpoke-emu run` inside [`Netns`], bound to [`PEER_IP`].
pub struct AppInNetns {
    child: Child,
    _stdin: ChildStdin,
    _dir: TempDir,
    /// Service name -> (pids, service port, control port).
    pub services: std::collections::BTreeMap<String, (Vec<u32>, u16, u16)>,
}

impl AppInNetns {
    pub fn start(_netns: &Netns, topology: &str) -> AppInNetns {
        let dir = TempDir::new("ages-netns-app");
        let file = dir.path().join("topology.json");
        std::fs::write(&file, topology).expect("writing the topology");
        let ns = std::fs::File::open(format!("/run/netns/{NETNS}")).expect("the test namespace");
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(slowpoke_emu::client::find_binary());
        cmd.arg("run")
            .arg(&file)
            .args(["--bind", PEER_IP, "--exit-on-stdin-eof"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only setns on a descriptor open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = cmd.spawn().expect("starting slowpoke-emu in the namespace");
        drop(ns);
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the emulator's ready line");
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the emulator's ready line {line:?}: {e}"));
        let services = info["services"]
            .as_object()
            .expect("services")
            .iter()
            .map(|(name, s)| {
                let pids = s["pids"]
                    .as_array()
                    .expect("pids")
                    .iter()
                    .map(|p| p.as_u64().expect("pid") as u32)
                    .collect();
                let port = |k: &str| s[k].as_u64().expect("port") as u16;
                (name.clone(), (pids, port("port"), port("control_port")))
            })
            .collect();
        AppInNetns {
            child,
            _stdin: stdin,
            _dir: dir,
            services,
        }
    }
}

impl Drop for AppInNetns {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child; it stops its services on SIGTERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Debian's apache2 with the worker MPM (one child process, a thread per connection and so per
/// request) proxying `/x` to `backend` (`http://HOST:PORT`) with `mod_proxy_http`.
pub struct Apache {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Apache {
    pub fn proxy(backend: &str, mpm: &str) -> Apache {
        let dir = TempDir::new("ages-apache");
        let d = dir.path().display().to_string();
        let (child, port) = start_listening("apache2", |port| {
            let modules = "/usr/lib/apache2/modules";
            let conf = format!(
                "LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so\n\
                 LoadModule authz_core_module {modules}/mod_authz_core.so\n\
                 LoadModule proxy_module {modules}/mod_proxy.so\n\
                 LoadModule proxy_http_module {modules}/mod_proxy_http.so\n\
                 ServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
                 ErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex posixsem\n\
                 User www-data\nGroup www-data\nStartServers 1\nServerLimit 1\n\
                 ThreadsPerChild 8\nMaxRequestWorkers 8\nMinSpareThreads 1\nMaxSpareThreads 8\n\
                 MaxConnectionsPerChild 0\nKeepAlive On\nMaxKeepAliveRequests 0\n\
                 ProxyPass \"/x\" \"{backend}/x\"\n"
            );
            let conf = if mpm == "prefork" {
                conf.replace("ThreadsPerChild 8\n", "")
                    .replace(
                        "StartServers 1\nServerLimit 1\n",
                        "StartServers 4\nServerLimit 4\n",
                    )
                    .replace("MaxRequestWorkers 8", "MaxRequestWorkers 4")
                    .replace("MinSpareThreads 1\nMaxSpareThreads 8\n", "")
            } else {
                conf
            };
            std::fs::write(dir.path().join("httpd.conf"), conf).expect("writing httpd.conf");
            Command::new("/usr/sbin/apache2")
                .arg("-f")
                .arg(dir.path().join("httpd.conf"))
                .arg("-DFOREGROUND")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting /usr/sbin/apache2 (cargo xtask setup installs it)")
        });
        Apache {
            child,
            port,
            _dir: dir,
        }
    }

    /// The parent and its children (the processes that serve).
    pub fn pids(&self, children_expected: usize) -> Vec<u32> {
        let parent = self.child.id();
        let kids = wait_for(Duration::from_secs(10), "apache2's children", || {
            let kids = children(parent);
            (kids.len() >= children_expected).then_some(kids)
        });
        std::iter::once(parent).chain(kids).collect()
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child; apache2 stops its children on SIGTERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

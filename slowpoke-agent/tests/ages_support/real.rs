//! A second network namespace for the request-age tests: an emulated app in its own network
//! namespace behind a veth pair (the real servers come from the test kit).

use std::{
    io::{BufRead as _, BufReader},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    process::{Child, ChildStdin, Command, Stdio},
};

use slowpoke_testkit::TempDir;

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

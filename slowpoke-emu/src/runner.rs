//! `slowpoke-emu run`: binds every service's sockets, starts one child process per service, prints the
//! [`AppInfo`] line once all serve, and tears everything down on SIGINT/SIGTERM (or stdin EOF when asked).
//! With [`RunOptions::cluster`] it runs one node's part of the app (see [`crate::placement`]).
//!
//! No orphans: children sit in their own process group (killed as a whole) and have `PR_SET_PDEATHSIG`
//! = SIGKILL, so they die with the runner even when the runner is killed with SIGKILL.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use crate::placement::{CLUSTER_BASE_PORT, ClusterArgs, ClusterRun};
use crate::service::{CONTROL_FD, SERVICE_FD, ServeSpec};
use crate::topology::{self, Set, Topology};

/// The line `slowpoke-emu run` prints once every service listens (fixed keys: `services`, `entry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppInfo {
    pub services: BTreeMap<String, ServiceInfo>,
    /// URL of the entry endpoint, e.g. `http://127.0.0.1:41234/home`.
    pub entry: String,
    /// Pid of the runner process (killing it kills every service).
    #[serde(default)]
    pub runner_pid: u32,
    /// Host used in URLs (the bind address, or loopback for a wildcard bind).
    #[serde(default)]
    pub host: String,
}

/// Where one service runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub pids: Vec<u32>,
    /// Service port (traffic here counts as visits).
    pub port: u16,
    /// Control port (`GET /stats`, `PUT /set`; not a visit).
    pub control_port: u16,
    /// The node it runs on (cluster runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Host part of its URLs when it differs per service (cluster runs: its node's address);
    /// absent: the app's `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `threads` at start (live changes show in the control `/stats`).
    #[serde(default)]
    pub threads: u32,
    /// Worker threads of the service's runtime: the most `threads` can be raised to live.
    #[serde(default)]
    pub max_threads: u32,
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub bind: IpAddr,
    /// Service `i` (in name order) gets `base_port + i`, its control port `base_port + n + i`; None = ephemeral.
    pub base_port: Option<u16>,
    /// Exit (stopping all services) when stdin reaches EOF: lets a parent that dies take the app with it.
    pub exit_on_stdin_eof: bool,
    /// Also write the [`AppInfo`] JSON to this file (for `slowpoke-emu set --app FILE`).
    pub info_file: Option<std::path::PathBuf>,
    /// Log filter handed to every service process (`serve --log-level`), e.g. `info` or `warn`.
    pub log_level: String,
    /// Run only one node's part of the app (`--cluster F --node N`): `bind` is then that node's
    /// address and the ports are fixed (`base_port`, default [`CLUSTER_BASE_PORT`]).
    pub cluster: Option<ClusterArgs>,
}

/// Host part of URLs for a bind address.
pub fn url_host(bind: IpAddr) -> String {
    match bind {
        IpAddr::V4(a) if a.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V6(a) if a.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

fn listen(bind: IpAddr, port: u16, what: &str) -> Result<TcpListener> {
    let l = TcpListener::bind((bind, port)).with_context(|| {
        format!("cannot listen on {}:{port} for {what}; free that port or choose another --base-port / \"port\"", url_host(bind))
    })?;
    // std listens with a small backlog; a load generator opening hundreds of connections at once needs more.
    // SAFETY: re-calling listen(2) on a listening socket only changes its backlog.
    unsafe { libc::listen(l.as_raw_fd(), 4096) };
    Ok(l)
}

enum Event {
    Signal,
    StdinEof,
    ChildExit(String, std::process::ExitStatus),
}

/// Runs the topology (with `sets` applied) until SIGINT/SIGTERM. `label` names the topology in errors.
#[expect(
    clippy::too_many_lines,
    reason = "the app's lifecycle in order (bind, spawn, wait until ready, report, wait for a signal, stop); the phases share the children and the signal mask and are not split into functions yet"
)]
pub fn run(mut topo: Topology, label: &str, sets: &[Set], opts: &RunOptions) -> Result<()> {
    for s in sets {
        topo.apply(s).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    }
    topo.validate_named(label)?;
    let cluster = opts
        .cluster
        .as_ref()
        .map(|c| ClusterRun::new(&topo, &c.file, &c.node, &c.place))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
    let (bind, base_port) = match &cluster {
        Some(c) => (
            c.node.address,
            Some(opts.base_port.unwrap_or(CLUSTER_BASE_PORT)),
        ),
        None => (opts.bind, opts.base_port),
    };
    let is_local = |name: &str| cluster.as_ref().is_none_or(|c| c.is_local(name));

    // Block the signals we wait for before any thread exists, so only the waiting thread sees them.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGHUP);
    mask.thread_block().context("blocking signals")?;

    let n = topo.services.len();
    let host = url_host(bind);
    // Planned ports (0 = ephemeral); a cluster run plans them all, so it knows the other nodes'.
    let mut ports = BTreeMap::new();
    for (i, (name, svc)) in topo.services.iter().enumerate() {
        let port = svc
            .port
            .or(base_port.map(|b| b.saturating_add(i as u16)))
            .unwrap_or(0);
        let cport = base_port.map_or(0, |b| b.saturating_add((n + i) as u16));
        ports.insert(name.clone(), (port, cport));
    }
    let mut listeners = BTreeMap::new();
    for (name, &(port, cport)) in &ports {
        if !is_local(name) {
            continue;
        }
        let s = listen(
            bind,
            port,
            &format!("service {name} ({label}: services.{name})"),
        )?;
        let c = listen(bind, cport, &format!("the control port of service {name}"))?;
        listeners.insert(name.clone(), (s, c));
    }
    for (k, (s, c)) in &listeners {
        ports.insert(k.clone(), (s.local_addr()?.port(), c.local_addr()?.port()));
    }
    // Where a service is reached: its node's address in a cluster run, else this runner's host.
    let host_of = |name: &str| {
        cluster
            .as_ref()
            .map_or_else(|| host.clone(), |c| url_host(c.address(name)))
    };

    let exe = std::env::current_exe().context("locating the slowpoke-emu binary")?;
    let (tx, rx) = mpsc::channel::<Event>();
    let me = std::process::id() as i32;
    let mut pgid: i32 = 0;
    let mut infos = BTreeMap::new();
    let mut ready_rx = Vec::new();
    for (name, svc) in &topo.services {
        if !is_local(name) {
            continue;
        }
        let peers = svc
            .endpoints
            .values()
            .flat_map(|e| e.calls.iter())
            .map(|c| {
                let to = format!("{}:{}", host_of(&c.service), ports[&c.service].0);
                (c.service.clone(), to)
            })
            .collect();
        let spec = ServeSpec {
            name: name.clone(),
            threads: svc.threads,
            max_threads: svc.runtime_threads(),
            sampling: topo.sampling,
            serving: svc.serving,
            endpoints: svc.endpoints.clone(),
            peers,
        };
        let (sl, cl) = &listeners[name];
        let (sfd, cfd) = (sl.as_raw_fd(), cl.as_raw_fd());
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--name")
            .arg(name)
            .arg("--log-level")
            .arg(&opts.log_level)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd.process_group(pgid);
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close, prctl, getppid, sigprocmask, _exit) between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let a = libc::fcntl(sfd, libc::F_DUPFD, 10);
                let b = libc::fcntl(cfd, libc::F_DUPFD, 10);
                if a < 0 || b < 0 || libc::dup2(a, SERVICE_FD) < 0 || libc::dup2(b, CONTROL_FD) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(a);
                libc::close(b);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The runner may have died before prctl took effect.
                if libc::getppid() != me {
                    libc::_exit(1);
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&raw mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting service {name} ({})", exe.display()))?;
        let pid = child.id();
        if pgid == 0 {
            pgid = pid as i32;
        }
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&serde_json::to_vec(&spec)?)
            .with_context(|| format!("sending the spec to service {name}"))?;
        drop(stdin);
        let stdout = child.stdout.take().expect("piped");
        let (rtx, rrx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = rtx.send(matches!(first, Some(Ok(ref l)) if l == "ready"));
            for _ in lines {}
        });
        ready_rx.push((name.clone(), rrx));
        let txc = tx.clone();
        let cname = name.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = txc.send(Event::ChildExit(cname, status));
            }
        });
        let (port, control_port) = ports[name];
        infos.insert(
            name.clone(),
            ServiceInfo {
                pids: vec![pid],
                port,
                control_port,
                node: cluster.as_ref().map(|c| c.node.name.clone()),
                host: cluster.as_ref().map(|_| host.clone()),
                threads: svc.threads,
                max_threads: svc.runtime_threads(),
            },
        );
    }
    drop(listeners);

    let kill_all = |sig: i32| {
        if pgid > 0 {
            // SAFETY: plain kill(2) on the process group made of our own children.
            unsafe { libc::kill(-pgid, sig) };
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, rrx) in ready_rx {
        let left = deadline.saturating_duration_since(Instant::now());
        if !matches!(rrx.recv_timeout(left), Ok(true)) {
            kill_all(libc::SIGKILL);
            bail!("service {name} did not start (see its messages above)");
        }
    }

    let entry_port = ports[&topo.entry.service].0;
    let info = AppInfo {
        services: infos,
        entry: format!(
            "http://{}:{entry_port}/{}",
            host_of(&topo.entry.service),
            topo.entry.endpoint
        ),
        runner_pid: me as u32,
        host,
    };
    let line = serde_json::to_string(&info)?;
    if let Some(f) = &opts.info_file {
        std::fs::write(f, format!("{line}\n"))
            .with_context(|| format!("writing {}", f.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
    }

    let txs = tx.clone();
    std::thread::spawn(move || {
        if let Ok(sig) = mask.wait() {
            let _ = (sig, txs.send(Event::Signal));
        }
    });
    if opts.exit_on_stdin_eof {
        let txe = tx.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let _ = txe.send(Event::StdinEof);
        });
    }
    drop(tx);

    let result = match rx.recv() {
        Ok(Event::Signal | Event::StdinEof) | Err(_) => Ok(()),
        Ok(Event::ChildExit(name, status)) => Err(anyhow::anyhow!(
            "service {name} exited unexpectedly ({status}); stopping the app"
        )),
    };
    kill_all(libc::SIGTERM);
    let mut alive = info.services.len() - usize::from(result.is_err());
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive > 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::ChildExit(..)) => alive -= 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    kill_all(libc::SIGKILL);
    if let Some(f) = &opts.info_file {
        let _ = std::fs::remove_file(f);
    }
    result
}

/// Loads `path` and runs it (see [`run`]).
pub fn run_file(path: &Path, sets: &[Set], opts: &RunOptions) -> Result<()> {
    let topo = topology::load(path)?;
    run(topo, &path.display().to_string(), sets, opts)
}

//! Library side for the coordinator and tests: start an emulated app as a `slowpoke-emu run` child
//! ([`RunningApp`]); its services' stats and live settings go through [`crate::control`].
//!
//! What the runner and its services log on their stderr is passed on to this process's `tracing`
//! subscriber at the level each line carries (target `slowpoke_emu::app`), and the last lines are kept for
//! the error when the app fails to start.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use slowpoke_api::cluster::ClusterFile;
use tracing::Level;

use crate::placement::PlaceArg;
pub use crate::runner::{AppInfo, ServiceInfo};
use crate::service::ServiceStats;
use crate::topology::{Set, TopologySource};

/// Environment variable naming the `slowpoke-emu` binary to run (overrides the search).
pub const BIN_ENV: &str = "SLOWPOKE_EMU_BIN";

/// Finds the `slowpoke-emu` binary: `$SLOWPOKE_EMU_BIN`, else next to the current executable (or one directory
/// up, which covers `target/debug/deps/*` test binaries), else `slowpoke-emu` on `PATH`.
/// In integration tests of this crate pass `env!("CARGO_BIN_EXE_slowpoke-emu")` through [`BIN_ENV`] or
/// [`StartOptions::binary`].
pub fn find_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let cand = d.join("slowpoke-emu");
            if cand.is_file() {
                return cand;
            }
            dir = d.parent();
        }
    }
    PathBuf::from("slowpoke-emu")
}

/// Everything [`RunningApp::start_with`] accepts.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub topology: TopologySource,
    pub sets: Vec<Set>,
    /// Bind address of every service (`127.0.0.1` by default; unused by a cluster run).
    pub bind: String,
    /// Fixed ports from here (see `slowpoke-emu run --base-port`); None = ephemeral ports (a cluster
    /// run: [`crate::placement::CLUSTER_BASE_PORT`]).
    pub base_port: Option<u16>,
    /// Run the app across the nodes of a cluster description instead of on this machine.
    pub cluster: Option<ClusterStart>,
    /// The binary to run; None = [`find_binary`].
    pub binary: Option<PathBuf>,
    /// How long to wait for every service to listen.
    pub timeout: Duration,
}

/// A cluster run: one `slowpoke-emu run --cluster FILE --node N` per node that hosts services, each
/// entering its node itself (test bed) and calling the other nodes' services over the network.
#[derive(Debug, Clone)]
pub struct ClusterStart {
    /// The cluster description (`slowpoke_api::cluster::ClusterFile`).
    pub file: PathBuf,
    /// Placements over the topology's `node` fields (e.g. from [`crate::placement::spread`]).
    pub place: Vec<PlaceArg>,
}

impl StartOptions {
    pub fn new(topology: impl Into<TopologySource>) -> Self {
        StartOptions {
            topology: topology.into(),
            sets: Vec::new(),
            bind: "127.0.0.1".into(),
            base_port: None,
            cluster: None,
            binary: None,
            timeout: Duration::from_mins(1),
        }
    }
}

/// An emulated application running in child processes (one runner, or one per node of a cluster
/// run). Dropping it stops every service; if this process dies each runner sees its stdin close and
/// stops its services too.
#[derive(Debug)]
pub struct RunningApp {
    pub services: BTreeMap<String, ServiceInfo>,
    /// URL of the entry endpoint.
    pub entry: String,
    /// The line the runner printed (a cluster run: the runners' lines merged, `runner_pid` and
    /// `host` of the first).
    pub info: AppInfo,
    runners: Vec<Runner>,
    temp_file: Option<PathBuf>,
}

/// One `slowpoke-emu run` child: stopping it (also on drop) stops its services.
#[derive(Debug)]
struct Runner {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl RunningApp {
    /// Starts `topology` (a path or a [`crate::Topology`]) with `sets` applied, services bound to `bind`, on
    /// ephemeral ports. Returns once every service listens.
    pub fn start(
        topology: impl Into<TopologySource>,
        sets: &[Set],
        bind: &str,
    ) -> Result<RunningApp> {
        let mut o = StartOptions::new(topology);
        o.sets = sets.to_vec();
        bind.clone_into(&mut o.bind);
        Self::start_with(&o)
    }

    /// [`RunningApp::start`] with every option.
    pub fn start_with(opts: &StartOptions) -> Result<RunningApp> {
        let (path, temp_file) = match &opts.topology {
            TopologySource::File(p) => (p.clone(), None),
            TopologySource::Inline(t) => {
                let p = std::env::temp_dir().join(format!(
                    "slowpoke-emu-{}-{}.json",
                    std::process::id(),
                    TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
                ));
                crate::topology::save(t, &p)?;
                (p.clone(), Some(p))
            }
        };
        let mut app = RunningApp {
            services: BTreeMap::new(),
            entry: String::new(),
            info: AppInfo {
                services: BTreeMap::new(),
                entry: String::new(),
                runner_pid: 0,
                host: String::new(),
            },
            runners: Vec::new(),
            temp_file,
        };
        let bin = opts.binary.clone().unwrap_or_else(find_binary);
        let mut common = vec!["run".into(), path.clone().into_os_string()];
        common.push("--exit-on-stdin-eof".into());
        if let Some(b) = opts.base_port {
            common.extend(["--base-port".into(), b.to_string().into()]);
        }
        for s in &opts.sets {
            common.extend(["--set".into(), s.to_string().into()]);
        }
        let per_runner: Vec<Vec<std::ffi::OsString>> = match &opts.cluster {
            None => vec![vec!["--bind".into(), opts.bind.clone().into()]],
            Some(c) => cluster_runner_args(&path, c)?,
        };
        for extra in per_runner {
            let (runner, info) = Runner::start(&bin, &common, &extra, &path, opts.timeout)?;
            app.runners.push(runner);
            if app.info.runner_pid == 0 {
                app.info.runner_pid = info.runner_pid;
                app.info.host = info.host;
                app.info.entry = info.entry;
            }
            app.info.services.extend(info.services);
        }
        app.services = app.info.services.clone();
        app.entry = app.info.entry.clone();
        Ok(app)
    }

    /// Pid of the (first) runner process.
    pub fn runner_pid(&self) -> u32 {
        self.info.runner_pid
    }

    /// Every pid of every service.
    pub fn pids(&self) -> Vec<u32> {
        self.services
            .values()
            .flat_map(|s| s.pids.iter().copied())
            .collect()
    }

    /// `http://host:port` of a service (its service port; a cluster run: at its node's address).
    pub fn service_url(&self, service: &str) -> Result<String> {
        let s = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service {service:?} in this app"))?;
        Ok(format!("http://{}:{}", self.info.host_of(s), s.port))
    }

    /// `GET /stats` of one service.
    pub fn stats(&self, service: &str) -> Result<ServiceStats> {
        self.control(service)?.stats()
    }

    /// `GET /stats` of every service.
    pub fn all_stats(&self) -> Result<BTreeMap<String, ServiceStats>> {
        self.services
            .keys()
            .map(|s| Ok((s.clone(), self.stats(s)?)))
            .collect()
    }

    /// Stops every service and waits for the runners (also done by `Drop`).
    pub fn stop(mut self) -> Result<()> {
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        // All runners stop their services at once; then each is waited for.
        for r in &mut self.runners {
            r.signal_stop();
        }
        for r in &mut self.runners {
            r.shutdown();
        }
        if let Some(p) = self.temp_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The per-runner arguments of a cluster run: one runner per node that hosts services, in the
/// description's order.
fn cluster_runner_args(path: &Path, c: &ClusterStart) -> Result<Vec<Vec<std::ffi::OsString>>> {
    let topo = crate::topology::load(path)?;
    let file = ClusterFile::load(&c.file).map_err(anyhow::Error::msg)?;
    let placement = crate::placement::place(&topo, &file, &c.place).map_err(anyhow::Error::msg)?;
    Ok(file
        .nodes
        .iter()
        .filter(|n| placement.values().any(|p| *p == n.name))
        .map(|n| {
            let mut a: Vec<std::ffi::OsString> = vec![
                "--cluster".into(),
                c.file.clone().into_os_string(),
                "--node".into(),
                n.name.clone().into(),
            ];
            for p in &c.place {
                a.extend(["--place".into(), p.to_string().into()]);
            }
            a
        })
        .collect())
}

impl Runner {
    /// Starts `bin common extra` and waits for its JSON line.
    fn start(
        bin: &Path,
        common: &[std::ffi::OsString],
        extra: &[std::ffi::OsString],
        path: &Path,
        timeout: Duration,
    ) -> Result<(Runner, AppInfo)> {
        let mut cmd = Command::new(bin);
        cmd.args(common).args(extra);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (set {} to the slowpoke-emu binary if it is elsewhere)",
                bin.display(),
                super::client::BIN_ENV
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let runner_pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                forward_log_line(runner_pid, &line);
                let mut t = tail.lock().expect("tail");
                t.push(line);
                if t.len() > 50 {
                    t.remove(0);
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let mut runner = Runner {
            child,
            stdin,
            stderr_tail,
        };
        let what = || {
            let extra: Vec<_> = extra.iter().map(|a| a.to_string_lossy()).collect();
            format!("slowpoke-emu run {} {}", path.display(), extra.join(" "))
        };
        let deadline = Instant::now() + timeout;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(l)) if !l.trim().is_empty() => break l,
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // EOF: the runner failed; let its stderr arrive.
                    let status = runner.wait_exit(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_millis(50));
                    bail!(
                        "{} failed ({}): {}",
                        what(),
                        status.map_or_else(|| "still running".into(), |s| s.to_string()),
                        runner.stderr_tail.lock().expect("tail").join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        bail!("{}: services not listening after {timeout:?}", what());
                    }
                }
            }
        };
        let info: AppInfo = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the runner's line {line:?}"))?;
        Ok((runner, info))
    }

    fn wait_exit(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Closes stdin and sends SIGTERM: the runner stops its services and exits.
    fn signal_stop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: SIGTERM to our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        }
    }

    fn shutdown(&mut self) {
        self.signal_stop();
        if matches!(self.child.try_wait(), Ok(None))
            && self.wait_exit(Duration::from_secs(5)).is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Re-emits one stderr line of the runner (or of a service: they share it) through `tracing`, at the level
/// the emulator's own subscriber wrote into it (see [`line_level`]).
fn forward_log_line(runner_pid: u32, line: &str) {
    let line = line.trim();
    match line_level(line) {
        Level::ERROR => tracing::error!(target: "slowpoke_emu::app", runner_pid, "{line}"),
        Level::WARN => tracing::warn!(target: "slowpoke_emu::app", runner_pid, "{line}"),
        Level::INFO => tracing::info!(target: "slowpoke_emu::app", runner_pid, "{line}"),
        Level::DEBUG => tracing::debug!(target: "slowpoke_emu::app", runner_pid, "{line}"),
        Level::TRACE => tracing::trace!(target: "slowpoke_emu::app", runner_pid, "{line}"),
    }
}

/// The level a `tracing-subscriber` line carries (`2026-01-01T00:00:00Z  WARN target: message`); a line
/// without one (a panic message, the fatal error) is a warning, since the emulator writes to stderr only
/// to report something.
fn line_level(line: &str) -> Level {
    line.split_whitespace()
        .take(2)
        .find_map(|w| match w {
            "ERROR" => Some(Level::ERROR),
            "WARN" => Some(Level::WARN),
            "INFO" => Some(Level::INFO),
            "DEBUG" => Some(Level::DEBUG),
            "TRACE" => Some(Level::TRACE),
            _ => None,
        })
        .unwrap_or(Level::WARN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_lines_keep_the_level_the_emulator_gave_them() {
        let cases = [
            (
                "2026-12-05T20:34:47.546192Z  INFO slowpoke_emu: set s0.work.cpu_us=5",
                Level::INFO,
            ),
            (
                "2026-12-05T20:34:47.5Z ERROR slowpoke_emu::service: x",
                Level::ERROR,
            ),
            (
                " DEBUG slowpoke_emu::service: without a timestamp",
                Level::DEBUG,
            ),
            ("slowpoke-emu: error: service a did not start", Level::WARN),
            (
                "thread 'main' panicked at src/x.rs:1:1: INFO is not a level here",
                Level::WARN,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(line_level(line), want, "{line}");
        }
    }
}

//! Library side for the coordinator and tests: start an emulated app as a `slowpoke-emu run` child
//! ([`RunningApp`]); its services' stats and live settings go through [`crate::control`].
//!
//! What the runner and its services log on their stderr is passed on to this process's `tracing`
//! subscriber at the level each line carries (target `slowpoke_emu::app`), and the last lines are kept for
//! the error when the app fails to start.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use tracing::Level;

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
    /// Bind address of every service (`127.0.0.1` by default).
    pub bind: String,
    /// Fixed ports from here (see `slowpoke-emu run --base-port`); None = ephemeral ports.
    pub base_port: Option<u16>,
    /// The binary to run; None = [`find_binary`].
    pub binary: Option<PathBuf>,
    /// How long to wait for every service to listen.
    pub timeout: Duration,
}

impl StartOptions {
    pub fn new(topology: impl Into<TopologySource>) -> Self {
        StartOptions {
            topology: topology.into(),
            sets: Vec::new(),
            bind: "127.0.0.1".into(),
            base_port: None,
            binary: None,
            timeout: Duration::from_mins(1),
        }
    }
}

/// An emulated application running in child processes. Dropping it stops every service; if this process dies
/// the runner sees its stdin close and stops them too.
#[derive(Debug)]
pub struct RunningApp {
    pub services: BTreeMap<String, ServiceInfo>,
    /// URL of the entry endpoint.
    pub entry: String,
    /// The full line the runner printed.
    pub info: AppInfo,
    runner: Child,
    stdin: Option<ChildStdin>,
    temp_file: Option<PathBuf>,
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
        let bin = opts.binary.clone().unwrap_or_else(find_binary);
        let mut cmd = Command::new(&bin);
        cmd.arg("run")
            .arg(&path)
            .arg("--bind")
            .arg(&opts.bind)
            .arg("--exit-on-stdin-eof");
        if let Some(b) = opts.base_port {
            cmd.arg("--base-port").arg(b.to_string());
        }
        for s in &opts.sets {
            cmd.arg("--set").arg(s.to_string());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut runner = cmd.spawn().with_context(|| {
            format!(
                "starting {} (set {} to the slowpoke-emu binary if it is elsewhere)",
                bin.display(),
                super::client::BIN_ENV
            )
        })?;
        let stdin = runner.stdin.take();
        let stdout = runner.stdout.take().expect("piped");
        let stderr = runner.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let tail = stderr_tail.clone();
        let runner_pid = runner.id();
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
        let mut app = RunningApp {
            services: BTreeMap::new(),
            entry: String::new(),
            info: AppInfo {
                services: BTreeMap::new(),
                entry: String::new(),
                runner_pid: runner.id(),
                host: String::new(),
            },
            runner,
            stdin,
            temp_file,
            stderr_tail,
        };
        let deadline = Instant::now() + opts.timeout;
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(l)) if !l.trim().is_empty() => break l,
                Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // EOF: the runner failed; let its stderr arrive.
                    let status = app.wait_exit(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_millis(50));
                    bail!(
                        "slowpoke-emu run {} failed ({}): {}",
                        path.display(),
                        status.map_or_else(|| "still running".into(), |s| s.to_string()),
                        app.stderr_tail.lock().expect("tail").join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        bail!(
                            "slowpoke-emu run {}: services not listening after {:?}",
                            path.display(),
                            opts.timeout
                        );
                    }
                }
            }
        };
        let info: AppInfo = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the runner's line {line:?}"))?;
        app.services = info.services.clone();
        app.entry = info.entry.clone();
        app.info = info;
        Ok(app)
    }

    fn wait_exit(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Ok(Some(s)) = self.runner.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pid of the runner process.
    pub fn runner_pid(&self) -> u32 {
        self.runner.id()
    }

    /// Every pid of every service.
    pub fn pids(&self) -> Vec<u32> {
        self.services
            .values()
            .flat_map(|s| s.pids.iter().copied())
            .collect()
    }

    /// `http://host:port` of a service (its service port).
    pub fn service_url(&self, service: &str) -> Result<String> {
        let s = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service {service:?} in this app"))?;
        Ok(format!("http://{}:{}", self.info.host, s.port))
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

    /// Stops every service and waits for the runner (also done by `Drop`).
    pub fn stop(mut self) -> Result<()> {
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        self.stdin.take();
        if matches!(self.runner.try_wait(), Ok(None)) {
            // SAFETY: SIGTERM to our own child; the runner stops its services and exits.
            unsafe { libc::kill(self.runner.id() as i32, libc::SIGTERM) };
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.runner.kill();
                let _ = self.runner.wait();
            }
        }
        if let Some(p) = self.temp_file.take() {
            let _ = std::fs::remove_file(p);
        }
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

//! Library side for the coordinator and tests: start an emulated app as a `slowpoke-emu run` child
//! ([`RunningApp`]), read its per-service stats and change endpoint settings live.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};

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
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
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

    /// `http://host:control_port` of a service.
    pub fn control_url(&self, service: &str) -> Result<String> {
        let s = self
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service {service:?} in this app"))?;
        Ok(format!("http://{}:{}", self.info.host, s.control_port))
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
        stats_at(&self.control_url(service)?)
    }

    /// `GET /stats` of every service.
    pub fn all_stats(&self) -> Result<BTreeMap<String, ServiceStats>> {
        self.services
            .keys()
            .map(|s| Ok((s.clone(), self.stats(s)?)))
            .collect()
    }

    /// Changes an endpoint setting of a running service (see [`set_live`]); endpoint `"*"` changes a service
    /// setting (`threads`), like [`RunningApp::set_service_live`].
    pub fn set_live(&self, service: &str, endpoint: &str, key: &str, value: f64) -> Result<()> {
        set_live_at(&self.control_url(service)?, endpoint, key, value)
    }

    /// Changes a service setting of a running service live: `threads` (its CPU parallelism, an integer in
    /// 1..=`max_threads`), effective for the next visits. See [`set_service_live`].
    pub fn set_service_live(&self, service: &str, key: &str, value: f64) -> Result<()> {
        set_service_live_at(&self.control_url(service)?, key, value)
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

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

fn base(control: &str) -> String {
    let c = control.trim_end_matches('/');
    if c.starts_with("http://") {
        c.to_owned()
    } else {
        format!("http://{c}")
    }
}

/// `GET /stats` from a control address (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`).
pub fn stats_at(control: &str) -> Result<ServiceStats> {
    let url = format!("{}/stats", base(control));
    let resp = agent()
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body)?;
    serde_json::from_str(&body).with_context(|| format!("parsing {url}"))
}

/// `PUT /set` on a control address: endpoint `endpoint`, setting `key` (e.g. `cpu_us`) to `value`. Endpoint
/// `"*"` (or `""`) means a service setting (see [`set_service_live_at`]).
pub fn set_live_at(control: &str, endpoint: &str, key: &str, value: f64) -> Result<()> {
    if endpoint.is_empty() || endpoint == "*" {
        return set_service_live_at(control, key, value);
    }
    let body = serde_json::json!({ "endpoint": endpoint, "key": key, "value": value });
    put_set(control, &format!("{endpoint}.{key}={value}"), &body)
}

/// `PUT /set` of a service setting on a control address: `threads` (1..=`max_threads`).
pub fn set_service_live_at(control: &str, key: &str, value: f64) -> Result<()> {
    let body = serde_json::json!({ "key": key, "value": value });
    put_set(control, &format!("{key}={value}"), &body)
}

fn put_set(control: &str, what: &str, body: &serde_json::Value) -> Result<()> {
    let url = format!("{}/set", base(control));
    match agent().put(&url).send_json(body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            let text = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("PUT {url} {what}: HTTP {code}: {text}")
        }
        Err(e) => Err(anyhow!(e)).with_context(|| format!("PUT {url}")),
    }
}

/// Changes a service setting of a running app live: `threads`, the service's CPU parallelism (how many of its
/// visits do their `cpu_us` / `lock_us` / `sleep_us` work at once), an integer in 1..=`max_threads` (the
/// topology's `max_threads`, default `threads`: the runtime's worker count, fixed at start). Out-of-range values
/// are refused naming service, value and range, and leave the service as it was.
pub fn set_service_live(app: &RunningApp, service: &str, key: &str, value: f64) -> Result<()> {
    app.set_service_live(service, key, value)
}

/// Changes an endpoint setting (`cpu_us`, `lock_us`, `sleep_us`, `wait_us`, `response_bytes`) of a service of
/// a running app, effective from the next visit. Endpoint `"*"` changes a service setting instead
/// (`threads`, see [`set_service_live`]); `max_threads` needs a restart with `--set`.
pub fn set_live(
    app: &RunningApp,
    service: &str,
    endpoint: &str,
    key: &str,
    value: f64,
) -> Result<()> {
    app.set_live(service, endpoint, key, value)
}

/// Reads the [`AppInfo`] line a runner printed (or wrote with `--info-file`).
pub fn read_app_info(path: &Path) -> Result<AppInfo> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| anyhow!("{}: empty", path.display()))?;
    serde_json::from_str(line)
        .with_context(|| format!("{}: not a slowpoke-emu run line", path.display()))
}

/// [`set_live`] for an app known only by its [`AppInfo`] (e.g. read from a file).
pub fn set_live_info(
    info: &AppInfo,
    service: &str,
    endpoint: &str,
    key: &str,
    value: f64,
) -> Result<()> {
    let s = info
        .services
        .get(service)
        .ok_or_else(|| anyhow!("no service {service:?} in this app"))?;
    let host = if info.host.is_empty() {
        "127.0.0.1"
    } else {
        &info.host
    };
    set_live_at(
        &format!("http://{host}:{}", s.control_port),
        endpoint,
        key,
        value,
    )
}

/// [`set_service_live`] for an app known only by its [`AppInfo`].
pub fn set_service_live_info(info: &AppInfo, service: &str, key: &str, value: f64) -> Result<()> {
    set_live_info(info, service, "*", key, value)
}

/// [`stats_at`] for an app known by its [`AppInfo`].
pub fn stats_info(info: &AppInfo, service: &str) -> Result<ServiceStats> {
    let s = info
        .services
        .get(service)
        .ok_or_else(|| anyhow!("no service {service:?} in this app"))?;
    let host = if info.host.is_empty() {
        "127.0.0.1"
    } else {
        &info.host
    };
    stats_at(&format!("http://{host}:{}", s.control_port))
}

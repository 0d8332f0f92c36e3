//! `cargo xtask schemathesis`: schemathesis (from `PyPI`, pinned, in a venv under `target/`)
//! against the `OpenAPI` documents both servers serve (`GET /v1/openapi.json` of a real agent and
//! a real `slowpoke serve` in front of it); docs/security/fuzz.md.
//!
//! Schemathesis sends whatever the schemas allow, and wrong things on purpose: selectors naming any
//! pid, comm or cgroup, plans with delays, experiments with any `entry` URL. So the run is boxed
//! in twice, and the box is checked before it starts:
//! - **A network namespace of its own** (`unshare --net`, loopback only): the servers, the load
//!   an experiment starts and schemathesis reach nothing but each other. A generated `entry` of
//!   another host fails with "network unreachable" instead of sending load off the machine.
//! - **An agent that cannot stop anything real.** With `--allow-cgroup` (an agent that has it) the
//!   agent is confined to a scratch cgroup holding one `sleep` of ours; without it the agent gets
//!   `--max-delay-ms 0`, so every plan with a delay is refused and nothing is ever stopped. The
//!   preflight proves whichever holds: a selector of our `sleep` registers, and then `pid 1` is
//!   refused (confined) or a 1 ns plan is refused (no delays). After the run the `sleep` must not
//!   be stopped and the agent must still answer.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, run_logged, setup, target_dir};

const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Debian's Python (package `python3-venv`), not whatever `python3` is first on PATH.
const PYTHON: &str = "/usr/bin/python3";
/// Inside the namespace nothing else listens: the servers take their default ports.
const AGENT: &str = "127.0.0.1:7171";
const COORDINATOR: &str = "127.0.0.1:7272";
/// Test cases per operation in `cargo xtask test` (kept under a minute in all).
const SMOKE_EXAMPLES: u32 = 10;

/// What a run does.
pub struct Options {
    /// Test cases per API operation.
    pub max_examples: u32,
    /// Schemathesis's random seed (fixed by default: a run repeats; change it to explore).
    pub seed: u64,
    /// More arguments for `schemathesis run`.
    pub extra: Vec<String>,
    /// Where the whole run's output goes instead of the terminal (the run of `xtask test`).
    pub log: Option<PathBuf>,
}

impl Options {
    /// The short run of `cargo xtask test`.
    pub fn smoke(root: &Path) -> Options {
        Options {
            max_examples: SMOKE_EXAMPLES,
            seed: 13,
            extra: Vec::new(),
            log: Some(target_dir(root).join("schemathesis/smoke.log")),
        }
    }
}

/// The venv holding the pinned schemathesis (idempotent, part of `setup`).
pub fn ensure_installed(root: &Path) -> Result<PathBuf> {
    let venv = target_dir(root).join("schemathesis/venv");
    let bin = venv.join("bin/schemathesis");
    if let Ok(v) = setup::output(Command::new(&bin).arg("--version"))
        && v.contains(SCHEMATHESIS_VERSION)
    {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing schemathesis {SCHEMATHESIS_VERSION} into {}",
        venv.display()
    );
    run(Command::new(PYTHON)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    ]))?;
    Ok(bin)
}

/// Builds the servers and re-runs this task inside a fresh network namespace.
pub fn run_boxed(root: &Path, opts: &Options, build: bool) -> Result<()> {
    ensure_installed(root)?;
    if build {
        run(cargo(root).args(["build", "--all-targets", "--features", crate::TEST_FEATURES]))?;
    }
    let started = Instant::now();
    // Through cargo rather than `current_exe`: the build above may have replaced this binary.
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new("unshare");
    cmd.current_dir(root)
        .args(["--net", "--", &cargo_bin])
        .args(["run", "--quiet", "--offline", "--package", "xtask", "--"])
        .args(["schemathesis", "--in-namespace", "--no-build"])
        .arg(format!("--max-examples={}", opts.max_examples))
        .arg(format!("--seed={}", opts.seed))
        .arg("--")
        .args(&opts.extra);
    let r = match &opts.log {
        Some(log) => run_logged(&mut cmd, log).and_then(|status| {
            if status.success() {
                eprintln!("xtask: schemathesis: both APIs conform");
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "schemathesis failed ({status}): see {}",
                    log.display()
                ))
            }
        }),
        None => run(&mut cmd),
    };
    eprintln!(
        "xtask: schemathesis took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    r.context("schemathesis found problems (or could not run): see its output")
}

/// The run itself, already inside the namespace.
pub fn run_inside(root: &Path, opts: &Options) -> Result<()> {
    run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    let dir = target_dir(root).join("schemathesis/run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("state"))?;
    let token = random_token()?;
    let token_file = dir.join("token");
    write_private(&token_file, &token)?;
    let bin = target_dir(root).join("debug");
    let schemathesis = target_dir(root).join("schemathesis/venv/bin/schemathesis");

    let mut procs = Procs::default();
    let member = procs.spawn(Command::new("sleep").arg("infinity"), "sleep")?;
    let confined = supports_allow_cgroup(&bin.join("slowpoke-agent"))?;
    if confined {
        procs.cgroup = Some(ScratchCgroup::new(member)?);
    }
    let mut agent = Command::new(bin.join("slowpoke-agent"));
    agent
        .args(["--listen", AGENT, "--log-level", "warn", "--token-file"])
        .arg(&token_file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stderr(log_file(&dir, "agent.log")?);
    match &procs.cgroup {
        Some(cg) => agent.arg("--allow-cgroup").arg(&cg.dir),
        None => agent.args(["--max-delay-ms", "0"]),
    };
    procs.spawn(&mut agent, "slowpoke-agent")?;
    let client = Client::new(&token);
    client.wait_ready(&format!("http://{AGENT}/v1/health"), &mut procs)?;
    let mut coordinator = Command::new(bin.join("slowpoke"));
    coordinator
        .args([
            "serve",
            "--listen",
            COORDINATOR,
            "--agent",
            &format!("http://{AGENT}"),
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--agent-token-file")
        .arg(&token_file)
        .arg("--results-dir")
        .arg(dir.join("results"))
        .stderr(log_file(&dir, "coordinator.log")?);
    procs.spawn(&mut coordinator, "slowpoke serve")?;
    client.wait_ready(&format!("http://{COORDINATOR}/v1/agents"), &mut procs)?;

    preflight(&client, member, confined)?;
    let mut failed = Vec::new();
    for (name, addr) in [("agent", AGENT), ("coordinator", COORDINATOR)] {
        let mut cmd = Command::new(&schemathesis);
        // Its cache (`.schemathesis/`) goes to the run directory, not the checkout.
        cmd.current_dir(&dir)
            .arg("--config-file")
            .arg(root.join("xtask/schemathesis.toml"))
            .env("SLOWPOKE_SCHEMATHESIS_TOKEN", &token)
            .arg("run")
            .arg(format!("http://{addr}/v1/openapi.json"))
            .arg(format!("--max-examples={}", opts.max_examples))
            .arg(format!("--seed={}", opts.seed))
            .args(["--request-timeout", "20", "--report", "junit"])
            .arg("--report-dir")
            .arg(dir.join(format!("report-{name}")))
            .args(&opts.extra);
        // Not `run`: its echo of the command would show the token in the environment.
        eprintln!(
            "xtask: schemathesis against the {name} (http://{addr}, token from $SLOWPOKE_SCHEMATHESIS_TOKEN)"
        );
        match cmd.status() {
            Ok(s) if s.success() => {}
            Ok(s) => failed.push(format!("the {name} ({s})")),
            Err(e) => failed.push(format!(
                "the {name} (cannot start {}: {e})",
                schemathesis.display()
            )),
        }
    }
    postflight(&client, member, &mut procs)?;
    drop(procs);
    if !failed.is_empty() {
        bail!(
            "schemathesis failed against: {}\n(server logs in {}, JUnit reports in report-*/)",
            failed.join("; "),
            dir.display()
        );
    }
    eprintln!(
        "xtask: schemathesis: both APIs conform ({})",
        if confined {
            "agent confined by --allow-cgroup"
        } else {
            "agent with --max-delay-ms 0"
        }
    );
    Ok(())
}

/// Proves the box before schemathesis runs: the agent serves (our `sleep` registers) and cannot
/// stop anything real.
fn preflight(client: &Client, member: u32, confined: bool) -> Result<()> {
    let svc = format!("http://{AGENT}/v1/services/preflight");
    let (code, body) = client.send("PUT", &svc, &format!(r#"{{"pids":[{member}]}}"#))?;
    if code != 200 {
        bail!("preflight: the agent refused our own process {member} ({code}: {body})");
    }
    if confined {
        let (code, body) = client.send("PUT", &svc, r#"{"pids":[1]}"#)?;
        if !(400..500).contains(&code) {
            bail!(
                "preflight: the agent took pid 1 although confined by --allow-cgroup ({code}: {body}); \
                 not running schemathesis against it"
            );
        }
    } else {
        let plan = r#"{"services":{"preflight":{"delay_per_visit_ns":1}}}"#;
        let (code, body) = client.send("PUT", &format!("http://{AGENT}/v1/slowdown"), plan)?;
        if code != 400 {
            bail!(
                "preflight: the agent took a plan with a delay despite --max-delay-ms 0 ({code}: {body}); \
                 not running schemathesis against it"
            );
        }
    }
    let (code, body) = client.send("DELETE", &svc, "")?;
    if code != 204 {
        bail!("preflight: DELETE of the preflight service answered {code}: {body}");
    }
    Ok(())
}

/// After the run: both servers still up, our `sleep` not stopped.
fn postflight(client: &Client, member: u32, procs: &mut Procs) -> Result<()> {
    procs.check_alive()?;
    for url in [
        format!("http://{AGENT}/v1/health"),
        format!("http://{COORDINATOR}/v1/agents"),
    ] {
        let (code, body) = client.send("GET", &url, "")?;
        if code != 200 {
            bail!("after schemathesis, GET {url} answered {code}: {body}");
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{member}/stat"))?;
    let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
    if state == Some("T") {
        bail!("after schemathesis our `sleep` ({member}) is stopped: the agent's box leaked");
    }
    Ok(())
}

/// Whether this agent build has `--allow-cgroup` (added by issue #13's protected processes).
fn supports_allow_cgroup(agent: &Path) -> Result<bool> {
    let help = setup::output(Command::new(agent).arg("--help"))
        .with_context(|| format!("{} --help (build it first)", agent.display()))?;
    Ok(help.contains("--allow-cgroup"))
}

/// A bearer token of 32 random bytes, hex.
pub(crate) fn random_token() -> Result<String> {
    Ok(slowpoke_testkit::cluster_agent::random_token()?)
}

pub(crate) fn write_private(path: &Path, text: &str) -> Result<()> {
    slowpoke_testkit::cluster_agent::write_private(path, text)
        .with_context(|| format!("writing {}", path.display()))
}

fn log_file(dir: &Path, name: &str) -> Result<std::fs::File> {
    let path = dir.join(name);
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
}

/// The processes this run started, ended (SIGTERM, then SIGKILL) on every exit path, newest
/// first; then the scratch cgroup is removed, once nothing it confined runs any more.
#[derive(Default)]
struct Procs {
    children: Vec<(Child, &'static str)>,
    cgroup: Option<ScratchCgroup>,
}

impl Procs {
    fn spawn(&mut self, cmd: &mut Command, name: &'static str) -> Result<u32> {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = child.id();
        self.children.push((child, name));
        Ok(pid)
    }

    /// Fails when a process of ours has exited (a server that crashed under the run).
    fn check_alive(&mut self) -> Result<()> {
        for (child, name) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited ({status}); its log is under target/schemathesis/run/");
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    /// Newest first: the coordinator removes its plans before the agent goes.
    fn drop(&mut self) {
        for (child, _) in self.children.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.cgroup.take());
    }
}

/// A cgroup v2 directory holding our `sleep`, the only process a confined agent may reach.
struct ScratchCgroup {
    root: PathBuf,
    dir: PathBuf,
}

impl ScratchCgroup {
    fn new(member: u32) -> Result<ScratchCgroup> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(2) == Some(&"cgroup2"))
            .map(|f| PathBuf::from(f[1]))
            .context("no cgroup2 mount (see /proc/mounts): --allow-cgroup needs one")?;
        let dir = root.join(format!("slowpoke-schemathesis-{}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cg = ScratchCgroup { root, dir };
        std::fs::write(cg.dir.join("cgroup.procs"), member.to_string())
            .with_context(|| format!("moving {member} into {}", cg.dir.display()))?;
        Ok(cg)
    }
}

impl Drop for ScratchCgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// HTTP with the run's token.
struct Client {
    auth: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(token: &str) -> Client {
        Client {
            auth: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(20))
                .build(),
        }
    }

    /// Status and body of one call (`body` empty: none).
    fn send(&self, method: &str, url: &str, body: &str) -> Result<(u16, String)> {
        let req = self
            .agent
            .request(method, url)
            .set("Authorization", &self.auth);
        let answer = if body.is_empty() {
            req.call()
        } else {
            req.set("Content-Type", "application/json")
                .send_string(body)
        };
        let resp = match answer {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("{method} {url}"))),
        };
        let code = resp.status();
        Ok((code, resp.into_string().unwrap_or_default()))
    }

    /// Polls `url` until it answers 200 (30 s), failing early when a server exited.
    fn wait_ready(&self, url: &str, procs: &mut Procs) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            procs.check_alive()?;
            if matches!(self.send("GET", url, ""), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer 200 within 30 s; logs under target/schemathesis/run/");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

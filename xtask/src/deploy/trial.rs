//! The agent's image run under podman with exactly what the `DaemonSet` asks for (the flags
//! [`super::podman`] generates from deploy/kubernetes/agent-daemonset.yaml), then: its probes
//! answer, one what-if from the host runs through it against nginx + memcached, and nothing it
//! stopped stays stopped after `podman stop` (SIGTERM) or `podman kill` (SIGKILL).

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use slowpoke_testkit::NginxMemcached;

use super::{image::Which, podman, podman_cmd};
use crate::{setup, target_dir};

/// The podman container of a trial (removed before and after).
const CONTAINER: &str = "slowpoke-agent-trial";
/// The Secret the `DaemonSet` mounts its token from.
const TOKEN_SECRET: &str = "slowpoke-agent-token";
/// The state directory the `DaemonSet` mounts from the node; the trial mounts its own in its
/// place: the node's /run/slowpoke is where `slowpoke` and the tests on this machine look for
/// a running agent, and a trial must not become theirs.
const NODE_STATE_DIR: &str = "/run/slowpoke";
/// The agent's API as the `DaemonSet`'s `--listen` puts it on the host network.
const AGENT_PORT: u16 = 7171;
const AGENT_URL: &str = "http://127.0.0.1:7171";
/// Per-visit delay of the plan the stop checks apply: long enough that a member is found
/// stopped at once under load.
const STOP_CHECK_DELAY_NS: u64 = 20_000_000;

/// What a trial saw, for the log and the report.
pub struct Outcome {
    pub flags: Vec<String>,
    pub whatif: serde_json::Value,
    pub after_stop: String,
    pub after_kill: String,
}

pub fn run(root: &Path) -> Result<Outcome> {
    let dir = target_dir(root).join("deploy/trial");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let yaml_path = root.join("deploy/kubernetes/agent-daemonset.yaml");
    let yaml = std::fs::read_to_string(&yaml_path)
        .with_context(|| format!("reading {}", yaml_path.display()))?;
    let host = podman::Host {
        secret_dirs: [(
            TOKEN_SECRET.to_owned(),
            dir.join("secrets").join(TOKEN_SECRET),
        )]
        .into(),
        remap: [(NODE_STATE_DIR.to_owned(), dir.join("run-slowpoke"))].into(),
    };
    let spec = podman::from_daemonset(&yaml, &host)?;
    if spec.image != Which::Agent.image() {
        bail!(
            "{} runs {}, but `cargo xtask image` builds {}",
            yaml_path.display(),
            spec.image,
            Which::Agent.image()
        );
    }
    let token = provide_secrets(&spec)?;
    for d in &spec.create_dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // The DaemonSet's ports are the node's: on this machine they must be free.
    if std::net::TcpStream::connect(("127.0.0.1", AGENT_PORT)).is_ok() {
        bail!(
            "something on this machine already listens on port {AGENT_PORT}, which the DaemonSet's \
             agent takes on the host network: stop it (`ss -ltnp 'sport = {AGENT_PORT}'` names it)"
        );
    }
    let running = App(NginxMemcached::start(1));
    let app = &running.0;
    let container = Container::start(&spec)?;
    let api = Api::new(&token);
    container.wait_ready(&spec.probes)?;
    let whatif = what_if(root, app, &token)?;
    let web = app.nginx.pids();
    let after_stop = stop_check(&container, &api, app, &web, "stop")?;
    container.restart(&spec.probes)?;
    let after_kill = stop_check(&container, &api, app, &web, "kill")?;
    Ok(Outcome {
        flags: spec.args,
        whatif,
        after_stop,
        after_kill,
    })
}

/// Writes each Secret's `token` file with the mode the `DaemonSet` asks for (the kubelet's job);
/// returns the token.
fn provide_secrets(spec: &podman::PodmanRun) -> Result<String> {
    let token = format!("trial-{:x}", rand_u64()?);
    for s in &spec.secrets {
        std::fs::create_dir_all(&s.host_dir)
            .with_context(|| format!("creating {}", s.host_dir.display()))?;
        let file = s.host_dir.join("token");
        std::fs::write(&file, &token).with_context(|| format!("writing {}", file.display()))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(s.mode))?;
    }
    Ok(token)
}

fn rand_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The running container; removed on drop.
struct Container {
    name: &'static str,
    stop_timeout: u32,
}

impl Container {
    fn start(spec: &podman::PodmanRun) -> Result<Container> {
        let _ = podman_cmd().args(["rm", "--force", CONTAINER]).output();
        let mut cmd = podman_cmd();
        cmd.args(["run", "--detach", &format!("--name={CONTAINER}")])
            .args(super::runtime_flags()?)
            .args(&spec.args);
        eprintln!("xtask: {cmd:?}");
        setup::output(&mut cmd).context("starting the agent's container")?;
        Ok(Container {
            name: CONTAINER,
            stop_timeout: spec.stop_timeout,
        })
    }

    /// `podman start` again after a stop or kill: same container, same flags.
    fn restart(&self, probes: &[(String, u16)]) -> Result<()> {
        setup::output(podman_cmd().args(["start", self.name]))?;
        self.wait_ready(probes)
    }

    /// Polls the probes (as the kubelet would, on the node's address) until each answers 200.
    fn wait_ready(&self, probes: &[(String, u16)]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        for (path, port) in probes {
            let url = format!("http://127.0.0.1:{port}{path}");
            loop {
                match ureq::get(&url).timeout(Duration::from_secs(2)).call() {
                    Ok(r) if r.status() == 200 => break,
                    _ if Instant::now() > deadline => {
                        bail!(
                            "the agent's container never answered {url}: {}",
                            self.logs()
                        )
                    }
                    _ => {}
                }
                if self.state()? != "running" {
                    bail!("the agent's container exited: {}", self.logs());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    fn state(&self) -> Result<String> {
        let out = setup::output(podman_cmd().args([
            "inspect",
            "--format",
            "{{.State.Status}}",
            self.name,
        ]))?;
        Ok(out.trim().to_owned())
    }

    fn exit_code(&self) -> Result<String> {
        let out = setup::output(podman_cmd().args([
            "inspect",
            "--format",
            "{{.State.ExitCode}}",
            self.name,
        ]))?;
        Ok(out.trim().to_owned())
    }

    fn logs(&self) -> String {
        podman_cmd()
            .args(["logs", "--tail", "30", self.name])
            .output()
            .map_or_else(
                |e| format!("(podman logs failed: {e})"),
                |o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                },
            )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman_cmd()
            .args(["rm", "--force", "--time", "0", self.name])
            .output();
    }
}

/// The agent's API over TCP with the token, as the coordinator calls it.
struct Api {
    auth: String,
}

impl Api {
    fn new(token: &str) -> Api {
        Api {
            auth: format!("Bearer {token}"),
        }
    }

    fn put(&self, path: &str, body: &serde_json::Value) -> Result<()> {
        ureq::put(&format!("{AGENT_URL}{path}"))
            .set("Authorization", &self.auth)
            .timeout(Duration::from_secs(10))
            .send_json(body)
            .with_context(|| format!("PUT {path} on the containerized agent"))?;
        Ok(())
    }
}

/// `slowpoke what-if` from the host through the containerized agent (TCP, token).
fn what_if(root: &Path, app: &NginxMemcached, token: &str) -> Result<serde_json::Value> {
    let token_file = target_dir(root).join("deploy/trial/client-token");
    std::fs::write(&token_file, token)?;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
    let mut cmd = Command::new(target_dir(root).join("release/slowpoke"));
    cmd.args(["what-if", "--agent", AGENT_URL, "--agent-token-file"])
        .arg(&token_file)
        .arg(format!("--service=web=port:{}", app.nginx.port))
        .arg(format!("--service=cache=port:{}", app.memcached.port))
        .args(["--entry", &app.url, "--header", "Accept-Encoding: gzip"])
        .args(["--target", "web", "--speedup", "2x"])
        .args(["--warmup", "1", "--duration", "1", "--repetitions", "3"])
        .arg("--results-dir")
        .arg(target_dir(root).join("deploy/trial/results"))
        .arg("--json");
    eprintln!("xtask: {cmd:?}");
    let out = setup::output(&mut cmd).context("the what-if through the containerized agent")?;
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).with_context(|| format!("the what-if's JSON: {out}"))?;
    for key in ["baseline_rps", "predicted_rps"] {
        if json[key].as_f64().is_none_or(|v| v <= 0.0) {
            bail!("the what-if through the container gave no {key}: {out}");
        }
    }
    Ok(json)
}

/// Load on the app, a plan that keeps nginx stopped much of the time, then `podman stop` or
/// `podman kill` while a member is stopped: every member must run again.
fn stop_check(
    container: &Container,
    api: &Api,
    app: &NginxMemcached,
    members: &[u32],
    how: &str,
) -> Result<String> {
    api.put(
        "/v1/services/web",
        &serde_json::json!({ "ports": [app.nginx.port] }),
    )?;
    api.put(
        "/v1/slowdown",
        &serde_json::json!({
            "mode": "pause",
            "lease_ms": 60_000,
            "services": { "web": { "delay_per_visit_ns": STOP_CHECK_DELAY_NS } },
        }),
    )?;
    let mut load = Load::start(&app.url)?;
    let seen = wait_until(Duration::from_secs(10), || {
        members.iter().copied().find(|&p| stopped(p))
    })
    .with_context(|| format!("no member of web was seen stopped under the plan ({how} check)"))?;
    let started = Instant::now();
    match how {
        "stop" => {
            setup::output(podman_cmd().args(["stop", container.name]))?;
        }
        _ => {
            setup::output(podman_cmd().args(["kill", "--signal", "KILL", container.name]))?;
        }
    }
    let gone = started.elapsed();
    // The guardian resumes within milliseconds of the agent's death; a second is generous.
    let resumed = wait_until(Duration::from_secs(1), || {
        (!members.iter().any(|&p| stopped(p))).then_some(())
    });
    load.stop();
    let states: BTreeMap<u32, char> = members
        .iter()
        .map(|&p| (p, slowpoke_testkit::proc_state(p).unwrap_or('?')))
        .collect();
    if resumed.is_none() {
        bail!(
            "after `podman {how}` (container gone in {gone:?}) members stay stopped: {states:?}; \
             the agent's log: {}",
            container.logs()
        );
    }
    let code = container.exit_code()?;
    if how == "stop" && code != "0" {
        bail!(
            "`podman stop` (SIGTERM): the agent exited {code}, not 0: {}",
            container.logs()
        );
    }
    Ok(format!(
        "pid {seen} was stopped; `podman {how}` took {gone:?} (grace {} s), exit code {code}; \
         then every member running: {states:?}",
        container.stop_timeout
    ))
}

/// The app, nginx's master killed first when it goes: testkit's `Proc` kills the workers
/// before the master, which can fork a new worker in between that outlives the trial (seen:
/// orphaned nginx workers after two runs).
struct App(NginxMemcached);

impl Drop for App {
    fn drop(&mut self) {
        let master = self.0.nginx.pid();
        let workers = slowpoke_testkit::children(master);
        // SAFETY: kill(2) on the nginx processes this trial started.
        unsafe {
            libc::kill(master as i32, libc::SIGKILL);
            for w in workers {
                libc::kill(w as i32, libc::SIGKILL);
            }
        }
    }
}

fn stopped(pid: u32) -> bool {
    slowpoke_testkit::is_stopped(pid)
}

/// Polls `f` every 2 ms until it answers or `limit` passes.
fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `wrk` against the app until stopped.
struct Load(Child);

impl Load {
    fn start(url: &str) -> Result<Load> {
        let child = Command::new("wrk")
            .args(["-t1", "-c8", "-d120s", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting wrk (cargo xtask setup installs it)")?;
        Ok(Load(child))
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the trial's files are (for messages).
pub fn dir(root: &Path) -> PathBuf {
    target_dir(root).join("deploy/trial")
}

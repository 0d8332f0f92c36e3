//! The systemd units run for real: systemd is not this machine's init, so `systemd-nspawn`
//! boots this machine's own Debian (`/usr` read-only, a scratch root, a private network) with
//! systemd 252 as its PID 1, the release binaries at `/usr/local/bin` and both units installed.
//! Then: the agent's unit starts with all its sandboxing and loads its kernel programs; a member
//! stopped at `systemctl stop` runs again (the agent's SIGTERM path); one stopped when the agent
//! gets SIGKILL runs again (the guardian, which `KillMode=process` leaves alive) and the unit
//! restarts (`Restart=on-failure`); the coordinator's unit serves its page and sees the agent.
//!
//! What this cannot show: visits and in-kernel pauses. The container has a PID namespace of its
//! own, and the kernel programs see host process ids while the agent registers the container's
//! (the reason the `DaemonSet` asks for `hostPID`), so the members here are stopped by hand.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::image::Which;
use crate::{setup, target_dir};

const MACHINE: &str = "slowpoke-units";
const UNITS: [&str; 2] = ["slowpoke-agent.service", "slowpoke-coordinator.service"];

/// What the units did, for the log and the report.
pub struct Outcome {
    pub features: String,
    pub after_stop: String,
    pub after_kill: String,
    pub coordinator: String,
}

pub fn run(root: &Path) -> Result<Outcome> {
    let dir = target_dir(root).join("deploy/unit-trial");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let bin = dir.join("usr-local/bin");
    std::fs::create_dir_all(&bin)?;
    for w in Which::ALL {
        std::fs::copy(
            target_dir(root).join("release").join(w.binary()),
            bin.join(w.binary()),
        )
        .with_context(|| format!("copying the release {} (build it first)", w.binary()))?;
    }
    // /etc/slowpoke as the units find it on a configured machine: the cluster description
    // (the units make the tokens at their first start).
    let etc = dir.join("etc-slowpoke");
    std::fs::create_dir_all(&etc)?;
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o700))?;
    std::fs::write(
        etc.join("cluster.json"),
        r#"{"nodes":[{"name":"n1","address":"127.0.0.1","agent":"http://127.0.0.1:7171","token_file":"/etc/slowpoke/agent-token"}]}"#,
    )?;
    let machine = Machine::boot(root, &dir)?;
    let init = machine.init;
    wait(Duration::from_secs(45), "the agent's unit active", || {
        Ok(inside(init, &["systemctl", "is-active", "slowpoke-agent"])?.trim() == "active")
    })
    .with_context(|| machine.log_tail())?;
    let health = healthy(init)?;
    let features = &health["features"];
    if features["kernel"] != "on" {
        bail!("the agent under its unit runs without its kernel programs: {health}");
    }
    let member = start_member(init)?;
    let register = format!(r#"{{"pids":[{member}]}}"#);
    agent_call(init, "PUT", "/v1/services/member", Some(&register))?;
    inside(init, &["kill", "-STOP", &member])?;
    inside(init, &["systemctl", "stop", "slowpoke-agent"])?;
    let status = inside(
        init,
        &[
            "systemctl",
            "show",
            "-P",
            "ExecMainStatus",
            "slowpoke-agent",
        ],
    )?;
    if is_stopped(init, &member)? || status.trim() != "0" {
        bail!(
            "`systemctl stop`: the agent exited {} and the member is {}",
            status.trim(),
            state(init, &member)?
        );
    }
    let after_stop = format!(
        "exit status {}, member {}",
        status.trim(),
        state(init, &member)?
    );
    inside(init, &["systemctl", "start", "slowpoke-agent"])?;
    healthy(init)?;
    agent_call(init, "PUT", "/v1/services/member", Some(&register))?;
    inside(init, &["kill", "-STOP", &member])?;
    let killed = Instant::now();
    inside(
        init,
        &[
            "systemctl",
            "kill",
            "--kill-who=main",
            "--signal=KILL",
            "slowpoke-agent",
        ],
    )?;
    wait(
        Duration::from_secs(1),
        "the guardian resuming the member",
        || Ok(!is_stopped(init, &member)?),
    )?;
    let resumed = killed.elapsed();
    wait(
        Duration::from_secs(10),
        "the agent's unit restarted",
        || {
            let restarts = inside(
                init,
                &["systemctl", "show", "-P", "NRestarts", "slowpoke-agent"],
            )?;
            Ok(restarts.trim().parse::<u32>().is_ok_and(|n| n >= 1)
                && inside(init, &["systemctl", "is-active", "slowpoke-agent"])?.trim() == "active")
        },
    )?;
    let after_kill = format!("member running {resumed:?} after the SIGKILL; unit restarted once");
    let coordinator = coordinator(init)?;
    Ok(Outcome {
        features: features.to_string(),
        after_stop,
        after_kill,
        coordinator,
    })
}

/// The coordinator's unit against the agent: its page and its view of the agent.
fn coordinator(init: u32) -> Result<String> {
    // The first boot enabled it by its [Install] section (the container's /etc is new, so
    // systemd applied the presets): it may have started before the agent; start it anew.
    inside(init, &["systemctl", "reset-failed", "slowpoke-coordinator"])?;
    inside(init, &["systemctl", "restart", "slowpoke-coordinator"])?;
    let mut page = String::new();
    wait(Duration::from_secs(10), "the coordinator's page", || {
        page = inside(
            init,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://127.0.0.1:7272/",
            ],
        )
        .unwrap_or_default();
        Ok(page == "200")
    })?;
    let agents = inside(
        init,
        &[
            "sh",
            "-c",
            r#"curl -s -H "Authorization: Bearer $(cat /etc/slowpoke/api-token)" http://127.0.0.1:7272/v1/agents"#,
        ],
    )?;
    let agents: serde_json::Value =
        serde_json::from_str(&agents).with_context(|| format!("GET /v1/agents: {agents}"))?;
    if agents[0]["status"] != "ok" {
        bail!("the coordinator's unit does not see the agent: {agents}");
    }
    Ok("page 200, agent n1 ok".into())
}

/// Waits for the agent's socket to answer `GET /v1/health` (the unit is active from the `exec`,
/// before the agent listens).
fn healthy(init: u32) -> Result<serde_json::Value> {
    let mut health = serde_json::Value::Null;
    wait(
        Duration::from_secs(10),
        "the agent's health on its socket",
        || {
            health = agent_call(init, "GET", "/v1/health", None)?;
            Ok(true)
        },
    )?;
    Ok(health)
}

/// A `sleep` inside the container, child of its init once the shell is gone: its pid there.
fn start_member(init: u32) -> Result<String> {
    let pid = inside(init, &["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"])?;
    Ok(pid.trim().to_owned())
}

fn state(init: u32, pid: &str) -> Result<String> {
    let stat = inside(init, &["cat", &format!("/proc/{pid}/stat")])?;
    // Field 3 follows the command name in parentheses.
    Ok(stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_owned())
}

fn is_stopped(init: u32, pid: &str) -> Result<bool> {
    Ok(state(init, pid)? == "T")
}

/// A call to the agent's Unix socket (root's, from inside the container).
fn agent_call(
    init: u32,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<serde_json::Value> {
    let url = format!("http://localhost{path}");
    let mut args = vec![
        "curl",
        "-s",
        "-w",
        "\n%{http_code}",
        "--unix-socket",
        "/run/slowpoke/agent.sock",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ];
    if let Some(b) = body {
        args.extend(["-d", b]);
    }
    args.push(&url);
    let out = inside(init, &args)?;
    let (body, code) = out.rsplit_once('\n').unwrap_or((&out, ""));
    if !code.starts_with('2') {
        bail!("{method} {path} on the agent's socket: {code} {body}");
    }
    serde_json::from_str(body).with_context(|| format!("{method} {path}: {body}"))
}

/// Runs a command in every namespace of the container's init.
fn inside(init: u32, args: &[&str]) -> Result<String> {
    setup::output(
        Command::new("nsenter")
            .args(["-t", &init.to_string(), "-a", "--"])
            .args(args),
    )
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            let why = last
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("waited {limit:?} for {what}{why}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The booted container; powered off on drop.
struct Machine {
    nspawn: Child,
    init: u32,
    log: std::path::PathBuf,
}

impl Machine {
    fn boot(root: &Path, dir: &Path) -> Result<Machine> {
        let log = dir.join("boot.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new("systemd-nspawn");
        // No systemd to register with or to make a scope: run in this process's cgroup.
        cmd.args(["--keep-unit", "--register=no", "--quiet"])
            .args(["--directory=/", "--volatile=yes", "--private-network"])
            .arg(format!("--machine={MACHINE}"))
            // The container's bounding set: nspawn's default plus what the agent's unit asks
            // for beyond it; nspawn's own seccomp filter lets bpf() through only when told.
            .args(["--capability=CAP_BPF,CAP_PERFMON"])
            .arg("--system-call-filter=bpf perf_event_open")
            .arg(format!(
                "--bind-ro={}:/usr/local",
                dir.join("usr-local").display()
            ))
            .arg(format!(
                "--bind={}:/etc/slowpoke",
                dir.join("etc-slowpoke").display()
            ));
        for unit in UNITS {
            cmd.arg(format!(
                "--bind-ro={}:/etc/systemd/system/{unit}",
                root.join("deploy/systemd").join(unit).display()
            ));
        }
        cmd.args([
            "--boot",
            "systemd.firstboot=off",
            // A private network never comes "online": do not wait for it.
            "systemd.mask=systemd-networkd-wait-online.service",
            "systemd.wants=slowpoke-agent.service",
        ])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
        eprintln!("xtask: {cmd:?}");
        let nspawn = cmd
            .spawn()
            .context("starting systemd-nspawn (package systemd-container)")?;
        let pid = nspawn.id();
        let mut machine = Machine {
            nspawn,
            init: 0,
            log,
        };
        let mut init = 0;
        wait(Duration::from_secs(20), "the container's init", || {
            init = container_init(pid).unwrap_or(0);
            Ok(init != 0)
        })
        .with_context(|| machine.log_tail())?;
        machine.init = init;
        Ok(machine)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "the container's console ({}): {}",
            self.log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }
}

/// The container's systemd: a child or grandchild of nspawn named `systemd` (nspawn's own
/// helper children come and go while it boots).
fn container_init(nspawn: u32) -> Option<u32> {
    let children = slowpoke_testkit::children(nspawn);
    let grandchildren = children.iter().flat_map(|&c| slowpoke_testkit::children(c));
    children.iter().copied().chain(grandchildren).find(|p| {
        std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "systemd")
    })
}

impl Drop for Machine {
    fn drop(&mut self) {
        // SIGTERM: nspawn powers the container off in order.
        // SAFETY: kill(2) on the nspawn process this code started.
        unsafe {
            libc::kill(self.nspawn.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

//! The real backends behind the runner's traits: the in-process agent
//! (`slowpoke_agent::Agent`, feature `in-process`), the closed-loop load (`slowpoke_load::LoadGenerator`), the
//! emulated app (`slowpoke_emu::RunningApp`, with live ground truth) and a running app whose
//! ground truth is a real change the user applies and undoes with two shell commands
//! ([`CommandTruthApp`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use slowpoke_api::agent as api;

use crate::experiment::{App, Load, LoadConfig, LoadStarter, LoadWindow, TruthChange};

/// The in-process agent lives with the other agent clients; its old path stays valid.
#[cfg(feature = "in-process")]
pub use crate::agents::InProcessAgent;

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// Starts [`slowpoke_load::LoadGenerator`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealLoadStarter;

fn template(cfg: &LoadConfig) -> Result<slowpoke_load::RequestTemplate, String> {
    let method = slowpoke_load::parse_method(&cfg.method).map_err(|e| e.to_string())?;
    Ok(slowpoke_load::RequestTemplate {
        method,
        url: cfg.url.clone(),
        headers: cfg.headers.clone(),
        body: cfg.body.clone().unwrap_or_default().into(),
        weight: 1,
    })
}

impl LoadStarter for RealLoadStarter {
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(cfg.timeout_s.clamp(0.5, 10.0)))
            .build();
        let mut req = agent.request(&cfg.method, &cfg.url);
        for (k, v) in &cfg.headers {
            req = req.set(k, v);
        }
        let res = match &cfg.body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(code, _)) => Ok(code),
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        }
    }

    fn start(&self, cfg: &LoadConfig) -> Result<Box<dyn Load>, String> {
        let spec = slowpoke_load::LoadSpec {
            requests: vec![template(cfg)?],
            connections: cfg.connections,
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup: Duration::ZERO,
        };
        let generator = slowpoke_load::LoadGenerator::start(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(RealLoad {
            generator: Some(generator),
            mark: None,
        }))
    }
}

/// A running [`slowpoke_load::LoadGenerator`].
pub struct RealLoad {
    generator: Option<slowpoke_load::LoadGenerator>,
    mark: Option<slowpoke_load::Snapshot>,
}

impl Load for RealLoad {
    fn begin_window(&mut self) {
        self.mark = self
            .generator
            .as_ref()
            .map(slowpoke_load::LoadGenerator::snapshot);
    }

    fn end_window(&mut self) -> LoadWindow {
        let (Some(g), Some(mark)) = (self.generator.as_ref(), self.mark.take()) else {
            return LoadWindow::default();
        };
        load_window(&g.snapshot().window_since(&mark))
    }

    fn stop(&mut self) {
        if let Some(g) = self.generator.take() {
            g.stop();
        }
    }
}

/// What the runner keeps of a load generator's window.
pub fn load_window(w: &slowpoke_load::Window) -> LoadWindow {
    LoadWindow {
        secs: w.secs,
        completed_ok: w.completed_ok,
        rps: w.rps,
        errors: w.non_2xx + w.timeouts + w.conn_errors,
        error_ratio: w.error_ratio,
        p50_us: w.p50_us,
        p99_us: w.p99_us,
        generator_bound: w.generator_bound,
    }
}

impl Drop for RealLoad {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Emulated app
// ---------------------------------------------------------------------------------------------

/// Which per-visit work a ground truth lowers when a what-if removes Δ from a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TruthOn {
    /// The endpoints' `cpu_us` (work outside any lock).
    #[default]
    Cpu,
    /// The endpoints' `lock_us` (the critical section under the service's mutex).
    Lock,
}

impl TruthOn {
    fn key(self) -> &'static str {
        self.setting(0.0).key()
    }

    /// The emulator setting that puts `us` µs of this work on a visit.
    fn setting(self, us: f64) -> slowpoke_emu::Setting {
        match self {
            TruthOn::Cpu => slowpoke_emu::Setting::CpuUs(us),
            TruthOn::Lock => slowpoke_emu::Setting::LockUs(us),
        }
    }
}

/// What a ground-truth change replaced, to put it back.
enum Applied {
    /// (service, which work, endpoint → original value in µs).
    Work(String, TruthOn, BTreeMap<String, f64>),
    /// (service, original threads).
    Threads(String, u32),
}

/// An emulated app started from a topology file; it applies ground truth live by lowering the
/// target's endpoints' `cpu_us` (or `lock_us`), or by changing its worker threads.
pub struct EmuApp {
    app: slowpoke_emu::RunningApp,
    topology: slowpoke_emu::Topology,
    truth_on: TruthOn,
    /// Parallelism declared for some services (`cores` of their specs).
    cores: BTreeMap<String, f64>,
    /// The truth change while it is applied.
    applied: Option<Applied>,
}

impl EmuApp {
    /// Starts `path` with `sets` applied (`svc.endpoint.key=value`), services on 127.0.0.1.
    pub fn start(path: &Path, sets: &[slowpoke_emu::Set]) -> anyhow::Result<EmuApp> {
        let mut topology = slowpoke_emu::load(path)
            .with_context(|| format!("cannot load the topology {}", path.display()))?;
        for s in sets {
            topology
                .apply(s)
                .map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
        }
        let app = slowpoke_emu::RunningApp::start(&topology, &[], "127.0.0.1")
            .with_context(|| format!("cannot start the emulated app {}", path.display()))?;
        Ok(EmuApp {
            app,
            topology,
            truth_on: TruthOn::Cpu,
            cores: BTreeMap::new(),
            applied: None,
        })
    }

    /// Declares `service`'s parallelism to the agents (its spec's `cores`) instead of letting
    /// them measure it, as a user would for a lock-bound service.
    #[must_use]
    pub fn with_cores(mut self, service: &str, cores: f64) -> EmuApp {
        self.cores.insert(service.to_owned(), cores);
        self
    }

    /// Which work the ground truth lowers (default: `cpu_us`).
    #[must_use]
    pub fn with_truth_on(mut self, on: TruthOn) -> EmuApp {
        self.truth_on = on;
        self
    }

    pub fn running(&self) -> &slowpoke_emu::RunningApp {
        &self.app
    }

    pub fn topology(&self) -> &slowpoke_emu::Topology {
        &self.topology
    }

    fn lower_work(&mut self, service: &str, delta_ns: f64) -> Result<(), String> {
        let svc = self
            .topology
            .services
            .get(service)
            .ok_or_else(|| format!("`{service}` is not in the topology"))?;
        let key = self.truth_on.key();
        let delta_us = delta_ns / 1e3;
        let mut originals = BTreeMap::new();
        for (ep, e) in &svc.endpoints {
            let have = match self.truth_on {
                TruthOn::Cpu => e.cpu_us,
                TruthOn::Lock => e.lock_us,
            };
            if have < delta_us {
                return Err(format!(
                    "endpoint {service}.{ep} has only {have:.1} µs of {key} per visit, less than Δ = {delta_us:.1} µs: the ground truth cannot remove that much work (choose a smaller optimization)"
                ));
            }
            originals.insert(ep.clone(), have);
        }
        let control = self.app.control(service).map_err(|e| format!("{e:#}"))?;
        self.applied = Some(Applied::Work(
            service.to_owned(),
            self.truth_on,
            BTreeMap::new(),
        ));
        for (ep, orig) in &originals {
            control
                .set(
                    slowpoke_emu::Scope::Endpoint(ep),
                    self.truth_on.setting(orig - delta_us),
                )
                .map_err(|e| format!("{e:#}"))?;
            if let Some(Applied::Work(_, _, done)) = self.applied.as_mut() {
                done.insert(ep.clone(), *orig);
            }
        }
        Ok(())
    }

    fn set_threads(&mut self, service: &str, cores: f64) -> Result<(), String> {
        let svc = self
            .topology
            .services
            .get(service)
            .ok_or_else(|| format!("`{service}` is not in the topology"))?;
        if cores.fract() != 0.0 || cores < 1.0 {
            return Err(format!(
                "the emulator scales a service by whole worker threads: --cores {cores} is not a positive integer"
            ));
        }
        let original = svc.threads;
        set_threads_live(&self.app, service, cores as u32)?;
        self.applied = Some(Applied::Threads(service.to_owned(), original));
        Ok(())
    }
}

impl App for EmuApp {
    fn services(&self) -> BTreeMap<String, api::ServiceSpec> {
        // Pids select the processes; only the service port counts visits (not the control port).
        self.app
            .services
            .iter()
            .map(|(name, info)| {
                (
                    name.clone(),
                    api::ServiceSpec {
                        pids: Some(info.pids.clone()),
                        listen_ports: Some(vec![info.port]),
                        cores: self.cores.get(name).copied(),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn entry_url(&self) -> String {
        self.app.entry.clone()
    }

    fn entry_service(&self) -> Option<String> {
        Some(self.topology.entry.service.clone())
    }

    fn supports_truth(&self) -> bool {
        true
    }

    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        self.restore_truth()?;
        match change.cores {
            Some(n) => self.set_threads(service, n),
            None => self.lower_work(service, change.delta_ns),
        }
    }

    fn restore_truth(&mut self) -> Result<(), String> {
        match self.applied.take() {
            None => Ok(()),
            Some(Applied::Threads(service, n)) => set_threads_live(&self.app, &service, n),
            Some(Applied::Work(service, on, originals)) => {
                let control = self.app.control(&service).map_err(|e| format!("{e:#}"))?;
                let mut first_err = None;
                for (ep, orig) in originals {
                    let scope = slowpoke_emu::Scope::Endpoint(&ep);
                    if let Err(e) = control.set(scope, on.setting(orig)) {
                        first_err.get_or_insert(format!("{e:#}"));
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
        }
    }
}

impl Drop for EmuApp {
    fn drop(&mut self) {
        let _ = self.restore_truth();
    }
}

/// Changes a running service's CPU parallelism (worker threads) live.
fn set_threads_live(
    app: &slowpoke_emu::RunningApp,
    service: &str,
    threads: u32,
) -> Result<(), String> {
    app.control(service)
        .and_then(|c| {
            c.set(
                slowpoke_emu::Scope::Service,
                slowpoke_emu::Setting::Threads(threads),
            )
        })
        .map_err(|e| format!("{e:#}"))
}

// ---------------------------------------------------------------------------------------------
// A running app with a real, scripted ground truth
// ---------------------------------------------------------------------------------------------

/// How long a ground-truth command may run before it is killed.
pub const TRUTH_COMMAND_TIMEOUT: Duration = Duration::from_mins(1);

/// Two shell commands: one really applies the optimization to the running app, live (reload a
/// config with one more worker, widen a cpuset, flip a feature flag), the other undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruthCommands {
    pub apply: String,
    pub restore: String,
}

/// Any app whose ground truth is [`TruthCommands`]: `apply` runs before each truth window and
/// `restore` after it (and on every way out of the experiment while the change is applied).
/// The commands run under `sh -c` with `SLOWPOKE_TARGET`, `SLOWPOKE_DELTA_US` and, for a
/// scaling what-if, `SLOWPOKE_CORES` in their environment.
pub struct CommandTruthApp {
    app: Box<dyn App>,
    commands: TruthCommands,
    applied: bool,
}

impl CommandTruthApp {
    pub fn new(app: Box<dyn App>, commands: TruthCommands) -> CommandTruthApp {
        CommandTruthApp {
            app,
            commands,
            applied: false,
        }
    }
}

impl App for CommandTruthApp {
    fn services(&self) -> BTreeMap<String, api::ServiceSpec> {
        self.app.services()
    }
    fn entry_url(&self) -> String {
        self.app.entry_url()
    }
    fn entry_service(&self) -> Option<String> {
        self.app.entry_service()
    }
    fn supports_truth(&self) -> bool {
        true
    }
    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        self.restore_truth()?;
        let mut env = vec![
            ("SLOWPOKE_TARGET", service.to_owned()),
            ("SLOWPOKE_DELTA_US", format!("{:.3}", change.delta_ns / 1e3)),
        ];
        if let Some(c) = change.cores {
            env.push(("SLOWPOKE_CORES", format!("{c}")));
        }
        // Counted as applied before it runs: a command that fails halfway may have changed
        // something, and the restore command must then still run.
        self.applied = true;
        run_shell(
            "--truth-cmd",
            &self.commands.apply,
            &env,
            TRUTH_COMMAND_TIMEOUT,
        )
    }
    fn restore_truth(&mut self) -> Result<(), String> {
        if !self.applied {
            return Ok(());
        }
        self.applied = false;
        run_shell(
            "--restore-cmd",
            &self.commands.restore,
            &[],
            TRUTH_COMMAND_TIMEOUT,
        )
    }
}

impl Drop for CommandTruthApp {
    fn drop(&mut self) {
        if let Err(e) = self.restore_truth() {
            tracing::error!("could not undo the ground-truth change: {e}");
        }
    }
}

/// Runs `cmd` under `sh -c` in a process group of its own; kills the group after `timeout`.
/// The error names the option, the exit status and the end of what the command wrote to stderr.
fn run_shell(
    option: &str,
    cmd: &str,
    env: &[(&str, String)],
    timeout: Duration,
) -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{option} `{cmd}`: cannot start /bin/sh: {e}"))?;
    let pgid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(timeout) else {
        // SAFETY: kill(2) on the command's own process group.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        return Err(format!(
            "{option} `{cmd}` did not finish within {} s and was killed: make it return once the change is in place",
            timeout.as_secs()
        ));
    };
    let out = out.map_err(|e| format!("{option} `{cmd}`: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{option} `{cmd}` failed ({}){}",
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", tail.join(" | "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::AttachedApp;

    fn app(apply: &str, restore: &str) -> CommandTruthApp {
        let attached = AttachedApp {
            services: BTreeMap::from([("web".to_owned(), api::ServiceSpec::default())]),
            entry: "http://127.0.0.1:1/".into(),
            entry_service: None,
        };
        CommandTruthApp::new(
            Box::new(attached),
            TruthCommands {
                apply: apply.into(),
                restore: restore.into(),
            },
        )
    }

    fn temp_file(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("slowpoke-truth-{tag}-{}", std::process::id()))
    }

    #[test]
    fn the_commands_see_the_change_and_restore_runs_once_after_apply() {
        let log = temp_file("log");
        let _ = std::fs::remove_file(&log);
        let l = log.display();
        let mut a = app(
            &format!(
                "echo apply $SLOWPOKE_TARGET $SLOWPOKE_DELTA_US ${{SLOWPOKE_CORES:-none}} >> {l}"
            ),
            &format!("echo restore >> {l}"),
        );
        assert!(a.supports_truth());
        a.restore_truth().unwrap(); // nothing applied: no command runs
        a.apply_truth(
            "web",
            TruthChange {
                delta_ns: 250_000.0,
                cores: None,
            },
        )
        .unwrap();
        a.apply_truth(
            "web",
            TruthChange {
                delta_ns: 500_000.0,
                cores: Some(2.0),
            },
        )
        .unwrap();
        a.restore_truth().unwrap();
        a.restore_truth().unwrap();
        drop(a);
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(
            text,
            "apply web 250.000 none\nrestore\napply web 500.000 2\nrestore\n"
        );
    }

    #[test]
    fn a_failing_command_says_why_and_is_still_undone() {
        let log = temp_file("fail");
        let _ = std::fs::remove_file(&log);
        let mut a = app(
            "echo no such worker >&2; exit 3",
            &format!("echo restore >> {}", log.display()),
        );
        let e = a
            .apply_truth(
                "web",
                TruthChange {
                    delta_ns: 1.0,
                    cores: None,
                },
            )
            .unwrap_err();
        assert!(e.contains("--truth-cmd"), "{e}");
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("no such worker"), "{e}");
        drop(a); // the restore runs on the way out
        let text = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert_eq!(text, "restore\n");
    }

    #[test]
    fn a_hanging_command_is_killed_at_the_timeout() {
        let started = std::time::Instant::now();
        let e = run_shell("--truth-cmd", "sleep 30", &[], Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

//! The real backends behind the runner's traits: the in-process agent
//! (`slowpoke_agent::Agent`, feature `in-process`), the closed-loop load
//! (`slowpoke_load::LoadGenerator`) and a running app whose ground truth is a real change the
//! user applies and undoes with two shell commands ([`CommandTruthApp`]). The emulated app (the
//! test bed) is `slowpoke_eval::EmuApp`, outside this library.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

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
            requests: vec![cfg.request_template()?],
            connections: cfg.connections,
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup: Duration::ZERO,
            arrivals: slowpoke_load::Arrivals::Closed,
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

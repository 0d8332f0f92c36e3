//! `slowpoke-emu`: run, generate, inspect and change emulated microservice applications.
// Doc comments here are clap help text, read without Markdown.
#![allow(clippy::doc_markdown)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use slowpoke_emu::client::{read_app_info, set_live_info, stats_at, stats_info};
use slowpoke_emu::topology::{self, Set};
use slowpoke_emu::{Family, GenSpec, Mode, RunOptions};

#[derive(Parser)]
#[command(
    name = "slowpoke-emu",
    version,
    about = "Synthetic microservice emulator and topology generators"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an application: one process per service; prints one JSON line once all listen, runs until
    /// SIGINT/SIGTERM.
    Run {
        /// Topology JSON file.
        file: PathBuf,
        /// Address every service binds.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// Service i (name order) listens on P+i, its control port on P+N+i (default: ephemeral ports).
        #[arg(long)]
        base_port: Option<u16>,
        /// Change a setting before starting: svc.endpoint.key=value (cpu_us, lock_us, sleep_us, wait_us,
        /// response_bytes) or svc.key=value (threads, max_threads). Repeatable.
        #[arg(long = "set", value_name = "SETTING")]
        sets: Vec<Set>,
        /// Also write the JSON line to this file (removed on exit), for `slowpoke-emu set --app FILE`.
        #[arg(long)]
        info_file: Option<PathBuf>,
        /// Stop when stdin reaches EOF (used by the library so a dying parent takes the app with it).
        #[arg(long, hide = true)]
        exit_on_stdin_eof: bool,
    },
    /// Internal: one service process (started by `run`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a topology of a generator family.
    Generate {
        #[arg(long)]
        family: Family,
        /// Number of services.
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fan-out of every endpoint: sync (sequential) or async (parallel).
        #[arg(long, default_value = "sync")]
        mode: Mode,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Validate a topology and print its expected visit ratios, demands and bottleneck.
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "SETTING")]
        sets: Vec<Set>,
    },
    /// Change settings of a running app live: svc.endpoint.key=value (cpu_us, lock_us, sleep_us, wait_us,
    /// response_bytes) or svc.threads=N (1..=max_threads) ...
    Set {
        /// The JSON line `run` printed (or its --info-file).
        #[arg(long, conflicts_with = "control", required_unless_present = "control")]
        app: Option<PathBuf>,
        /// Control URL of one service (http://127.0.0.1:PORT); SETTING's service must be that service.
        #[arg(long)]
        control: Option<String>,
        #[arg(required = true, value_name = "SETTING")]
        settings: Vec<Set>,
    },
    /// Print the control stats of a running app (one JSON object per service).
    Stats {
        #[arg(long, conflicts_with = "control", required_unless_present = "control")]
        app: Option<PathBuf>,
        #[arg(long)]
        control: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.cmd,
        Cmd::Stats { .. } | Cmd::Generate { .. } | Cmd::Check { .. }
    ) {
        // `slowpoke-emu stats ... | head` must end quietly on a closed pipe (not for run/serve: a service must
        // never die because whoever read its first line went away).
        // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slowpoke-emu: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run {
            file,
            bind,
            base_port,
            sets,
            info_file,
            exit_on_stdin_eof,
        } => {
            let opts = RunOptions {
                bind,
                base_port,
                exit_on_stdin_eof,
                info_file,
            };
            slowpoke_emu::runner::run_file(&file, &sets, &opts)
        }
        Cmd::Serve { .. } => slowpoke_emu::service::serve_main(),
        Cmd::Generate {
            family,
            size,
            seed,
            mode,
            output,
        } => {
            let topo = slowpoke_emu::generate(&GenSpec {
                family,
                size,
                seed,
                mode,
            })
            .map_err(anyhow::Error::msg)?;
            if let Some(exp) = &topo.expected {
                eprintln!(
                    "{}: expected bottleneck {} ({:.0} µs of demand per request)",
                    topo.name,
                    exp.bottleneck,
                    exp.demand_us.get(&exp.bottleneck).copied().unwrap_or(0.0)
                );
            }
            match output {
                Some(p) => topology::save(&topo, &p)?,
                None => println!("{}", serde_json::to_string_pretty(&topo)?),
            }
            Ok(())
        }
        Cmd::Check { file, sets } => {
            let mut topo = topology::load(&file)?;
            let label = file.display().to_string();
            for s in &sets {
                topo.apply(s).map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
            }
            topo.validate_named(&label)?;
            let topo = topology::with_expectations(topo);
            let mut v = serde_json::to_value(topo.expected.as_ref().expect("filled"))?;
            v["cpu_us_per_request"] = topology::total_cpu_us_per_request(&topo).into();
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Set {
            app,
            control,
            settings,
        } => {
            for s in &settings {
                // A service setting (svc.threads=N) goes to the service as a whole.
                let ep = s.endpoint.as_deref().unwrap_or("*");
                if let Some(c) = &control {
                    let who = stats_at(c)?.service;
                    if who != s.service {
                        bail!(
                            "{s}: {c} is the control port of service {who}, not {}",
                            s.service
                        );
                    }
                    slowpoke_emu::set_live_at(c, ep, &s.key, s.value)?;
                } else if let Some(a) = &app {
                    let info = read_app_info(a)?;
                    set_live_info(&info, &s.service, ep, &s.key, s.value)?;
                }
                eprintln!("set {s}");
            }
            Ok(())
        }
        Cmd::Stats { app, control } => {
            if let Some(c) = control {
                println!("{}", serde_json::to_string(&stats_at(&c)?)?);
            } else if let Some(a) = app {
                let info = read_app_info(&a)?;
                for name in info.services.keys() {
                    let s = stats_info(&info, name).with_context(|| format!("service {name}"))?;
                    println!("{}", serde_json::to_string(&s)?);
                }
            }
            Ok(())
        }
    }
}

//! `slowpoke-emu`: run, generate, inspect and change emulated microservice applications.
// Doc comments here are clap help text, read without Markdown.
#![allow(clippy::doc_markdown)]

use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use slowpoke_emu::placement::{self, ClusterArgs, PlaceArg};
use slowpoke_emu::topology::{self, Set};
use slowpoke_emu::{AppInfo, Family, GenSpec, Mode, RunOptions, Scope, ServiceControl, Setting};

#[derive(Parser)]
#[command(
    name = "slowpoke-emu",
    version,
    about = "Synthetic microservice emulator and topology generators"
)]
struct Cli {
    /// Which messages reach stderr: error, warn, info, debug, trace, or a tracing directive such as
    /// slowpoke_emu=debug. `run` hands it to every service.
    #[arg(
        long,
        global = true,
        env = "RUST_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    log_level: String,
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
        #[arg(long, default_value = "127.0.0.1", conflicts_with = "cluster")]
        bind: IpAddr,
        /// Service i (name order) listens on P+i, its control port on P+N+i (default: ephemeral ports;
        /// 7300 with --cluster, where every node must know the others' ports).
        #[arg(long)]
        base_port: Option<u16>,
        /// Cluster description (JSON, see docs/multi-node.md): run only the services placed on --node,
        /// bound to that node's address, calling the other nodes' services at their addresses.
        #[arg(long, requires = "node")]
        cluster: Option<PathBuf>,
        /// The node of the cluster description this runner runs (enters its network namespace and
        /// cgroups first when the description gives them and this process is not inside yet).
        #[arg(long, requires = "cluster")]
        node: Option<String>,
        /// Put SERVICE on NODE, whatever the topology's "node" says. Repeatable.
        #[arg(long = "place", value_name = "SERVICE=NODE", requires = "cluster")]
        place: Vec<PlaceArg>,
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
    match init_logging(&cli.log_level).and_then(|()| real_main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slowpoke-emu: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Messages of the library (and of `run`'s services) go to stderr through `tracing`; stdout stays for the
/// one JSON line of `run`, the topology of `generate` and the stats. Colours only on a terminal: the library
/// reads a runner's stderr through a pipe and passes each line on.
fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| {
        format!(
            "invalid --log-level {filter:?}: give error, warn, info, debug, trace or a directive such as \
             slowpoke_emu=debug"
        )
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Reads the cluster description and moves this process into `node` (test bed) before any thread
/// exists, so every service started later inherits the node's network namespace and cgroups.
fn enter_node(path: &std::path::Path, node: String, place: Vec<PlaceArg>) -> Result<ClusterArgs> {
    let file = slowpoke_api::cluster::ClusterFile::load(path).map_err(anyhow::Error::msg)?;
    let this =
        placement::find_node(&file, &node).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if placement::enter(this).map_err(anyhow::Error::msg)? {
        tracing::debug!("entered node {node}");
    }
    Ok(ClusterArgs { file, node, place })
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run {
            file,
            bind,
            base_port,
            cluster,
            node,
            place,
            sets,
            info_file,
            exit_on_stdin_eof,
        } => {
            let cluster = match (cluster, node) {
                (Some(path), Some(node)) => Some(enter_node(&path, node, place)?),
                _ => None,
            };
            let opts = RunOptions {
                cluster,
                bind,
                base_port,
                exit_on_stdin_eof,
                info_file,
                log_level: cli.log_level,
            };
            slowpoke_emu::runner::run_file(&file, &sets, &opts)
        }
        Cmd::Serve { .. } => slowpoke_emu::serve::serve_main(),
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
                tracing::info!(
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
            let by_control = control
                .as_deref()
                .map(ServiceControl::connect)
                .transpose()?;
            let info = app.as_deref().map(AppInfo::read).transpose()?;
            for s in &settings {
                let setting =
                    Setting::from_key(&s.key, s.value).map_err(|e| anyhow!("{s}: {e}"))?;
                let svc = match (&by_control, &info) {
                    (Some(c), _) if c.service() != s.service => bail!(
                        "{s}: {} is the control port of service {}, not {}",
                        c.url(),
                        c.service(),
                        s.service
                    ),
                    (Some(c), _) => c.clone(),
                    (None, Some(info)) => info.control(&s.service)?,
                    (None, None) => bail!("give --app FILE or --control URL"),
                };
                // svc.key=value is a setting of the service as a whole, svc.endpoint.key=value of an endpoint.
                let scope = s
                    .endpoint
                    .as_deref()
                    .map_or(Scope::Service, Scope::Endpoint);
                svc.set(scope, setting)?;
                tracing::info!("set {s}");
            }
            Ok(())
        }
        Cmd::Stats { app, control } => {
            if let Some(c) = control {
                let stats = ServiceControl::connect(&c)?.stats()?;
                println!("{}", serde_json::to_string(&stats)?);
            } else if let Some(a) = app {
                let info = AppInfo::read(&a)?;
                for name in info.services.keys() {
                    let s = info
                        .control(name)
                        .and_then(|c| c.stats())
                        .with_context(|| format!("service {name}"))?;
                    println!("{}", serde_json::to_string(&s)?);
                }
            }
            Ok(())
        }
    }
}

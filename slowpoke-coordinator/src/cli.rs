//! Argument parsing and the commands of `slowpoke`.

// Doc comments here are the `--help` texts: prose for users, not code.
#![allow(clippy::doc_markdown)]

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use slowpoke_coordinator::agents::{self, AgentClient as _, HttpAgent, SharedAgent};
use slowpoke_coordinator::experiment::{
    self, Backends, LoadConfig, LoadStarter as _, Monitor, ProfileSpec, Repeat, RunError, Safety,
    Timing, WhatIfSpec,
};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease, MIN_LEASE};
use slowpoke_coordinator::model::{Optimization, OptimizationModel as _};
#[cfg(feature = "in-process")]
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_coordinator::real::{CommandTruthApp, EmuApps, RealLoadStarter, TruthCommands};
use slowpoke_coordinator::results::{self, ResultStore, StoredResult};
use slowpoke_coordinator::spec_builder::{
    self, AppFields, AppRequest, BuildError, Capacity, Emulator, Factor, Field, OptimizationFields,
};
use slowpoke_coordinator::{plot, report};

#[derive(Parser, Debug)]
#[command(
    name = "slowpoke",
    version,
    about = "What throughput would the application sustain if service T were faster? (virtual speedup)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Predict the end-to-end throughput after a hypothetical optimization of one service.
    WhatIf(WhatIfArgs),
    /// Sweep optimizations of every service: a ranked table and an SVG plot.
    Profile(ProfileArgs),
    /// List the node agents and their health.
    Agents(AgentArgs),
    /// List or show stored results.
    Results(ResultsArgs),
    /// HTTP API and web page (default 127.0.0.1:7272); docs/coordinator-api.md.
    Serve(ServeArgs),
    /// Accuracy against ground truth over emulated topologies (RMSE per family and overall).
    Eval(EvalArgs),
}

/// Where the app is, how to load it, which agents to use. Also the keys of `--experiment FILE`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct CommonArgs {
    /// Emulated app to start from a topology file (slowpoke-emu format).
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Change the topology before starting it: svc.endpoint.key=value or svc.key=value.
    #[arg(long = "set", value_name = "SET")]
    set: Vec<String>,
    /// A service of a running app: NAME=SELECTOR (port:8080, pid:123, comm:nginx, cgroup:/path).
    #[arg(long = "service", value_name = "NAME=SELECTOR")]
    service: Vec<String>,
    /// The URL end-to-end requests enter through (with --service).
    #[arg(long, value_name = "URL")]
    entry: Option<String>,
    /// The service owning the entry port, when the agents cannot tell.
    #[arg(long, value_name = "NAME")]
    entry_service: Option<String>,
    /// Extra request header 'K: V' (repeatable).
    #[arg(long = "header", value_name = "K: V")]
    header: Vec<String>,
    /// HTTP method of the load's requests.
    #[arg(long)]
    method: Option<String>,
    /// Request body.
    #[arg(long)]
    body: Option<String>,
    /// Closed-loop connections (default 64).
    #[arg(long)]
    connections: Option<usize>,
    /// Length of one measurement window, seconds.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    duration: Option<f64>,
    /// Load before the first window, seconds (default 3).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    warmup: Option<f64>,
    /// Abort when the load sees more than this share of errors in a window, % (default 1).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    max_errors: Option<f64>,
    /// Pause quantum, µs: the agents pay each service's debt in pauses of at least this long
    /// (default 10000: fewer, longer pauses bias the slowed-down throughput less).
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    quantum_us: Option<f64>,
    /// How delays are applied: `synchronized` (default: when one service's debt is due, every
    /// delayed service of the node pays at the same moment), `per-service` (each on its own
    /// debt) or `spin` (in-kernel busy wait; dedicated cores only). docs/evaluation.md compares
    /// them.
    #[arg(long, value_name = "KIND")]
    actuator: Option<String>,
    /// A node agent's URL (repeatable): http://host:7171 (with --agent-token-file) or
    /// unix:/path/agent.sock. Default: the daemon on this node (its socket
    /// /run/slowpoke/agent.sock) when one runs, else an agent in this process.
    #[arg(long = "agent", value_name = "URL")]
    agent: Vec<String>,
    /// File holding the agents' bearer token (default $SLOWPOKE_AGENT_TOKEN).
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// Lease of the plans on the agents, seconds (default 15): renewed while the experiment
    /// runs; if slowpoke dies (killed, out of memory, cut off), the agents remove its plan and
    /// resume every service within this long. At most the agents' --max-lease-s.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    lease: Option<f64>,
    /// State directory of the in-process agent (default /run/slowpoke; one agent per directory).
    #[arg(long, value_name = "DIR")]
    agent_state_dir: Option<PathBuf>,
    /// Safety cap of the in-process agent: the most of any second a service may spend stopped
    /// (default 0.5). Removing a share s of the bottleneck's time (or doubling its cores,
    /// s = 1/2) pauses the others about s of the time: large what-ifs need more.
    #[arg(long, value_name = "SHARE", allow_negative_numbers = true)]
    max_stopped_share: Option<f64>,
    /// Where results are stored (default $SLOWPOKE_RESULTS_DIR, $XDG_STATE_HOME/slowpoke/results
    /// or ./results).
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
    /// Read the experiment from a YAML or JSON file (same keys as the long options);
    /// options on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    experiment: Option<PathBuf>,
}

#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct WhatIfArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    /// The service to optimize.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// T becomes K times as fast: Δ = p_T·(1 − 1/K). E.g. 2x.
    #[arg(long, value_name = "Kx")]
    speedup: Option<String>,
    /// Δ in µs per visit of T.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    delta_us: Option<f64>,
    /// Δ as a percentage of T's measured per-visit time.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    percent: Option<f64>,
    /// T's new absolute core count.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    cores: Option<f64>,
    /// T's capacity from OLD to NEW req/s (OLD:NEW, or NEW from the measured capacity).
    #[arg(long, value_name = "OLD:NEW")]
    capacity: Option<String>,
    /// Repetitions always run (default 5; the middle 3 of 5 are kept).
    #[arg(long)]
    repetitions: Option<usize>,
    /// Repeat until the prediction's 95 % CI half-width is at most P % (default 3; 0 = off).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    precision: Option<f64>,
    /// Time budget for --precision, seconds (default 120).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    budget: Option<f64>,
    /// Also measure the ground truth: for an emulated app T's work really lowered by Δ, live;
    /// for a running app (--service) what --truth-cmd does.
    #[arg(long)]
    truth: bool,
    /// Ground truth for a running app (--service): a shell command that really applies the
    /// optimization, live (e.g. reload the target with one more worker); implies --truth and
    /// needs --restore-cmd. It sees $SLOWPOKE_TARGET, $SLOWPOKE_DELTA_US, $SLOWPOKE_CORES.
    #[arg(long, value_name = "CMD")]
    truth_cmd: Option<String>,
    /// Undoes --truth-cmd; runs after every ground-truth window and on every way out.
    #[arg(long, value_name = "CMD")]
    restore_cmd: Option<String>,
    /// Print the table, then the result as one JSON object on the last line.
    #[arg(long)]
    #[serde(skip)]
    summary_json: bool,
}

#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct ProfileArgs {
    #[command(flatten)]
    #[serde(flatten)]
    common: CommonArgs,
    /// Optimizations to sweep, % of each service's per-visit time (default 10,30,50,70,90).
    #[arg(long, value_delimiter = ',', value_name = "P,P,..")]
    percents: Vec<f64>,
    /// Services to sweep (default: every service with visits).
    #[arg(long = "only", value_delimiter = ',', value_name = "NAME,..")]
    only: Vec<String>,
    /// Sweeps (default 3), each preceded by a baseline.
    #[arg(long)]
    repetitions: Option<usize>,
    /// After --repetitions, keep sweeping until every point's prediction has a 95 % CI
    /// half-width of at most this, % (default: off).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    precision: Option<f64>,
    /// Time budget for --precision, seconds (default 300).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    budget: Option<f64>,
    /// Where to write the SVG plot (default: next to the stored result).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// `quick`: 6 families x 3 points (about 20 min); `full`: every family x sync/async x
    /// leaf/inner target x 5 points, plus the mutex and scaling cases (hours; resumable).
    #[arg(long, default_value = "quick")]
    suite: String,
    /// Where results.json, report.md, plot.svg and the topologies go
    /// (default target/slowpoke-eval/<suite>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the results already in --out (measured points are kept, failed ones rerun).
    #[arg(long)]
    resume: bool,
    /// Only these families (e.g. chain,fanout,mutex).
    #[arg(long, value_delimiter = ',', value_name = "F,..")]
    families: Vec<String>,
    /// Replace every case's points: Δ as % of the target's configured work (10..90), or
    /// thread counts for the scaling case.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    points: Vec<f64>,
    /// Actuator settings to compare, each run on every point back to back: pause-<ms>ms,
    /// sync-<ms>ms (synchronized pauses) or spin (default: sync-10ms, the what-if default).
    #[arg(long, value_delimiter = ',', value_name = "S,..")]
    settings: Vec<String>,
    /// Placements: shared (every service on every CPU) and/or pinned (the target alone on one
    /// CPU). Default shared.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    placements: Vec<String>,
    /// Repetitions per point (base, slow, truth interleaved; the middle 3 of 5 are kept).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Length of one measurement window, seconds.
    #[arg(
        long,
        default_value_t = 3.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    duration: f64,
    /// After --repetitions, keep repeating a point (base, slow, truth) until the prediction's
    /// 95 % CI half-width is at most this % (0: off, the default) or --budget runs out.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "PCT",
        allow_negative_numbers = true
    )]
    precision: f64,
    /// Most seconds one point may take while repeating for --precision.
    #[arg(
        long,
        default_value_t = 240.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    budget: f64,
    /// Connections of the closed-loop load.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Safety cap of the in-process agent: most of its time a service may spend stopped. A
    /// what-if that removes a share s of the bottleneck's time pauses the others about s of the
    /// time, so the suite's large points need more than the agent's everyday 0.5 [default:
    /// 0.95; a running agent keeps its own].
    #[arg(long, value_name = "SHARE")]
    max_stopped_share: Option<f64>,
    #[arg(long = "agent", value_name = "URL")]
    agent: Vec<String>,
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    agent_state_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Listen address; off loopback --token-file is mandatory.
    #[arg(long, default_value = slowpoke_coordinator::server::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Bearer token every /v1 call must carry.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Where results are stored and read from.
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    /// Node agents (repeatable). Default: the daemon on this node (its socket
    /// /run/slowpoke/agent.sock), else an agent in this process.
    #[arg(long = "agent", value_name = "URL")]
    agent: Vec<String>,
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    /// State directory of the in-process agent (default /run/slowpoke).
    #[arg(long, value_name = "DIR")]
    agent_state_dir: Option<PathBuf>,
    /// A name this server answers to besides localhost, 127.0.0.1, [::1] and the listen address
    /// (the Host header; repeatable; needs --token-file).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_host: Vec<String>,
    /// A host an experiment's `entry` may send load to (repeatable). Default: loopback only.
    #[arg(long = "allow-entry-host", value_name = "HOST[:PORT]")]
    allow_entry_host: Vec<slowpoke_coordinator::server::EntryHost>,
    /// The directory experiments' `topology` files must be in (default: none; requests naming a
    /// topology are refused).
    #[arg(long, value_name = "DIR")]
    topology_dir: Option<PathBuf>,
    /// Lease of each experiment's plans on the agents, seconds: renewed while it runs; if the
    /// server dies, the agents remove its plan within this long.
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    lease: f64,
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// Agent URLs (default: the daemon on this node, unix:/run/slowpoke/agent.sock).
    #[arg(long = "agent", value_name = "URL")]
    agent: Vec<String>,
    #[arg(long, value_name = "FILE")]
    agent_token_file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ResultsArgs {
    #[command(subcommand)]
    action: ResultsAction,
    #[arg(long, global = true, value_name = "DIR")]
    results_dir: Option<PathBuf>,
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ResultsAction {
    /// Every stored result, oldest first.
    List,
    /// One result (an id or a unique prefix of one).
    Show { id: String },
}

/// Runs the CLI; returns the exit code (0 ok, 1 error, 2 usage, 130 cancelled).
pub fn main() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.command {
        Command::WhatIf(a) => what_if(a),
        Command::Profile(a) => profile(a),
        Command::Agents(a) => list_agents(&a),
        Command::Results(a) => results_cmd(&a),
        Command::Serve(a) => serve(&a),
        Command::Eval(a) => eval(&a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            if matches!(e.downcast_ref::<RunError>(), Some(RunError::Cancelled)) {
                eprintln!("slowpoke: {e}");
                return 130;
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --experiment FILE merging
// ---------------------------------------------------------------------------------------------

fn read_experiment_file<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the experiment file {}", path.display()))?;
    let is_json =
        path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{');
    if is_json {
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    } else {
        serde_yaml_ng::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }
}

fn merge_vec<T>(cli: &mut Vec<T>, file: Vec<T>) {
    if cli.is_empty() {
        *cli = file;
    }
}

fn merge_opt<T>(cli: &mut Option<T>, file: Option<T>) {
    if cli.is_none() {
        *cli = file;
    }
}

impl CommonArgs {
    fn merge(&mut self, f: CommonArgs) {
        merge_opt(&mut self.topology, f.topology);
        merge_vec(&mut self.set, f.set);
        merge_vec(&mut self.service, f.service);
        merge_opt(&mut self.entry, f.entry);
        merge_opt(&mut self.entry_service, f.entry_service);
        merge_vec(&mut self.header, f.header);
        merge_opt(&mut self.method, f.method);
        merge_opt(&mut self.body, f.body);
        merge_opt(&mut self.connections, f.connections);
        merge_opt(&mut self.duration, f.duration);
        merge_opt(&mut self.warmup, f.warmup);
        merge_opt(&mut self.max_errors, f.max_errors);
        merge_opt(&mut self.quantum_us, f.quantum_us);
        merge_opt(&mut self.actuator, f.actuator);
        merge_vec(&mut self.agent, f.agent);
        merge_opt(&mut self.agent_token_file, f.agent_token_file);
        merge_opt(&mut self.lease, f.lease);
        merge_opt(&mut self.agent_state_dir, f.agent_state_dir);
        merge_opt(&mut self.max_stopped_share, f.max_stopped_share);
        merge_opt(&mut self.results_dir, f.results_dir);
    }

    fn load_config(&self) -> anyhow::Result<LoadConfig> {
        let mut cfg = LoadConfig::default();
        if let Some(m) = &self.method {
            cfg.method = m.to_ascii_uppercase();
        }
        for h in &self.header {
            cfg.headers.push(
                slowpoke_load::parse_header(h).map_err(|e| anyhow::anyhow!("--header: {e}"))?,
            );
        }
        cfg.body.clone_from(&self.body);
        if let Some(c) = self.connections {
            if c == 0 {
                bail!("--connections must be at least 1");
            }
            cfg.connections = c;
        }
        Ok(cfg)
    }

    fn timing(&self, default: Timing) -> anyhow::Result<Timing> {
        let mut t = default;
        if let Some(d) = self.duration {
            if !(d.is_finite() && d > 0.0) {
                bail!("--duration must be a positive number of seconds (got {d})");
            }
            t.window_s = d;
        }
        if let Some(w) = self.warmup {
            if !(w.is_finite() && w >= 0.0) {
                bail!("--warmup must be a non-negative number of seconds (got {w})");
            }
            t.warmup_s = w;
        }
        if let Some(q) = self.quantum_us {
            if !(q.is_finite() && (1.0..=1_000_000.0).contains(&q)) {
                bail!("--quantum-us must be between 1 and 1000000 µs (got {q})");
            }
            t.quantum_us = Some(q);
        }
        if let Some(a) = &self.actuator {
            t.set_actuator(a).map_err(anyhow::Error::msg)?;
        }
        Ok(t)
    }

    /// The experiment's lease on the agents: `owner` (its id) and `--lease`.
    fn lease(&self, owner: &str) -> anyhow::Result<Lease> {
        let secs = self.lease.map_or(Ok(DEFAULT_LEASE), lease_arg)?;
        Ok(Lease::new(owner, secs))
    }

    fn safety(&self) -> anyhow::Result<Safety> {
        let mut s = Safety::default();
        if let Some(m) = self.max_errors {
            if !(m.is_finite() && (0.0..=100.0).contains(&m)) {
                bail!("--max-errors must be a percentage between 0 and 100 (got {m})");
            }
            s.max_error_ratio = m / 100.0;
        }
        Ok(s)
    }

    fn store(&self) -> ResultStore {
        ResultStore::new(
            self.results_dir
                .clone()
                .unwrap_or_else(ResultStore::default_dir),
        )
    }

    /// The app described by --topology or --service/--entry (not started yet).
    fn app_request(&self) -> anyhow::Result<AppRequest> {
        if self.topology.is_some() && self.entry.is_some() && self.service.is_empty() {
            bail!("--entry goes with --service; an emulated app (--topology) has its own");
        }
        let services = self
            .service
            .iter()
            .map(|s| {
                slowpoke_api::selector::parse_service_arg(s)
                    .map_err(|e| anyhow::anyhow!("--service {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        spec_builder::app(AppFields {
            topology: self.topology.clone(),
            set: self.set.clone(),
            services,
            entry: self.entry.clone(),
            entry_service: self.entry_service.clone(),
        })
        .map_err(|e| flags(&e))
    }
}

/// The CLI's words for a request's fields: its flags.
fn flag(f: Field) -> String {
    match f {
        Field::Topology => "--topology FILE".into(),
        Field::Entry => "--entry URL".into(),
        Field::Services => "--service".into(),
        f => format!("--{}", f.as_str().replace('_', "-")),
    }
}

/// A request error in the CLI's words.
fn flags(e: &BuildError) -> anyhow::Error {
    anyhow::anyhow!(e.render(flag))
}

impl WhatIfArgs {
    /// `--truth-cmd` with `--restore-cmd`, for running apps only.
    fn truth_commands(&self) -> anyhow::Result<Option<TruthCommands>> {
        match (&self.truth_cmd, &self.restore_cmd) {
            (None, None) => Ok(None),
            (Some(_), None) => bail!(
                "--truth-cmd needs --restore-cmd: a command that undoes the change (the baseline and slowed-down runs after each ground-truth run need the app as it was)"
            ),
            (None, Some(_)) => bail!("--restore-cmd goes with --truth-cmd"),
            (Some(_), Some(_)) if self.common.topology.is_some() => bail!(
                "--truth-cmd is for running apps (--service); an emulated app (--topology) applies the ground truth itself: use --truth"
            ),
            (Some(apply), Some(restore)) => {
                if apply.trim().is_empty() || restore.trim().is_empty() {
                    bail!("--truth-cmd and --restore-cmd must not be empty");
                }
                Ok(Some(TruthCommands {
                    apply: apply.clone(),
                    restore: restore.clone(),
                }))
            }
        }
    }

    fn optimization(&self) -> anyhow::Result<Optimization> {
        spec_builder::optimization(&OptimizationFields {
            speedup: self.speedup.clone().map(Factor::Text),
            delta_us: self.delta_us,
            percent: self.percent,
            cores: self.cores,
            capacity: self.capacity.clone().map(Capacity::Text),
        })
        .map_err(|e| flags(&e))
    }
}

// ---------------------------------------------------------------------------------------------
// Agents and the runtime
// ---------------------------------------------------------------------------------------------

/// The agents an experiment uses, and the in-process one to shut down at the end.
struct AgentSet {
    agents: Vec<SharedAgent>,
    #[cfg(feature = "in-process")]
    in_process: Option<slowpoke_agent::Agent>,
}

impl AgentSet {
    /// Agents running elsewhere (daemons reached over HTTP).
    fn remote(agents: Vec<SharedAgent>) -> AgentSet {
        AgentSet {
            agents,
            #[cfg(feature = "in-process")]
            in_process: None,
        }
    }

    /// Shuts the in-process agent down, if one was started (it resumes whatever it paused).
    #[cfg_attr(not(feature = "in-process"), allow(clippy::unused_self))]
    fn shutdown(self, rt: &tokio::runtime::Runtime) {
        #[cfg(feature = "in-process")]
        if let Some(a) = self.in_process {
            rt.block_on(a.shutdown());
        }
        #[cfg(not(feature = "in-process"))]
        let _ = rt;
    }
}

fn http_agents(urls: &[String], token_file: Option<&Path>) -> anyhow::Result<Vec<SharedAgent>> {
    let token = agents::read_token(token_file)?;
    urls.iter()
        .map(|u| {
            if !u.starts_with("http://")
                && !u.starts_with("https://")
                && agents::socket_path(u).is_none()
            {
                bail!(
                    "--agent `{u}` is not a URL: write http://host:7171 or unix:/run/slowpoke/agent.sock"
                );
            }
            Ok(Arc::new(HttpAgent::new(u, token.clone())) as SharedAgent)
        })
        .collect()
}

fn connect_agents(rt: &tokio::runtime::Runtime, c: &CommonArgs) -> anyhow::Result<AgentSet> {
    if let Some(share) = c.max_stopped_share {
        stopped_share_arg(share)?;
    }
    connect(
        rt,
        &c.agent,
        c.agent_token_file.as_deref(),
        c.agent_state_dir.as_deref(),
        c.max_stopped_share,
        None,
    )
}

/// The in-process agent's safety cap in `slowpoke eval` when `--max-stopped-share` is not given.
const EVAL_MAX_STOPPED_SHARE: f64 = 0.95;

/// `--max-stopped-share`: a share of wall time in (0, 1].
fn stopped_share_arg(share: f64) -> anyhow::Result<f64> {
    if !(share > 0.0 && share <= 1.0) {
        bail!("--max-stopped-share must be in (0, 1] (got {share})");
    }
    Ok(share)
}

/// `--agent` URLs when given; else the daemon on this node, else an agent in this process.
/// `max_stopped_share` is the user's `--max-stopped-share` (a running agent keeps its own: a
/// warning), `in_process_share` the command's own default for an agent in this process.
fn connect(
    rt: &tokio::runtime::Runtime,
    urls: &[String],
    token_file: Option<&Path>,
    state_dir: Option<&Path>,
    max_stopped_share: Option<f64>,
    in_process_share: Option<f64>,
) -> anyhow::Result<AgentSet> {
    let ignored_cap = || {
        if max_stopped_share.is_some() {
            eprintln!(
                "warning: --max-stopped-share sets the cap of an agent in this process; a running agent keeps its own (slowpoke-agent --max-stopped-share)"
            );
        }
    };
    if !urls.is_empty() {
        ignored_cap();
        let list = http_agents(urls, token_file)?;
        for a in &list {
            a.health()?;
        }
        return Ok(AgentSet::remote(list));
    }
    // A daemon on this node wins (it holds the node's lock); else start one in this process.
    // It is found through its socket only: a TCP port on this node could be anybody's, and
    // would get the token.
    if let Some(local) = agents::local_daemon(state_dir)?
        && local.health().is_ok()
    {
        ignored_cap();
        return Ok(AgentSet::remote(vec![Arc::new(local)]));
    }
    start_in_process(rt, state_dir, max_stopped_share.or(in_process_share))
}

/// No agent is running on this node: start one in this process (needs root).
#[cfg(feature = "in-process")]
fn start_in_process(
    rt: &tokio::runtime::Runtime,
    state_dir: Option<&Path>,
    max_stopped_share: Option<f64>,
) -> anyhow::Result<AgentSet> {
    let mut cfg = slowpoke_agent::AgentConfig::default();
    if let Some(d) = state_dir {
        d.clone_into(&mut cfg.state_dir);
    }
    if let Some(share) = max_stopped_share {
        cfg.max_stopped_share = share;
    }
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .with_context(|| format!("no --agent given and no agent daemon answers on {}, so slowpoke starts one in this process (needs root)", agents::local_socket(state_dir).display()))?;
    let inner = agent.agent().clone();
    Ok(AgentSet {
        agents: vec![Arc::new(agent)],
        in_process: Some(inner),
    })
}

/// This build has no in-process agent: say so instead of failing somewhere later.
#[cfg(not(feature = "in-process"))]
fn start_in_process(
    _rt: &tokio::runtime::Runtime,
    state_dir: Option<&Path>,
    _max_stopped_share: Option<f64>,
) -> anyhow::Result<AgentSet> {
    bail!(
        "no --agent given and no agent daemon answers on {}; this slowpoke was built \
         without the in-process agent (cargo feature `in-process`), so it needs a running agent: \
         start `slowpoke-agent` on this node, or give --agent URL (e.g. --agent http://10.0.0.2:7171)",
        agents::local_socket(state_dir).display()
    )
}

/// Starts the emulated apps of `--topology`.
#[allow(
    clippy::unnecessary_wraps,
    reason = "None once the emulator is an optional feature of the binary"
)]
fn emulator() -> Option<&'static dyn Emulator> {
    Some(&EmuApps)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ctrl-C (and SIGTERM) cancel the experiment; it removes every delay on its way out.
fn cancel_on_signal(rt: &tokio::runtime::Runtime, monitor: &Monitor) {
    let m = monitor.clone();
    rt.spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        eprintln!("\ncancelling: removing every delay ...");
        m.cancel();
    });
}

/// A progress bar on a terminal (stderr), nothing otherwise.
fn progress_bar(monitor: &Monitor, quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let b = bar.clone();
    monitor.on_progress(move |p| {
        b.set_position((p.fraction * 1000.0) as u64);
        let last = p
            .last_rps
            .map(|r| format!(" (last window {r:.0} req/s)"))
            .unwrap_or_default();
        b.set_message(format!("{}{last}", p.phase));
    });
    Some(bar)
}

struct Prepared {
    rt: tokio::runtime::Runtime,
    agents: AgentSet,
    backends: Backends,
}

/// Checks what can be checked cheaply, then connects the agents and starts the app (whose
/// ground truth is `truth` when given).
fn prepare(
    c: &CommonArgs,
    target: Option<&str>,
    load: &LoadConfig,
    truth: Option<TruthCommands>,
    lease: Lease,
) -> anyhow::Result<Prepared> {
    let plan = c.app_request()?;
    let names = plan.service_names(emulator()).map_err(anyhow::Error::msg)?;
    if let Some(t) = target
        && !names.iter().any(|n| n == t)
    {
        bail!(
            "unknown target `{t}`: the app's services are {}",
            names.join(", ")
        );
    }
    if plan.topology.is_none()
        && let Some(entry) = &plan.entry
    {
        // Fail fast, before any agent is touched.
        let mut probe = load.clone();
        probe.url.clone_from(entry);
        if let Err(e) = RealLoadStarter.probe(&probe) {
            bail!("the entry URL {entry} does not answer: {e}");
        }
    }
    let rt = runtime()?;
    let agents = connect_agents(&rt, c)?;
    let mut app = plan.start(emulator()).map_err(anyhow::Error::msg)?;
    if let Some(commands) = truth {
        app = Box::new(CommandTruthApp::new(app, commands));
    }
    let backends = Backends {
        agents: agents.agents.clone(),
        app,
        load: Arc::new(RealLoadStarter),
        lease,
    };
    Ok(Prepared {
        rt,
        agents,
        backends,
    })
}

fn shutdown(p: Prepared) {
    let Prepared {
        rt,
        agents,
        backends,
    } = p;
    drop(backends);
    agents.shutdown(&rt);
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn what_if(mut a: WhatIfArgs) -> anyhow::Result<()> {
    if let Some(f) = a.common.experiment.clone() {
        let file: WhatIfArgs = read_experiment_file(&f)?;
        a.common.merge(file.common);
        merge_opt(&mut a.target, file.target);
        let none_given = a.speedup.is_none()
            && a.delta_us.is_none()
            && a.percent.is_none()
            && a.cores.is_none()
            && a.capacity.is_none();
        if none_given {
            a.speedup = file.speedup;
            a.delta_us = file.delta_us;
            a.percent = file.percent;
            a.cores = file.cores;
            a.capacity = file.capacity;
        }
        merge_opt(&mut a.repetitions, file.repetitions);
        merge_opt(&mut a.precision, file.precision);
        merge_opt(&mut a.budget, file.budget);
        a.truth |= file.truth;
        merge_opt(&mut a.truth_cmd, file.truth_cmd);
        merge_opt(&mut a.restore_cmd, file.restore_cmd);
    }
    let truth_commands = a.truth_commands()?;
    a.truth |= truth_commands.is_some();
    let target = a
        .target
        .clone()
        .context("say which service to optimize: --target NAME")?;
    let optimization = a.optimization()?;
    let mut repeat = Repeat::default();
    if let Some(r) = a.repetitions {
        if r == 0 {
            bail!("--repetitions must be at least 1");
        }
        repeat.repetitions = r;
    }
    if let Some(p) = a.precision {
        repeat.precision_pct = precision_arg(p)?;
    }
    if let Some(b) = a.budget {
        repeat.budget_s = budget_arg(b)?;
    }
    let load = a.common.load_config()?;
    let spec = WhatIfSpec {
        target: target.clone(),
        optimization,
        load: load.clone(),
        timing: a.common.timing(Timing::default())?,
        repeat,
        safety: a.common.safety()?,
        truth: a.truth,
        entry_service: a.common.entry_service.clone(),
    };
    if a.truth && a.common.topology.is_none() && truth_commands.is_none() {
        bail!(
            "--truth on a running app (--service) needs --truth-cmd CMD and --restore-cmd CMD: commands that really apply the optimization live and undo it (an emulated app, --topology, applies it itself)"
        );
    }
    let store = a.common.store();
    // The experiment's id names it to the agents (its plans' owner) and names its result.
    let id = experiment::new_id("whatif", &target);
    let lease = a.common.lease(&id)?;
    let mut p = prepare(&a.common, Some(&target), &load, truth_commands, lease)?;
    let monitor = Monitor::new();
    cancel_on_signal(&p.rt, &monitor);
    let bar = progress_bar(&monitor, a.common.json);
    let r = experiment::run_what_if(&spec, &mut p.backends, &monitor);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    shutdown(p);
    let mut r = r?;
    r.id = id;
    let stored = StoredResult::WhatIf(r);
    let saved = store.save(&stored);
    let StoredResult::WhatIf(r) = &stored else {
        unreachable!()
    };
    if !a.common.json {
        print!("{}", report::what_if_table(r));
    }
    // Said before the JSON, so that the JSON object stays the last line of the output.
    match saved {
        Ok(path) => eprintln!("saved {}", path.display()),
        Err(e) => eprintln!("warning: the result was not saved: {e:#}"),
    }
    if a.common.json || a.summary_json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

/// `--lease S`: seconds, at least [`MIN_LEASE`] (renewals come every third of it).
fn lease_arg(s: f64) -> anyhow::Result<std::time::Duration> {
    if !(s.is_finite() && s >= MIN_LEASE.as_secs_f64() && s <= 86_400.0) {
        bail!(
            "--lease must be between {} and 86400 seconds (got {s})",
            MIN_LEASE.as_secs_f64()
        );
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

/// `--precision P`: a positive percentage, or 0 to turn repeating for precision off (None).
fn precision_arg(p: f64) -> anyhow::Result<Option<f64>> {
    if p == 0.0 {
        return Ok(None);
    }
    if !(p.is_finite() && p > 0.0) {
        bail!("--precision must be a positive percentage, or 0 to turn it off (got {p})");
    }
    Ok(Some(p))
}

/// `--budget S`: a non-negative number of seconds.
fn budget_arg(b: f64) -> anyhow::Result<f64> {
    if !(b.is_finite() && b >= 0.0) {
        bail!("--budget must be a non-negative number of seconds (got {b})");
    }
    Ok(b)
}

fn profile(mut a: ProfileArgs) -> anyhow::Result<()> {
    if let Some(f) = a.common.experiment.clone() {
        let file: ProfileArgs = read_experiment_file(&f)?;
        a.common.merge(file.common);
        merge_vec(&mut a.percents, file.percents);
        merge_vec(&mut a.only, file.only);
        merge_opt(&mut a.repetitions, file.repetitions);
        merge_opt(&mut a.svg, file.svg);
    }
    let defaults = ProfileSpec::default();
    let load = a.common.load_config()?;
    let spec = ProfileSpec {
        percents: if a.percents.is_empty() {
            defaults.percents.clone()
        } else {
            a.percents.clone()
        },
        services: (!a.only.is_empty()).then(|| a.only.clone()),
        load: load.clone(),
        timing: a.common.timing(defaults.timing)?,
        repetitions: a.repetitions.unwrap_or(defaults.repetitions),
        precision_pct: a.precision.map(precision_arg).transpose()?.flatten(),
        budget_s: a
            .budget
            .map(budget_arg)
            .transpose()?
            .unwrap_or(defaults.budget_s),
        safety: a.common.safety()?,
        entry_service: a.common.entry_service.clone(),
    };
    if spec.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    for &pct in &spec.percents {
        Optimization::Percent(pct)
            .validate()
            .with_context(|| format!("--percents {pct}"))?;
    }
    let plan_names = a
        .common
        .app_request()?
        .service_names(emulator())
        .map_err(anyhow::Error::msg)?;
    for s in &a.only {
        if !plan_names.contains(s) {
            bail!(
                "unknown service `{s}` in --only: the app's services are {}",
                plan_names.join(", ")
            );
        }
    }
    let store = a.common.store();
    let id = experiment::new_id("profile", "app");
    let lease = a.common.lease(&id)?;
    let mut p = prepare(&a.common, None, &load, None, lease)?;
    let monitor = Monitor::new();
    cancel_on_signal(&p.rt, &monitor);
    let bar = progress_bar(&monitor, a.common.json);
    let r = experiment::run_profile(&spec, &mut p.backends, &monitor);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    shutdown(p);
    let mut r = r?;
    r.id = id;
    let svg_path = a
        .svg
        .clone()
        .unwrap_or_else(|| store.dir().join(format!("{}.svg", r.id)));
    if let Some(parent) = svg_path.parent()
        && !parent.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(parent);
    }
    let svg = plot::write_profile_svg(&r, &svg_path);
    let stored = StoredResult::Profile(r);
    let saved = store.save(&stored);
    let StoredResult::Profile(r) = &stored else {
        unreachable!()
    };
    if a.common.json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        print!("{}", report::profile_table(r));
    }
    match svg {
        Ok(()) => eprintln!("plot {}", svg_path.display()),
        Err(e) => eprintln!("warning: no plot: {e:#}"),
    }
    match saved {
        Ok(path) => eprintln!("saved {}", path.display()),
        Err(e) => eprintln!("warning: the result was not saved: {e:#}"),
    }
    Ok(())
}

fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    use slowpoke_coordinator::server;
    let token = a
        .token_file
        .as_deref()
        .map(slowpoke_api::auth::read_token_file)
        .transpose()?;
    // Checked before any agent is started: a refusal must not leave one behind.
    let token = server::bearer_policy(a.listen, token)?
        .token()
        .map(str::to_owned);
    let policy = server::ServePolicy {
        allowed_hosts: a.allowed_host.clone(),
        entry_hosts: a.allow_entry_host.clone(),
        topology_dir: a.topology_dir.clone(),
        ..server::ServePolicy::default()
    };
    policy.check_start(token.is_some())?;
    let lease = lease_arg(a.lease)?;
    let rt = runtime()?;
    let set = connect(
        &rt,
        &a.agent,
        a.agent_token_file.as_deref(),
        a.agent_state_dir.as_deref(),
        None,
        None,
    )?;
    let cfg = server::ServeConfig {
        listen: a.listen,
        token,
        results_dir: a
            .results_dir
            .clone()
            .unwrap_or_else(ResultStore::default_dir),
        agents: set.agents.clone(),
        launcher: Arc::new(server::RealLauncher::with_emulator(Arc::new(EmuApps))),
        policy,
        lease,
    };
    eprintln!("slowpoke serve: http://{}/", a.listen);
    let r = rt.block_on(server::serve(cfg));
    set.shutdown(&rt);
    r
}

#[expect(
    clippy::too_many_lines,
    reason = "argument checks and suite dispatch of `slowpoke eval`; issue #14 gives each subcommand its own file under bin/slowpoke/"
)]
fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    use slowpoke_coordinator::eval::{runner, suite, summary};
    let which: suite::SuiteName = a.suite.parse().map_err(anyhow::Error::msg)?;
    let mut cases = suite::cases(which, &a.families).map_err(anyhow::Error::msg)?;
    if !a.points.is_empty() {
        if let Some(p) = a
            .points
            .iter()
            .find(|p| !(p.is_finite() && **p > 0.0 && **p < 100.0))
        {
            bail!("--points: {p} is not a percentage between 0 and 100 (exclusive)");
        }
        for c in &mut cases {
            c.points.clone_from(&a.points);
        }
    }
    let settings: Vec<runner::Setting> = if a.settings.is_empty() {
        vec![runner::Setting::default()]
    } else {
        a.settings
            .iter()
            .map(|s| s.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    };
    let placements: Vec<runner::Placement> = if a.placements.is_empty() {
        vec![runner::Placement::Shared]
    } else {
        a.placements
            .iter()
            .map(|s| s.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?
    };
    if a.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if !(a.duration.is_finite() && a.duration > 0.0) {
        bail!(
            "--duration must be a positive number of seconds (got {})",
            a.duration
        );
    }
    if a.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if let Some(share) = a.max_stopped_share {
        stopped_share_arg(share)?;
    }
    let opts = runner::EvalOptions {
        suite: a.suite.clone(),
        out_dir: a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("target/slowpoke-eval").join(&a.suite)),
        resume: a.resume,
        settings,
        placements,
        repetitions: a.repetitions,
        window_s: a.duration,
        precision_pct: precision_arg(a.precision)?,
        budget_s: budget_arg(a.budget)?,
        connections: a.connections,
    };
    let store = ResultStore::new(
        a.results_dir
            .clone()
            .unwrap_or_else(ResultStore::default_dir),
    );
    let rt = runtime()?;
    let set = connect(
        &rt,
        &a.agent,
        a.agent_token_file.as_deref(),
        a.agent_state_dir.as_deref(),
        a.max_stopped_share,
        Some(EVAL_MAX_STOPPED_SHARE),
    )?;
    let monitor = Monitor::new();
    cancel_on_signal(&rt, &monitor);
    eprintln!(
        "slowpoke eval: suite `{}`, {} cases, results in {}",
        a.suite,
        cases.len(),
        opts.out_dir.display()
    );
    let r = runner::run(&cases, &opts, &set.agents, &store, &monitor, &|line| {
        eprintln!("{line}");
    });
    set.shutdown(&rt);
    let file = r?;
    let sum = summary::summarize(&file.points);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "suite": a.suite,
                "out": opts.out_dir,
                "points": file.points.len(),
                "summary": sum,
            })
        );
    } else {
        for (setting, groups) in &sum.settings {
            println!("setting {setting}:");
            println!(
                "  {:<16} {:>6} {:>8} {:>10} {:>10} {:>10} {:>11}",
                "family", "points", "RMSE", "max |err|", "within 5%", "no change", "noise floor"
            );
            let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |v| format!("{v:.1}%"));
            for g in groups {
                println!(
                    "  {:<16} {:>6} {:>8} {:>10} {:>10} {:>10} {:>11}",
                    g.group,
                    g.points,
                    f(g.rmse_pct),
                    f(g.max_abs_error_pct),
                    f(g.within_5_pct),
                    f(g.strawman_rmse_pct),
                    f(g.noise_floor_pct)
                );
            }
        }
        println!(
            "report: {}\nplot:   {}\npoints: {}",
            opts.out_dir.join("report.md").display(),
            opts.out_dir.join("plot.svg").display(),
            opts.out_dir.join("results.json").display()
        );
    }
    if monitor.is_cancelled() {
        bail!("cancelled; run again with --resume to continue");
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct AgentRow {
    agent: String,
    healthy: bool,
    status: String,
    version: Option<String>,
    features: BTreeMap<String, String>,
}

fn list_agents(a: &AgentArgs) -> anyhow::Result<()> {
    let urls = if a.agent.is_empty() {
        // Checked like any local daemon before it is asked anything.
        let _ = agents::local_daemon(None)?;
        vec![format!("unix:{}", agents::local_socket(None).display())]
    } else {
        a.agent.clone()
    };
    let list = http_agents(&urls, a.agent_token_file.as_deref())?;
    let rows: Vec<AgentRow> = list
        .iter()
        .map(|ag| match ag.health() {
            Ok(h) => AgentRow {
                agent: ag.name(),
                healthy: h.status == "ok",
                status: h.status,
                version: Some(h.version),
                features: h.features,
            },
            Err(e) => AgentRow {
                agent: ag.name(),
                healthy: false,
                status: e.to_string(),
                version: None,
                features: BTreeMap::new(),
            },
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<28} {:<8} {}",
                r.agent,
                if r.healthy { "healthy" } else { "DOWN" },
                r.version.as_deref().unwrap_or("")
            );
            if !r.healthy {
                println!("    {}", r.status);
            }
            for (k, v) in &r.features {
                println!("    {k}: {v}");
            }
        }
        if a.agent.is_empty() && !rows[0].healthy {
            println!(
                "(no agent daemon on this node: `slowpoke what-if` then starts an agent in its own process)"
            );
        }
    }
    if rows.iter().all(|r| r.healthy) {
        Ok(())
    } else {
        bail!(
            "{} of {} agents are not healthy",
            rows.iter().filter(|r| !r.healthy).count(),
            rows.len()
        )
    }
}

fn results_cmd(a: &ResultsArgs) -> anyhow::Result<()> {
    let store = ResultStore::new(
        a.results_dir
            .clone()
            .unwrap_or_else(ResultStore::default_dir),
    );
    match &a.action {
        ResultsAction::List => {
            let list = store.list()?;
            if a.json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no results in {}", store.dir().display());
            } else {
                for r in list {
                    println!("{:<44} {:<8} {}", r.id, r.kind, r.summary);
                }
            }
        }
        ResultsAction::Show { id } => {
            let r = store.load(id)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                match &r {
                    StoredResult::WhatIf(w) => print!("{}", report::what_if_table(w)),
                    StoredResult::Profile(p) => print!("{}", report::profile_table(p)),
                }
                println!("({})", results::summarize(&r).created);
            }
        }
    }
    Ok(())
}

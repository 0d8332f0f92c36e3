//! What every experiment subcommand shares: where the app is, how to load it, which agents to
//! use ([`CommonArgs`], also the keys of `--experiment FILE`), and the checks of the flags'
//! values. The rules a request obeys are the library's (`spec_builder`); here they speak in flags.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use slowpoke_coordinator::experiment::{LoadConfig, Safety, Timing};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease, MIN_LEASE};
use slowpoke_coordinator::results::ResultStore;
use slowpoke_coordinator::spec_builder::{self, AppFields, AppRequest, BuildError, Field};

/// Where the app is, how to load it, which agents to use. Also the keys of `--experiment FILE`.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub(crate) struct CommonArgs {
    /// Emulated app to start from a topology file (slowpoke-emu format).
    #[arg(long, value_name = "FILE")]
    pub(crate) topology: Option<PathBuf>,
    /// Change the topology before starting it: svc.endpoint.key=value or svc.key=value.
    #[arg(long = "set", value_name = "SET")]
    pub(crate) set: Vec<String>,
    /// A service of a running app: NAME=SELECTOR (port:8080, pid:123, comm:nginx, cgroup:/path,
    /// pod:NAMESPACE/NAME or label:NAMESPACE/key=value[,key=value], either one optionally with
    /// +port:8080 for the port inside the pods).
    #[arg(long = "service", value_name = "NAME=SELECTOR")]
    pub(crate) service: Vec<String>,
    /// The URL end-to-end requests enter through (with --service).
    #[arg(long, value_name = "URL")]
    pub(crate) entry: Option<String>,
    /// The service owning the entry port, when the agents cannot tell.
    #[arg(long, value_name = "NAME")]
    pub(crate) entry_service: Option<String>,
    /// Extra request header 'K: V' (repeatable).
    #[arg(long = "header", value_name = "K: V")]
    pub(crate) header: Vec<String>,
    /// HTTP method of the load's requests.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Request body.
    #[arg(long)]
    pub(crate) body: Option<String>,
    /// Closed-loop connections (default 64).
    #[arg(long)]
    pub(crate) connections: Option<usize>,
    /// Length of one measurement window, seconds.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) duration: Option<f64>,
    /// Load before the first window, seconds (default 3).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) warmup: Option<f64>,
    /// Abort when the load sees more than this share of errors in a window, % (default 1).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub(crate) max_errors: Option<f64>,
    /// Pause quantum, µs: the agents pay each service's debt in pauses of at least this long
    /// (default 10000: fewer, longer pauses bias the slowed-down throughput less).
    #[arg(long, value_name = "US", allow_negative_numbers = true)]
    pub(crate) quantum_us: Option<f64>,
    /// How delays are applied: `synchronized` (default: when one service's debt is due, every
    /// delayed service of the node pays at the same moment, and of every node with several
    /// agents), `synchronized-per-node` (the same within each node only), `per-service` (each on
    /// its own debt) or `spin` (in-kernel busy wait; dedicated cores only). docs/evaluation.md
    /// compares them.
    #[arg(long, value_name = "KIND")]
    pub(crate) actuator: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) agents: AgentArgs,
    /// Lease of the plans on the agents, seconds (default 15): renewed while the experiment
    /// runs; if slowpoke dies (killed, out of memory, cut off), the agents remove its plan and
    /// resume every service within this long. At most the agents' --max-lease-s.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) lease: Option<f64>,
    /// Safety cap of the in-process agent: the most of any second a service may spend stopped
    /// (default 0.5). Removing a share s of the bottleneck's time (or doubling its cores,
    /// s = 1/2) pauses the others about s of the time: large what-ifs need more.
    #[arg(long, value_name = "SHARE", allow_negative_numbers = true)]
    pub(crate) max_stopped_share: Option<f64>,
    /// Where results are stored (default $SLOWPOKE_RESULTS_DIR, $XDG_STATE_HOME/slowpoke/results
    /// or ./results).
    #[arg(long, value_name = "DIR")]
    pub(crate) results_dir: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) json: bool,
    /// Read the experiment from a YAML or JSON file (same keys as the long options);
    /// options on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub(crate) experiment: Option<PathBuf>,
}

/// How to reach the node agents: the flags of every subcommand that runs experiments (also keys
/// of `--experiment FILE`).
#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub(crate) struct AgentArgs {
    /// A node agent's URL (repeatable): http://host:7171 (with --agent-token-file) or
    /// unix:/path/agent.sock. Default: the daemon on this node (its socket
    /// /run/slowpoke/agent.sock) when one runs, else an agent in this process.
    #[arg(long = "agent", value_name = "URL")]
    pub(crate) agent: Vec<String>,
    /// A cluster description (JSON, docs/multi-node.md; `cargo xtask cluster up` writes
    /// target/cluster/cluster.json): one agent per node, each with its own token file, named by
    /// its node. Instead of --agent.
    #[arg(long, value_name = "FILE", env = "SLOWPOKE_CLUSTER")]
    pub(crate) cluster: Option<PathBuf>,
    /// File holding the agents' bearer token (default $SLOWPOKE_AGENT_TOKEN); with --cluster,
    /// the token of the nodes that name no token file.
    #[arg(long, value_name = "FILE")]
    pub(crate) agent_token_file: Option<PathBuf>,
    /// State directory of the in-process agent (default /run/slowpoke; one agent per directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) agent_state_dir: Option<PathBuf>,
    /// The kubeconfig that pod: and label: selectors are resolved with (default: $KUBECONFIG,
    /// ~/.kube/config, or the pod's service account when slowpoke runs in the cluster).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
}

impl AgentArgs {
    /// The command line's values win over the experiment file's.
    pub(crate) fn merge(&mut self, f: AgentArgs) {
        // Either way of naming the agents on the command line replaces the file's.
        if self.agent.is_empty() && self.cluster.is_none() {
            self.agent = f.agent;
            self.cluster = f.cluster;
        }
        merge_opt(&mut self.agent_token_file, f.agent_token_file);
        merge_opt(&mut self.agent_state_dir, f.agent_state_dir);
        merge_opt(&mut self.kubeconfig, f.kubeconfig);
    }
}

pub(crate) fn read_experiment_file<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
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

pub(crate) fn merge_vec<T>(cli: &mut Vec<T>, file: Vec<T>) {
    if cli.is_empty() {
        *cli = file;
    }
}

pub(crate) fn merge_opt<T>(cli: &mut Option<T>, file: Option<T>) {
    if cli.is_none() {
        *cli = file;
    }
}

impl CommonArgs {
    pub(crate) fn merge(&mut self, f: CommonArgs) {
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
        self.agents.merge(f.agents);
        merge_opt(&mut self.lease, f.lease);
        merge_opt(&mut self.max_stopped_share, f.max_stopped_share);
        merge_opt(&mut self.results_dir, f.results_dir);
    }

    pub(crate) fn load_config(&self) -> anyhow::Result<LoadConfig> {
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

    pub(crate) fn timing(&self, default: Timing) -> anyhow::Result<Timing> {
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
    pub(crate) fn lease(&self, owner: &str) -> anyhow::Result<Lease> {
        let secs = self.lease.map_or(Ok(DEFAULT_LEASE), lease_arg)?;
        Ok(Lease::new(owner, secs))
    }

    pub(crate) fn safety(&self) -> anyhow::Result<Safety> {
        let mut s = Safety::default();
        if let Some(m) = self.max_errors {
            if !(m.is_finite() && (0.0..=100.0).contains(&m)) {
                bail!("--max-errors must be a percentage between 0 and 100 (got {m})");
            }
            s.max_error_ratio = m / 100.0;
        }
        Ok(s)
    }

    pub(crate) fn store(&self) -> ResultStore {
        ResultStore::new(
            self.results_dir
                .clone()
                .unwrap_or_else(ResultStore::default_dir),
        )
    }

    /// The app described by --topology or --service/--entry (not started yet).
    pub(crate) fn app_request(&self) -> anyhow::Result<AppRequest> {
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
pub(crate) fn flag(f: Field) -> String {
    match f {
        Field::Topology => "--topology FILE".into(),
        Field::Entry => "--entry URL".into(),
        Field::Services => "--service".into(),
        f => format!("--{}", f.as_str().replace('_', "-")),
    }
}

/// A request error in the CLI's words.
pub(crate) fn flags(e: &BuildError) -> anyhow::Error {
    anyhow::anyhow!(e.render(flag))
}

/// `--lease S`: seconds, at least [`MIN_LEASE`] (renewals come every third of it).
pub(crate) fn lease_arg(s: f64) -> anyhow::Result<std::time::Duration> {
    if !(s.is_finite() && s >= MIN_LEASE.as_secs_f64() && s <= 86_400.0) {
        bail!(
            "--lease must be between {} and 86400 seconds (got {s})",
            MIN_LEASE.as_secs_f64()
        );
    }
    Ok(std::time::Duration::from_secs_f64(s))
}

/// `--precision P`: a positive percentage, or 0 to turn repeating for precision off (None).
pub(crate) fn precision_arg(p: f64) -> anyhow::Result<Option<f64>> {
    if p == 0.0 {
        return Ok(None);
    }
    if !(p.is_finite() && p > 0.0) {
        bail!("--precision must be a positive percentage, or 0 to turn it off (got {p})");
    }
    Ok(Some(p))
}

/// `--budget S`: a non-negative number of seconds.
pub(crate) fn budget_arg(b: f64) -> anyhow::Result<f64> {
    if !(b.is_finite() && b >= 0.0) {
        bail!("--budget must be a non-negative number of seconds (got {b})");
    }
    Ok(b)
}

/// `--max-stopped-share`: a share of wall time in (0, 1].
pub(crate) fn stopped_share_arg(share: f64) -> anyhow::Result<f64> {
    if !(share > 0.0 && share <= 1.0) {
        bail!("--max-stopped-share must be in (0, 1] (got {share})");
    }
    Ok(share)
}

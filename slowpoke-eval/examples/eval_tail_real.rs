//! `cargo xtask eval --suite tail-real`: the tail suite (`slowpoke_eval::tail_suite`) on a real
//! thread-per-request app of Debian's servers instead of the emulator:
//!
//! - `php-fanout`: apache2 with the prefork MPM and `mod_php` (a process per request) as the front,
//!   which burns CPU and then calls three leaves at once with `curl_multi`, each leaf another such
//!   apache2 burning CPU (`slowpoke_testkit::php`). Defaults: the work of the emulated
//!   `tail-fanout-3-ms-exp` (0.5 ms, then 3 × 1.5 ms, exponential), 32 processes per server.
//!
//! Same protocol as `slowpoke eval --suite tail`: the closed-loop saturation rate first, then
//! every arm (default, oldest-first, per-service-fifo) at 50–95 % of it, interleaved and
//! repeated. Writes results.json, report.md and one latency CDF per case to `--out`. Needs root
//! (the in-process agent loads the kernel programs and applies the schedules).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use slowpoke_api::agent as api;
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{App, AttachedApp, Monitor};
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_eval::tail_suite::{self, TailSuiteOptions};
use slowpoke_testkit::php::{PhpFanout, RunningPhpFanout};

/// The cases this suite knows.
const CASES: [&str; 1] = ["php-fanout"];

/// The tail suite on real servers (apache2 prefork + `mod_php` fan-out).
#[derive(Debug, Parser)]
#[command(name = "eval_tail_real")]
struct Args {
    /// Where results.json, report.md and the CDF plots go.
    #[arg(long, default_value = "target/slowpoke-eval/tail-real")]
    out: PathBuf,
    /// Cases to run (default: all).
    #[arg(long, value_delimiter = ',', value_name = "CASE,..")]
    families: Vec<String>,
    /// Windows per arm and rate.
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Seconds per window.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Requests run first at once, in their order (the agent's default when not given).
    #[arg(long)]
    tail_k: Option<u32>,
    /// Share of each CPU a schedule's real-time threads may hold (the agent's default when not
    /// given).
    #[arg(long)]
    tail_max_share: Option<f64>,
    /// apache2 processes per server.
    #[arg(long, default_value_t = 32)]
    workers: u32,
    /// Print results.json's content instead of the report.
    #[arg(long)]
    json: bool,
}

/// A running case: its servers (stopped when dropped) and how to reach them.
struct RealApp {
    _servers: RunningPhpFanout,
    attached: AttachedApp,
}

impl App for RealApp {
    fn services(&self) -> std::collections::BTreeMap<String, api::ServiceSpec> {
        self.attached.services()
    }
    fn entry_url(&self) -> String {
        self.attached.entry_url()
    }
    fn entry_service(&self) -> Option<String> {
        self.attached.entry_service()
    }
}

/// Starts `name` (one of [`CASES`], checked by `main`) with `workers` processes per server.
fn start(_name: &str, workers: u32) -> Box<dyn App> {
    let servers = PhpFanout {
        workers,
        ..PhpFanout::default()
    }
    .start();
    // Pids (each server's parent and prefork children) select the processes; their port counts
    // the visits.
    let spec = |p: &slowpoke_testkit::Proc| api::ServiceSpec {
        pids: Some(p.pids()),
        listen_ports: Some(vec![p.port]),
        ..Default::default()
    };
    let mut services = std::collections::BTreeMap::new();
    services.insert("front".to_owned(), spec(&servers.front));
    for (i, leaf) in servers.leaves.iter().enumerate() {
        services.insert(format!("leaf{}", i + 1), spec(leaf));
    }
    let attached = AttachedApp {
        services,
        entry: servers.entry.clone(),
        entry_service: Some("front".into()),
    };
    Box::new(RealApp {
        _servers: servers,
        attached,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let defaults = TailSuiteOptions::default();
    let opts = TailSuiteOptions {
        out_dir: args.out.clone(),
        topologies: if args.families.is_empty() {
            CASES.iter().map(|s| (*s).to_owned()).collect()
        } else {
            args.families.clone()
        },
        repetitions: args.repetitions,
        window_s: args.duration,
        schedule: slowpoke_api::coordinator::TailSchedule {
            k: args.tail_k,
            max_share: args.tail_max_share,
            ..defaults.schedule.clone()
        },
        ..defaults
    };
    anyhow::ensure!(args.repetitions >= 1, "--repetitions must be at least 1");
    anyhow::ensure!(args.workers >= 1, "--workers must be at least 1");
    slowpoke_coordinator::experiment::tail::check_schedule(&opts.schedule)
        .map_err(|e| anyhow::anyhow!("--tail-k/--tail-max-share: {e}"))?;
    for name in &opts.topologies {
        anyhow::ensure!(
            CASES.contains(&name.as_str()),
            "unknown case {name} (known: {})",
            CASES.join(", ")
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: std::env::temp_dir().join("slowpoke-eval-tail-real-agent"),
        ..slowpoke_agent::AgentConfig::default()
    };
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .context("starting the in-process agent (needs root)")?;
    let inner = agent.agent().clone();
    let agents: Vec<SharedAgent> = vec![Arc::new(agent)];
    let monitor = Monitor::new();
    let m = monitor.clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: removing every schedule ...");
            m.cancel();
        }
    });
    eprintln!(
        "eval_tail_real: {} at {:?} of saturation, results in {}",
        opts.topologies.join(", "),
        opts.fractions,
        opts.out_dir.display()
    );
    let workers = args.workers;
    let r = tail_suite::run_apps(&opts, &agents, &monitor, &|l| eprintln!("{l}"), &|name| {
        Ok(start(name, workers))
    });
    drop(agents);
    rt.block_on(inner.shutdown());
    tail_suite::print(&r?, &opts.out_dir, args.json)
}

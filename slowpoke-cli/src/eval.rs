//! `slowpoke eval`: the accuracy suites of `slowpoke-eval` against the emulator's ground truth
//! (feature `emu`).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use slowpoke_coordinator::experiment::Monitor;
use slowpoke_coordinator::results::ResultStore;

use crate::common::AgentArgs;
use crate::common::{budget_arg, precision_arg, stopped_share_arg};
use crate::connect::{AgentSet, connect, named_agents};
use crate::progress::{cancel_on_signal, runtime};

#[derive(Args, Debug)]
pub(crate) struct EvalArgs {
    /// `quick`: 6 families x 3 points (about 20 min); `full`: every family x sync/async x
    /// leaf/inner target x 5 points, plus the mutex and scaling cases (hours; resumable);
    /// `tail`: default scheduling vs the tail schedules at 50-95 % utilisation (--families
    /// picks topologies: tail-fanout-3, tail-chain-3).
    #[arg(long, default_value = "quick")]
    pub(crate) suite: String,
    /// Where results.json, report.md, plot.svg and the topologies go
    /// (default target/slowpoke-eval/<suite>).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
    /// Continue the results already in --out (measured points are kept, failed ones rerun).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Only these families (e.g. chain,fanout,mutex).
    #[arg(long, value_delimiter = ',', value_name = "F,..")]
    pub(crate) families: Vec<String>,
    /// Replace every case's points: Δ as % of the target's configured work (10..90), or
    /// thread counts for the scaling case.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    pub(crate) points: Vec<f64>,
    /// Actuator settings to compare, each run on every point back to back: pause-<ms>ms,
    /// sync-<ms>ms (synchronized pauses, across nodes too), nodesync-<ms>ms (synchronized within
    /// each node only) or spin (default: sync-10ms, the what-if default).
    #[arg(long, value_delimiter = ',', value_name = "S,..")]
    pub(crate) settings: Vec<String>,
    /// Placements: shared (every service on every CPU), pinned (the target alone on one CPU)
    /// and/or cluster (spread over --cluster's nodes, the target on the first). Default shared;
    /// suite `cluster`: shared,cluster.
    #[arg(long, value_delimiter = ',', value_name = "P,..")]
    pub(crate) placements: Vec<String>,
    /// Repetitions per point (base, slow, truth interleaved; the middle 3 of 5 are kept).
    #[arg(long, default_value_t = 5)]
    pub(crate) repetitions: usize,
    /// Length of one measurement window, seconds.
    #[arg(
        long,
        default_value_t = 3.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub(crate) duration: f64,
    /// After --repetitions, keep repeating a point (base, slow, truth) until the prediction's
    /// 95 % CI half-width is at most this % (0: off, the default) or --budget runs out.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "PCT",
        allow_negative_numbers = true
    )]
    pub(crate) precision: f64,
    /// Most seconds one point may take while repeating for --precision.
    #[arg(
        long,
        default_value_t = 240.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub(crate) budget: f64,
    /// Connections of the closed-loop load.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Safety cap of the in-process agent: most of its time a service may spend stopped
    /// outside plans that ask for more [default: 0.5; a running agent keeps its own]. Each
    /// point's plan asks for the share it needs, up to 0.95 here (or this cap if higher).
    #[arg(long, value_name = "SHARE")]
    pub(crate) max_stopped_share: Option<f64>,
    /// The agents of placements shared and pinned (default: this node's); `--cluster FILE` is
    /// the cluster of placement `cluster` (its nodes and their agents).
    #[command(flatten)]
    pub(crate) agents: AgentArgs,
    /// Suite `tail` only: the schedules' k (requests run first, in their order, per node, or
    /// per service for per-service-fifo) [default: the agent's, 1].
    #[arg(long, value_name = "K")]
    pub(crate) tail_k: Option<u32>,
    /// Suite `tail` only: the schedules' share cap (most of each CPU promoted threads may take
    /// per 10 ms) [default: the agent's, 0.5].
    #[arg(long, value_name = "SHARE")]
    pub(crate) tail_max_share: Option<f64>,
    #[arg(long, value_name = "DIR")]
    pub(crate) results_dir: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// The most a plan may ask of the in-process agent in `slowpoke eval`: a what-if removing a
/// share s of the bottleneck's time stops the others about s·(its busy share) of the time, and
/// the suite's Δ = 90 % points on saturated targets need up to about 0.9 with the margin
/// (docs/model.md, "The stopped share a plan needs"), a little more than an everyday agent's 0.9.
pub(crate) const EVAL_MAX_PLAN_STOPPED_SHARE: f64 = 0.95;

#[expect(
    clippy::too_many_lines,
    reason = "the flags' checks, the suite's run and its summary table, in the order `slowpoke eval` does them"
)]
pub(crate) fn eval(a: &EvalArgs) -> anyhow::Result<()> {
    use slowpoke_eval::{runner, suite, summary};
    if a.suite == "tail" {
        return eval_tail(a);
    }
    if a.tail_k.is_some() || a.tail_max_share.is_some() {
        bail!("--tail-k and --tail-max-share are for --suite tail");
    }
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
        default_placements(which)
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
    let (set, cluster) = eval_agents(&rt, a, &opts.placements)?;
    let monitor = Monitor::new();
    cancel_on_signal(&rt, &monitor);
    eprintln!(
        "slowpoke eval: suite `{}`, {} cases, results in {}",
        a.suite,
        cases.len(),
        opts.out_dir.display()
    );
    let r = runner::run(
        &cases,
        &opts,
        &set.agents,
        cluster.as_ref(),
        &store,
        &monitor,
        &|line| {
            eprintln!("{line}");
        },
    );
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

/// `slowpoke eval --suite tail`: the tail suite on this node's agent (docs/evaluation.md).
fn eval_tail(a: &EvalArgs) -> anyhow::Result<()> {
    use slowpoke_eval::tail_suite;
    if a.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    if !(a.duration.is_finite() && a.duration >= 0.1) {
        bail!("--duration must be at least 0.1 s (got {})", a.duration);
    }
    if a.agents.cluster.is_some() {
        bail!("the tail suite runs on one node: give --agent or nothing (not --cluster)");
    }
    let defaults = tail_suite::TailSuiteOptions::default();
    let opts = tail_suite::TailSuiteOptions {
        out_dir: a.out.clone().unwrap_or(defaults.out_dir.clone()),
        topologies: if a.families.is_empty() {
            defaults.topologies.clone()
        } else {
            a.families.clone()
        },
        repetitions: a.repetitions,
        window_s: a.duration,
        schedule: slowpoke_api::coordinator::TailSchedule {
            k: a.tail_k,
            max_share: a.tail_max_share,
            ..defaults.schedule.clone()
        },
        ..defaults
    };
    slowpoke_coordinator::experiment::tail::check_schedule(&opts.schedule)
        .map_err(|e| anyhow::anyhow!("--tail-k/--tail-max-share: {e}"))?;
    let rt = runtime()?;
    let set = connect(&rt, &a.agents, a.max_stopped_share, None)?;
    let monitor = Monitor::new();
    cancel_on_signal(&rt, &monitor);
    eprintln!(
        "slowpoke eval: suite `tail`, {} topologies at {:?} of saturation, results in {}",
        opts.topologies.len(),
        opts.fractions,
        opts.out_dir.display()
    );
    let r = tail_suite::run(&opts, &set.agents, &monitor, &|line| eprintln!("{line}"));
    set.shutdown(&rt);
    tail_suite::print(&r?, &opts.out_dir, a.json)
}

/// Placements when `--placements` is not given: both sides of the comparison for suite
/// `cluster`, else `shared`.
fn default_placements(
    suite: slowpoke_eval::suite::SuiteName,
) -> Vec<slowpoke_eval::runner::Placement> {
    use slowpoke_eval::{runner::Placement, suite::SuiteName};
    match suite {
        SuiteName::Cluster => vec![Placement::Shared, Placement::Cluster],
        _ => vec![Placement::Shared],
    }
}

/// The agents of the placements on this node (`--agent`, the node's daemon or one in this
/// process; none when only placement `cluster` runs) and the cluster of placement `cluster`
/// (`--cluster`: its nodes and their agents, each answering).
fn eval_agents(
    rt: &tokio::runtime::Runtime,
    a: &EvalArgs,
    placements: &[slowpoke_eval::runner::Placement],
) -> anyhow::Result<(AgentSet, Option<slowpoke_eval::runner::ClusterSetup>)> {
    use slowpoke_eval::runner::{ClusterSetup, Placement};
    let on_cluster = placements.contains(&Placement::Cluster);
    let cluster = match (&a.agents.cluster, on_cluster) {
        (None, true) => bail!(
            "placement `cluster` needs --cluster FILE (a cluster description, e.g. the target/cluster/cluster.json that `cargo xtask cluster up` writes; docs/multi-node.md)"
        ),
        (Some(f), false) => bail!(
            "--cluster {} is the cluster of placement `cluster`: add it to --placements (suite `cluster` runs shared,cluster)",
            f.display()
        ),
        (None, false) => None,
        (Some(file), true) => {
            let desc =
                slowpoke_api::cluster::ClusterFile::load(file).map_err(anyhow::Error::msg)?;
            let agents = named_agents(&AgentArgs {
                cluster: Some(file.clone()),
                agent_token_file: a.agents.agent_token_file.clone(),
                ..AgentArgs::default()
            })?;
            for agent in &agents {
                agent.health()?;
            }
            Some(ClusterSetup {
                file: file.clone(),
                nodes: desc.nodes.iter().map(|n| n.name.clone()).collect(),
                agents,
            })
        }
    };
    let local = if placements.iter().any(|p| *p != Placement::Cluster) {
        connect(
            rt,
            &AgentArgs {
                agent: a.agents.agent.clone(),
                cluster: None,
                agent_token_file: a.agents.agent_token_file.clone(),
                agent_state_dir: a.agents.agent_state_dir.clone(),
                kubeconfig: None,
            },
            a.max_stopped_share,
            Some(EVAL_MAX_PLAN_STOPPED_SHARE),
        )?
    } else {
        AgentSet::remote(Vec::new())
    };
    Ok((local, cluster))
}

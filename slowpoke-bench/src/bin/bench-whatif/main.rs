//! `bench-whatif` (`cargo xtask bench whatif`): how long the coordinator takes to answer a
//! 5-point what-if at its default precision, with the load generator's and the node's CPU
//! alongside, in one run. Prints
//! one JSON object on stdout; progress goes to stderr. Needs root (the in-process agent loads the
//! kernel programs) and the release emulator (`$SLOWPOKE_EMU_BIN`, else next to this binary).
//!
//! 1. **what-ifs**: the emulated app of `--topology` (default `testkit/topologies/shop.json`) is
//!    started once; its expected bottleneck T gets 5 what-ifs, Δ = 10, 30, 50, 70, 90 % of the
//!    CPU work the topology configures for T per visit, each with `experiment::run_what_if` at the
//!    defaults the CLI uses (`Timing::default()`, `Repeat::default()`: 5 repetitions, then more
//!    until the prediction's 95 % CI half-width is ≤ 3 %, 120 s budget), no ground truth, through
//!    the in-process agent `slowpoke what-if` starts (`real::InProcessAgent`). Each what-if
//!    interleaves its own base/slow windows. Per point: wall time, repetitions, stop reason,
//!    achieved precision, predicted gain, and where the time went (warm-up, windows, settle).
//! 2. **profile**: the same 5 points as one `run_profile` sweep of T alone
//!    (`ProfileSpec::default()`: 3 sweeps of 1 s windows, no precision target), side by side.
//! 3. **load**: every window of both, the generator's CPU share of the machine, its run-queue
//!    wait and CPU per request (`slowpoke_load::Window`), and the node's busy share
//!    (`/proc/stat`), measured by a wrapper around the same load the CLI starts.
//! 4. **agent overhead** at zero delay: `bench-agent --only hook,tracked` when `xtask` passes
//!    its binary in `$SLOWPOKE_BENCH_AGENT_BIN` (run first, before the agent of this process
//!    loads its programs), else a pointer to `cargo xtask bench agent`.
//!
//! `cargo xtask bench whatif [-- --topology FILE --no-profile --quick]`
//!
//! Modules: [`load`] records the windows' CPU (3), [`report`] turns results into the JSON,
//! [`agent_overhead`] runs `bench-agent` (4).

mod agent_overhead;
mod compare;
mod load;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use slowpoke_bench::machine::LoadAvg;
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{
    self, Backends, LoadConfig, Monitor, ProfileSpec, Repeat, Safety, Timing, WhatIfSpec,
};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::InProcessAgent;
use slowpoke_eval::EmuApp;
use slowpoke_stats::round4 as r;

use crate::{
    agent_overhead::agent_overhead,
    load::Recorder,
    report::{
        GOAL_PER_POINT_S, Report, build_report, cpu_json, profile_json, repeat_json, timing_json,
        what_if_point,
    },
};

/// Time to answer a 5-point what-if at the coordinator's default precision, with the load
/// generator's and the node's CPU. Prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(name = "bench-whatif")]
struct Args {
    /// The emulated app [default: testkit/topologies/shop.json of the workspace]
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Optimizations, % of the configured per-visit CPU work of the bottleneck
    #[arg(long, value_delimiter = ',', default_value = "10,30,50,70,90")]
    percents: Vec<f64>,
    /// Skip the `run_profile` sweep of the same points
    #[arg(long)]
    no_profile: bool,
    /// Skip the separate what-ifs (only the shared-baseline sweep)
    #[arg(long)]
    no_whatif: bool,
    /// Rounds of the what-ifs: each runs every Δ with both protocols and a ground truth
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Smoke test of this program, NOT the defaults: 1 repetition, no precision target, 0.5 s
    /// windows and warm-up, 1 profile sweep
    #[arg(long)]
    quick: bool,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench-whatif: error: {e:#}");
        std::process::exit(1);
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the benchmark protocol (start the app, interleave old/new protocol, report) reads top to bottom"
)]
fn real_main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf();
    let topology_path = args
        .topology
        .clone()
        .unwrap_or_else(|| root.join("testkit/topologies/shop.json"));
    let loadavg_start = loadavg();
    let uptime_start = uptime();
    let date_utc = experiment::now_rfc3339();
    eprintln!("bench-whatif: load average at start: {uptime_start}");

    // 4. Agent overhead first: its kernel programs must not overlap with the agent's below.
    let agent_overhead = agent_overhead();

    let topo = slowpoke_emu::load(&topology_path)
        .with_context(|| format!("loading {}", topology_path.display()))?;
    let (target, _) = slowpoke_emu::expected_bottleneck(&topo)
        .context("the topology has no bottleneck service")?;
    let configured_cpu_us = configured_work(&topo, &target)?;
    let emu_bin = std::env::var_os(slowpoke_emu::client::BIN_ENV)
        .map_or_else(slowpoke_emu::find_binary, PathBuf::from);
    if !emu_bin.is_file() {
        bail!(
            "the slowpoke-emu binary {} does not exist: build it (cargo build --release -p slowpoke-emu) or set {}",
            emu_bin.display(),
            slowpoke_emu::client::BIN_ENV
        );
    }
    eprintln!(
        "bench-whatif: {} ({} services), target {target} ({configured_cpu_us} µs configured), emulator {}",
        topology_path.display(),
        topo.services.len(),
        emu_bin.display()
    );

    // The agent `slowpoke what-if` starts in its own process, with a private state directory so
    // that it does not contend for the node's lock with anyone else's agent.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let state_dir =
        std::env::temp_dir().join(format!("slowpoke-bench-whatif-{}", std::process::id()));
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: state_dir.clone(),
        ..slowpoke_agent::AgentConfig::default()
    };
    let t = Instant::now();
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .context("starting the in-process agent (needs root)")?;
    let agent_start_s = t.elapsed().as_secs_f64();
    let inner = agent.agent().clone();
    let agents: Vec<SharedAgent> = vec![Arc::new(agent)];

    let t = Instant::now();
    let app = EmuApp::start(&topology_path, &[])?;
    let app_start_s = t.elapsed().as_secs_f64();
    let recorder = Recorder::default();
    let mut backends = Backends {
        agents,
        app: Box::new(app),
        load: Arc::new(recorder.clone()),
        lease: slowpoke_coordinator::lease::Lease::default(),
        kubernetes: std::sync::Arc::default(),
    };
    let monitor = Monitor::new();
    let phases = Phases::default();
    let log = phases.clone();
    monitor.on_progress(move |p| log.seen(&p.phase, p.last_rps));

    let [default, thorough] = compare::protocols(args.quick);
    let (truth_timing, truth_repeat) = compare::truth_protocol(args.quick);

    // 1. What-ifs: the default protocol and the thorough one side by side, and a ground truth.
    let mut points = Vec::new();
    let mut whatif_windows = Vec::new();
    let mut whatif_total_s = 0.0;
    let whatif_percents: &[f64] = if args.no_whatif { &[] } else { &args.percents };
    let spec_for = |delta_us: f64, timing: Timing, repeat: Repeat, truth: bool| WhatIfSpec {
        target: target.clone(),
        optimization: Optimization::DeltaUs(delta_us),
        load: LoadConfig::default(),
        timing,
        repeat,
        safety: Safety::default(),
        truth,
        entry_service: None,
    };
    for round in 0..args.rounds {
        for (index, &pct) in whatif_percents.iter().enumerate() {
            let delta_us = configured_cpu_us * pct / 100.0;
            let mut runs = Vec::new();
            for which in compare::order(round, index) {
                let protocol = [default, thorough][which];
                eprintln!(
                    "bench-whatif: round {}/{}: what-if {target} −{pct} % (Δ = {delta_us:.0} µs), {} protocol ...",
                    round + 1,
                    args.rounds,
                    protocol.name
                );
                let spec = spec_for(delta_us, protocol.timing, protocol.repeat, false);
                recorder.take();
                phases.reset();
                let t = Instant::now();
                let result = experiment::run_what_if(&spec, &mut backends, &monitor);
                let wall_s = t.elapsed().as_secs_f64();
                let windows = recorder.take();
                let mut point = what_if_point(pct, delta_us, wall_s, &spec, result, &windows);
                point["protocol"] = json!(protocol.name);
                point["round"] = json!(round);
                point["phases"] = phases.json();
                // Setup: registering the services, probing the entry, starting the load.
                if let Some(t) = point["phases"].as_array().and_then(|ps| {
                    ps.iter()
                        .find(|p| p[0] == "warming up")
                        .and_then(|p| p[1].as_f64())
                }) && point["time_split"].is_object()
                {
                    point["time_split"]["setup_s"] = json!(r(t));
                }
                if protocol.name == default.name {
                    whatif_total_s += wall_s;
                    whatif_windows.extend(windows);
                }
                runs.push(point);
            }
            eprintln!(
                "bench-whatif: round {}: ground truth at −{pct} % ...",
                round + 1
            );
            let spec = spec_for(delta_us, truth_timing, truth_repeat, true);
            recorder.take();
            phases.reset();
            let t = Instant::now();
            let truth = match experiment::run_what_if(&spec, &mut backends, &monitor) {
                Ok(res) => compare::truth_json(&res, t.elapsed().as_secs_f64()),
                Err(e) => json!({"error": e.to_string()}),
            };
            for mut point in runs {
                compare::attach_error(&mut point, &truth);
                point["truth"] = truth.clone();
                points.push(point);
            }
        }
    }

    // 2. The same points as one profile sweep of the target.
    let profile = if args.no_profile {
        Value::Null
    } else {
        // A profile's percentages are of the *measured* p_T; express the configured Δs that way
        // after the sweep (the points' `delta_us` say what they resolved to).
        // The 5-point what-if as one sweep sharing its baselines, held to the what-if's default
        // precision (3 %) within the goal's time (15 s per point).
        let mut spec = ProfileSpec {
            percents: args.percents.clone(),
            services: Some(vec![target.clone()]),
            precision_pct: Repeat::default().precision_pct,
            budget_s: 15.0 * args.percents.len() as f64,
            ..ProfileSpec::default()
        };
        if args.quick {
            spec.repetitions = 1;
            spec.precision_pct = None;
            spec.timing.warmup_s = 0.5;
            spec.timing.window_s = 0.5;
        }
        eprintln!(
            "bench-whatif: profile sweep of {target} at {:?} % ...",
            args.percents
        );
        recorder.take();
        phases.reset();
        let t = Instant::now();
        let result = experiment::run_profile(&spec, &mut backends, &monitor);
        let wall_s = t.elapsed().as_secs_f64();
        let windows = recorder.take();
        let mut v = profile_json(&spec, result, wall_s, &windows);
        v["phases"] = phases.json();
        v
    };

    drop(backends);
    rt.block_on(inner.shutdown());
    let _ = std::fs::remove_dir_all(&state_dir);

    let loadavg_end = loadavg();
    let uptime_end = uptime();
    eprintln!("bench-whatif: load average at end: {uptime_end}");
    let report = build_report(Report {
        date_utc,
        runtime_s: started.elapsed().as_secs_f64(),
        topology: &topology_path,
        services: topo.services.len(),
        target: &target,
        configured_cpu_us,
        quick: args.quick,
        timing: default.timing,
        repeat: default.repeat,
        agent_start_s,
        app_start_s,
        comparison: json!({
            "summary": compare::summary(&points, GOAL_PER_POINT_S),
            "thorough": {"timing": timing_json(&thorough.timing), "repeat": repeat_json(&thorough.repeat)},
            "truth": {"timing": timing_json(&truth_timing), "repeat": repeat_json(&truth_repeat)},
            "thorough_runs": points.iter().filter(|p| p["protocol"] == thorough.name).cloned().collect::<Vec<_>>(),
        }),
        points: points
            .into_iter()
            .filter(|p| p["protocol"] == default.name)
            .collect(),
        whatif_total_s,
        whatif_load: cpu_json(&whatif_windows),
        profile,
        agent_overhead,
        loadavg: (loadavg_start, loadavg_end),
        uptime: (uptime_start, uptime_end),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The CPU work the topology configures for `service` per visit (mean over its endpoints), µs.
fn configured_work(topo: &slowpoke_emu::Topology, service: &str) -> Result<f64> {
    let eps = &topo
        .services
        .get(service)
        .with_context(|| format!("no service {service}"))?
        .endpoints;
    let works: Vec<f64> = eps.values().map(|e| e.cpu_us).collect();
    if works.is_empty() {
        bail!("{service} has no endpoints");
    }
    Ok(works.iter().sum::<f64>() / works.len() as f64)
}

/// When each phase of the running experiment began (seconds since `reset`), from its progress.
#[derive(Clone)]
struct Phases(Arc<Mutex<PhaseLog>>);

/// (start, [(phase, seconds since start)]).
type PhaseLog = (Instant, Vec<(String, f64)>);

impl Default for Phases {
    fn default() -> Self {
        Phases(Arc::new(Mutex::new((Instant::now(), Vec::new()))))
    }
}

impl Phases {
    fn reset(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), Vec::new());
    }

    /// Notes `phase` when it differs from the last one, and says so on stderr.
    fn seen(&self, phase: &str, last_rps: Option<f64>) {
        let mut g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if g.1.last().is_some_and(|(p, _)| p == phase) {
            return;
        }
        let t = g.0.elapsed().as_secs_f64();
        g.1.push((phase.to_owned(), t));
        let rps = last_rps
            .map(|r| format!(" (last window {r:.0} req/s)"))
            .unwrap_or_default();
        eprintln!("bench-whatif:   {t:6.1} s  {phase}{rps}");
    }

    /// `[[phase, start_s], ...]`.
    fn json(&self) -> Value {
        let g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Value::Array(g.1.iter().map(|(p, t)| json!([p, r(*t)])).collect())
    }
}

/// `{"1m","5m","15m"}` of `/proc/loadavg` (null when unreadable).
fn loadavg() -> Value {
    let l = LoadAvg::read();
    if [l.one, l.five, l.fifteen].iter().all(|x| x.is_finite()) {
        json!({"1m": l.one, "5m": l.five, "15m": l.fifteen})
    } else {
        Value::Null
    }
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

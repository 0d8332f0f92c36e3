//! `cargo xtask bench whatif`: how long the coordinator takes to answer a 5-point what-if at its
//! default precision, with the load generator's and the node's CPU alongside, in one run. Prints
//! one JSON object on stdout; progress goes to stderr. Needs root (the in-process agent loads the
//! kernel programs) and the release emulator (`$SLOWPOKE_EMU_BIN`, else next to this binary).
//!
//! 1. **what-ifs**: the emulated app of `--topology` (default `tests/topologies/shop.json`) is
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
//! 4. **agent overhead** at zero delay: `bench_agent --only hook,tracked` when `xtask` passes
//!    its binary in `$SLOWPOKE_BENCH_AGENT_BIN` (run first, before the agent of this process
//!    loads its programs), else a pointer to `cargo xtask bench agent`.
//!
//! `cargo xtask bench whatif [-- --topology FILE --no-profile --quick]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{
    self, Backends, Load, LoadConfig, LoadStarter, LoadWindow, Monitor, ProfileResult, ProfileSpec,
    Repeat, Safety, Timing, WhatIfResult, WhatIfSpec,
};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::{EmuApp, InProcessAgent, RealLoadStarter};
use slowpoke_tests::bench::round4 as r;

/// Time to answer a 5-point what-if at the coordinator's default precision, with the load
/// generator's and the node's CPU. Prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(name = "bench_whatif")]
struct Args {
    /// The emulated app [default: tests/topologies/shop.json of the workspace]
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
    /// Smoke test of this program, NOT the defaults: 1 repetition, no precision target, 0.5 s
    /// windows and warm-up, 1 profile sweep
    #[arg(long)]
    quick: bool,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench_whatif: error: {e:#}");
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
        .unwrap_or_else(|| root.join("tests/topologies/shop.json"));
    let loadavg_start = loadavg();
    let uptime_start = uptime();
    let date_utc = experiment::now_rfc3339();
    eprintln!("bench_whatif: load average at start: {uptime_start}");

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
        "bench_whatif: {} ({} services), target {target} ({configured_cpu_us} µs configured), emulator {}",
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
    };
    let monitor = Monitor::new();
    let phases = Phases::default();
    let log = phases.clone();
    monitor.on_progress(move |p| log.seen(&p.phase, p.last_rps));

    let (timing, repeat) = if args.quick {
        (
            Timing {
                warmup_s: 0.5,
                window_s: 0.5,
                ..Timing::default()
            },
            Repeat::fixed(1),
        )
    } else {
        (Timing::default(), Repeat::default())
    };

    // 1. What-ifs.
    let mut points = Vec::new();
    let mut whatif_windows = Vec::new();
    let whatif_started = Instant::now();
    let whatif_percents: &[f64] = if args.no_whatif { &[] } else { &args.percents };
    for &pct in whatif_percents {
        let delta_us = configured_cpu_us * pct / 100.0;
        eprintln!("bench_whatif: what-if {target} −{pct} % (Δ = {delta_us:.0} µs) ...");
        let spec = WhatIfSpec {
            target: target.clone(),
            optimization: Optimization::DeltaUs(delta_us),
            load: LoadConfig::default(),
            timing,
            repeat,
            safety: Safety::default(),
            truth: false,
            entry_service: None,
        };
        recorder.take();
        phases.reset();
        let t = Instant::now();
        let result = experiment::run_what_if(&spec, &mut backends, &monitor);
        let wall_s = t.elapsed().as_secs_f64();
        let windows = recorder.take();
        let mut point = what_if_point(pct, delta_us, wall_s, &spec, result, &windows);
        point["phases"] = phases.json();
        // Setup: registering the services, probing the entry, starting the load.
        if let Some(t) = point["phases"].as_array().and_then(|ps| {
            ps.iter()
                .find(|p| p[0] == "warming up")
                .and_then(|p| p[1].as_f64())
        }) && point["time_split"].is_object()
        {
            point["time_split"]["setup_s"] = r(t);
        }
        points.push(point);
        whatif_windows.extend(windows);
    }
    let whatif_total_s = whatif_started.elapsed().as_secs_f64();

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
            "bench_whatif: profile sweep of {target} at {:?} % ...",
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
    eprintln!("bench_whatif: load average at end: {uptime_end}");
    let report = build_report(Report {
        date_utc,
        runtime_s: started.elapsed().as_secs_f64(),
        topology: &topology_path,
        services: topo.services.len(),
        target: &target,
        configured_cpu_us,
        quick: args.quick,
        timing,
        repeat,
        agent_start_s,
        app_start_s,
        points,
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
        eprintln!("bench_whatif:   {t:6.1} s  {phase}{rps}");
    }

    /// `[[phase, start_s], ...]`.
    fn json(&self) -> Value {
        let g = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Value::Array(g.1.iter().map(|(p, t)| json!([p, r(*t)])).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// The load, recorded: the same generator the CLI starts, keeping the generator's own figures
// ---------------------------------------------------------------------------------------------

/// One measured window as the generator and the node saw it.
#[derive(Debug, Clone, Copy)]
struct WindowCpu {
    /// Generator CPU / (window × online CPUs).
    generator_cpu_share: f64,
    generator_cores: f64,
    /// Run-queue wait of the generator's threads / window.
    generator_wait_share: f64,
    generator_cpu_us_per_request: f64,
    generator_bound: bool,
    /// Busy share of all the node's CPUs (`/proc/stat`).
    node_busy_share: f64,
}

/// A [`LoadStarter`] like [`RealLoadStarter`] that records every window's generator and node CPU.
#[derive(Clone, Default)]
struct Recorder {
    windows: Arc<Mutex<Vec<WindowCpu>>>,
}

impl Recorder {
    fn take(&self) -> Vec<WindowCpu> {
        std::mem::take(&mut *self.windows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl LoadStarter for Recorder {
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String> {
        RealLoadStarter.probe(cfg)
    }

    fn start(&self, cfg: &LoadConfig) -> Result<Box<dyn Load>, String> {
        // What `RealLoadStarter::start` does.
        let method = slowpoke_load::parse_method(&cfg.method).map_err(|e| e.to_string())?;
        let spec = slowpoke_load::LoadSpec {
            requests: vec![slowpoke_load::RequestTemplate {
                method,
                url: cfg.url.clone(),
                headers: cfg.headers.clone(),
                body: cfg.body.clone().unwrap_or_default().into(),
                weight: 1,
            }],
            connections: cfg.connections,
            timeout: std::time::Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup: std::time::Duration::ZERO,
        };
        let generator = slowpoke_load::LoadGenerator::start(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(RecordedLoad {
            generator: Some(generator),
            mark: None,
            windows: Arc::clone(&self.windows),
        }))
    }
}

struct RecordedLoad {
    generator: Option<slowpoke_load::LoadGenerator>,
    mark: Option<(slowpoke_load::Snapshot, Ticks)>,
    windows: Arc<Mutex<Vec<WindowCpu>>>,
}

impl Load for RecordedLoad {
    fn begin_window(&mut self) {
        self.mark = self.generator.as_ref().map(|g| (g.snapshot(), ticks()));
    }

    fn end_window(&mut self) -> LoadWindow {
        let (Some(g), Some((mark, t0))) = (self.generator.as_ref(), self.mark.take()) else {
            return LoadWindow::default();
        };
        let w = g.snapshot().window_since(&mark);
        let (busy, total) = ticks().since(&t0);
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(WindowCpu {
                generator_cpu_share: w.cpu_share,
                generator_cores: w.generator_cores,
                generator_wait_share: w.generator_wait_share,
                generator_cpu_us_per_request: w.cpu_ns_per_request / 1e3,
                generator_bound: w.generator_bound,
                node_busy_share: if total > 0 {
                    busy as f64 / total as f64
                } else {
                    f64::NAN
                },
            });
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

    fn stop(&mut self) {
        if let Some(g) = self.generator.take() {
            g.stop();
        }
    }
}

impl Drop for RecordedLoad {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/proc/stat` totals of all CPUs, jiffies.
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    busy: u64,
    total: u64,
}

impl Ticks {
    fn since(&self, earlier: &Ticks) -> (u64, u64) {
        (
            self.busy.saturating_sub(earlier.busy),
            self.total.saturating_sub(earlier.total),
        )
    }
}

fn ticks() -> Ticks {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return Ticks::default();
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user already)
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ticks {
        busy: total.saturating_sub(idle),
        total,
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

/// Generator and node CPU over some windows.
fn cpu_json(windows: &[WindowCpu]) -> Value {
    let col = |f: fn(&WindowCpu) -> f64| -> Vec<f64> { windows.iter().map(f).collect() };
    let gen_share = col(|w| w.generator_cpu_share);
    let gen_cores = col(|w| w.generator_cores);
    let wait = col(|w| w.generator_wait_share);
    let per_req = col(|w| w.generator_cpu_us_per_request);
    let node = col(|w| w.node_busy_share);
    json!({
        "windows": windows.len(),
        "generator_cpu_share": {"mean": r(mean(&gen_share)), "max": r(max(&gen_share))},
        "generator_cores": {"mean": r(mean(&gen_cores)), "max": r(max(&gen_cores))},
        "generator_wait_share": {"mean": r(mean(&wait)), "max": r(max(&wait))},
        "generator_cpu_us_per_request": {"mean": r(mean(&per_req)), "max": r(max(&per_req))},
        "generator_bound_windows": windows.iter().filter(|w| w.generator_bound).count(),
        "node_busy_share": {"mean": r(mean(&node)), "max": r(max(&node))},
    })
}

/// Where a what-if's time went, by the knobs of `Timing`, from the windows it measured.
fn time_split(spec_timing: &Timing, res: &WhatIfResult, wall_s: f64) -> Value {
    let windows = res.windows.len() as f64;
    let slow = res.windows.iter().filter(|w| w.phase == "slow").count() as f64;
    let warmup = spec_timing.warmup_s;
    let win = windows * spec_timing.window_s;
    let settle = slow * spec_timing.settle_s;
    let other = wall_s - warmup - win - settle;
    json!({
        "warmup_s": r(warmup),
        "windows_s": r(win),
        "windows": windows,
        "settle_s": r(settle),
        "other_s": r(other),
        "dominant": if win >= warmup.max(settle).max(other) { "windows" }
                    else if warmup >= settle.max(other) { "warmup" }
                    else if settle >= other { "settle" } else { "other" },
    })
}

fn what_if_point(
    pct: f64,
    delta_us: f64,
    wall_s: f64,
    spec: &WhatIfSpec,
    result: Result<WhatIfResult, experiment::RunError>,
    windows: &[WindowCpu],
) -> Value {
    match result {
        Ok(res) => {
            let floor = spec.timing.warmup_s
                + spec.timing.window_s
                + spec.repeat.repetitions as f64
                    * (2.0 * spec.timing.window_s + spec.timing.settle_s);
            json!({
                "percent": pct,
                "delta_us": r(delta_us),
                "wall_s": r(wall_s),
                "runner_duration_s": r(res.duration_s),
                "repetitions": res.repetitions,
                "kept": res.kept,
                "stop_reason": res.stop_reason,
                "precision_pct": res.precision_pct,
                "achieved_precision_pct": r(res.achieved_precision_pct),
                "baseline_rps": r(res.baseline_rps),
                "slow_rps": r(res.slow_rps),
                "predicted_rps": r(res.predicted_rps),
                "predicted_ci": [r(res.predicted_ci_low), r(res.predicted_ci_high)],
                "predicted_gain_pct": r(res.predicted_gain_pct),
                "delta_ns_per_request": r(res.delta_ns_per_request),
                "target_p_us": res.services.iter().find(|s| s.is_target).map(|s| r(s.p_us)),
                "time_split": time_split(&spec.timing, &res, wall_s),
                "floor_s": r(floor),
                "cpu": cpu_json(windows),
                "warnings": res.warnings,
            })
        }
        Err(e) => json!({
            "percent": pct,
            "delta_us": r(delta_us),
            "wall_s": r(wall_s),
            "error": e.to_string(),
            "cpu": cpu_json(windows),
        }),
    }
}

fn profile_json(
    spec: &ProfileSpec,
    res: Result<ProfileResult, experiment::RunError>,
    wall_s: f64,
    windows: &[WindowCpu],
) -> Value {
    let config = json!({
        "repetitions": spec.repetitions,
        "precision_pct": spec.precision_pct,
        "budget_s": spec.budget_s,
        "warmup_s": spec.timing.warmup_s,
        "window_s": spec.timing.window_s,
        "settle_s": spec.timing.settle_s,
        "percents_of": "measured p_T",
    });
    let res = match res {
        Ok(res) => res,
        Err(e) => {
            return json!({"config": config, "wall_s": r(wall_s), "error": e.to_string(), "cpu": cpu_json(windows)});
        }
    };
    let n = spec.percents.len().max(1) as f64;
    let points: Vec<Value> = res
        .curves
        .first()
        .map(|c| {
            c.points
                .iter()
                .map(|p| {
                    // The pause prediction's own precision (a node bound clips the interval).
                    let hw = p.achieved_precision_pct.unwrap_or(f64::INFINITY);
                    json!({
                        "percent": p.percent,
                        "delta_us": r(p.delta_us),
                        "slow_rps": p.slow_rps.map(r),
                        "predicted_rps": p.predicted_rps.map(r),
                        "node_bound_rps": p.node_bound_rps.map(r),
                        "predicted_ci": [p.predicted_ci_low.map(r), p.predicted_ci_high.map(r)],
                        "achieved_precision_pct": r(hw),
                        "predicted_gain_pct": p.gain_pct.map(r),
                        "error": p.error,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "config": config,
        "wall_s": r(wall_s),
        "per_point_s": r(wall_s / n),
        "sweeps": res.repetitions,
        "goal_met": wall_s / n <= 15.0
            && points.iter().all(|p| p["achieved_precision_pct"].as_f64().is_some_and(|h| h <= 3.0)),
        "runner_duration_s": r(res.duration_s),
        "baseline_rps": r(res.baseline_rps),
        "target_p_us": res.curves.first().map(|c| r(c.p_us)),
        "windows": res.windows.len(),
        "points": points,
        "cpu": cpu_json(windows),
        "warnings": res.warnings,
    })
}

struct Report<'a> {
    date_utc: String,
    runtime_s: f64,
    topology: &'a Path,
    services: usize,
    target: &'a str,
    configured_cpu_us: f64,
    quick: bool,
    timing: Timing,
    repeat: Repeat,
    agent_start_s: f64,
    app_start_s: f64,
    points: Vec<Value>,
    whatif_total_s: f64,
    whatif_load: Value,
    profile: Value,
    agent_overhead: Value,
    loadavg: (Value, Value),
    uptime: (String, String),
}

fn build_report(rep: Report<'_>) -> Value {
    let walls: Vec<f64> = rep
        .points
        .iter()
        .filter_map(|p| p["wall_s"].as_f64())
        .collect();
    let n = walls.len().max(1) as f64;
    let per_point = rep.whatif_total_s / n;
    let goal_s = 15.0;
    let slow_points: Vec<Value> = rep
        .points
        .iter()
        .filter(|p| p["wall_s"].as_f64().is_some_and(|w| w > goal_s))
        .map(|p| {
            json!({
                "percent": p["percent"],
                "wall_s": p["wall_s"],
                "stop_reason": p["stop_reason"],
                "repetitions": p["repetitions"],
                "achieved_precision_pct": p["achieved_precision_pct"],
                "dominant": p["time_split"]["dominant"],
            })
        })
        .collect();
    let floor = rep.timing.warmup_s
        + rep.timing.window_s
        + rep.repeat.repetitions as f64 * (2.0 * rep.timing.window_s + rep.timing.settle_s);
    let mut whatif = json!({
        "points": rep.points,
        "total_s": r(rep.whatif_total_s),
        "per_point_mean_s": r(per_point),
        "goal_per_point_s": goal_s,
        "published_per_point_s": 120.0,
        "goal_met": walls.iter().all(|&w| w <= goal_s),
        "points_over_goal": slow_points,
        "floor_per_point_s": r(floor),
        "floor_formula": "warmup + calibration window + repetitions × (base window + settle + slow window)",
    });
    whatif["load"] = rep.whatif_load;
    json!({
        "date_utc": rep.date_utc,
        "runtime_s": r(rep.runtime_s),
        "online_cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "loadavg_start": rep.loadavg.0,
        "loadavg_end": rep.loadavg.1,
        "uptime_start": rep.uptime.0,
        "uptime_end": rep.uptime.1,
        "config": {
            "topology": rep.topology.display().to_string(),
            "services": rep.services,
            "target": rep.target,
            "target_configured_cpu_us": rep.configured_cpu_us,
            "quick": rep.quick,
            "timing": {"warmup_s": rep.timing.warmup_s, "window_s": rep.timing.window_s,
                       "settle_s": rep.timing.settle_s, "quantum_us": rep.timing.quantum_us},
            "repeat": {"repetitions": rep.repeat.repetitions, "precision_pct": rep.repeat.precision_pct,
                       "budget_s": rep.repeat.budget_s, "max_repetitions": rep.repeat.max_repetitions},
            "connections": LoadConfig::default().connections,
            "truth": false,
            "agent": "in-process (real::InProcessAgent)",
        },
        "setup": {"agent_start_s": r(rep.agent_start_s), "app_start_s": r(rep.app_start_s)},
        "whatif": whatif,
        "profile": rep.profile,
        "agent_overhead": rep.agent_overhead,
    })
}

// ---------------------------------------------------------------------------------------------
// Agent overhead (bench_agent) and the machine
// ---------------------------------------------------------------------------------------------

/// `bench_agent --only hook,tracked` (its binary from `$SLOWPOKE_BENCH_AGENT_BIN`): the hook cost
/// for untracked and tracked socket calls at zero delay. A pointer when it is not available.
fn agent_overhead() -> Value {
    let pointer = |why: String| json!({"see": "cargo xtask bench agent", "why": why});
    let Some(bin) = std::env::var_os("SLOWPOKE_BENCH_AGENT_BIN") else {
        return pointer(
            "SLOWPOKE_BENCH_AGENT_BIN not set (cargo xtask bench whatif sets it)".into(),
        );
    };
    eprintln!("bench_whatif: agent hook cost (bench_agent --only hook,tracked) ...");
    let t = Instant::now();
    let out = match Command::new(&bin).args(["--only", "hook,tracked"]).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => return pointer(format!("bench_agent failed: {}", o.status)),
        Err(e) => return pointer(format!("cannot run {}: {e}", PathBuf::from(bin).display())),
    };
    let secs = t.elapsed().as_secs_f64();
    let full: Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(e) => return pointer(format!("bench_agent printed no JSON: {e}")),
    };
    let pick = |v: &Value| json!({"mean": r(v["mean"].as_f64().unwrap_or(f64::NAN)), "ci95": r(v["ci95"].as_f64().unwrap_or(f64::NAN))});
    let hook = &full["hook_untracked"];
    let tracked = &full["tracked_call_tcp_loopback"];
    json!({
        "source": "bench_agent --only hook,tracked (kernel programs attached vs detached; tracked vs untracked, zero delay)",
        "runtime_s": r(secs),
        "rounds": full["rounds"],
        "untracked_tcp_overhead_ns_per_call": pick(&hook["tcp_loopback"]["overhead_ns_per_call"]),
        "untracked_tcp_ratio": pick(&hook["tcp_loopback"]["ratio"]),
        "untracked_unix_overhead_ns_per_call": pick(&hook["unix_socketpair"]["overhead_ns_per_call"]),
        "tracked_tcp_overhead_ns_per_call": pick(&tracked["tracked_overhead_ns_per_call"]),
        "tracked_tcp_ns_per_call": pick(&tracked["tracked_ns_per_call"]),
        "untracked_tcp_ns_per_call": pick(&tracked["untracked_ns_per_call"]),
        "program_load_ms": pick(&hook["load_ms"]),
        "loadavg": [full["loadavg_start"].clone(), full["loadavg_end"].clone()],
        "see": "cargo xtask bench agent (throughput loss, pause precision)",
    })
}

fn loadavg() -> Value {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b, c] => json!({"1m": a, "5m": b, "15m": c}),
        _ => Value::Null,
    }
}

fn uptime() -> String {
    Command::new("uptime")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

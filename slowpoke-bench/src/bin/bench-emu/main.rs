//! `bench-emu` (`cargo xtask bench emu`): the emulator's and the load generator's own costs, and the shop app's true gain,
//! measured side by side in one run, interleaved and repeated.
//!
//! Both apps run for the whole benchmark (one instance each, never restarted). Every round does, in order:
//!
//! 1. **zero-work**: a 1-service, 1-thread app whose endpoint burns `cpu_us = 0`, under a closed loop of
//!    `--zero-connections`: service CPU per visit (`/proc/<pid>/task/*/schedstat` deltas, cross-checked with
//!    the process CPU clock the control `/stats` reports, divided by the visits `/stats` counted) and the load
//!    generator's CPU per request;
//! 2. **shop** (`testkit/topologies/shop.json`) under `--shop-connections`: a window with cart at its configured
//!    work (1500 µs), then cart's work halved **live** on the same instance (and restored at the end of the
//!    round): throughput of both, their ratio, the generator's CPU per request and share of the machine.
//!
//! A fresh generator (warm-up discarded) drives each phase of a round. One JSON object goes to stdout; progress
//! goes to stderr. Errors (non-2xx, timeouts, connection errors, services' 502s) are counted and reported.
//!
//! `cargo xtask bench emu [-- --reps N --window-secs S --quick]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use slowpoke_bench::machine::{CpuTicks, LoadAvg, process_cpu_ns};
use slowpoke_coordinator::experiment::now_rfc3339;
use slowpoke_emu::{RunningApp, Scope, ServiceStats, Setting, StartOptions, topology};
use slowpoke_load::{GeneratorOptions, LoadGenerator, LoadSpec, RequestTemplate, Snapshot, Window};
use slowpoke_stats::{RoundedSummary, round4 as r, rounded_summary, summarize};

/// Benchmark of the emulator (overhead per visit), the load generator (CPU per request) and the shop app's
/// true gain from halving cart's work live. Prints one JSON object on stdout.
#[derive(Debug, Parser)]
#[command(name = "bench-emu")]
struct Args {
    /// Rounds (repetitions of every measurement) [default: 6, --quick: 3]
    #[arg(long)]
    reps: Option<usize>,
    /// Length of every measurement window, seconds [default: 5, --quick: 1.5]
    #[arg(long)]
    window_secs: Option<f64>,
    /// Smoke test: 3 rounds of 1.5 s windows, shorter warm-ups
    #[arg(long)]
    quick: bool,
    /// Closed-loop connections on the zero-work service
    #[arg(long, default_value_t = 16)]
    zero_connections: usize,
    /// Closed-loop connections on the shop app
    #[arg(long, default_value_t = 32)]
    shop_connections: usize,
    /// Worker threads of the load generator
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// The shop topology [default: testkit/topologies/shop.json of the workspace]
    #[arg(long)]
    shop: Option<PathBuf>,
}

/// The service and endpoint whose work is halved live, and its configured work.
const TARGET_SERVICE: &str = "cart";
const TARGET_ENDPOINT: &str = "get";

const ZERO_WORK: &str = r#"{
  "name": "zero-work",
  "entry": { "service": "zero", "endpoint": "x" },
  "services": { "zero": { "threads": 1, "endpoints": { "x": { "cpu_us": 0 } } } }
}"#;

struct Config {
    reps: usize,
    window: Duration,
    warmup: Duration,
    settle: Duration,
    args: Args,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench-emu: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let (reps, window, warmup, settle) = if args.quick {
        (3, 1.5, 0.5, 0.25)
    } else {
        (6, 5.0, 1.0, 0.5)
    };
    let reps = args.reps.unwrap_or(reps);
    let window = args.window_secs.unwrap_or(window);
    if reps < 2 {
        bail!("--reps must be at least 2 (a confidence interval needs two values)");
    }
    if !(window.is_finite() && window >= 0.2) {
        bail!("--window-secs must be at least 0.2");
    }
    let cfg = Config {
        reps,
        window: Duration::from_secs_f64(window),
        warmup: Duration::from_secs_f64(warmup),
        settle: Duration::from_secs_f64(settle),
        args,
    };
    let started = Instant::now();
    let date = now_rfc3339();
    let load_start = LoadAvg::read();
    let binary = emu_binary()?;
    let shop_path = cfg.args.shop.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies/shop.json")
    });
    let shop_topo = topology::load(&shop_path)?;
    let target_full = shop_topo
        .services
        .get(TARGET_SERVICE)
        .and_then(|s| s.endpoints.get(TARGET_ENDPOINT))
        .with_context(|| {
            format!(
                "{}: no {TARGET_SERVICE}.{TARGET_ENDPOINT}",
                shop_path.display()
            )
        })?
        .cpu_us;
    let target_half = target_full / 2.0;

    let zero_topo = topology::parse(ZERO_WORK, "zero-work")?;
    let mut opts = StartOptions::new(zero_topo);
    opts.binary = Some(binary.clone());
    let zero = RunningApp::start_with(&opts)?;
    let mut opts = StartOptions::new(shop_path.as_path());
    opts.binary = Some(binary.clone());
    let shop = RunningApp::start_with(&opts)?;
    let target = shop.control(TARGET_SERVICE)?;
    let set_target_cpu = |us| target.set(Scope::Endpoint(TARGET_ENDPOINT), Setting::CpuUs(us));
    eprintln!(
        "bench-emu: {} rounds of {:.1} s windows; zero-work app at {}, shop at {}; load average {}",
        cfg.reps,
        cfg.window.as_secs_f64(),
        zero.entry,
        shop.entry,
        load_start.raw
    );

    let mut zero_windows = Vec::new();
    let mut full_windows = Vec::new();
    let mut half_windows = Vec::new();
    for rep in 0..cfg.reps {
        // Zero-work service.
        let generator = start_load(&zero.entry, cfg.args.zero_connections, &cfg)?;
        let m = measure(&zero, &generator, cfg.window)?;
        drop(generator);
        eprintln!(
            "round {}/{}: zero-work {:.0} req/s, {:.2} µs service CPU/visit, generator {:.2} µs/request ({:.2} cores){}",
            rep + 1,
            cfg.reps,
            m.w.rps,
            m.cpu_us_per_visit("zero"),
            m.w.cpu_ns_per_request / 1e3,
            m.w.generator_cores,
            m.error_note()
        );
        zero_windows.push(m);

        // Shop: full work, then halved live on the same instance.
        set_target_cpu(target_full)?;
        let generator = start_load(&shop.entry, cfg.args.shop_connections, &cfg)?;
        let full = measure(&shop, &generator, cfg.window)?;
        set_target_cpu(target_half)?;
        std::thread::sleep(cfg.settle);
        let half = measure(&shop, &generator, cfg.window)?;
        drop(generator);
        set_target_cpu(target_full)?;
        eprintln!(
            "round {}/{}: shop {:.0} req/s ({TARGET_SERVICE} {target_full} µs) -> {:.0} req/s ({target_half} µs): x{:.3}; generator {:.1}% of the machine{}{}",
            rep + 1,
            cfg.reps,
            full.w.rps,
            half.w.rps,
            half.w.rps / full.w.rps,
            100.0 * full.w.cpu_share.max(half.w.cpu_share),
            full.error_note(),
            half.error_note()
        );
        full_windows.push(full);
        half_windows.push(half);
    }
    drop(zero);
    drop(shop);
    let load_end = LoadAvg::read();

    let report = build_report(
        &cfg,
        &date,
        &load_start,
        &load_end,
        started.elapsed(),
        (target_full, target_half),
        &zero_windows,
        &full_windows,
        &half_windows,
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The `slowpoke-emu` binary of the same profile, built first (a no-op when fresh): `cargo run --example` does
/// not build the package's binaries. `$SLOWPOKE_EMU_BIN` overrides.
fn emu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(slowpoke_emu::client::BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "slowpoke-emu",
        "--bin",
        "slowpoke-emu",
    ])
    .arg("--manifest-path")
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build -p slowpoke-emu")?;
    if !status.success() {
        bail!("cargo build -p slowpoke-emu failed: {status}");
    }
    let bin = slowpoke_emu::find_binary();
    if !bin.is_file() {
        bail!(
            "slowpoke-emu binary not found next to {:?}; set {}",
            std::env::current_exe().ok(),
            slowpoke_emu::client::BIN_ENV
        );
    }
    Ok(bin)
}

fn start_load(url: &str, connections: usize, cfg: &Config) -> Result<LoadGenerator> {
    let spec = LoadSpec {
        connections,
        timeout: Duration::from_secs(10),
        warmup: cfg.warmup,
        ..LoadSpec::new(vec![RequestTemplate::get(url)])
    };
    let options = GeneratorOptions {
        worker_threads: cfg.args.generator_threads,
        ..GeneratorOptions::default()
    };
    Ok(LoadGenerator::start_with(spec, &options)?)
}

/// Counters of one instant: the generator's, every service's `/stats` and process CPU, and the machine's.
struct Mark {
    snap: Snapshot,
    stats: BTreeMap<String, ServiceStats>,
    /// Per service: CPU of its processes from schedstat, ns.
    proc_ns: BTreeMap<String, u64>,
    machine: CpuTicks,
}

fn mark(app: &RunningApp, generator: &LoadGenerator) -> Result<Mark> {
    let stats = app.all_stats()?;
    let proc_ns = app
        .services
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                s.pids.iter().map(|&p| process_cpu_ns(p)).sum(),
            )
        })
        .collect();
    let machine = CpuTicks::read();
    Ok(Mark {
        snap: generator.snapshot(),
        stats,
        proc_ns,
        machine,
    })
}

/// One measurement window.
struct Measured {
    w: Window,
    /// Per service: visits, schedstat CPU (ns), `/stats` CPU (ns), 502s in the window; setting at the end.
    visits: BTreeMap<String, u64>,
    proc_ns: BTreeMap<String, u64>,
    stats_cpu_ns: BTreeMap<String, u64>,
    service_errors: u64,
    target_setting: Option<f64>,
    /// Busy cores of the whole machine (from /proc/stat) and of everything not ours.
    machine_cores: f64,
    others_cores: f64,
}

impl Measured {
    fn cpu_us_per_visit(&self, service: &str) -> f64 {
        per_visit_us(self.proc_ns.get(service), self.visits.get(service))
    }

    fn stats_cpu_us_per_visit(&self, service: &str) -> f64 {
        per_visit_us(self.stats_cpu_ns.get(service), self.visits.get(service))
    }

    fn errors(&self) -> u64 {
        self.w.non_2xx + self.w.timeouts + self.w.conn_errors + self.service_errors
    }

    fn error_note(&self) -> String {
        if self.errors() == 0 {
            String::new()
        } else {
            format!(
                " [ERRORS: {} non-2xx, {} timeouts, {} connection errors, {} service 502s]",
                self.w.non_2xx, self.w.timeouts, self.w.conn_errors, self.service_errors
            )
        }
    }

    fn service_cores(&self) -> f64 {
        self.proc_ns.values().sum::<u64>() as f64 / 1e9 / self.w.secs
    }
}

fn per_visit_us(ns: Option<&u64>, visits: Option<&u64>) -> f64 {
    match (ns, visits) {
        (Some(&ns), Some(&v)) if v > 0 => ns as f64 / v as f64 / 1e3,
        _ => f64::NAN,
    }
}

/// Waits for the generator's warm-up (first window of a generator) and measures one window.
fn measure(app: &RunningApp, generator: &LoadGenerator, window: Duration) -> Result<Measured> {
    generator.warmed_up();
    let a = mark(app, generator)?;
    std::thread::sleep(window);
    let b = mark(app, generator)?;
    let w = b.snap.window_since(&a.snap);
    let delta = |f: &dyn Fn(&ServiceStats) -> u64| -> BTreeMap<String, u64> {
        b.stats
            .iter()
            .map(|(k, s)| (k.clone(), f(s).saturating_sub(a.stats.get(k).map_or(0, f))))
            .collect()
    };
    let visits = delta(&ServiceStats::total_visits);
    let stats_cpu_ns = delta(&|s: &ServiceStats| s.cpu_ns);
    let service_errors = delta(&|s: &ServiceStats| s.errors.values().sum())
        .values()
        .sum();
    let proc_ns: BTreeMap<String, u64> = b
        .proc_ns
        .iter()
        .map(|(k, &v)| {
            (
                k.clone(),
                v.saturating_sub(a.proc_ns.get(k).copied().unwrap_or(0)),
            )
        })
        .collect();
    let target_setting = b
        .stats
        .get(TARGET_SERVICE)
        .and_then(|s| s.endpoints.get(TARGET_ENDPOINT))
        .map(|e| e.cpu_us);
    let secs = w.secs.max(1e-9);
    let machine_cores =
        b.machine.busy_share_since(&a.machine) * slowpoke_load::online_cpus() as f64;
    let ours = (proc_ns.values().sum::<u64>() + w.cpu_ns) as f64 / 1e9 / secs;
    Ok(Measured {
        others_cores: machine_cores - ours,
        w,
        visits,
        proc_ns,
        stats_cpu_ns,
        service_errors,
        target_setting,
        machine_cores,
    })
}

/// `/proc/loadavg` as the report gives it.
fn loadavg_json(l: &LoadAvg) -> Value {
    json!({ "1m": l.one, "5m": l.five, "15m": l.fifteen, "raw": l.raw })
}

/// The rounded summary over the rounds of one figure of the windows.
fn stat_of(ms: &[Measured], f: impl Fn(&Measured) -> f64) -> RoundedSummary {
    rounded_summary(&ms.iter().map(f).collect::<Vec<_>>())
}

fn errors_json(phase: &str, ms: &[Measured]) -> Vec<Value> {
    ms.iter()
        .enumerate()
        .filter(|(_, m)| m.errors() > 0)
        .map(|(i, m)| {
            json!({
                "phase": phase, "round": i + 1, "non_2xx": m.w.non_2xx, "timeouts": m.w.timeouts,
                "conn_errors": m.w.conn_errors, "service_502s": m.service_errors,
                "error_ratio": r(m.w.error_ratio),
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &Config,
    date: &str,
    load_start: &LoadAvg,
    load_end: &LoadAvg,
    elapsed: Duration,
    (target_full, target_half): (f64, f64),
    zero: &[Measured],
    full: &[Measured],
    half: &[Measured],
) -> Value {
    let ratios: Vec<f64> = full
        .iter()
        .zip(half)
        .map(|(f, h)| h.w.rps / f.w.rps)
        .collect();
    let ratio = summarize(&ratios);
    let shop: Vec<&Measured> = full.iter().chain(half).collect();
    let shop_bound = shop.iter().any(|m| m.w.generator_bound);
    let max_share = shop.iter().map(|m| m.w.cpu_share).fold(0.0, f64::max);
    let max_cores = shop.iter().map(|m| m.w.generator_cores).fold(0.0, f64::max);
    let setting_ok = full.iter().all(|m| m.target_setting == Some(target_full))
        && half.iter().all(|m| m.target_setting == Some(target_half));
    let mut errors = errors_json("zero_work", zero);
    errors.extend(errors_json("shop_full", full));
    errors.extend(errors_json("shop_half", half));
    let all: Vec<&Measured> = zero.iter().chain(full).chain(half).collect();
    let total_errors: u64 = all.iter().map(|m| m.errors()).sum();
    let total_ok: u64 = all.iter().map(|m| m.w.completed_ok).sum();
    let shop_phase = |ms: &[Measured], cpu_us: f64| {
        json!({
            "cart_cpu_us": cpu_us,
            "rps": stat_of(ms, |m| m.w.rps),
            "cart_cpu_us_per_visit": stat_of(ms, |m| m.cpu_us_per_visit(TARGET_SERVICE)),
            "generator_cpu_us_per_request": stat_of(ms, |m| m.w.cpu_ns_per_request / 1e3),
            "generator_cpu_share": stat_of(ms, |m| m.w.cpu_share),
            "generator_bound_windows": ms.iter().filter(|m| m.w.generator_bound).count(),
            "services_cores": stat_of(ms, Measured::service_cores),
            "p50_latency_us": stat_of(ms, |m| m.w.p50_us),
            "p99_latency_us": stat_of(ms, |m| m.w.p99_us),
        })
    };
    json!({
        "bench": "emu",
        "date_utc": date,
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "config": {
            "rounds": cfg.reps,
            "window_secs": cfg.window.as_secs_f64(),
            "warmup_secs": cfg.warmup.as_secs_f64(),
            "settle_secs": cfg.settle.as_secs_f64(),
            "quick": cfg.args.quick,
            "zero_connections": cfg.args.zero_connections,
            "shop_connections": cfg.args.shop_connections,
            "generator_threads": cfg.args.generator_threads,
            "online_cpus": slowpoke_load::online_cpus(),
            "order": "per round: zero-work window (fresh generator), then shop window with cart full, cart halved live, shop window (one fresh generator), cart restored",
            "ci95": "Student t interval of the mean over rounds",
        },
        "loadavg_start": loadavg_json(load_start),
        "loadavg_end": loadavg_json(load_end),
        "runtime_secs": r(elapsed.as_secs_f64()),
        "emulator_overhead_us_per_visit": stat_of(zero, |m| m.cpu_us_per_visit("zero")),
        "emulator_overhead_us_per_visit_stats_clock": stat_of(zero, |m| m.stats_cpu_us_per_visit("zero")),
        "generator_cpu_us_per_request": {
            "zero_work": stat_of(zero, |m| m.w.cpu_ns_per_request / 1e3),
            "shop": rounded_summary(&shop.iter().map(|m| m.w.cpu_ns_per_request / 1e3).collect::<Vec<_>>()),
        },
        "zero_work": {
            "rps": stat_of(zero, |m| m.w.rps),
            "service_cores": stat_of(zero, |m| m.cpu_us_per_visit("zero") * m.w.rps / 1e6),
            "generator_cores": stat_of(zero, |m| m.w.generator_cores),
            "generator_cpu_share": stat_of(zero, |m| m.w.cpu_share),
            "generator_bound_windows": zero.iter().filter(|m| m.w.generator_bound).count(),
        },
        "shop": {
            "full": shop_phase(full, target_full),
            "half": shop_phase(half, target_half),
            "ratio_half_over_full": rounded_summary(&ratios),
            "gain_pct": {
                "mean": r(100.0 * (ratio.mean - 1.0)),
                "median": r(100.0 * (ratio.median - 1.0)),
                "ci95": [r(100.0 * (ratio.lo - 1.0)), r(100.0 * (ratio.hi - 1.0))],
            },
            "live_setting_verified": setting_ok,
            "generator_cpu_share_max": r(max_share),
            "generator_cores_max": r(max_cores),
        },
        "generator_bound": shop_bound,
        "others_cores": {
            "zero_work": stat_of(zero, |m| m.others_cores),
            "shop": rounded_summary(&shop.iter().map(|m| m.others_cores).collect::<Vec<_>>()),
            "machine_cores_busy": rounded_summary(&all.iter().map(|m| m.machine_cores).collect::<Vec<_>>()),
        },
        "errors": {
            "total": total_errors,
            "completed_ok": total_ok,
            "windows_with_errors": errors.len(),
            "windows": errors,
        },
    })
}

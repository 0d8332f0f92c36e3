//! `cargo xtask eval --suite real`: accuracy on real servers from Debian's packages, every
//! prediction checked against a real change of the running servers — no emulator.
//!
//! nginx gzips a 64 KiB page it fetches from memcached (a new connection per request, as
//! `memcached_pass` does), so one nginx worker limits the app. Each case asks "what if nginx got
//! a second core?" (`--cores 2`, a scaling what-if) and gets its ground truth from a real change,
//! applied and undone live by `--truth-cmd`/`--restore-cmd` commands, as a user would write them:
//!
//! - `nginx-workers`: nginx (1 worker) → memcached; the truth reloads nginx with
//!   `worker_processes 2` (SIGHUP to its master), the restore reloads it with 1.
//! - `nginx-cpus`: nginx (2 workers, every thread pinned to CPU 0) → memcached; the truth widens
//!   their affinity to every CPU (`taskset`), the restore pins them back.
//! - `haproxy-nginx-workers`: haproxy → nginx (1 worker) → memcached, the first case behind a
//!   proxy (three services, the proxy and the cache paused).
//!
//! Three more cases ask what a real per-request saving in the target would give (`--delta-us`,
//! Δ measured independently of the product before each run; [`savings`]): `nginx-gzip`,
//! `nginx-subfilter`, `haproxy-lua`.
//!
//! Each case runs `--runs` what-ifs on the same servers (one instance per case), each with
//! `--repetitions` interleaved (base, slow, truth) windows of `--duration` s. Writes
//! results.json, report.md and plot.svg to `--out` after every point (`--resume` continues) and
//! prints the summary as one JSON object. Needs root (the in-process agent loads the kernel
//! programs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use slowpoke_api::agent as api;
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{
    self, AttachedApp, Backends, LoadConfig, Monitor, Repeat, Safety, Timing, WhatIfSpec,
};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::{CommandTruthApp, InProcessAgent, RealLoadStarter, TruthCommands};
use slowpoke_coordinator::results::{ResultStore, StoredResult};
use slowpoke_eval::runner::{self, EvalOptions, Setting};
use slowpoke_eval::summary::{self, Point};
use slowpoke_testkit::{NginxMemcached, Proc, TempDir, haproxy, nginx_workers_script};

mod savings;

const SCALING: [&str; 3] = ["nginx-workers", "nginx-cpus", "haproxy-nginx-workers"];

/// Every case: the scaling ones, then the savings.
fn all_cases() -> Vec<&'static str> {
    SCALING
        .iter()
        .chain(savings::SAVINGS.iter())
        .copied()
        .collect()
}

/// Accuracy of scaling and saving what-ifs on nginx, memcached and haproxy against real changes.
#[derive(Debug, Parser)]
#[command(name = "eval_real")]
struct Args {
    /// Where results.json, report.md and plot.svg go
    #[arg(long, default_value = "target/slowpoke-eval/real")]
    out: PathBuf,
    /// Continue the results already in --out (failed points run again)
    #[arg(long)]
    resume: bool,
    /// Cases to run (default: all)
    #[arg(long, value_delimiter = ',', value_name = "CASE,..")]
    cases: Vec<String>,
    /// What-ifs per case, on the same running servers
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// (base, slow, truth) repetitions per what-if; the middle 60 % are kept
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Window length, seconds (real servers are burstier than the emulator: 5 s)
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Closed-loop connections
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Size of the page nginx compresses, KiB (its CPU work per request)
    #[arg(long, default_value_t = 64)]
    page_kib: usize,
    /// Saving cases: rounds of the independent Δ measurement (each: both configurations)
    #[arg(long, default_value_t = 8)]
    delta_rounds: usize,
    /// Saving cases: seconds of load per configuration and round of the Δ measurement
    #[arg(long, default_value_t = 4.0)]
    delta_secs: f64,
    /// Saving cases: only measure Δ and print it (no what-if; to size a saving)
    #[arg(long)]
    delta_only: bool,
    /// Also store every what-if's full result (every window, per service) here, as
    /// `slowpoke results` lists them
    #[arg(long, value_name = "DIR")]
    results_dir: Option<PathBuf>,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("eval_real: error: {e:#}");
        std::process::exit(1);
    }
}

/// A case's servers, how the coordinator sees them, and its ground truth.
struct Running {
    /// Kept alive for the case (dropping them stops the servers).
    _procs: Vec<Proc>,
    _scripts: TempDir,
    services: BTreeMap<String, api::ServiceSpec>,
    entry: String,
    truth: TruthCommands,
}

/// What a case asks: web gets 2 cores, or its target saves the Δ measured before the run.
#[derive(Clone)]
struct Question {
    target: &'static str,
    optimization: Optimization,
    kind: &'static str,
    /// Δ in % of the target's baseline CPU per request (saving), or 2 (threads, scaling).
    delta_pct: f64,
    delta_noise_pct: Option<f64>,
    text: String,
}

fn port_service(port: u16) -> api::ServiceSpec {
    slowpoke_api::selector::parse_service_arg(&format!("x=port:{port}"))
        .expect("a port selector parses")
        .1
}

fn taskset_all(pids: &[u32], cpus: &str) -> String {
    pids.iter()
        .map(|p| format!("taskset -a -p -c {cpus} {p} >/dev/null"))
        .collect::<Vec<_>>()
        .join(" && ")
}

fn start(case: &str, page_kib: usize) -> Result<Running> {
    let scripts = TempDir::new("eval-real");
    let ncpu = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    match case {
        "nginx-workers" | "haproxy-nginx-workers" => {
            let app = NginxMemcached::with_page(1, page_kib * 1024);
            let script = nginx_workers_script(&app.nginx, scripts.path());
            let mut services = BTreeMap::from([
                ("web".to_owned(), port_service(app.nginx.port)),
                ("cache".to_owned(), port_service(app.memcached.port)),
            ]);
            let mut entry = app.url;
            let mut procs = vec![app.nginx, app.memcached];
            if case.starts_with("haproxy") {
                let proxy = haproxy(procs[0].port);
                services.insert("proxy".into(), port_service(proxy.port));
                entry = format!("http://127.0.0.1:{}/item", proxy.port);
                procs.push(proxy);
            }
            Ok(Running {
                _procs: procs,
                services,
                entry,
                truth: TruthCommands {
                    apply: format!("sh {} 2", script.display()),
                    restore: format!("sh {} 1", script.display()),
                },
                _scripts: scripts,
            })
        }
        "nginx-cpus" => {
            if ncpu < 2 {
                bail!("nginx-cpus needs at least 2 CPUs");
            }
            let app = NginxMemcached::with_page(2, page_kib * 1024);
            let pids = app.nginx.pids();
            let pin = taskset_all(&pids, "0");
            let run = std::process::Command::new("sh")
                .args(["-c", &pin])
                .status()
                .context("running taskset")?;
            if !run.success() {
                bail!("`{pin}` failed: {run}");
            }
            Ok(Running {
                services: BTreeMap::from([
                    ("web".to_owned(), port_service(app.nginx.port)),
                    ("cache".to_owned(), port_service(app.memcached.port)),
                ]),
                entry: app.url,
                truth: TruthCommands {
                    apply: taskset_all(&pids, &format!("0-{}", ncpu - 1)),
                    restore: pin,
                },
                _procs: vec![app.nginx, app.memcached],
                _scripts: scripts,
            })
        }
        other => bail!("unknown case `{other}`: one of {}", all_cases().join(", ")),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "the real-server suite (start servers, interleave, record) reads top to bottom"
)]
fn real_main() -> Result<()> {
    let args = Args::parse();
    let cases: Vec<String> = if args.cases.is_empty() {
        all_cases().iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.cases.clone()
    };
    if let Some(c) = cases.iter().find(|c| !all_cases().contains(&c.as_str())) {
        bail!("unknown case `{c}`: one of {}", all_cases().join(", "));
    }
    if args.runs == 0 || args.repetitions == 0 {
        bail!("--runs and --repetitions must be at least 1");
    }
    let setting = Setting::default();
    let opts = EvalOptions {
        suite: "real".into(),
        out_dir: args.out.clone(),
        resume: args.resume,
        settings: vec![setting],
        placements: vec![runner::Placement::Shared],
        repetitions: args.repetitions,
        window_s: args.duration,
        precision_pct: None,
        budget_s: 0.0,
        connections: args.connections,
    };
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let mut file = runner::open_results(&opts)?;
    // A point is done when its run of its case has a result (`open_results` dropped the failed
    // ones); by run, not by key: a saving case's Δ is measured again, so its key is not known.
    let done: std::collections::BTreeSet<String> =
        file.points.iter().map(|p| p.topology.clone()).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Doubling the bottleneck's cores pauses the others about half of the time: more than the
    // agent's everyday cap of 50 % allows.
    let cfg = slowpoke_agent::AgentConfig {
        max_stopped_share: 0.95,
        state_dir: std::env::temp_dir().join("slowpoke-eval-real-agent"),
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
            eprintln!("\ncancelling: removing every delay, undoing the truth change ...");
            m.cancel();
        }
    });

    let total = cases.len() * args.runs;
    let mut n = 0;
    'cases: for case in &cases {
        let todo: Vec<usize> = (1..=args.runs)
            .filter(|k| !done.contains(&format!("{case}-run{k}")))
            .collect();
        n += args.runs - todo.len();
        if todo.is_empty() {
            continue;
        }
        let load = LoadConfig {
            connections: args.connections,
            headers: vec![("Accept-Encoding".into(), "gzip".into())],
            ..LoadConfig::default()
        };
        // A scaling case asks one question; a saving case measures its Δ again before every
        // run, so the runs' errors are independent (one shared Δ would move all of them alike).
        let (running, scaling, saving) = if SCALING.contains(&case.as_str()) {
            let question = Question {
                target: "web",
                optimization: Optimization::Cores(2.0),
                kind: "scaling",
                delta_pct: 2.0,
                delta_noise_pct: None,
                text: "what if web got 2 cores".into(),
            };
            (start(case, args.page_kib)?, Some(question), None)
        } else {
            let (running, target, root) = savings::start(case, args.page_kib)?;
            (running, None, Some((target, root)))
        };
        for k in todo {
            n += 1;
            let question = match (&scaling, saving) {
                (Some(q), _) => q.clone(),
                (None, Some((target, root))) => {
                    eprintln!("{case} run {k}: measuring Δ of `{target}` independently ...");
                    let d = savings::measure_delta(
                        &running,
                        root,
                        &load,
                        args.delta_rounds,
                        args.delta_secs,
                    )?;
                    eprintln!(
                        "{case} run {k}: Δ = {:.1} ± {:.1} µs per request ({:.1} → {:.1} µs of CPU)",
                        d.delta, d.half_width, d.base, d.optimized
                    );
                    if args.delta_only {
                        continue;
                    }
                    if d.delta.is_nan() || d.delta <= 0.0 {
                        bail!("{case}: the optimized configuration saved no CPU ({d:?})");
                    }
                    Question {
                        target,
                        optimization: Optimization::DeltaUs(d.delta),
                        kind: "saving",
                        delta_pct: d.delta / d.base * 100.0,
                        delta_noise_pct: Some(d.half_width / d.delta * 100.0),
                        text: format!("what if {target} spent {:.0} µs less per request", d.delta),
                    }
                }
                (None, None) => unreachable!("a case is a scaling or a saving case"),
            };
            let label = format!("[{n}/{total}] {case} run {k}: {}", question.text);
            eprintln!("{label} ...");
            let spec = WhatIfSpec {
                target: question.target.into(),
                optimization: question.optimization,
                load: load.clone(),
                timing: Timing {
                    window_s: args.duration,
                    ..Timing::THOROUGH
                },
                repeat: Repeat::fixed(args.repetitions),
                safety: Safety::default(),
                truth: true,
                entry_service: None,
            };
            let app = AttachedApp {
                services: running.services.clone(),
                entry: running.entry.clone(),
                entry_service: None,
            };
            let mut backends = Backends {
                agents: agents.clone(),
                app: Box::new(CommandTruthApp::new(Box::new(app), running.truth.clone())),
                load: Arc::new(RealLoadStarter),
                lease: slowpoke_coordinator::lease::Lease::default(),
                kubernetes: std::sync::Arc::default(),
            };
            let identity = Point {
                family: case.clone(),
                topology: format!("{case}-run{k}"),
                mode: "real".into(),
                target: question.target.into(),
                role: if question.target == "proxy" {
                    "entry"
                } else {
                    "inner"
                }
                .into(),
                kind: question.kind.into(),
                setting: setting.name(),
                placement: "shared".into(),
                delta_pct: question.delta_pct,
                delta_noise_pct: question.delta_noise_pct,
                ..Point::default()
            };
            let point = match experiment::run_what_if(&spec, &mut backends, &monitor) {
                Ok(r) => {
                    if let Some(dir) = &args.results_dir
                        && let Err(e) =
                            ResultStore::new(dir.clone()).save(&StoredResult::WhatIf(r.clone()))
                    {
                        eprintln!("warning: the what-if result was not stored: {e:#}");
                    }
                    Point {
                        delta_us: r.delta_us,
                        ..runner::fill_point(identity, &r)
                    }
                }
                Err(e) => Point {
                    error: Some(e.to_string()),
                    ..identity
                },
            };
            eprintln!("{label}: {}", runner::outcome(&point));
            runner::record(&opts.out_dir, &mut file, point)?;
            if monitor.is_cancelled() {
                break 'cases;
            }
        }
    }
    rt.block_on(inner.shutdown());
    let summary = summary::summarize(&file.points);
    println!(
        "{}",
        serde_json::json!({
            "suite": "real",
            "out": opts.out_dir,
            "machine": file.machine,
            "summary": summary,
            "points": file.points,
        })
    );
    eprintln!("report: {}", opts.out_dir.join("report.md").display());
    Ok(())
}

//! The tail suite (`cargo xtask eval --suite tail`, docs/evaluation.md "Tail scheduling"): on
//! emulated fan-out and chain topologies of thread-per-request services with heavy-tailed work
//! (`testkit/topologies/tail-*.json`), the saturation rate is measured first (closed loop), then
//! every arm (`default`, `oldest-first`, `per-service-fifo`) runs at fractions of it (50–95 %
//! utilisation), interleaved and repeated, through the coordinator's tail comparison. Out: one
//! JSON file with every figure (per arm and rate: percentiles, mean, throughput, ratios against
//! `default` with their intervals, the CDF), a report and one latency-CDF plot per topology.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use slowpoke_api::coordinator::{TailArm, TailCapacity, TailResult, TailSchedule};
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::tail::{
    LoadPriority, OpenLoad as _, RealOpenLoad, Sweep, TailSpec, capacity, run_tail,
};
use slowpoke_coordinator::experiment::{App, Monitor, new_id};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease};

use crate::EmuApp;

/// The suite's topologies (in `testkit/topologies/`).
pub const TOPOLOGIES: [&str; 2] = ["tail-fanout-3", "tail-chain-3"];

/// How the suite runs.
#[derive(Clone, Debug)]
pub struct TailSuiteOptions {
    pub out_dir: PathBuf,
    /// Topology names (default [`TOPOLOGIES`]).
    pub topologies: Vec<String>,
    /// Utilisations: fractions of the measured saturation rate; the highest is the headline.
    pub fractions: Vec<f64>,
    pub repetitions: usize,
    pub window_s: f64,
    pub warmup_s: f64,
    pub schedule: TailSchedule,
    /// The p99 a rate must keep under, µs; default: 10 × the `default` arm's p50 at the lowest
    /// rate (a target relative to the app's own unloaded latency).
    pub p99_target_us: Option<f64>,
}

impl Default for TailSuiteOptions {
    fn default() -> TailSuiteOptions {
        TailSuiteOptions {
            out_dir: PathBuf::from("target/slowpoke-eval/tail"),
            topologies: TOPOLOGIES.iter().map(|s| (*s).to_owned()).collect(),
            fractions: vec![0.5, 0.7, 0.85, 0.95],
            repetitions: 3,
            window_s: 5.0,
            warmup_s: 1.0,
            schedule: TailSchedule::default(),
            p99_target_us: None,
        }
    }
}

/// One topology's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TailCase {
    pub topology: String,
    /// Closed-loop throughput at saturation (64 connections), req/s: the rates are fractions
    /// of it.
    pub saturation_rps: f64,
    pub p99_target_us: f64,
    /// Each arm's highest rate with p99 under the target (over every rate measured).
    pub capacity: Vec<TailCapacity>,
    /// Main rate: the highest fraction; sweep: the others.
    pub comparison: TailResult,
}

/// What `results.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TailSuiteFile {
    pub suite: String,
    pub fractions: Vec<f64>,
    pub repetitions: usize,
    pub window_s: f64,
    pub cases: Vec<TailCase>,
}

fn topology_path(name: &str) -> PathBuf {
    let file = if Path::new(name).extension().is_some() {
        name.to_owned()
    } else {
        format!("{name}.json")
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testkit/topologies")
        .join(file)
}

/// The closed-loop throughput of the app at saturation, the generator at the priority the
/// comparisons' load runs at.
fn saturation(entry: &str, window: Duration, realtime: Option<u8>) -> anyhow::Result<f64> {
    let spec = slowpoke_load::LoadSpec {
        connections: 64,
        warmup: Duration::from_secs(1),
        ..slowpoke_load::LoadSpec::new(vec![slowpoke_load::RequestTemplate::get(entry)])
    };
    let options = slowpoke_load::GeneratorOptions {
        realtime_priority: realtime,
        ..slowpoke_load::GeneratorOptions::default()
    };
    let r = slowpoke_load::run_with(
        &spec,
        slowpoke_load::RunLength::Duration(window),
        false,
        &options,
    )
    .with_context(|| format!("measuring the saturation rate of {entry}"))?;
    anyhow::ensure!(
        r.window.rps > 0.0,
        "{entry} served nothing under a closed loop"
    );
    Ok(r.window.rps)
}

/// Runs the suite on `agents` (the node's) with the emulated topologies; `log` hears progress
/// lines.
pub fn run(
    opts: &TailSuiteOptions,
    agents: &[SharedAgent],
    monitor: &Monitor,
    log: &dyn Fn(&str),
) -> anyhow::Result<TailSuiteFile> {
    run_apps(opts, agents, monitor, log, &|name| {
        let app: Box<dyn App> = Box::new(EmuApp::start(&topology_path(name), &[])?);
        Ok(app)
    })
}

/// Starts the app a case is named after (`opts.topologies`); the app stops when dropped.
pub type StartApp<'a> = dyn Fn(&str) -> anyhow::Result<Box<dyn App>> + 'a;

/// Runs the suite on the apps `start` starts, one case per name of `opts.topologies` (the
/// real-server suite's apps, `eval_tail_real`, or the emulated ones).
pub fn run_apps(
    opts: &TailSuiteOptions,
    agents: &[SharedAgent],
    monitor: &Monitor,
    log: &dyn Fn(&str),
    start: &StartApp<'_>,
) -> anyhow::Result<TailSuiteFile> {
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let mut fractions = opts.fractions.clone();
    fractions.sort_by(f64::total_cmp);
    let top = *fractions.last().context("no utilisation to run at")?;
    let mut file = TailSuiteFile {
        suite: "tail".into(),
        fractions: fractions.clone(),
        repetitions: opts.repetitions,
        window_s: opts.window_s,
        cases: Vec::new(),
    };
    // The generator runs above the schedules' real-time threads, as clients on other machines
    // would (`DEFAULT_LOAD_PRIORITY`); where not permitted, every result says so.
    let load = RealOpenLoad::new(LoadPriority::Auto).map_err(anyhow::Error::msg)?;
    for w in load.warnings() {
        log(&format!("warning: {w}"));
    }
    for name in &opts.topologies {
        if monitor.is_cancelled() {
            anyhow::bail!("cancelled");
        }
        let app = start(name).with_context(|| format!("starting {name}"))?;
        let x = saturation(
            &app.entry_url(),
            Duration::from_secs_f64(opts.window_s.max(3.0)),
            load.realtime_priority(),
        )?;
        log(&format!(
            "{name}: saturation {x:.0} req/s (closed loop, 64 connections)"
        ));
        let rate = |f: f64| (x * f).round().max(1.0);
        let spec = TailSpec {
            rate_rps: rate(top),
            window_s: opts.window_s,
            warmup_s: opts.warmup_s,
            repetitions: opts.repetitions,
            schedule: opts.schedule.clone(),
            sweep: (fractions.len() > 1).then(|| Sweep {
                rates_rps: fractions[..fractions.len() - 1]
                    .iter()
                    .map(|&f| rate(f))
                    .collect(),
                // Replaced below once the lowest rate's latency is known.
                p99_target_us: opts.p99_target_us.unwrap_or(1e9),
            }),
            // Near saturation an arm may time requests out: that is a result to report (the
            // windows count the errors), not a reason to stop the suite.
            max_error_ratio: 0.5,
            ..TailSpec::default()
        };
        let lease = Lease::new(&new_id("tail-eval", name), DEFAULT_LEASE);
        let mut r = run_tail(&spec, app.as_ref(), agents, lease, &load, monitor)
            .with_context(|| format!("the tail comparison on {name}"))?;
        r.id = new_id("tail", name);
        let mut points = r.sweep.clone();
        points.push(slowpoke_api::coordinator::TailSweepPoint {
            rate_rps: r.rate_rps,
            arms: r.arms.clone(),
        });
        points.sort_by(|a, b| a.rate_rps.total_cmp(&b.rate_rps));
        let target = opts.p99_target_us.unwrap_or_else(|| {
            points[0]
                .arms
                .iter()
                .find(|a| a.arm == TailArm::Default)
                .and_then(|a| a.p50_us)
                .map_or(f64::INFINITY, |p| 10.0 * p.value)
        });
        let arms: Vec<TailArm> = r.arms.iter().map(|a| a.arm).collect();
        r.p99_target_us = Some(target);
        r.capacity = capacity(&points, &arms, target);
        for a in &r.arms {
            // Failed requests of the arm at every rate (each counted as the load's timeout).
            let errors: u64 = r
                .windows
                .iter()
                .filter(|w| w.arm == a.arm)
                .map(|w| w.errors)
                .sum();
            log(&format!(
                "{name} at {:.0} req/s: {} {}, {errors} failed requests at all rates",
                r.rate_rps,
                a.arm,
                match (&a.p99_us, &a.p99_vs_default) {
                    (Some(p), Some(ratio)) => format!(
                        "p99 {:.2} ms ({:+.0} % vs default)",
                        p.value / 1e3,
                        (ratio.value - 1.0) * 100.0
                    ),
                    (Some(p), None) => format!("p99 {:.2} ms", p.value / 1e3),
                    (None, _) => format!("not run: {}", a.error.as_deref().unwrap_or("?")),
                }
            ));
        }
        let svg = slowpoke_coordinator::plot::tail_cdf_svg(&r)?;
        std::fs::write(opts.out_dir.join(format!("cdf-{name}.svg")), svg)?;
        file.cases.push(TailCase {
            topology: name.clone(),
            saturation_rps: x,
            p99_target_us: target,
            capacity: r.capacity.clone(),
            comparison: r,
        });
        drop(app);
        // Compact: the CDFs make the pretty form almost three times larger.
        let json = serde_json::to_vec(&file)?;
        std::fs::write(opts.out_dir.join("results.json"), json)?;
    }
    std::fs::write(opts.out_dir.join("report.md"), report(&file))?;
    Ok(file)
}

/// Prints a finished suite: `results.json`'s content (`json`) or the report, then where both
/// files are.
pub fn print(file: &TailSuiteFile, out_dir: &Path, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(file)?);
    } else {
        print!("{}", report(file));
        println!(
            "report: {}\npoints: {}",
            out_dir.join("report.md").display(),
            out_dir.join("results.json").display()
        );
    }
    Ok(())
}

/// A case's heading: topology, saturation, target, the schedules' knobs, how the load ran.
fn case_header(c: &TailCase) -> String {
    use std::fmt::Write as _;
    let sched = &c.comparison.schedule;
    let knob = |v: Option<String>| v.unwrap_or_else(|| "the agent's default".into());
    let mut s = format!(
        "## {}\n\nSaturation {:.0} req/s; p99 target {:.2} ms. Schedules: k {}, share cap {}. \
         Load generator: {}.\n\n",
        c.topology,
        c.saturation_rps,
        c.p99_target_us / 1e3,
        knob(sched.k.map(|k| k.to_string())),
        knob(sched.max_share.map(|m| m.to_string())),
        slowpoke_coordinator::report::load_priority(c.comparison.load_priority)
    );
    for w in &c.comparison.warnings {
        let _ = write!(s, "Warning: {w}\n\n");
    }
    s
}

/// The schedulers' columns of one arm at one rate, over its windows: cores and wake-ups/s (the
/// windows' mean), the share of requests with a carried age, promotions (and re-ranks, when
/// `k` > 1 made any) and share-cap demotions per second; "–" where no window reports them
/// (`default`).
fn scheduler_columns(windows: &[&slowpoke_api::coordinator::TailWindow]) -> [String; 5] {
    use slowpoke_api::coordinator::{TailSchedulerCounts, TailWindow};
    let none = || "–".to_owned();
    let mean_of = |f: fn(&TailWindow) -> Option<f64>, digits: usize| {
        let xs: Vec<f64> = windows.iter().filter_map(|w| f(w)).collect();
        if xs.is_empty() {
            none()
        } else {
            format!("{:.*}", digits, xs.iter().sum::<f64>() / xs.len() as f64)
        }
    };
    let counts: Vec<(f64, TailSchedulerCounts)> = windows
        .iter()
        .filter_map(|w| w.scheduler_counts.map(|c| (w.secs, c)))
        .collect();
    let secs: f64 = counts.iter().map(|(s, _)| s).sum();
    let total =
        |f: fn(&TailSchedulerCounts) -> u64| counts.iter().map(|(_, c)| f(c)).sum::<u64>() as f64;
    let requests = total(|c| c.requests);
    let per_s = |n: f64| {
        if secs > 0.0 {
            format!("{:.0}", n / secs)
        } else {
            none()
        }
    };
    [
        mean_of(|w| w.scheduler_cores, 3),
        mean_of(|w| w.scheduler_wakeups_per_s, 0),
        if requests > 0.0 {
            format!("{:.0} %", 100.0 * total(|c| c.requests_with_age) / requests)
        } else {
            none()
        },
        {
            let (promotions, reranks) = (per_s(total(|c| c.promotions)), total(|c| c.reranks));
            if reranks > 0.0 {
                format!("{promotions} (+{} re-ranked)", per_s(reranks))
            } else {
                promotions
            }
        },
        per_s(total(|c| c.share_capped)),
    ]
}

/// The suite's figures as markdown: per topology and rate, each arm's p50/p99/p99.9/mean and
/// throughput with the changes against `default`, and the capacities.
pub fn report(f: &TailSuiteFile) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Tail suite\n\n{} repetitions × {:.1} s per arm and rate, arms interleaved; latency from each \
         request's intended send time (open loop, Poisson).\n",
        f.repetitions, f.window_s
    );
    for c in &f.cases {
        s.push_str(&case_header(c));
        let _ = writeln!(
            s,
            "| rate | arm | p50 ms | p99 ms [95 % CI] | p99.9 ms | mean ms | req/s | errors | p99 vs default | mean vs default | scheduler cores | scheduler wake-ups/s | requests with a carried age | promotions/s | share-capped/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let mut points: Vec<(f64, &Vec<slowpoke_api::coordinator::TailArmResult>)> = c
            .comparison
            .sweep
            .iter()
            .map(|p| (p.rate_rps, &p.arms))
            .collect();
        points.push((c.comparison.rate_rps, &c.comparison.arms));
        for (rate, arms) in points {
            for a in arms {
                let v = |i: &Option<slowpoke_api::coordinator::Interval>, scale: f64| {
                    i.map_or_else(|| "–".into(), |i| format!("{:.2}", i.value * scale))
                };
                let ci = |i: &Option<slowpoke_api::coordinator::Interval>| {
                    i.map_or_else(
                        || "–".into(),
                        |i| match (i.ci_low, i.ci_high) {
                            (Some(lo), Some(hi)) => {
                                format!("{:.2} [{:.2}, {:.2}]", i.value / 1e3, lo / 1e3, hi / 1e3)
                            }
                            _ => format!("{:.2}", i.value / 1e3),
                        },
                    )
                };
                let ch = |i: &Option<slowpoke_api::coordinator::Interval>| {
                    i.map_or_else(
                        || "–".into(),
                        |i| match (i.ci_low, i.ci_high) {
                            (Some(lo), Some(hi)) => format!(
                                "{:+.0} % [{:+.0}, {:+.0}]",
                                (i.value - 1.0) * 100.0,
                                (lo - 1.0) * 100.0,
                                (hi - 1.0) * 100.0
                            ),
                            _ => format!("{:+.0} %", (i.value - 1.0) * 100.0),
                        },
                    )
                };
                let windows: Vec<&slowpoke_api::coordinator::TailWindow> = c
                    .comparison
                    .windows
                    .iter()
                    .filter(|w| w.arm == a.arm && (w.rate_rps - rate).abs() < 0.5)
                    .collect();
                let errors: u64 = windows.iter().map(|w| w.errors).sum();
                let [cores, wakeups, with_age, promotions, capped] = scheduler_columns(&windows);
                if a.ran {
                    let _ = writeln!(
                        s,
                        "| {rate:.0} | {} | {} | {} | {} | {} | {} | {errors} | {} | {} | {cores} | {wakeups} | {with_age} | {promotions} | {capped} |",
                        a.arm,
                        v(&a.p50_us, 1e-3),
                        ci(&a.p99_us),
                        v(&a.p999_us, 1e-3),
                        v(&a.mean_us, 1e-3),
                        a.rps
                            .map_or_else(|| "–".into(), |r| format!("{:.0}", r.value)),
                        ch(&a.p99_vs_default),
                        ch(&a.mean_vs_default)
                    );
                } else {
                    let _ = writeln!(
                        s,
                        "| {rate:.0} | {} | not run: {} |||||||||||||",
                        a.arm,
                        a.error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        let _ = writeln!(s, "\nHighest rate with p99 under the target:\n");
        for cap in &c.capacity {
            let _ = writeln!(
                s,
                "- {}: {}",
                cap.arm,
                cap.max_rate_rps.map_or_else(
                    || "none of the rates".into(),
                    |r| format!("{r:.0} req/s offered, {:.0} served", cap.rps.unwrap_or(0.0))
                )
            );
        }
        let _ = writeln!(s, "\n![latency CDF](cdf-{}.svg)\n", c.topology);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schedulers' columns: counts summed over the windows, per second of window.
    #[test]
    fn the_scheduler_columns_sum_the_windows_counts() {
        use slowpoke_api::coordinator::{TailArm, TailSchedulerCounts, TailWindow};
        let window = |promotions: u64, cores: f64| TailWindow {
            arm: TailArm::OldestFirst,
            repetition: 0,
            rate_rps: 100.0,
            secs: 2.0,
            completed_ok: 200,
            errors: 0,
            rps: 100.0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            mean_us: 1.0,
            max_us: 1.0,
            scheduler_cores: Some(cores),
            scheduler_wakeups_per_s: Some(10.0),
            scheduler_counts: Some(TailSchedulerCounts {
                requests: 400,
                requests_with_age: 300,
                promotions,
                share_capped: 4,
                ..TailSchedulerCounts::default()
            }),
        };
        let (a, b) = (window(100, 0.01), window(300, 0.03));
        assert_eq!(
            scheduler_columns(&[&a, &b]),
            ["0.020", "10", "75 %", "100", "2"].map(str::to_owned)
        );
        let default = TailWindow {
            arm: TailArm::Default,
            scheduler_cores: None,
            scheduler_wakeups_per_s: None,
            scheduler_counts: None,
            ..a
        };
        assert_eq!(scheduler_columns(&[&default]), ["–"; 5].map(str::to_owned));
    }

    /// A committed run of the suite renders with its knobs and how its load ran.
    #[test]
    fn the_report_names_the_schedule_knobs_and_the_load_generators_priority() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/results/tail-eval-20261207-rt-ms-exp-share07-r10/results.json");
        let file: TailSuiteFile =
            serde_json::from_slice(&std::fs::read(&path).expect("the committed results"))
                .expect("a tail suite file");
        let r = report(&file);
        assert!(r.contains("## tail-fanout-3-ms-exp"), "{r}");
        assert!(
            r.contains("Schedules: k the agent's default, share cap 0.7. Load generator: real-time priority 30."),
            "{r}"
        );
        // 4 rates x 3 arms.
        assert_eq!(r.matches("| oldest-first |").count(), 4, "{r}");
        assert_eq!(r.lines().filter(|l| l.starts_with("| ")).count(), 1 + 12);
    }
}

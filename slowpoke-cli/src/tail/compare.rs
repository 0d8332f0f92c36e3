//! `slowpoke tail compare`: the app's end-to-end latency under an open loop at a set rate,
//! with no schedule and with each tail schedule, arms interleaved and repeated; a table (or
//! `--json`), the stored result and its latency-CDF plot.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use slowpoke_api::coordinator::TailArm;
use slowpoke_coordinator::experiment::tail::{
    LoadPriority, RealOpenLoad, Sweep, TailSpec, run_tail,
};
use slowpoke_coordinator::experiment::{self, Monitor};
use slowpoke_coordinator::results::StoredResult;
use slowpoke_coordinator::{plot, report};

use super::schedule::ScheduleArgs;
use crate::common::CommonArgs;
use crate::prepare::{prepare, shutdown};
use crate::progress::{cancel_on_signal, progress_bar};

#[derive(Args, Debug)]
pub(crate) struct CompareArgs {
    /// The app (--topology or --service/--entry), its requests, the agents, --duration (one
    /// window, default 5 s), --warmup (before each window, default 1 s), --connections (the
    /// most requests in flight, default 32), --max-errors (default 5 %), --lease, --json.
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// The open loop's rate, requests/s (Poisson arrivals).
    #[arg(long, value_name = "RPS")]
    pub(crate) rate: f64,
    /// Arms to compare (default all); `default` always runs: the ratios are against it.
    #[arg(long, value_delimiter = ',', value_name = "ARM,..", value_parser = parse_arm)]
    pub(crate) arms: Vec<TailArm>,
    /// Repetitions of every arm, interleaved (default 3).
    #[arg(long, value_name = "N")]
    pub(crate) repetitions: Option<usize>,
    /// Services to schedule (default: every service of the app).
    #[arg(long = "only", value_delimiter = ',', value_name = "NAME,..")]
    pub(crate) only: Vec<String>,
    #[command(flatten)]
    pub(crate) knobs: ScheduleArgs,
    /// Also sweep these rates (requests/s) for each arm's highest rate with p99 under
    /// --p99-target-ms.
    #[arg(long, value_delimiter = ',', value_name = "RPS,..")]
    pub(crate) sweep: Vec<f64>,
    /// The p99 a sweep's rate must keep under, ms.
    #[arg(long, value_name = "MS")]
    pub(crate) p99_target_ms: Option<f64>,
    /// Where to write the latency-CDF plot (default: next to the stored result).
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
    /// Run the load generator's threads at this real-time (FIFO) priority, 1 to 99, above a
    /// schedule's promoted threads, as clients on other machines would be; 0: normal
    /// scheduling. Default: 30 when permitted (root or `CAP_SYS_NICE`), else normal with a
    /// warning.
    #[arg(long, value_name = "PRIORITY", value_parser = clap::value_parser!(u8).range(0..=99))]
    pub(crate) load_priority: Option<u8>,
}

fn parse_arm(s: &str) -> Result<TailArm, String> {
    TailArm::parse(s)
        .ok_or_else(|| format!("`{s}` is not an arm: default, oldest-first or per-service-fifo"))
}

impl CompareArgs {
    fn spec(&self) -> anyhow::Result<TailSpec> {
        let c = &self.common;
        let defaults = TailSpec::default();
        let mut load = c.load_config()?;
        if c.connections.is_none() {
            load.connections = defaults.load.connections;
        }
        let sweep = match (self.sweep.is_empty(), self.p99_target_ms) {
            (true, None) => None,
            (false, Some(ms)) => Some(Sweep {
                rates_rps: self.sweep.clone(),
                p99_target_us: ms * 1e3,
            }),
            (false, None) => {
                bail!("--sweep needs --p99-target-ms: the p99 each rate must keep under")
            }
            (true, Some(_)) => {
                bail!("--p99-target-ms goes with --sweep RPS,.. (the rates to measure)")
            }
        };
        let spec = TailSpec {
            arms: if self.arms.is_empty() {
                defaults.arms.clone()
            } else {
                self.arms.clone()
            },
            rate_rps: self.rate,
            window_s: c.duration.unwrap_or(defaults.window_s),
            warmup_s: c.warmup.unwrap_or(defaults.warmup_s),
            repetitions: self.repetitions.unwrap_or(defaults.repetitions),
            schedule: self.knobs.schedule()?,
            services: (!self.only.is_empty()).then(|| self.only.clone()),
            load,
            max_error_ratio: c
                .max_errors
                .map_or(defaults.max_error_ratio, |pct| pct / 100.0),
            sweep,
            load_priority: LoadPriority::from_setting(self.load_priority),
        };
        spec.check().map_err(|e| {
            anyhow::anyhow!(
                "{e} (--rate, --duration, --warmup, --repetitions, --connections, --max-errors, --sweep, --p99-target-ms)"
            )
        })?;
        Ok(spec)
    }
}

pub(crate) fn compare(a: &CompareArgs) -> anyhow::Result<()> {
    if a.common.experiment.is_some() {
        bail!(
            "`slowpoke tail compare` takes its options on the command line (no --experiment FILE)"
        );
    }
    let spec = a.spec()?;
    let load = RealOpenLoad::new(spec.load_priority)
        .map_err(|e| anyhow::anyhow!("{e} (--load-priority)"))?;
    let store = a.common.store();
    let id = experiment::new_id("tail", "app");
    let lease = a.common.lease(&id)?;
    let p = prepare(&a.common, None, &spec.load, None, lease.clone())?;
    if let Some(bad) = spec
        .services
        .iter()
        .flatten()
        .find(|s| !p.backends.app.services().contains_key(*s))
    {
        let known: Vec<String> = p.backends.app.services().into_keys().collect();
        shutdown(p);
        bail!(
            "--only `{bad}` is not a service of the app ({})",
            known.join(", ")
        );
    }
    let monitor = Monitor::new();
    cancel_on_signal(&p.rt, &monitor);
    let bar = progress_bar(&monitor, a.common.json);
    let r = run_tail(
        &spec,
        p.backends.app.as_ref(),
        &p.backends.agents,
        lease,
        &load,
        &monitor,
    );
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    shutdown(p);
    let mut r = r?;
    r.id = id;
    let stored = StoredResult::Tail(r);
    let saved = store.save(&stored);
    let StoredResult::Tail(r) = &stored else {
        unreachable!()
    };
    if !a.common.json {
        print!("{}", report::tail_table(r));
    }
    match saved {
        Ok(path) => {
            eprintln!("saved {}", path.display());
            let svg = a.svg.clone().unwrap_or_else(|| path.with_extension("svg"));
            match plot::tail_cdf_svg(r).and_then(|s| Ok(std::fs::write(&svg, s)?)) {
                Ok(()) => eprintln!("latency CDF: {}", svg.display()),
                Err(e) => eprintln!("warning: the plot was not written: {e:#}"),
            }
        }
        Err(e) => eprintln!("warning: the result was not saved: {e:#}"),
    }
    if a.common.json {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

//! `slowpoke what-if`: one optimization of one service, its predicted throughput (and, with
//! `--truth`, the measured one).

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use slowpoke_coordinator::experiment::{self, Monitor, Repeat, Timing, WhatIfSpec};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::TruthCommands;
use slowpoke_coordinator::report;
use slowpoke_coordinator::results::StoredResult;
use slowpoke_coordinator::spec_builder::{self, Capacity, Factor, OptimizationFields};

use crate::common::{
    CommonArgs, budget_arg, flags, merge_opt, precision_arg, read_experiment_file,
};
use crate::prepare::{prepare, shutdown};
use crate::progress::{cancel_on_signal, progress_bar};

#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub(crate) struct WhatIfArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) common: CommonArgs,
    /// The service to optimize.
    #[arg(long, value_name = "NAME")]
    pub(crate) target: Option<String>,
    /// T becomes K times as fast: Δ = p_T·(1 − 1/K). E.g. 2x.
    #[arg(long, value_name = "Kx")]
    pub(crate) speedup: Option<String>,
    /// Δ in µs per visit of T.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) delta_us: Option<f64>,
    /// Δ as a percentage of T's measured per-visit time.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub(crate) percent: Option<f64>,
    /// T's new absolute core count.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub(crate) cores: Option<f64>,
    /// T's capacity from OLD to NEW req/s (OLD:NEW, or NEW from the measured capacity).
    #[arg(long, value_name = "OLD:NEW")]
    pub(crate) capacity: Option<String>,
    /// Repetitions always run (default 5; the middle 3 of 5 are kept).
    #[arg(long)]
    pub(crate) repetitions: Option<usize>,
    /// Repeat until the prediction's 95 % CI half-width is at most P % (default 3; 0 = off).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub(crate) precision: Option<f64>,
    /// Time budget for --precision, seconds (default 120).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) budget: Option<f64>,
    /// Also measure the ground truth: for an emulated app T's work really lowered by Δ, live;
    /// for a running app (--service) what --truth-cmd does.
    #[arg(long)]
    pub(crate) truth: bool,
    /// Ground truth for a running app (--service): a shell command that really applies the
    /// optimization, live (e.g. reload the target with one more worker); implies --truth and
    /// needs --restore-cmd. It sees $SLOWPOKE_TARGET, $SLOWPOKE_DELTA_US, $SLOWPOKE_CORES.
    #[arg(long, value_name = "CMD")]
    pub(crate) truth_cmd: Option<String>,
    /// Undoes --truth-cmd; runs after every ground-truth window and on every way out.
    #[arg(long, value_name = "CMD")]
    pub(crate) restore_cmd: Option<String>,
    /// Print the table, then the result as one JSON object on the last line.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) summary_json: bool,
}

impl WhatIfArgs {
    /// `--truth-cmd` with `--restore-cmd`, for running apps only.
    pub(crate) fn truth_commands(&self) -> anyhow::Result<Option<TruthCommands>> {
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

    pub(crate) fn optimization(&self) -> anyhow::Result<Optimization> {
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

pub(crate) fn what_if(mut a: WhatIfArgs) -> anyhow::Result<()> {
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

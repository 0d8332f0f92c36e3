//! `slowpoke profile`: a causal profile, every service (or `--only`) at every percentage, as a
//! ranked table and an SVG plot.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;
use slowpoke_coordinator::experiment::{self, Monitor, ProfileSpec};
use slowpoke_coordinator::model::{Optimization, OptimizationModel as _};
use slowpoke_coordinator::results::StoredResult;
use slowpoke_coordinator::{plot, report};

use crate::common::{
    CommonArgs, budget_arg, merge_opt, merge_vec, precision_arg, read_experiment_file,
};
use crate::prepare::{EMULATOR, prepare, shutdown};
use crate::progress::{cancel_on_signal, progress_bar};

#[derive(Args, Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub(crate) struct ProfileArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) common: CommonArgs,
    /// Optimizations to sweep, % of each service's per-visit time (default 10,30,50,70,90).
    #[arg(long, value_delimiter = ',', value_name = "P,P,..")]
    pub(crate) percents: Vec<f64>,
    /// Services to sweep (default: every service with visits).
    #[arg(long = "only", value_delimiter = ',', value_name = "NAME,..")]
    pub(crate) only: Vec<String>,
    /// Sweeps (default 3), each preceded by a baseline.
    #[arg(long)]
    pub(crate) repetitions: Option<usize>,
    /// After --repetitions, keep sweeping until every point's prediction has a 95 % CI
    /// half-width of at most this, % (default: off).
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    pub(crate) precision: Option<f64>,
    /// Time budget for --precision, seconds (default 300).
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub(crate) budget: Option<f64>,
    /// Where to write the SVG plot (default: next to the stored result).
    #[arg(long, value_name = "FILE")]
    pub(crate) svg: Option<PathBuf>,
}

pub(crate) fn profile(mut a: ProfileArgs) -> anyhow::Result<()> {
    if let Some(f) = a.common.experiment.clone() {
        let file: ProfileArgs = read_experiment_file(&f)?;
        a.common.merge(file.common);
        merge_vec(&mut a.percents, file.percents);
        merge_vec(&mut a.only, file.only);
        merge_opt(&mut a.repetitions, file.repetitions);
        merge_opt(&mut a.svg, file.svg);
    }
    let defaults = ProfileSpec::default();
    let load = a.common.load_config()?;
    let spec = ProfileSpec {
        percents: if a.percents.is_empty() {
            defaults.percents.clone()
        } else {
            a.percents.clone()
        },
        services: (!a.only.is_empty()).then(|| a.only.clone()),
        load: load.clone(),
        timing: a.common.timing(defaults.timing)?,
        repetitions: a.repetitions.unwrap_or(defaults.repetitions),
        precision_pct: a.precision.map(precision_arg).transpose()?.flatten(),
        budget_s: a
            .budget
            .map(budget_arg)
            .transpose()?
            .unwrap_or(defaults.budget_s),
        safety: a.common.safety()?,
        entry_service: a.common.entry_service.clone(),
    };
    if spec.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    for &pct in &spec.percents {
        Optimization::Percent(pct)
            .validate()
            .with_context(|| format!("--percents {pct}"))?;
    }
    let plan_names = a
        .common
        .app_request()?
        .service_names(EMULATOR)
        .map_err(anyhow::Error::msg)?;
    for s in &a.only {
        if !plan_names.contains(s) {
            bail!(
                "unknown service `{s}` in --only: the app's services are {}",
                plan_names.join(", ")
            );
        }
    }
    let store = a.common.store();
    let id = experiment::new_id("profile", "app");
    let lease = a.common.lease(&id)?;
    let mut p = prepare(&a.common, None, &load, None, lease)?;
    let monitor = Monitor::new();
    cancel_on_signal(&p.rt, &monitor);
    let bar = progress_bar(&monitor, a.common.json);
    let r = experiment::run_profile(&spec, &mut p.backends, &monitor);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    shutdown(p);
    let mut r = r?;
    r.id = id;
    let svg_path = a
        .svg
        .clone()
        .unwrap_or_else(|| store.dir().join(format!("{}.svg", r.id)));
    if let Some(parent) = svg_path.parent()
        && !parent.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(parent);
    }
    let svg = plot::write_profile_svg(&r, &svg_path);
    let stored = StoredResult::Profile(r);
    let saved = store.save(&stored);
    let StoredResult::Profile(r) = &stored else {
        unreachable!()
    };
    if a.common.json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        print!("{}", report::profile_table(r));
    }
    match svg {
        Ok(()) => eprintln!("plot {}", svg_path.display()),
        Err(e) => eprintln!("warning: no plot: {e:#}"),
    }
    match saved {
        Ok(path) => eprintln!("saved {}", path.display()),
        Err(e) => eprintln!("warning: the result was not saved: {e:#}"),
    }
    Ok(())
}

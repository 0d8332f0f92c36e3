//! One what-if. A calibration window fixes the model's parameters, Δ, δ and the pause plan;
//! then repetitions of baseline, slowed-down and (when asked) ground-truth windows, interleaved
//! because throughput drifts over minutes on a shared machine and interleaving spreads that
//! drift evenly over the kinds of window; they go on until the repetitions asked for are done and
//! the prediction is precise enough, or the budget is spent. The baseline tells which limit
//! binds the app; while a service's own cores do, the prediction is
//! X_pred = min(1/(1/X_slow − δ), node bound), while the node's CPUs do, the lower of the node
//! bound and the bottleneck law (docs/model.md, "Which limit binds").

use std::time::Instant;

use crate::model::{
    self, Optimization, OptimizationModel as _, Parameters, PausePlan, Resolved, ServiceParams,
    TargetUse,
};
use crate::stats::{self, Estimate};

use super::app::{Backends, TruthChange, require_services};
use super::error::RunError;
use super::monitor::Monitor;
use super::regime::{Baselines, NodeBounds, cost_correction, decide};
use super::result::{
    Limit, PredictedBy, RegimeRecord, StopReason, TargetUseRecord, WhatIfResult, new_id,
    now_rfc3339,
};
use super::session::{Session, Setup, in_session};
use super::shortfall::{target_use_record, target_use_warning};
use super::spec::WhatIfSpec;
use super::window::NODE_BUSY_WARNING;

/// Runs one what-if to the end (blocking). `monitor` observes and cancels it.
pub fn run_what_if(
    spec: &WhatIfSpec,
    backends: &mut Backends,
    monitor: &Monitor,
) -> Result<WhatIfResult, RunError> {
    let started = Instant::now();
    spec.validate()?;
    require_services(backends.app.as_ref(), [&spec.target])?;
    if spec.truth && !backends.app.supports_truth() {
        return Err(RunError::BadSpec(
            "`truth` needs an app that can really apply the optimization: an emulated app (started from a topology), or a running app with commands that apply and undo the change"
                .into(),
        ));
    }
    let setup = Setup {
        load: &spec.load,
        timing: spec.timing,
        safety: spec.safety,
        entry_service: spec.entry_service.as_deref(),
    };
    in_session(backends, &setup, monitor, |s| {
        let c = Calibrated::measure(spec, s)?;
        let mut series = Series::default();
        let stop_reason = c.repeat(s, &mut series, started)?;
        c.result(s, &series, stop_reason, started)
    })
}

/// What the windows of the repetitions measured.
#[derive(Default)]
struct Series {
    /// The node-CPU bounds computed from each baseline window.
    node_bounds: NodeBounds,
    /// The bottleneck law's bound on the optimized app from each baseline window.
    bottleneck: Vec<f64>,
    /// What the baseline windows say about the limits: they decide the regime.
    baselines: Baselines,
    base: Vec<f64>,
    slow: Vec<f64>,
    truth: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// The target's cores in use and run-queue wait in each baseline and slowed-down window.
    target_base: Vec<TargetUse>,
    target_slow: Vec<TargetUse>,
}

/// Where the what-if is, for the progress bar: repetition `rep` of `reps` (more when repeating
/// for precision), `per_rep` windows each.
struct Step<'m> {
    monitor: &'m Monitor,
    rep: usize,
    reps: usize,
    per_rep: usize,
    started: Instant,
    budget_s: f64,
}

impl Step<'_> {
    /// Window `k` of the repetition begins: `what` it measures.
    fn enter(&self, k: usize, what: &str) {
        let fraction = if self.rep > self.reps {
            // Repeating for precision: the budget is the measure of progress.
            self.started.elapsed().as_secs_f64() / self.budget_s.max(1e-9)
        } else {
            let planned = (self.reps * self.per_rep + 1) as f64;
            ((self.rep - 1) * self.per_rep + k + 1) as f64 / planned
        };
        let phase = format!("rep {}/{}: {what}", self.rep, self.reps);
        self.monitor.update(|p| {
            p.phase = phase;
            p.fraction = fraction.min(0.99);
        });
    }
}

/// What the calibration window fixed for the rest of the what-if.
struct Calibrated<'a> {
    spec: &'a WhatIfSpec,
    params: Parameters,
    /// The target's parameters.
    t: ServiceParams,
    /// Δ and δ.
    resolved: Resolved,
    plan: PausePlan,
}

impl<'a> Calibrated<'a> {
    /// The calibration window: the model's parameters, the optimization in numbers (Δ, δ) and
    /// the pause plan.
    fn measure(spec: &'a WhatIfSpec, s: &mut Session<'_>) -> Result<Self, RunError> {
        let params = s.calibrate()?;
        let t = *params.get(&spec.target)?;
        let resolved = spec.optimization.resolve(&spec.target, &t)?;
        let plan = model::pause_plan(&params, &spec.target, resolved.delta_per_request_ns);
        // Up front: a plan the agents cannot stop the others long enough for never runs.
        s.stop_share_asks(&plan)?;
        for u in &plan.unvisited {
            s.warnings.push(format!(
                "`{u}` saw no visits in the baseline: it is not paused (is it on the request path?)"
            ));
        }
        Ok(Calibrated {
            spec,
            params,
            t,
            resolved,
            plan,
        })
    }

    /// How much more the target can serve with the optimization: p_T/(p_T − Δ) for less work
    /// per visit, N/c_T for N cores.
    fn target_speedup(&self) -> f64 {
        match self.spec.optimization {
            Optimization::Cores(n) => n / self.t.c,
            _ => self.t.p_ns / (self.t.p_ns - self.resolved.delta_ns),
        }
    }

    /// Repetitions of (base, slow, truth when asked) windows until
    /// [`Calibrated::stop_reason`] gives one.
    fn repeat(
        &self,
        s: &mut Session<'_>,
        series: &mut Series,
        started: Instant,
    ) -> Result<StopReason, RunError> {
        let mut rep = 0;
        let reps_began = Instant::now();
        loop {
            rep += 1;
            let step = Step {
                monitor: s.monitor,
                rep,
                reps: self.spec.repeat.repetitions,
                per_rep: if self.spec.truth { 3 } else { 2 },
                started,
                budget_s: self.spec.repeat.budget_s,
            };
            step.enter(0, "baseline");
            self.baseline(s, series, rep)?;
            step.enter(1, "slowed down");
            self.slowed_down(s, series, rep)?;
            if self.spec.truth {
                step.enter(2, "ground truth");
                self.ground_truth(s, series, rep)?;
            }
            if let Some(reason) = self.stop_reason(series, rep, started, reps_began) {
                return Ok(reason);
            }
        }
    }

    /// A baseline window: X_base, latencies, the node bound, the target's use of its cores.
    fn baseline(
        &self,
        s: &mut Session<'_>,
        series: &mut Series,
        rep: usize,
    ) -> Result<(), RunError> {
        let target = &self.spec.target;
        let b = s.measure("base", rep)?;
        // More cores do not lower the CPU a request needs: the node bound keeps all of it.
        let cpu_removed_ns = match self.spec.optimization {
            Optimization::Cores(_) => 0.0,
            _ => self.resolved.delta_ns,
        };
        series.node_bounds.add(&b, target, self.t.r, cpu_removed_ns);
        if let Some((_, bound)) = model::bottleneck_bound(
            b.load.rps,
            &b.service_loads(),
            target,
            self.target_speedup(),
        ) {
            series.bottleneck.push(bound);
        }
        series.baselines.add(&b);
        series.base.push(b.load.rps);
        series.p50.push(b.load.p50_us);
        series.p99.push(b.load.p99_us);
        series.target_base.extend(b.target_use(target));
        Ok(())
    }

    /// A window under the pause plan: X_slow. Warns (once) when the pause the agents inserted
    /// per request is far from the planned δ.
    fn slowed_down(
        &self,
        s: &mut Session<'_>,
        series: &mut Series,
        rep: usize,
    ) -> Result<(), RunError> {
        s.set_plan(&self.plan)?;
        let sl = s.measure("slow", rep)?;
        s.clear_plan()?;
        series.target_slow.extend(sl.target_use(&self.spec.target));
        series.node_bounds.add_slow(&sl);
        series.slow.push(sl.load.rps);
        if let Some(owed) = s.windows.last().and_then(|w| w.owed_per_request_us) {
            let planned = self.resolved.delta_per_request_ns / 1e3;
            if planned > 0.0
                && ((owed - planned) / planned).abs() > 0.15
                && !s.warnings.said("inserted pause")
            {
                s.warnings.push(format!(
                    "inserted pause per request ({owed:.1} µs) differs from the planned δ ({planned:.1} µs) by more than 15 %: visit ratios drift, or some service's visits are miscounted"
                ));
            }
        }
        Ok(())
    }

    /// A window with the optimization really applied (emulated apps): the true X_opt.
    fn ground_truth(
        &self,
        s: &mut Session<'_>,
        series: &mut Series,
        rep: usize,
    ) -> Result<(), RunError> {
        let change = TruthChange {
            delta_ns: self.resolved.delta_ns,
            cores: match self.spec.optimization {
                Optimization::Cores(n) => Some(n),
                _ => None,
            },
        };
        let tr = s.measure_truth(&self.spec.target, change, rep)?;
        series.truth.push(tr.load.rps);
        Ok(())
    }

    /// Why to stop after repetition `rep`, or None to go on: once the repetitions asked for are
    /// done, when there is no precision target, the prediction is precise enough, or another
    /// repetition would end after the budget, or the repetitions ran out.
    fn stop_reason(
        &self,
        series: &Series,
        rep: usize,
        started: Instant,
        reps_began: Instant,
    ) -> Option<StopReason> {
        let repeat = &self.spec.repeat;
        if rep < repeat.repetitions {
            return None;
        }
        let Some(precision) = repeat.precision_pct else {
            return Some(StopReason::Repetitions);
        };
        let slow = stats::trimmed(&series.slow).expect("at least one repetition");
        let d = self.resolved.delta_per_request_ns;
        let pred = slow.map_increasing(|x| model::predict(x, d).ok());
        if pred.map_or(f64::INFINITY, |p| p.half_width_pct()) <= precision {
            return Some(StopReason::PrecisionReached);
        }
        // A repetition that would end after the budget does not start: the mean repetition so
        // far says how long the next one takes.
        let elapsed = started.elapsed().as_secs_f64();
        let next_ends = elapsed + reps_began.elapsed().as_secs_f64() / rep as f64;
        if next_ends > repeat.budget_s || rep >= repeat.max_repetitions.max(repeat.repetitions) {
            return Some(StopReason::BudgetExhausted);
        }
        None
    }

    /// The warnings about the prediction: which limit made it when not the pauses; the
    /// target's cost changed under the pauses; the target ran dry or was crowded out. Returns
    /// the target's use of its cores.
    fn warn_about(
        &self,
        s: &mut Session<'_>,
        series: &Series,
        p: &Prediction,
    ) -> Option<TargetUseRecord> {
        let target = &self.spec.target;
        let busy = p.regime.node_busy * 100.0;
        match (p.regime.limit, p.regime.predicted_by) {
            (Limit::Node, by) => {
                s.warnings.forget(NODE_BUSY_WARNING);
                s.warnings.push(format!(
                "the node's CPUs, not one service, limited the app in the baseline ({busy:.0} % busy, no service at its own limit): pausing the others cannot show the gain there, so the prediction is the {} ({:.0} req/s; the pauses alone predict {:.0}) (docs/model.md, \"Which limit binds\")",
                match by {
                    PredictedBy::BottleneckLaw => "bottleneck law from the baseline's loads",
                    _ => "node bound: the CPU a request costs on the node",
                },
                p.pred.value,
                p.pause.value
            ));
            }
            (_, PredictedBy::NodeBound) => s.warnings.push(format!(
                "the node's CPUs, not `{target}`, limit the optimized app: the prediction is the node bound ({:.0} req/s), below what pausing alone predicts ({:.0} req/s)",
                p.pred.value, p.pause.value
            )),
            _ => {}
        }
        let used = target_use_record(&series.target_base, &series.target_slow);
        tracing::debug!(%target, c = self.t.c, ?used, "target use: baseline, slowed down");
        if let Some(u) = used {
            let (pb, ps) = (u.baseline.per_visit_us, u.slowed.per_visit_us);
            if pb > 0.0 && ps > 0.0 && ((ps - pb) / pb).abs() > model::TARGET_COST_CHANGED {
                let taken = match p.correction_ns {
                    Some(c) => format!(
                        "the prediction takes that difference off δ ({:.1} µs per request)",
                        c / 1e3
                    ),
                    None => format!(
                        "`{target}` did not limit the app, so the prediction does not correct for it"
                    ),
                };
                s.warnings.push(format!(
                    "`{target}` spent {ps:.1} µs of CPU per visit while the others were paused against {pb:.1} µs in the baseline ({:+.1} %): {taken} (docs/model.md, \"The target's own cost under the pauses\")",
                    (ps - pb) / pb * 100.0
                ));
            }
        }
        if let Some(w) = used.and_then(|u| target_use_warning(&u, target, self.t.c)) {
            s.warnings.push(w);
        }
        used
    }

    /// The result: the prediction, the ground truth when measured, the services' table.
    fn result(
        &self,
        s: &mut Session<'_>,
        series: &Series,
        stop_reason: StopReason,
        started: Instant,
    ) -> Result<WhatIfResult, RunError> {
        let spec = self.spec;
        let p = Prediction::new(
            series,
            self.resolved.delta_per_request_ns,
            &spec.target,
            &self.t,
        )?;
        let target_use = self.warn_about(s, series, &p);
        let truth = stats::trimmed(&series.truth);
        if let Some(t) = truth {
            s.warnings.push(format!(
                "ground-truth noise: its 95 % CI half-width is ±{:.1} %",
                t.half_width_pct()
            ));
        }
        let (base, slow, pred) = (p.base, p.slow, p.pred);
        Ok(WhatIfResult {
            id: new_id("whatif", &spec.target),
            created: now_rfc3339(),
            target: spec.target.clone(),
            optimization: spec.optimization,
            entry: s.entry.clone(),
            entry_url: s.entry_url.clone(),
            delta_us: self.resolved.delta_ns / 1e3,
            delta_ns_per_request: self.resolved.delta_per_request_ns,
            baseline_rps: base.value,
            baseline_ci_low: base.ci_low,
            baseline_ci_high: base.ci_high,
            slow_rps: slow.value,
            slow_ci_low: slow.ci_low,
            slow_ci_high: slow.ci_high,
            predicted_rps: pred.value,
            predicted_ci_low: pred.ci_low,
            predicted_ci_high: pred.ci_high,
            predicted_gain_pct: (pred.value - base.value) / base.value * 100.0,
            pause_predicted_rps: p.pause.value,
            node_bound_rps: p.node_bound,
            target_use,
            regime: Some(p.regime.clone()),
            target_cost_correction_ns: p.correction_ns.unwrap_or(0.0),
            truth_rps: truth.map(|t| t.value),
            truth_ci_low: truth.map(|t| t.ci_low),
            truth_ci_high: truth.map(|t| t.ci_high),
            error_pct: truth.map(|t| (pred.value - t.value) / t.value * 100.0),
            baseline_error_pct: truth.map(|t| (base.value - t.value) / t.value * 100.0),
            p50_latency_us: stats::median(&series.p50).unwrap_or(0.0),
            p99_latency_us: stats::median(&series.p99).unwrap_or(0.0),
            services: s.rows(&self.params, Some(&spec.target), Some(&self.plan)),
            repetitions: slow.n,
            kept: slow.kept,
            stop_reason,
            precision_pct: spec.repeat.precision_pct,
            // The pause experiment's own precision: a node bound clips the interval, it does
            // not make the measurement more precise.
            achieved_precision_pct: p.pause.half_width_pct(),
            warnings: s.warnings.take(),
            windows: std::mem::take(&mut s.windows),
            duration_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// The what-if's numbers over its repetitions.
struct Prediction {
    /// X_base: the baseline windows, MAD-filtered.
    base: Estimate,
    /// X_slow: the slowed-down windows, trimmed.
    slow: Estimate,
    /// What pausing alone predicts: 1/(1/X_slow − (δ − correction)).
    pause: Estimate,
    /// The node-CPU bound (median over the baseline windows), when the agents report nodes.
    node_bound: Option<f64>,
    /// X_pred with its interval: by regime, the pause prediction capped by the node bound, or
    /// the lower of the node bound and the bottleneck law; a bound's spread over the baseline
    /// windows is its interval.
    pred: Estimate,
    /// The regime and what made `pred`.
    regime: RegimeRecord,
    /// The target's own saving under the pauses taken off δ, ns per request (None when the
    /// target did not limit the app: no correction).
    correction_ns: Option<f64>,
}

impl Prediction {
    fn new(
        series: &Series,
        delta_per_request_ns: f64,
        target: &str,
        t: &ServiceParams,
    ) -> Result<Prediction, RunError> {
        let regime = series.baselines.regime();
        let correction_ns = cost_correction(
            &regime,
            target,
            &series.target_base,
            &series.target_slow,
            t.r,
            t.c,
        );
        let d = delta_per_request_ns - correction_ns.unwrap_or(0.0);
        let base = stats::mad_filtered(&series.base).expect("at least one repetition");
        let slow = stats::trimmed(&series.slow).expect("at least one repetition");
        let pause = slow
            .map_increasing(|x| model::predict(x, d).ok())
            .ok_or_else(|| model::predict(slow.value, d).unwrap_err())?;
        let node = series.node_bounds.estimate(&regime);
        let law = stats::median_with_spread(&series.bottleneck);
        let (pred, predicted_by) = decide(&regime, pause, node, law);
        Ok(Prediction {
            base,
            slow,
            pause,
            node_bound: node.map(|b| b.value),
            pred,
            regime: series.baselines.record(&regime, Some(target), predicted_by),
            correction_ns,
        })
    }
}

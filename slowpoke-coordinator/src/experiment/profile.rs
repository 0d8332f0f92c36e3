//! A causal profile: every service (or the ones named) optimized by every percentage of its
//! p_s, each point predicted as a what-if is, over sweeps that each begin with a baseline window.
//! The app and the load stay up for the whole profile; only the plan changes between points.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::model::{
    self, Optimization, OptimizationModel as _, Parameters, Regime, Resolved, ServiceParams,
    TargetUse,
};
use crate::stats;

use super::app::{Backends, require_services};
use super::error::RunError;
use super::monitor::Monitor;
use super::regime::{Baselines, NodeBounds, cost_correction, decide};
use super::result::{PredictedBy, ProfileCurve, ProfilePoint, ProfileResult, new_id, now_rfc3339};
use super::session::{Session, Setup, in_session};
use super::shortfall::{target_use_record, target_use_warning};
use super::spec::ProfileSpec;

/// Most sweeps a profile with a precision target runs.
const MAX_PROFILE_SWEEPS: usize = 30;

/// Runs a causal profile (blocking): every service, every percentage, `repetitions` times,
/// each sweep preceded by a baseline window.
pub fn run_profile(
    spec: &ProfileSpec,
    backends: &mut Backends,
    monitor: &Monitor,
) -> Result<ProfileResult, RunError> {
    let started = Instant::now();
    spec.validate()?;
    if let Some(list) = &spec.services {
        require_services(backends.app.as_ref(), list)?;
    }
    let setup = Setup {
        load: &spec.load,
        timing: spec.timing,
        safety: spec.safety,
        entry_service: spec.entry_service.as_deref(),
    };
    in_session(backends, &setup, monitor, |s| {
        let mut sweep = Sweep::calibrate(spec, s)?;
        let mut rep = 0;
        loop {
            rep += 1;
            sweep.baseline(s, rep)?;
            sweep.points(s, rep)?;
            if sweep.done(rep, started) {
                break;
            }
        }
        Ok(sweep.result(s, rep, started))
    })
}

/// One point of the profile, a service optimized by a percentage, and what its windows gave.
struct PointSeries {
    service: String,
    percent: f64,
    /// Δ and δ, or why the optimization cannot be resolved (then the point is never measured).
    resolved: Result<Resolved, String>,
    /// X_slow of each sweep, req/s.
    slow_rps: Vec<f64>,
    /// The node-CPU bounds for this optimization, from each baseline window.
    node_bounds: NodeBounds,
    /// The bottleneck law's bound for this optimization, from each baseline window.
    bottleneck: Vec<f64>,
    /// The service's use of its cores in each slowed-down window.
    slow_use: Vec<TargetUse>,
    /// Why the point is not measured (any more): its plan needs the others stopped longer than
    /// the agents let a plan ask for, or the agents' safety cap was hit.
    failed: Option<String>,
}

impl PointSeries {
    fn new(service: &str, percent: f64, params: &Parameters) -> Result<Self, RunError> {
        let resolved = Optimization::Percent(percent)
            .resolve(service, params.get(service)?)
            .map_err(|e| e.to_string());
        Ok(PointSeries {
            service: service.to_owned(),
            percent,
            resolved,
            slow_rps: Vec::new(),
            node_bounds: NodeBounds::default(),
            bottleneck: Vec::new(),
            slow_use: Vec::new(),
            failed: None,
        })
    }

    /// The pause prediction's CI half-width, % (None before the point is measured).
    fn half_width_pct(&self) -> Option<f64> {
        let r = self.resolved.as_ref().ok()?;
        let est = stats::trimmed(&self.slow_rps)?;
        Some(
            est.map_increasing(|x| model::predict(x, r.delta_per_request_ns).ok())
                .map_or(f64::INFINITY, |p| p.half_width_pct()),
        )
    }

    /// The point as the result shows it, against the profile's baseline `base` (req/s), by the
    /// profile's `regime`; `base_use` is the service's use of its cores in the baselines, `t` its
    /// parameters.
    fn point(
        &self,
        base: f64,
        regime: &Regime,
        base_use: &[TargetUse],
        t: &ServiceParams,
    ) -> ProfilePoint {
        let node_bound = self.node_bounds.estimate(regime);
        let mut p = ProfilePoint {
            node_bound_rps: node_bound.map(|b| b.value),
            achieved_precision_pct: None,
            percent: self.percent,
            delta_us: 0.0,
            delta_ns_per_request: 0.0,
            slow_rps: None,
            predicted_rps: None,
            predicted_ci_low: None,
            predicted_ci_high: None,
            gain_pct: None,
            error: None,
            predicted_by: None,
        };
        let r = match &self.resolved {
            Ok(r) => r,
            Err(e) => {
                p.error = Some(e.clone());
                return p;
            }
        };
        p.delta_us = r.delta_ns / 1e3;
        p.delta_ns_per_request = r.delta_per_request_ns;
        if let Some(f) = &self.failed {
            p.error = Some(f.clone());
            return p;
        }
        let Some(est) = stats::trimmed(&self.slow_rps) else {
            p.error = Some("not measured".into());
            return p;
        };
        p.slow_rps = Some(est.value);
        let correction = cost_correction(regime, &self.service, base_use, &self.slow_use, t.r, t.c);
        let d = r.delta_per_request_ns - correction.unwrap_or(0.0);
        match est.map_increasing(|x| model::predict(x, d).ok()) {
            Some(pause) => {
                p.achieved_precision_pct = Some(pause.half_width_pct());
                let law = stats::median_with_spread(&self.bottleneck);
                let (pred, by) = decide(regime, pause, node_bound, law);
                p.predicted_by = Some(by);
                p.predicted_rps = Some(pred.value);
                p.predicted_ci_low = Some(pred.ci_low);
                p.predicted_ci_high = Some(pred.ci_high);
                p.gain_pct = Some((pred.value - base) / base * 100.0);
            }
            None => {
                p.error = model::predict(est.value, d).err().map(|e| e.to_string());
            }
        }
        p
    }
}

/// The whole profile: the calibration, the baselines and every point.
struct Sweep<'a> {
    spec: &'a ProfileSpec,
    params: Parameters,
    /// The services swept, in the spec's order or the parameters' (every service with visits).
    targets: Vec<String>,
    /// Every point: each target × each percentage, in that order.
    points: Vec<PointSeries>,
    /// X_base of each sweep, req/s.
    base_rps: Vec<f64>,
    /// Each target's use of its cores in the baseline windows.
    base_use: BTreeMap<String, Vec<TargetUse>>,
    /// What the baseline windows say about the limits: they decide the regime.
    baselines: Baselines,
    /// Windows measured or skipped so far, for the progress bar.
    done: usize,
}

impl<'a> Sweep<'a> {
    /// The calibration window: the model's parameters, the services to sweep, their points.
    fn calibrate(spec: &'a ProfileSpec, s: &mut Session<'_>) -> Result<Self, RunError> {
        let params = s.calibrate()?;
        let targets: Vec<String> = match &spec.services {
            Some(list) => list.clone(),
            None => params
                .services
                .iter()
                .filter(|(_, p)| p.r > 0.0 && p.p_ns > 0.0)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        let mut points = Vec::new();
        for t in &targets {
            for &pct in &spec.percents {
                let mut point = PointSeries::new(t, pct, &params)?;
                // Up front: a point whose plan the agents cannot stop the others long enough
                // for is marked with the reason and never run; the others run.
                if let Ok(r) = &point.resolved {
                    let plan = model::pause_plan(&params, t, r.delta_per_request_ns);
                    point.failed = s.stop_share_asks(&plan).err().map(|e| e.to_string());
                }
                points.push(point);
            }
        }
        Ok(Sweep {
            spec,
            params,
            targets,
            points,
            base_rps: Vec::new(),
            base_use: BTreeMap::new(),
            baselines: Baselines::default(),
            done: 0,
        })
    }

    /// The share of the planned windows done, for the progress bar.
    fn fraction(&self) -> f64 {
        let total = self.spec.repetitions * (1 + self.points.len());
        (self.done as f64 / total as f64).min(0.99)
    }

    /// The baseline window that begins sweep `rep`: X_base, every point's node bound, every
    /// target's use of its cores.
    fn baseline(&mut self, s: &mut Session<'_>, rep: usize) -> Result<(), RunError> {
        let sweeps = self.spec.repetitions.max(rep);
        let fraction = self.fraction();
        s.monitor.update(|p| {
            p.phase = format!("sweep {rep}/{sweeps}: baseline");
            p.fraction = fraction;
        });
        let b = s.measure("base", rep)?;
        let loads = b.service_loads();
        for point in &mut self.points {
            if let Ok(res) = &point.resolved {
                let t = self.params.services.get(&point.service);
                let r_t = t.map_or(0.0, |x| x.r);
                point.node_bounds.add(&b, &point.service, r_t, res.delta_ns);
                // The service serves p/(p − Δ) times as much once optimized.
                let speedup = t.map_or(1.0, |x| x.p_ns / (x.p_ns - res.delta_ns));
                point.bottleneck.extend(
                    model::bottleneck_bound(b.load.rps, &loads, &point.service, speedup)
                        .map(|(_, bound)| bound),
                );
            }
        }
        self.baselines.add(&b);
        self.base_rps.push(b.load.rps);
        for t in &self.targets {
            self.base_use
                .entry(t.clone())
                .or_default()
                .extend(b.target_use(t));
        }
        self.done += 1;
        Ok(())
    }

    /// One slowed-down window per point of sweep `rep`. A point whose plan hits the agents'
    /// safety cap is marked and skipped from then on; any other error ends the profile.
    fn points(&mut self, s: &mut Session<'_>, rep: usize) -> Result<(), RunError> {
        let sweeps = self.spec.repetitions.max(rep);
        for i in 0..self.points.len() {
            self.done += 1;
            let fraction = self.fraction();
            let point = &mut self.points[i];
            let Ok(res) = &point.resolved else { continue };
            if point.failed.is_some() {
                continue;
            }
            let (t, pct) = (&point.service, point.percent);
            s.monitor.update(|p| {
                p.phase = format!("sweep {rep}/{sweeps}: {t} -{pct} %");
                p.fraction = fraction;
            });
            let plan = model::pause_plan(&self.params, t, res.delta_per_request_ns);
            s.set_plan(&plan)?;
            let m = s.measure(&format!("slow:{t}:{pct}"), rep);
            s.clear_plan()?;
            match m {
                Ok(m) => {
                    point.slow_use.extend(m.target_use(t));
                    point.node_bounds.add_slow(&m);
                    point.slow_rps.push(m.load.rps);
                }
                Err(RunError::CapHit { .. }) => {
                    point.failed = Some("the agents' safety cap was hit".into());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True after sweep `rep` when the sweeps asked for are done and, with a precision target,
    /// every measured point's pause prediction is precise enough or time or sweeps ran out.
    fn done(&self, rep: usize, started: Instant) -> bool {
        if rep < self.spec.repetitions {
            return false;
        }
        let Some(precision) = self.spec.precision_pct else {
            return true;
        };
        let worst = self
            .points
            .iter()
            .filter_map(PointSeries::half_width_pct)
            .fold(0.0, f64::max);
        worst <= precision
            || started.elapsed().as_secs_f64() >= self.spec.budget_s
            || rep >= MAX_PROFILE_SWEEPS
    }

    /// A warning for every point whose target ran dry or was crowded out while the others
    /// were paused.
    fn shortfall_warnings(&self) -> Vec<String> {
        self.points
            .iter()
            .filter_map(|p| {
                let base = self.base_use.get(&p.service)?;
                let c = self.params.services.get(&p.service).map_or(0.0, |x| x.c);
                let w = target_use_record(base, &p.slow_use)
                    .and_then(|u| target_use_warning(&u, &p.service, c))?;
                Some(format!("{} −{} %: {w}", p.service, p.percent))
            })
            .collect()
    }

    /// One curve per target, the one with the largest gain first.
    fn curves(&self, base: f64, regime: &Regime) -> Vec<ProfileCurve> {
        let mut curves: Vec<ProfileCurve> = self
            .targets
            .iter()
            .map(|t| {
                let points: Vec<ProfilePoint> = self
                    .points
                    .iter()
                    .filter(|p| p.service == *t)
                    .map(|p| {
                        let base_use = self.base_use.get(t).map_or(&[][..], Vec::as_slice);
                        p.point(base, regime, base_use, &self.params.services[t])
                    })
                    .collect();
                let max_gain_pct = points
                    .iter()
                    .filter_map(|p| p.gain_pct)
                    .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
                ProfileCurve {
                    service: t.clone(),
                    p_us: self.params.services[t].p_ns / 1e3,
                    points,
                    max_gain_pct,
                }
            })
            .collect();
        curves.sort_by(|a, b| {
            b.max_gain_pct
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&a.max_gain_pct.unwrap_or(f64::NEG_INFINITY))
        });
        curves
    }

    /// The profile's result after `sweeps` sweeps.
    fn result(&self, s: &mut Session<'_>, sweeps: usize, started: Instant) -> ProfileResult {
        for w in self.shortfall_warnings() {
            s.warnings.push(w);
        }
        let base = stats::mad_filtered(&self.base_rps).expect("at least one repetition");
        let regime = self.baselines.regime();
        let curves = self.curves(base.value, &regime);
        let regime = self
            .baselines
            .record(&regime, None, most_common_by(&curves));
        ProfileResult {
            id: new_id("profile", &s.entry),
            created: now_rfc3339(),
            entry: s.entry.clone(),
            entry_url: s.entry_url.clone(),
            baseline_rps: base.value,
            baseline_ci_low: base.ci_low,
            baseline_ci_high: base.ci_high,
            services: s.rows(&self.params, None, None),
            curves,
            regime: Some(regime),
            repetitions: sweeps,
            warnings: s.warnings.take(),
            windows: std::mem::take(&mut s.windows),
            duration_s: started.elapsed().as_secs_f64(),
        }
    }
}

/// What made most of the points' predictions (the pauses when no point has one).
fn most_common_by(curves: &[ProfileCurve]) -> PredictedBy {
    let all: Vec<PredictedBy> = curves
        .iter()
        .flat_map(|c| c.points.iter().filter_map(|p| p.predicted_by))
        .collect();
    let count = |k: PredictedBy| all.iter().filter(|b| **b == k).count();
    // Ties go to the first: the pauses, then the node bound.
    [PredictedBy::NodeBound, PredictedBy::BottleneckLaw]
        .into_iter()
        .fold(PredictedBy::Pauses, |best, k| {
            if count(k) > count(best) { k } else { best }
        })
}

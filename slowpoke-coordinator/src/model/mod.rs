//! The virtual-speedup model: pure maths, no I/O. docs/model.md derives every equation here.
//!
//! Units: per-visit and per-request times are nanoseconds (`f64`), throughputs are requests per
//! second, `1/X` is therefore in seconds and converted with [`NS_PER_S`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod node;
mod regime;

pub use node::{NODE_MAX_BUSY, NodeLoad, node_bound};
pub use regime::{
    NODE_CONTENDED_BUSY, NODE_SATURATED_BUSY, Regime, SERVICE_SATURATED, ServiceLoad,
    bottleneck_bound, classify, target_cost_correction_ns,
};

/// Nanoseconds in a second.
pub const NS_PER_S: f64 = 1e9;

/// Why the model cannot produce a number. Every message says what to change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the entry service `{0}` saw no visits in the measurement window: is the load reaching it, and does its selector cover the process that owns the entry port?"
    )]
    NoEntryVisits(String),
    #[error("unknown service `{0}` (known services: {1})")]
    UnknownService(String, String),
    #[error(
        "target `{0}` saw no visits in the baseline window, so its per-visit time and visit ratio are unknown: is it on the request path?"
    )]
    TargetNotVisited(String),
    #[error("{what} must be a positive, finite number (got {value})")]
    NotPositive { what: &'static str, value: f64 },
    #[error(
        "the optimization removes {delta_us:.1} µs per visit of `{target}`, but `{target}` only spends {p_us:.1} µs per visit (measured CPU time): choose a smaller optimization"
    )]
    DeltaTooLarge {
        target: String,
        delta_us: f64,
        p_us: f64,
    },
    #[error(
        "`--cores {new}` must be more than `{target}`'s current {current:.2} cores: fewer cores is a slowdown, which pausing the other services cannot emulate"
    )]
    CoresNotMore {
        target: String,
        new: f64,
        current: f64,
    },
    #[error(
        "`--capacity {old}:{new}` must raise the capacity (NEW > OLD > 0) to be an optimization"
    )]
    CapacityNotRaised { old: f64, new: f64 },
    #[error(
        "the optimization (δ = {delta_per_request_us:.1} µs per request) is beyond what this experiment can resolve: 1/X_slow = {inv_x_slow_us:.1} µs ≤ δ. Measure a smaller optimization, or raise the load"
    )]
    Unresolvable {
        delta_per_request_us: f64,
        inv_x_slow_us: f64,
    },
}

/// What the agents measured for one service over one window: visit and CPU counters, both over
/// the same window (counts, or rates per second — only ratios of them are used), and the service's
/// effective parallelism. A service with processes on several agents has them summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceSample {
    pub visits: f64,
    pub cpu_ns: f64,
    /// Run-queue wait of the service's threads (runnable, waiting for a CPU), same unit as
    /// `cpu_ns`.
    #[serde(default)]
    pub wait_ns: f64,
    /// Timeslices the service's threads ran on a CPU (mostly one per wake-up), same unit as
    /// `visits`.
    #[serde(default)]
    pub timeslices: f64,
    pub cores: f64,
}

impl ServiceSample {
    /// Adds the replicas of one service measured by another agent: visits, CPU and cores sum.
    #[must_use]
    pub fn merged(self, other: ServiceSample) -> ServiceSample {
        ServiceSample {
            visits: self.visits + other.visits,
            cpu_ns: self.cpu_ns + other.cpu_ns,
            wait_ns: self.wait_ns + other.wait_ns,
            timeslices: self.timeslices + other.timeslices,
            cores: self.cores + other.cores,
        }
    }
}

/// The model's parameters of one service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServiceParams {
    /// Visits per end-to-end request: `r_s = visits_s / visits_entry`.
    pub r: f64,
    /// CPU time per visit in ns: `p_s = Δcpu_ns / Δvisits` (0 when the service saw no visits).
    pub p_ns: f64,
    /// Cores the service can use.
    pub c: f64,
}

impl ServiceParams {
    /// The service's bottleneck term `r_s·p_s/c_s` in ns per end-to-end request.
    pub fn demand_ns(&self) -> f64 {
        if self.c > 0.0 {
            self.r * self.p_ns / self.c
        } else {
            0.0
        }
    }
}

/// r, p and c of every service, relative to the entry service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    pub entry: String,
    pub services: BTreeMap<String, ServiceParams>,
}

impl Parameters {
    /// Derives the parameters from one window's samples. `entry` is the service that owns the
    /// entry port: its visits are the end-to-end requests.
    pub fn from_samples(
        samples: &BTreeMap<String, ServiceSample>,
        entry: &str,
    ) -> Result<Parameters, ModelError> {
        let entry_sample = samples
            .get(entry)
            .ok_or_else(|| ModelError::UnknownService(entry.to_owned(), known(samples.keys())))?;
        if entry_sample.visits <= 0.0 {
            return Err(ModelError::NoEntryVisits(entry.to_owned()));
        }
        let services = samples
            .iter()
            .map(|(name, s)| {
                let p_ns = if s.visits > 0.0 {
                    s.cpu_ns / s.visits
                } else {
                    0.0
                };
                let params = ServiceParams {
                    r: s.visits / entry_sample.visits,
                    p_ns,
                    c: s.cores,
                };
                (name.clone(), params)
            })
            .collect();
        Ok(Parameters {
            entry: entry.to_owned(),
            services,
        })
    }

    /// The parameters of `name`, or an error listing the known services.
    pub fn get(&self, name: &str) -> Result<&ServiceParams, ModelError> {
        self.services
            .get(name)
            .ok_or_else(|| ModelError::UnknownService(name.to_owned(), known(self.services.keys())))
    }

    /// The bottleneck law's throughput bound `1 / max_s(r_s·p_s/c_s)` in req/s (infinite when no
    /// service has CPU demand). A diagnostic: real throughput is at or below it.
    pub fn bottleneck_bound_rps(&self) -> f64 {
        let max = self
            .services
            .values()
            .map(ServiceParams::demand_ns)
            .fold(0.0, f64::max);
        if max > 0.0 {
            NS_PER_S / max
        } else {
            f64::INFINITY
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// How the user states the optimization of the target T (a wire type: it is part of requests
/// and results). What it means in numbers is [`OptimizationModel`].
pub use slowpoke_api::coordinator::Optimization;

/// An optimization turned into numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// Δ: per-visit time removed from T, ns.
    pub delta_ns: f64,
    /// δ = Δ·r_T/c_T: the drop of T's bottleneck term, ns per end-to-end request.
    pub delta_per_request_ns: f64,
}

fn positive(what: &'static str, value: f64) -> Result<f64, ModelError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ModelError::NotPositive { what, value })
    }
}

/// The model's side of an [`Optimization`]: its checks and Δ, δ. A trait because the type itself
/// lives in the wire-contract crate, which knows nothing of the model.
pub trait OptimizationModel {
    /// Checks the values that do not need measurements (sign, finiteness).
    fn validate(&self) -> Result<(), ModelError>;
    /// Turns the optimization into Δ and δ for target `target` with parameters `t`.
    fn resolve(&self, target: &str, t: &ServiceParams) -> Result<Resolved, ModelError>;
}

impl OptimizationModel for Optimization {
    fn validate(&self) -> Result<(), ModelError> {
        match *self {
            Optimization::DeltaUs(d) => positive("--delta-us", d).map(drop),
            Optimization::Percent(p) => {
                positive("--percent", p)?;
                if p >= 100.0 {
                    return Err(ModelError::NotPositive {
                        what: "100 - --percent (a service cannot lose all of its work)",
                        value: 100.0 - p,
                    });
                }
                Ok(())
            }
            Optimization::Speedup(k) => {
                positive("--speedup", k)?;
                if k <= 1.0 {
                    return Err(ModelError::NotPositive {
                        what: "--speedup - 1 (a speedup must be more than 1x)",
                        value: k - 1.0,
                    });
                }
                Ok(())
            }
            Optimization::Capacity { old_rps, new_rps } => {
                positive("--capacity NEW", new_rps)?;
                if let Some(old) = old_rps {
                    positive("--capacity OLD", old)?;
                    if new_rps <= old {
                        return Err(ModelError::CapacityNotRaised { old, new: new_rps });
                    }
                }
                Ok(())
            }
            Optimization::Cores(n) => positive("--cores", n).map(drop),
        }
    }

    fn resolve(&self, target: &str, t: &ServiceParams) -> Result<Resolved, ModelError> {
        self.validate()?;
        if t.r <= 0.0 || t.p_ns <= 0.0 {
            return Err(ModelError::TargetNotVisited(target.to_owned()));
        }
        positive("the target's measured cores", t.c)?;
        let delta_ns = match *self {
            Optimization::DeltaUs(d) => d * 1e3,
            Optimization::Percent(p) => t.p_ns * p / 100.0,
            Optimization::Speedup(k) => t.p_ns * (1.0 - 1.0 / k),
            Optimization::Capacity { old_rps, new_rps } => {
                let old = old_rps.unwrap_or(t.c * NS_PER_S / t.p_ns);
                if new_rps <= old {
                    return Err(ModelError::CapacityNotRaised { old, new: new_rps });
                }
                t.c * (1.0 / old - 1.0 / new_rps) * NS_PER_S
            }
            Optimization::Cores(n) => {
                if n <= t.c {
                    return Err(ModelError::CoresNotMore {
                        target: target.to_owned(),
                        new: n,
                        current: t.c,
                    });
                }
                // δ = r_T·p_T·(1/c_T − 1/N) = Δ·r_T/c_T with Δ = p_T·(1 − c_T/N).
                t.p_ns * (1.0 - t.c / n)
            }
        };
        if delta_ns >= t.p_ns {
            return Err(ModelError::DeltaTooLarge {
                target: target.to_owned(),
                delta_us: delta_ns / 1e3,
                p_us: t.p_ns / 1e3,
            });
        }
        Ok(Resolved {
            delta_ns,
            delta_per_request_ns: delta_per_request(delta_ns, t.r, t.c),
        })
    }
}

/// δ = Δ·r_T/c_T (ns per end-to-end request).
pub fn delta_per_request(delta_ns: f64, r_t: f64, c_t: f64) -> f64 {
    delta_ns * r_t / c_t
}

/// The pause plan: per-visit pause of every non-target service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PausePlan {
    /// d_s = δ / r_s in ns per visit, for every non-target service with visits.
    pub delays_ns: BTreeMap<String, f64>,
    /// Non-target services that saw no visits (r_s = 0): nothing to pause per visit.
    pub unvisited: Vec<String>,
}

/// d_s = δ/r_s (= Δ·r_T/(r_s·c_T)) for every service but the target.
pub fn pause_plan(params: &Parameters, target: &str, delta_per_request_ns: f64) -> PausePlan {
    let mut delays_ns = BTreeMap::new();
    let mut unvisited = Vec::new();
    for (name, s) in &params.services {
        if name == target {
            continue;
        }
        if s.r > 0.0 {
            delays_ns.insert(name.clone(), delta_per_request_ns / s.r);
        } else {
            unvisited.push(name.clone());
        }
    }
    PausePlan {
        delays_ns,
        unvisited,
    }
}

/// X_pred = 1 / (1/X_slow − δ), or [`ModelError::Unresolvable`] when 1/X_slow ≤ δ.
pub fn predict(x_slow_rps: f64, delta_per_request_ns: f64) -> Result<f64, ModelError> {
    positive("the slowed-down throughput", x_slow_rps)?;
    let inv_slow_ns = NS_PER_S / x_slow_rps;
    let rest = inv_slow_ns - delta_per_request_ns;
    if rest <= 0.0 {
        return Err(ModelError::Unresolvable {
            delta_per_request_us: delta_per_request_ns / 1e3,
            inv_x_slow_us: inv_slow_ns / 1e3,
        });
    }
    Ok(NS_PER_S / rest)
}

/// Lowest share of its cores the target must keep busy in the slowed-down runs, relative to the
/// baseline, for the virtual speedup to hold ([`target_shortfall`]).
pub const TARGET_KEPT_BUSY: f64 = 0.85;

/// Relative change of the target's CPU per visit between the baseline and the slowed-down runs
/// above which the result says so (docs/model.md, "The target's own cost").
pub const TARGET_COST_CHANGED: f64 = 0.03;

/// How the target spent its time over a window (a wire type: results carry it).
pub use slowpoke_api::coordinator::TargetUse;

/// Why the target did less work in the slowed-down runs than in the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shortfall {
    /// It had nothing to do: too few requests in flight reach it while the others are paused.
    RanDry { kept: f64 },
    /// It had work but waited for a CPU: on shared cores the other services, resuming from each
    /// pause with a backlog, outnumber its threads.
    CrowdedOut { kept: f64 },
}

/// The virtual speedup assumes the target keeps working while the others are paused, at the pace
/// it had: it needs requests queued in front of it, and the CPUs to serve them. When the target
/// was busy in the baseline (≥ 50 % of its parallelism `c`) and used less than
/// [`TARGET_KEPT_BUSY`] of that CPU in the slowed-down runs, the slowed-down throughput — hence
/// the prediction — comes out too low. The shortfall is `CrowdedOut` when at least half the lost
/// CPU time shows up as extra run-queue wait, `RanDry` otherwise (it idled). `kept` is the
/// slowed-down/baseline CPU ratio. None when the target kept busy or the inputs say nothing.
pub fn target_shortfall(base: TargetUse, slow: TargetUse, c: f64) -> Option<Shortfall> {
    let finite = [base.cores, slow.cores, base.wait, slow.wait]
        .iter()
        .all(|x| x.is_finite());
    if !finite || c <= 0.0 || base.cores / c < 0.5 || slow.cores >= TARGET_KEPT_BUSY * base.cores {
        return None;
    }
    let kept = slow.cores / base.cores;
    let lost = base.cores - slow.cores;
    Some(if slow.wait - base.wait >= 0.5 * lost {
        Shortfall::CrowdedOut { kept }
    } else {
        Shortfall::RanDry { kept }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_that_works_less_in_the_slowed_down_runs_is_reported_with_the_reason() {
        let u = |cores, wait| TargetUse {
            cores,
            wait,
            per_visit_us: 0.0,
        };
        // Busy 95 % of its one core in the baseline, 60 % while the others were paused, and it
        // did not wait for a CPU more than before: it idled.
        let r = target_shortfall(u(0.95, 0.05), u(0.60, 0.06), 1.0);
        assert_eq!(r, Some(Shortfall::RanDry { kept: 0.60 / 0.95 }));
        // Same loss, but 0.25 of the 0.35 lost cores show up as run-queue wait: crowded out.
        let r = target_shortfall(u(0.95, 0.05), u(0.60, 0.30), 1.0);
        assert_eq!(r, Some(Shortfall::CrowdedOut { kept: 0.60 / 0.95 }));
        // Kept busy (90 % of the baseline's use): fine.
        assert_eq!(target_shortfall(u(0.95, 0.0), u(0.86, 0.0), 1.0), None);
        // Not the bottleneck in the baseline (30 % of 2 cores): no claim either way.
        assert_eq!(target_shortfall(u(0.6, 0.0), u(0.1, 0.0), 2.0), None);
        assert_eq!(target_shortfall(u(f64::NAN, 0.0), u(0.1, 0.0), 1.0), None);
        assert_eq!(target_shortfall(u(1.0, 0.0), u(0.1, 0.0), 0.0), None);
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() <= tol, "{a} != {b} (±{tol})");
    }

    fn params_t(r: f64, p_us: f64, c: f64) -> ServiceParams {
        ServiceParams {
            r,
            p_ns: p_us * 1e3,
            c,
        }
    }

    #[test]
    fn worked_example_from_the_artifact() {
        // r_T = 0.45175, c_T = 2, Δ = 1000 µs, X_slow = 2545.67 req/s.
        let t = params_t(0.45175, 5000.0, 2.0);
        let res = Optimization::DeltaUs(1000.0).resolve("T", &t).unwrap();
        close(res.delta_ns, 1_000_000.0, 1e-6);
        close(res.delta_per_request_ns, 225_875.0, 1e-6); // 225.875 µs
        let pred = predict(2545.67, res.delta_per_request_ns).unwrap();
        // 1/2545.67 s = 392.8238 µs; − 225.875 µs = 166.9488 µs; 1/that = 5989.86 req/s.
        close(pred, 5989.86, 0.1);
        // The artifact's ground truth was 5829.6: +2.75 %.
        close((pred - 5829.6) / 5829.6 * 100.0, 2.75, 0.01);
    }

    #[test]
    fn parameters_from_counters() {
        let mut s = BTreeMap::new();
        s.insert(
            "front".to_owned(),
            ServiceSample {
                visits: 1000.0,
                cpu_ns: 100e6,
                wait_ns: 0.0,
                timeslices: 0.0,
                cores: 1.0,
            },
        );
        s.insert(
            "cart".to_owned(),
            ServiceSample {
                visits: 2500.0,
                cpu_ns: 500e6,
                wait_ns: 0.0,
                timeslices: 0.0,
                cores: 2.0,
            },
        );
        s.insert(
            "idle".to_owned(),
            ServiceSample {
                visits: 0.0,
                cpu_ns: 3e6,
                wait_ns: 0.0,
                timeslices: 0.0,
                cores: 1.0,
            },
        );
        let p = Parameters::from_samples(&s, "front").unwrap();
        let cart = p.get("cart").unwrap();
        close(cart.r, 2.5, 1e-12);
        close(cart.p_ns, 200_000.0, 1e-9); // 500 ms / 2500 visits = 200 µs
        close(cart.c, 2.0, 0.0);
        close(p.get("front").unwrap().r, 1.0, 0.0);
        close(p.get("idle").unwrap().p_ns, 0.0, 0.0);
        // Bottleneck: cart 2.5·200/2 = 250 µs, front 1·100/1 = 100 µs ⇒ 4000 req/s.
        close(p.bottleneck_bound_rps(), 4000.0, 1e-6);
        assert!(matches!(
            p.get("nope"),
            Err(ModelError::UnknownService(n, known)) if n == "nope" && known.contains("cart")
        ));
    }

    #[test]
    fn entry_without_visits_is_an_error() {
        let mut s = BTreeMap::new();
        s.insert("front".to_owned(), ServiceSample::default());
        assert_eq!(
            Parameters::from_samples(&s, "front"),
            Err(ModelError::NoEntryVisits("front".into()))
        );
        assert!(matches!(
            Parameters::from_samples(&s, "gateway"),
            Err(ModelError::UnknownService(..))
        ));
    }

    #[test]
    fn replicas_on_several_agents_sum() {
        let a = ServiceSample {
            visits: 10.0,
            cpu_ns: 100.0,
            wait_ns: 0.0,
            timeslices: 5.0,
            cores: 1.0,
        };
        let b = ServiceSample {
            visits: 30.0,
            cpu_ns: 300.0,
            wait_ns: 0.0,
            timeslices: 7.0,
            cores: 2.0,
        };
        assert_eq!(
            a.merged(b),
            ServiceSample {
                visits: 40.0,
                cpu_ns: 400.0,
                wait_ns: 0.0,
                timeslices: 12.0,
                cores: 3.0
            }
        );
    }

    #[test]
    fn ways_to_state_the_optimization() {
        // p_T = 400 µs, r_T = 2, c_T = 4.
        let t = params_t(2.0, 400.0, 4.0);
        let r = |o: Optimization| o.resolve("T", &t).unwrap();
        // Δ = 100 µs ⇒ δ = 100·2/4 = 50 µs.
        close(
            r(Optimization::DeltaUs(100.0)).delta_per_request_ns,
            50_000.0,
            1e-6,
        );
        // 25 % of 400 µs = 100 µs.
        close(r(Optimization::Percent(25.0)).delta_ns, 100_000.0, 1e-6);
        // 2x ⇒ Δ = p_T/2 = 200 µs; 4x ⇒ Δ = 400·3/4 = 300 µs.
        close(r(Optimization::Speedup(2.0)).delta_ns, 200_000.0, 1e-6);
        close(r(Optimization::Speedup(4.0)).delta_ns, 300_000.0, 1e-6);
        // Capacity 10 000 → 20 000 req/s: Δ = 4·(100 µs − 50 µs) = 200 µs.
        close(
            r(Optimization::Capacity {
                old_rps: Some(10_000.0),
                new_rps: 20_000.0,
            })
            .delta_ns,
            200_000.0,
            1e-6,
        );
        // Capacity from the measured c_T/p_T = 4/400 µs = 10 000 req/s to 20 000: same 200 µs.
        close(
            r(Optimization::Capacity {
                old_rps: None,
                new_rps: 20_000.0,
            })
            .delta_ns,
            200_000.0,
            1e-6,
        );
        // 4 → 8 cores: δ = 2·400·(1/4 − 1/8) = 100 µs; Δ = 400·(1 − 4/8) = 200 µs.
        let c = r(Optimization::Cores(8.0));
        close(c.delta_per_request_ns, 100_000.0, 1e-6);
        close(c.delta_ns, 200_000.0, 1e-6);
    }

    #[test]
    fn bad_optimizations_are_named() {
        let t = params_t(1.0, 400.0, 2.0);
        let e = |o: Optimization| o.resolve("cart", &t).unwrap_err();
        assert!(matches!(
            e(Optimization::DeltaUs(400.0)),
            ModelError::DeltaTooLarge { .. }
        ));
        assert!(
            e(Optimization::DeltaUs(500.0))
                .to_string()
                .contains("only spends 400.0 µs")
        );
        assert!(matches!(
            e(Optimization::DeltaUs(0.0)),
            ModelError::NotPositive { .. }
        ));
        assert!(matches!(
            e(Optimization::DeltaUs(-3.0)),
            ModelError::NotPositive { .. }
        ));
        assert!(matches!(
            e(Optimization::DeltaUs(f64::NAN)),
            ModelError::NotPositive { .. }
        ));
        assert!(matches!(
            e(Optimization::Percent(100.0)),
            ModelError::NotPositive { .. }
        ));
        assert!(matches!(
            e(Optimization::Speedup(1.0)),
            ModelError::NotPositive { .. }
        ));
        assert!(matches!(
            e(Optimization::Cores(2.0)),
            ModelError::CoresNotMore { .. }
        ));
        assert!(matches!(
            e(Optimization::Capacity {
                old_rps: Some(10.0),
                new_rps: 5.0
            }),
            ModelError::CapacityNotRaised { .. }
        ));
        let idle = params_t(0.0, 0.0, 1.0);
        assert!(matches!(
            Optimization::Percent(10.0).resolve("idle", &idle),
            Err(ModelError::TargetNotVisited(_))
        ));
    }

    #[test]
    fn pause_plan_spreads_delta_over_visits() {
        let mut services = BTreeMap::new();
        services.insert("front".into(), params_t(1.0, 50.0, 1.0));
        services.insert("T".into(), params_t(0.5, 400.0, 2.0));
        services.insert("db".into(), params_t(4.0, 10.0, 1.0));
        services.insert("cold".into(), params_t(0.0, 0.0, 1.0));
        let p = Parameters {
            entry: "front".into(),
            services,
        };
        // Δ = 100 µs ⇒ δ = 100·0.5/2 = 25 µs; d_front = 25 µs, d_db = 25/4 = 6.25 µs.
        let res = Optimization::DeltaUs(100.0)
            .resolve("T", p.get("T").unwrap())
            .unwrap();
        let plan = pause_plan(&p, "T", res.delta_per_request_ns);
        close(plan.delays_ns["front"], 25_000.0, 1e-6);
        close(plan.delays_ns["db"], 6_250.0, 1e-6);
        assert!(!plan.delays_ns.contains_key("T"));
        assert_eq!(plan.unvisited, vec!["cold".to_owned()]);
        // Each paused service loses d_s·r_s = δ per request; also the general form
        // d_s = Δ·r_T/(r_s·c_T).
        close(plan.delays_ns["db"] * 4.0, res.delta_per_request_ns, 1e-9);
        close(plan.delays_ns["db"], 100_000.0 * 0.5 / (4.0 * 2.0), 1e-9);
    }

    #[test]
    fn prediction_and_its_limit() {
        // X_slow = 1000 req/s (1 ms), δ = 500 µs ⇒ X_pred = 2000 req/s.
        close(predict(1000.0, 500_000.0).unwrap(), 2000.0, 1e-9);
        assert!(matches!(
            predict(1000.0, 1_000_000.0),
            Err(ModelError::Unresolvable { .. })
        ));
        assert!(matches!(
            predict(0.0, 1.0),
            Err(ModelError::NotPositive { .. })
        ));
    }
}

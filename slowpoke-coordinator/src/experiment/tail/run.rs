//! The protocol of a tail comparison: services registered on every agent, then for each rate
//! (the main one, then a sweep's), for each repetition, every arm back to back — its schedule
//! put on every agent (none for `default`), an open-loop window, the next arm. The schedule is
//! held by a [`ScheduleGuard`] (lease renewed by the keeper, removed when it drops), so it is
//! gone from every agent on every exit path: success, error, cancellation, panic.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use slowpoke_api::agent as api;
use slowpoke_api::coordinator::{
    TailArm, TailArmResult, TailResult, TailSchedulerCounts, TailSweepPoint, TailWindow,
};

use super::load::{LatencyWindow, OpenLoad};
use super::spec::TailSpec;
use super::summary;
use crate::agents::{self, SharedAgent};
use crate::experiment::{App, Monitor, RunError, now_rfc3339};
use crate::lease::Lease;
use crate::schedule::ScheduleGuard;

/// Unregisters the services however the comparison ends (declared before the schedule guard,
/// so dropped after it: a schedule never outlives its services).
struct Registered<'a> {
    agents: &'a [SharedAgent],
    names: Vec<String>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        agents::unregister_services(self.agents, &self.names);
    }
}

/// Seed of a repetition's arrival times: the same for every arm of it.
fn seed(rate_idx: usize, repetition: usize) -> u64 {
    0x7A11_5EED ^ ((rate_idx as u64) << 32) ^ repetition as u64
}

/// What is measured so far at one rate.
struct AtRate {
    rate_rps: f64,
    windows: BTreeMap<TailArm, Vec<TailWindow>>,
    merged: BTreeMap<TailArm, Histogram<u64>>,
}

/// Runs a tail comparison of `app` on `agents` (blocking). The result's `id` is left empty for
/// the caller to name.
pub fn run_tail(
    spec: &TailSpec,
    app: &dyn App,
    agents: &[SharedAgent],
    lease: Lease,
    load: &dyn OpenLoad,
    monitor: &Monitor,
) -> Result<TailResult, RunError> {
    let r = run_inner(spec, app, agents, lease, load, monitor);
    monitor.update(|p| {
        p.finished = true;
        p.fraction = 1.0;
        p.phase = match &r {
            Ok(_) => "done".into(),
            Err(e) => format!("failed: {e}"),
        };
    });
    r
}

fn run_inner(
    spec: &TailSpec,
    app: &dyn App,
    agents: &[SharedAgent],
    lease: Lease,
    load: &dyn OpenLoad,
    monitor: &Monitor,
) -> Result<TailResult, RunError> {
    spec.check().map_err(RunError::BadSpec)?;
    if agents.is_empty() {
        return Err(RunError::BadSpec("no agent to talk to".into()));
    }
    let services = app.services();
    if services.is_empty() {
        return Err(RunError::BadSpec("the app has no services".into()));
    }
    if let Some(s) = services.iter().find(|(_, s)| s.kubernetes.is_some()) {
        return Err(RunError::BadSpec(format!(
            "service `{}` is selected by pod or label: a tail comparison takes port, pid, comm \
             or cgroup selectors for now",
            s.0
        )));
    }
    let scheduled: Vec<String> = spec
        .services
        .clone()
        .unwrap_or_else(|| services.keys().cloned().collect());
    super::super::app::require_services(app, &scheduled)?;
    let mut cfg = spec.load.clone();
    if cfg.url.is_empty() {
        cfg.url = app.entry_url();
    }

    monitor.update(|p| p.phase = "registering services".into());
    // A schedule this owner left behind (an earlier run that crashed) goes first.
    if let Some(e) = agents::clear_scheduling_everywhere(agents, lease.owner())
        .into_iter()
        .next()
    {
        return Err(e.into());
    }
    agents::register_services(agents, &services)?;
    let _registered = Registered {
        agents,
        names: services.keys().cloned().collect(),
    };
    let arms = spec.arms_in_order();
    let mut rates = vec![spec.rate_rps];
    if let Some(s) = &spec.sweep {
        rates.extend(&s.rates_rps);
    }
    let mut runner = Runner {
        spec,
        agents,
        cfg,
        load,
        monitor,
        guard: ScheduleGuard::new(agents, lease),
        scheduled,
        total: rates.len() * spec.repetitions * arms.len(),
        arms,
        failed: BTreeMap::new(),
        windows: Vec::new(),
        done: 0,
    };
    let mut measured = Vec::new();
    for (ri, &rate) in rates.iter().enumerate() {
        measured.push(runner.measure_rate(ri, rate)?);
    }
    let mut warnings = load.warnings();
    warnings.extend(
        runner
            .guard
            .clear()
            .into_iter()
            .map(|e| format!("could not remove the schedule: {e}")),
    );

    let mut measured = measured.into_iter();
    let main = measured.next().expect("the main rate is measured first");
    let sweep: Vec<TailSweepPoint> = measured
        .map(|at| TailSweepPoint {
            rate_rps: at.rate_rps,
            arms: runner.results(&at),
        })
        .collect();
    let main_arms = runner.results(&main);
    // The main rate counts as one of the sweep's rates for the capacity.
    let capacity = spec.sweep.as_ref().map_or_else(Vec::new, |s| {
        let mut points = sweep.clone();
        points.push(TailSweepPoint {
            rate_rps: spec.rate_rps,
            arms: main_arms.clone(),
        });
        summary::capacity(&points, &runner.arms, s.p99_target_us)
    });
    Ok(TailResult {
        id: String::new(),
        created: now_rfc3339(),
        entry_url: runner.cfg.url.clone(),
        services: runner.scheduled.clone(),
        agents: agents.iter().map(|a| a.name()).collect(),
        schedule: spec.schedule.clone(),
        rate_rps: spec.rate_rps,
        window_s: spec.window_s,
        repetitions: spec.repetitions,
        arms: main_arms,
        windows: std::mem::take(&mut runner.windows),
        p99_target_us: spec.sweep.as_ref().map(|s| s.p99_target_us),
        sweep,
        capacity,
        load_priority: load.realtime_priority(),
        warnings,
    })
}

/// The comparison under way.
struct Runner<'a> {
    spec: &'a TailSpec,
    agents: &'a [SharedAgent],
    /// The requests, with the entry URL filled in.
    cfg: crate::experiment::LoadConfig,
    load: &'a dyn OpenLoad,
    monitor: &'a Monitor,
    guard: ScheduleGuard,
    scheduled: Vec<String>,
    arms: Vec<TailArm>,
    /// Arms that could not run, and why: skipped from then on.
    failed: BTreeMap<TailArm, String>,
    /// Every window, in the order it ran.
    windows: Vec<TailWindow>,
    done: usize,
    total: usize,
}

impl Runner<'_> {
    /// Every repetition of every arm at one rate.
    fn measure_rate(&mut self, rate_idx: usize, rate: f64) -> Result<AtRate, RunError> {
        let mut at = AtRate {
            rate_rps: rate,
            windows: BTreeMap::new(),
            merged: BTreeMap::new(),
        };
        for rep in 0..self.spec.repetitions {
            for arm in self.arms.clone() {
                self.done += 1;
                if self.failed.contains_key(&arm) {
                    continue;
                }
                self.measure_arm(&mut at, seed(rate_idx, rep), rep, arm)?;
            }
        }
        Ok(at)
    }

    /// One arm's window: its schedule in force, then the open loop.
    fn measure_arm(
        &mut self,
        at: &mut AtRate,
        seed: u64,
        rep: usize,
        arm: TailArm,
    ) -> Result<(), RunError> {
        if self.monitor.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        let (rate, reps) = (at.rate_rps, self.spec.repetitions);
        self.monitor.update(|p| {
            p.phase = format!("rep {}/{reps}: {arm} at {rate:.0} req/s", rep + 1);
        });
        if let Err(e) = put_arm(&mut self.guard, self.spec, arm, &self.scheduled) {
            // An arm the agents cannot run (an agent without tail scheduling, a refused
            // schedule) is reported, and the other arms go on.
            tracing::warn!("arm {arm} cannot run: {e}");
            self.failed.insert(arm, e.to_string());
            return Ok(());
        }
        // The schedulers' counters around the window (no schedule, nothing to ask for).
        let cost_before = arm.policy().map(|_| scheduler_totals(self.agents));
        let w = self
            .load
            .window(
                &self.cfg,
                rate,
                Duration::from_secs_f64(self.spec.warmup_s),
                Duration::from_secs_f64(self.spec.window_s),
                seed,
            )
            .map_err(RunError::Load)?;
        if let Some(lost) = self.guard.lost() {
            return Err(RunError::LeaseLost {
                agent: lost.agent,
                phase: arm.to_string(),
                detail: lost.detail,
            });
        }
        check_errors(&w, arm, self.spec.max_error_ratio)?;
        let ranked = w.ranked();
        let mut record = summary::window_record(arm, rep, rate, &w, &ranked);
        if let Some(before) = cost_before {
            let cost = scheduler_totals(self.agents).since(&before);
            record.scheduler_cores = cost.cores();
            record.scheduler_wakeups_per_s = cost.wakeups_per_s();
            record.scheduler_counts = (cost.agents > 0).then_some(cost.counts);
        }
        let fraction = self.done as f64 / self.total as f64;
        self.monitor.update(|p| {
            p.windows_done += 1;
            p.last_rps = Some(record.rps);
            p.fraction = fraction;
        });
        at.windows.entry(arm).or_default().push(record.clone());
        at.merged
            .entry(arm)
            .or_insert_with(|| Histogram::new_from(&ranked))
            .add(&ranked)
            .map_err(|e| RunError::Load(format!("merging latencies: {e}")))?;
        self.windows.push(record);
        Ok(())
    }

    /// Every arm's figures at one rate (ratios against that rate's `default`).
    fn results(&self, at: &AtRate) -> Vec<TailArmResult> {
        let default: BTreeMap<usize, TailWindow> = at
            .windows
            .get(&TailArm::Default)
            .map(|ws| ws.iter().map(|w| (w.repetition, w.clone())).collect())
            .unwrap_or_default();
        self.arms
            .iter()
            .map(|&arm| match (self.failed.get(&arm), at.windows.get(&arm)) {
                (Some(e), _) => summary::not_run(arm, e.clone()),
                (None, Some(ws)) => summary::arm_result(arm, ws, &at.merged[&arm], &default),
                (None, None) => summary::not_run(arm, "no window was measured".into()),
            })
            .collect()
    }
}

/// Puts `arm`'s schedule on every agent (removes any for `default`).
fn put_arm(
    guard: &mut ScheduleGuard,
    spec: &TailSpec,
    arm: TailArm,
    services: &[String],
) -> Result<(), agents::AgentError> {
    let Some(policy) = arm.policy() else {
        return match guard.clear().into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e),
        };
    };
    let s = &spec.schedule;
    let plan = api::SchedulingPlan {
        policy,
        services: services.to_vec(),
        k: s.k,
        priority: s.priority,
        age_cap_ms: s.age_cap_ms,
        max_share: s.max_share,
        ..api::SchedulingPlan::default()
    };
    guard.put(&plan).map(drop)
}

/// The tail schedulers' counters, summed over the agents that report them.
#[derive(Clone, Copy, Debug, Default)]
struct SchedulerTotals {
    cpu_us: u64,
    /// Summed too: the cores are `cpu_us / (elapsed_us / agents)`.
    elapsed_us: u64,
    wakeups: u64,
    counts: TailSchedulerCounts,
    agents: u64,
}

impl SchedulerTotals {
    /// From `before` to now; nothing when a schedule began in between (its counters restart).
    fn since(&self, before: &SchedulerTotals) -> SchedulerTotals {
        if self.agents != before.agents || self.elapsed_us < before.elapsed_us {
            return SchedulerTotals::default();
        }
        let (c, b) = (&self.counts, &before.counts);
        SchedulerTotals {
            cpu_us: self.cpu_us.saturating_sub(before.cpu_us),
            elapsed_us: self.elapsed_us - before.elapsed_us,
            wakeups: self.wakeups.saturating_sub(before.wakeups),
            counts: TailSchedulerCounts {
                requests: c.requests.saturating_sub(b.requests),
                requests_with_age: c.requests_with_age.saturating_sub(b.requests_with_age),
                promotions: c.promotions.saturating_sub(b.promotions),
                reranks: c.reranks.saturating_sub(b.reranks),
                demotions: c.demotions.saturating_sub(b.demotions),
                share_capped: c.share_capped.saturating_sub(b.share_capped),
                age_capped: c.age_capped.saturating_sub(b.age_capped),
                failed_changes: c.failed_changes.saturating_sub(b.failed_changes),
                lost_events: c.lost_events.saturating_sub(b.lost_events),
            },
            agents: self.agents,
        }
    }

    fn secs(&self) -> Option<f64> {
        (self.agents > 0 && self.elapsed_us > 0)
            .then(|| self.elapsed_us as f64 / self.agents as f64 / 1e6)
    }

    fn cores(&self) -> Option<f64> {
        self.secs().map(|s| self.cpu_us as f64 / 1e6 / s)
    }

    fn wakeups_per_s(&self) -> Option<f64> {
        self.secs().map(|s| self.wakeups as f64 / s)
    }
}

fn scheduler_totals(agents: &[SharedAgent]) -> SchedulerTotals {
    let mut t = SchedulerTotals::default();
    for a in agents {
        // A figure for the report, not a reason to fail the comparison.
        if let Some(s) = a.stats().ok().and_then(|s| s.scheduling) {
            t.cpu_us += s.cpu_us;
            t.elapsed_us += s.elapsed_us;
            t.wakeups += s.wakeups;
            let c = &mut t.counts;
            c.requests += s.requests;
            c.requests_with_age += s.requests_with_age;
            c.promotions += s.promotions;
            c.reranks += s.reranks;
            c.demotions += s.demotions;
            c.share_capped += s.share_capped;
            c.age_capped += s.age_capped;
            c.failed_changes += s.failed_changes;
            c.lost_events += s.lost_events;
            t.agents += 1;
        }
    }
    t
}

fn check_errors(w: &LatencyWindow, arm: TailArm, limit: f64) -> Result<(), RunError> {
    let ratio = w.error_ratio();
    if ratio > limit {
        return Err(RunError::LoadErrors {
            phase: arm.to_string(),
            pct: ratio * 100.0,
            limit_pct: limit * 100.0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod cost_tests {
    use super::{SchedulerTotals, TailSchedulerCounts};

    #[test]
    fn the_schedulers_cost_is_the_difference_over_the_window_per_agent() {
        let before = SchedulerTotals {
            cpu_us: 1_000,
            elapsed_us: 2_000_000,
            wakeups: 100,
            counts: TailSchedulerCounts {
                requests: 50,
                promotions: 40,
                share_capped: 5,
                ..TailSchedulerCounts::default()
            },
            agents: 2,
        };
        let after = SchedulerTotals {
            cpu_us: 401_000,
            elapsed_us: 10_000_000, // 4 s more on each of the 2 agents
            wakeups: 8_100,
            counts: TailSchedulerCounts {
                requests: 1_050,
                requests_with_age: 700,
                promotions: 940,
                share_capped: 105,
                ..TailSchedulerCounts::default()
            },
            agents: 2,
        };
        let d = after.since(&before);
        assert!(
            (d.cores().unwrap() - 0.1).abs() < 1e-9,
            "0.4 s of CPU in 4 s"
        );
        assert!((d.wakeups_per_s().unwrap() - 2_000.0).abs() < 1e-9);
        // What the schedulers did: the counters' differences.
        assert_eq!(
            d.counts,
            TailSchedulerCounts {
                requests: 1_000,
                requests_with_age: 700,
                promotions: 900,
                share_capped: 100,
                ..TailSchedulerCounts::default()
            }
        );
        // A schedule that began during the window restarted its counters: no figure.
        let restarted = SchedulerTotals {
            elapsed_us: 1_000,
            ..after
        };
        assert_eq!(restarted.since(&before).cores(), None);
        assert_eq!(SchedulerTotals::default().wakeups_per_s(), None);
    }
}

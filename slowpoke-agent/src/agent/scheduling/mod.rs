//! Tail-latency scheduling (`PUT/GET/DELETE /v1/scheduling`, `docs/tail.md`): the threads
//! serving the oldest requests of the scheduled services run first (`SCHED_FIFO` 1–19, below
//! the agent's own 20), the rest wait.
//!
//! Files: `core.rs` (the decisions, pure), `apply.rs` (policies by thread id, saved and
//! restored exactly), `runner.rs` (the scheduler thread); this file holds the agent's side:
//! validation, the schedule's owner and lease (the same rules as slowdown plans,
//! `safety/lease.rs`), the refusal of a schedule and a slowdown plan on the same service, and
//! what ends a schedule (DELETE, a lapsed lease, its last service deleted, the agent's stop).
//!
//! Safety: every promoted thread is listed in the page shared with the guardian before its
//! policy changes (`safety/promoted.rs`), so an agent killed with SIGKILL leaves no thread real-time.

mod apply;
mod core;
mod meter;
mod runner;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

pub use runner::Scheduler;

use self::{core::CoreConfig, runner::Command};
use super::{Agent, State, lock};
use crate::{
    api::{SchedulingPlan, SchedulingStats},
    error::AgentError,
    safety::lease::{ANONYMOUS, Lease, validate_owner},
};

/// Defaults and bounds of a schedule (the API's documented ones).
const DEFAULT_K: u32 = 1;
const MAX_K: u32 = 64;
const DEFAULT_PRIORITY: u8 = 10;
const DEFAULT_AGE_CAP_MS: u64 = 1000;
const MAX_AGE_CAP_MS: u64 = 60_000;
const DEFAULT_MAX_SHARE: f64 = 0.5;
const MAX_SHARE: f64 = 0.9;
/// Where a schedule's lease is renewed (named in the lease errors).
const RENEW_PATH: &str = "/v1/scheduling/renew";
/// How long a DELETE waits for the scheduler to restore every thread.
const CLEAR_TIMEOUT: Duration = Duration::from_secs(3);

/// The schedule in force and who holds it.
pub(super) struct Schedule {
    /// Normalized: every optional field filled in, owner and lease length included.
    plan: SchedulingPlan,
    lease: Lease,
    /// The kernel's dropped request events of the scheduled services when the schedule began
    /// (its counters run since each service was registered).
    dropped_base: u64,
}

impl Agent {
    /// Puts a schedule in force (or replaces it). Validated as a whole first: on error nothing
    /// changes. 409 while another owner's schedule is live, or when a service has a delay in
    /// the slowdown plan in force.
    pub fn set_scheduling(&self, plan: SchedulingPlan) -> Result<SchedulingPlan, AgentError> {
        self.check_running()?;
        let owner = plan.owner.clone().unwrap_or_else(|| ANONYMOUS.to_owned());
        validate_owner(&owner)?;
        let limits = self.inner.cfg.lease_limits();
        let granted = limits.grant_for(plan.lease_ms, limits.default, RENEW_PATH)?;
        let plan = normalize(plan, &owner, granted)?;
        let mut st = lock(&self.inner.state);
        self.expire_lapsed_schedule(&mut st);
        if let Some(s) = &st.schedule {
            s.lease
                .check_holder_of("schedule", "/v1/scheduling", &owner, Instant::now())?;
        }
        for name in &plan.services {
            if !st.services.contains_key(name) {
                return Err(AgentError::BadRequest(format!(
                    "services: unknown service {name:?}; register it first with PUT /v1/services/{name}"
                )));
            }
            if st
                .plan
                .services
                .get(name)
                .is_some_and(|d| d.delay_per_visit_ns > 0)
            {
                return Err(AgentError::Conflict(format!(
                    "service {name:?} has a delay in the slowdown plan in force (held by {}): \
                     scheduling and a slowdown of the same service at once would measure \
                     neither; remove the plan (DELETE /v1/slowdown) or leave {name:?} out",
                    st.plan.owner.as_deref().unwrap_or(ANONYMOUS)
                )));
            }
        }
        self.track_ages(&st, &plan.services).map_err(|e| {
            AgentError::Unavailable(format!(
                "the kernel cannot report the requests of these services ({e}); see /v1/health"
            ))
        })?;
        let lost_before = st.schedule.as_ref().map_or(0, |s| {
            self.dropped_events(&st, &s.plan.services)
                .saturating_sub(s.dropped_base)
        });
        let dropped_base = self
            .dropped_events(&st, &plan.services)
            .saturating_sub(lost_before);
        self.push_schedule(&st, &plan);
        tracing::info!(schedule = ?plan, "schedule in force");
        st.schedule = Some(Schedule {
            plan,
            lease: Lease::grant(&owner, granted, Instant::now()),
            dropped_base,
        });
        Ok(scheduling_of(&st))
    }

    /// The schedule in force (no services: none), with what is left of its lease.
    pub fn scheduling(&self) -> SchedulingPlan {
        scheduling_of(&lock(&self.inner.state))
    }

    /// What the scheduler did since the schedule in force began (`None`: no schedule).
    pub fn scheduling_stats(&self) -> Option<SchedulingStats> {
        self.scheduling_stats_in(&lock(&self.inner.state))
    }

    /// [`Agent::scheduling_stats`] under the state lock (the stats snapshot holds it).
    pub(super) fn scheduling_stats_in(&self, st: &State) -> Option<SchedulingStats> {
        let s = st.schedule.as_ref()?;
        let mut stats = self.inner.scheduler.stats().unwrap_or_default();
        stats.lost_events = self
            .dropped_events(st, &s.plan.services)
            .saturating_sub(s.dropped_base);
        Some(stats)
    }

    /// The kernel's dropped request events of `services` (ring buffer full), summed.
    fn dropped_events(&self, st: &State, services: &[String]) -> u64 {
        let kernel = lock(&self.inner.kernel);
        let Some(k) = kernel.as_ref() else {
            return 0;
        };
        services
            .iter()
            .filter_map(|n| st.services.get(n))
            .filter_map(|s| k.age_counters(s.id).ok())
            .map(|c| c.dropped_events)
            .sum()
    }

    /// Ends the schedule on behalf of `owner` (409 while another owner's lease is live): every
    /// thread gets its own policy back before this returns.
    pub fn clear_scheduling_as(&self, owner: &str) -> Result<(), AgentError> {
        validate_owner(owner)?;
        let mut st = lock(&self.inner.state);
        self.expire_lapsed_schedule(&mut st);
        if let Some(s) = &st.schedule {
            s.lease
                .check_holder_of("schedule", "/v1/scheduling", owner, Instant::now())?;
        }
        self.end_schedule(&mut st, "removed");
        Ok(())
    }

    /// Ends the schedule whoever holds it (operator override, the agent's stop).
    pub fn clear_scheduling(&self) {
        let mut st = lock(&self.inner.state);
        self.end_schedule(&mut st, "removed");
    }

    /// Extends the schedule's lease from now (default: the length granted last).
    pub fn renew_scheduling(
        &self,
        owner: &str,
        lease_ms: Option<u64>,
    ) -> Result<SchedulingPlan, AgentError> {
        self.check_running()?;
        validate_owner(owner)?;
        let mut st = lock(&self.inner.state);
        self.expire_lapsed_schedule(&mut st);
        let limits = self.inner.cfg.lease_limits();
        let Some(s) = st.schedule.as_mut() else {
            return Err(AgentError::NotFound(format!(
                "no schedule holds a lease to renew for {owner:?}: it lapsed or was removed \
                 (GET /v1/scheduling shows the schedule in force); PUT it again"
            )));
        };
        let now = Instant::now();
        s.lease
            .check_holder_of("schedule", "/v1/scheduling", owner, now)?;
        let granted = limits.grant_for(lease_ms, s.lease.granted(), RENEW_PATH)?;
        s.lease.renew(granted, now);
        s.plan.lease_ms = Some(granted.as_millis() as u64);
        Ok(scheduling_of(&st))
    }

    /// The holder of the live schedule, if any.
    pub fn scheduling_holder(&self) -> Option<String> {
        let st = lock(&self.inner.state);
        st.schedule
            .as_ref()
            .filter(|s| !s.lease.lapsed(Instant::now()))
            .map(|s| s.lease.owner().to_owned())
    }

    /// Ends a schedule whose lease lapsed (the lease watcher and every call that changes it).
    pub(super) fn expire_lapsed_schedule(&self, st: &mut State) {
        let Some(s) = st
            .schedule
            .as_ref()
            .filter(|s| s.lease.lapsed(Instant::now()))
        else {
            return;
        };
        tracing::warn!(
            owner = %s.lease.owner(),
            lease_ms = s.lease.granted().as_millis(),
            "the schedule's lease lapsed without renewal (its owner stopped renewing: crashed, \
             killed or cut off?); every thread gets its own policy back"
        );
        st.leases_expired += 1;
        self.end_schedule(st, "lease lapsed");
    }

    /// 409 when a slowdown plan would delay a scheduled service.
    pub(super) fn refuse_delay_of_scheduled(
        st: &State,
        delayed: impl Iterator<Item = String>,
    ) -> Result<(), AgentError> {
        let Some(s) = st.schedule.as_ref() else {
            return Ok(());
        };
        for name in delayed {
            if s.plan.services.contains(&name) {
                return Err(AgentError::Conflict(format!(
                    "service {name:?} is scheduled (PUT /v1/scheduling, held by {}): a slowdown \
                     of a scheduled service would measure neither; remove the schedule \
                     (DELETE /v1/scheduling) or leave {name:?} out of the plan",
                    s.lease.owner()
                )));
            }
        }
        Ok(())
    }

    /// A service is being deleted: it leaves the schedule (the schedule ends with its last).
    pub(super) fn unschedule_service(&self, st: &mut State, name: &str) {
        let Some(s) = st.schedule.as_mut() else {
            return;
        };
        if !s.plan.services.iter().any(|n| n == name) {
            return;
        }
        s.plan.services.retain(|n| n != name);
        if s.plan.services.is_empty() {
            self.end_schedule(st, "its last service was deleted");
            return;
        }
        let plan = s.plan.clone();
        if let Err(e) = self.track_ages(st, &plan.services) {
            tracing::warn!("request tracking after {name:?} left the schedule: {e}");
        }
        self.push_schedule(st, &plan);
    }

    /// Hands a (normalized) schedule and its services' members to the scheduler thread.
    fn push_schedule(&self, st: &State, plan: &SchedulingPlan) {
        let members = scheduled_members(st, &plan.services);
        self.inner.scheduler.command(Command::Set {
            cfg: CoreConfig {
                policy: plan.policy,
                services: members.keys().copied().collect(),
                k: plan.k.unwrap_or(DEFAULT_K) as usize,
                age_cap_ns: plan.age_cap_ms.unwrap_or(DEFAULT_AGE_CAP_MS) * 1_000_000,
                max_share: plan.max_share.unwrap_or(DEFAULT_MAX_SHARE),
            },
            priority: u32::from(plan.priority.unwrap_or(DEFAULT_PRIORITY)),
            members,
        });
    }

    /// After a resolver pass: the scheduler promotes only current members.
    pub(super) fn sync_schedule_members(&self, st: &State) {
        if let Some(s) = &st.schedule {
            self.inner
                .scheduler
                .command(Command::Members(scheduled_members(st, &s.plan.services)));
        }
    }

    fn end_schedule(&self, st: &mut State, why: &str) {
        let Some(s) = st.schedule.take() else {
            return;
        };
        if let Err(e) = self.track_ages(st, &[]) {
            tracing::warn!("turning request tracking off: {e}");
        }
        if !self.inner.scheduler.clear(CLEAR_TIMEOUT) {
            tracing::error!(
                "the tail scheduler did not confirm within {} s that every thread got its own \
                 policy back; see its log",
                CLEAR_TIMEOUT.as_secs()
            );
        }
        tracing::info!(owner = %s.lease.owner(), why, "schedule ended; every thread restored");
    }

    /// Tells the kernel which services report their requests (`CONFIG_TRACK_AGES`): exactly
    /// `services` among the registered ones. Without kernel programs (test hooks) nothing.
    fn track_ages(&self, st: &State, services: &[String]) -> Result<(), AgentError> {
        let mut kernel = lock(&self.inner.kernel);
        let Some(k) = kernel.as_mut() else {
            return Ok(());
        };
        for (name, svc) in &st.services {
            let on = services.contains(name);
            if k.tracks_ages(svc.id) != on {
                k.set_track_ages(svc.id, on)?;
            }
        }
        Ok(())
    }

    /// TEST ONLY: feeds a request event to the scheduler as the kernel would (`service` by
    /// name).
    #[cfg(feature = "test-hooks")]
    pub fn debug_request_event(
        &self,
        service: &str,
        mut ev: slowpoke_common::RequestEvent,
    ) -> Result<(), AgentError> {
        let st = lock(&self.inner.state);
        ev.service = st
            .services
            .get(service)
            .ok_or_else(|| super::unknown_service(service))?
            .id;
        self.inner.scheduler.feed(ev);
        Ok(())
    }
}

impl Schedule {
    pub(super) fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// Starts the scheduler thread on the kernel's request events (taken from `kernel`, when its
/// programs are loaded) and says so in the health features.
pub(super) fn start(
    kernel: &super::SharedKernel,
    page: &std::sync::Arc<crate::safety::watchdog::SharedPage>,
    features: &mut std::collections::BTreeMap<String, String>,
) -> Result<Scheduler, AgentError> {
    let (events, runs) = match lock(kernel).as_mut() {
        Some(k) => {
            let unavailable = |e| AgentError::Unavailable(format!("kernel request events: {e}"));
            (
                Some(k.take_request_events().map_err(unavailable)?),
                Some(k.take_promoted_runs().map_err(unavailable)?),
            )
        }
        None => (None, None),
    };
    features.insert(
        "tail_scheduling".into(),
        if events.is_some() {
            "on: PUT /v1/scheduling".into()
        } else {
            "off: the kernel programs are not loaded (request events come from them)".into()
        },
    );
    Scheduler::start(page.clone(), events, runs)
        .map_err(|e| AgentError::Internal(format!("cannot start the tail scheduler thread: {e}")))
}

/// The answer of `GET /v1/scheduling`.
fn scheduling_of(st: &State) -> SchedulingPlan {
    st.schedule
        .as_ref()
        .map_or_else(SchedulingPlan::default, |s| {
            let mut p = s.plan.clone();
            p.lease_remaining_ms = Some(s.lease.remaining(Instant::now()).as_millis() as u64);
            p
        })
}

/// Kernel id -> member tgids of each scheduled service.
fn scheduled_members(st: &State, services: &[String]) -> HashMap<u32, HashSet<u32>> {
    services
        .iter()
        .filter_map(|n| st.services.get(n))
        .map(|s| (s.id, s.resolved.pids.iter().copied().collect()))
        .collect()
}

/// Checks every field and fills in the defaults; the error names the field and its range.
fn normalize(
    plan: SchedulingPlan,
    owner: &str,
    granted: Duration,
) -> Result<SchedulingPlan, AgentError> {
    let bad = |msg: String| Err(AgentError::BadRequest(msg));
    if plan.services.is_empty() {
        return bad(
            "services: name at least one registered service (to end scheduling use DELETE \
             /v1/scheduling)"
                .into(),
        );
    }
    let mut seen = BTreeSet::new();
    for n in &plan.services {
        if !seen.insert(n) {
            return bad(format!(
                "services: {n:?} is named twice; name each service once"
            ));
        }
    }
    let k = plan.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return bad(format!(
            "k must be from 1 to {MAX_K} (requests run first at once), got {k}"
        ));
    }
    let priority = plan.priority.unwrap_or(DEFAULT_PRIORITY);
    if !(1..=19).contains(&priority) {
        return bad(format!(
            "priority must be from 1 to 19 (always below the agent's own real-time priority \
             20, so the agent can always demote a promoted thread), got {priority}"
        ));
    }
    let age_cap_ms = plan.age_cap_ms.unwrap_or(DEFAULT_AGE_CAP_MS);
    if !(1..=MAX_AGE_CAP_MS).contains(&age_cap_ms) {
        return bad(format!(
            "age_cap_ms must be from 1 to {MAX_AGE_CAP_MS} (ms), got {age_cap_ms}"
        ));
    }
    let max_share = plan.max_share.unwrap_or(DEFAULT_MAX_SHARE);
    if !(max_share > 0.0 && max_share <= MAX_SHARE) {
        return bad(format!(
            "max_share must be above 0 and at most {MAX_SHARE} (the share of each CPU promoted \
             threads may hold per 10 ms; the rest is for normal work), got {max_share}"
        ));
    }
    Ok(SchedulingPlan {
        policy: plan.policy,
        services: plan.services,
        k: Some(k),
        priority: Some(priority),
        age_cap_ms: Some(age_cap_ms),
        max_share: Some(max_share),
        lease_ms: Some(granted.as_millis() as u64),
        owner: Some(owner.to_owned()),
        lease_remaining_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> SchedulingPlan {
        serde_json::from_str(json).expect("plan")
    }

    #[test]
    fn defaults_fill_in_and_every_bad_field_is_named() {
        let p =
            normalize(plan(r#"{"services":["a"]}"#), "me", Duration::from_secs(15)).expect("valid");
        assert_eq!(
            (p.k, p.priority, p.age_cap_ms, p.max_share, p.lease_ms),
            (Some(1), Some(10), Some(1000), Some(0.5), Some(15_000))
        );
        for (body, field) in [
            (r#"{"services":[]}"#, "services"),
            (r#"{"services":["a","a"]}"#, "services"),
            (r#"{"services":["a"],"k":0}"#, "k must"),
            (r#"{"services":["a"],"k":65}"#, "k must"),
            (r#"{"services":["a"],"priority":20}"#, "priority"),
            (r#"{"services":["a"],"priority":0}"#, "priority"),
            (r#"{"services":["a"],"age_cap_ms":0}"#, "age_cap_ms"),
            (r#"{"services":["a"],"age_cap_ms":60001}"#, "age_cap_ms"),
            (r#"{"services":["a"],"max_share":0.0}"#, "max_share"),
            (r#"{"services":["a"],"max_share":0.95}"#, "max_share"),
        ] {
            let e = normalize(plan(body), "me", Duration::from_secs(15))
                .expect_err(body)
                .to_string();
            assert!(e.contains(field), "{body}: {e}");
        }
    }
}

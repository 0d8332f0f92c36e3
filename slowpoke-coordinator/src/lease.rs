//! Plan leases, the coordinator's side: who the experiment is to the agents ([`Lease`]: its id
//! and the lease length it asks for) and the thread that keeps its plans alive while it runs
//! ([`LeaseKeeper`]): slowdown plans, or tail schedules ([`Leased`]), which agents hold under
//! the same kind of lease.
//!
//! Agents remove a plan whose lease lapses (docs/api.md, "Leases"): a coordinator that is
//! SIGKILLed, runs out of memory or loses the network leaves nothing slowed down for longer than
//! its lease. The other side of that promise is here: while a plan is installed the keeper renews
//! it on every agent at a third of the lease; if a renewal fails so long that the lease could
//! lapse (or an agent says it already did), the experiment is told, and the window measured
//! meanwhile is invalid ([`LeaseKeeper::lost`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agents::{AgentClient, AgentError, SharedAgent};

/// Lease asked for when the user gives none (`--lease`): long enough to ride out a slow
/// renewal or two, short enough that a dead coordinator's plan goes away soon.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Shortest lease a coordinator asks for (agents refuse less than 100 ms).
pub const MIN_LEASE: Duration = Duration::from_millis(300);

/// Who holds an experiment's plans on the agents, and for how long each grant lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    owner: String,
    duration: Duration,
}

impl Lease {
    /// `owner` is the experiment's id: the agents name it to anyone its plan blocks (409) and
    /// log it when its lease lapses. Characters agents do not accept in an owner (they allow
    /// `[A-Za-z0-9._:@-]`, at most 128) are replaced by `_`; the length is at least [`MIN_LEASE`].
    pub fn new(owner: &str, duration: Duration) -> Lease {
        let mut owner: String = owner
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(128)
            .collect();
        if owner.is_empty() {
            owner.push_str("slowpoke");
        }
        Lease {
            owner,
            duration: duration.max(MIN_LEASE),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The length as the agents take it (`lease_ms`).
    pub fn millis(&self) -> u64 {
        u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)
    }
}

/// An owner unique to this process (`slowpoke-<pid>`) and [`DEFAULT_LEASE`]: for callers that
/// have no experiment id (a launcher whose backends the server gives the id afterwards).
impl Default for Lease {
    fn default() -> Lease {
        Lease::new(&format!("slowpoke-{}", std::process::id()), DEFAULT_LEASE)
    }
}

/// A lease on one agent that could not be kept: the experiment's measurement since the plan was
/// installed cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLost {
    /// The agent, as [`crate::agents::AgentClient::name`] names it.
    pub agent: String,
    /// What went wrong (the last renewal's error).
    pub detail: String,
}

/// What a keeper renews: agents hold slowdown plans and tail schedules under separate leases
/// (`POST /v1/slowdown/renew`, `POST /v1/scheduling/renew`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Leased {
    #[default]
    SlowdownPlan,
    Schedule,
}

impl Leased {
    fn renew(self, agent: &dyn AgentClient, lease: &Lease) -> Result<(), AgentError> {
        match self {
            Leased::SlowdownPlan => agent.renew_lease(lease.owner(), lease.duration()),
            Leased::Schedule => agent.renew_scheduling(lease.owner(), lease.duration()),
        }
    }
}

/// What the keeper knows, behind one lock.
#[derive(Default)]
struct KeeperState {
    stop: bool,
    /// Bumped whenever a plan is installed or removed: a renewal started before is stale.
    generation: u64,
    /// While a plan is installed: when each agent's lease was last granted (before the call
    /// that granted it, so never later than the agent's own start of the lease).
    granted: Option<Vec<Instant>>,
    lost: Option<LeaseLost>,
}

struct Shared {
    agents: Vec<SharedAgent>,
    lease: Lease,
    what: Leased,
    state: Mutex<KeeperState>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, KeeperState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Renews an experiment's lease on every agent at a third of its length while a plan is
/// installed; stops (and joins its thread) when dropped.
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts the renewal thread of slowdown plans (idle until [`LeaseKeeper::installing`]).
    pub fn start(agents: &[SharedAgent], lease: Lease) -> LeaseKeeper {
        LeaseKeeper::start_for(agents, lease, Leased::SlowdownPlan)
    }

    /// Starts the renewal thread of `what` (idle until [`LeaseKeeper::installing`]).
    pub fn start_for(agents: &[SharedAgent], lease: Lease, what: Leased) -> LeaseKeeper {
        let shared = Arc::new(Shared {
            agents: agents.to_vec(),
            lease,
            what,
            state: Mutex::new(KeeperState::default()),
            wake: Condvar::new(),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("lease-renewal".into())
            .spawn(move || renew_loop(&s))
            .map_err(|e| tracing::error!("cannot start the lease renewal thread: {e}"))
            .ok();
        LeaseKeeper { shared, thread }
    }

    pub fn lease(&self) -> &Lease {
        &self.shared.lease
    }

    /// Call right before the plan is PUT on the agents: from now on its leases are renewed.
    pub fn installing(&self) {
        let now = Instant::now();
        let mut st = self.shared.lock();
        st.generation += 1;
        st.granted = Some(vec![now; self.shared.agents.len()]);
    }

    /// Call right before the plan is removed from the agents: renewals stop.
    pub fn removed(&self) {
        let mut st = self.shared.lock();
        st.generation += 1;
        st.granted = None;
    }

    /// Why a lease could not be kept, once one could have lapsed while a plan was installed
    /// (sticky: the experiment should abort). An agent whose last grant is older than the lease
    /// counts even while its renewal is still under way: the answer may come too late.
    pub fn lost(&self) -> Option<LeaseLost> {
        let mut st = self.shared.lock();
        if st.lost.is_none() {
            let now = Instant::now();
            let lease = self.shared.lease.duration;
            let overdue = st
                .granted
                .as_ref()
                .and_then(|g| g.iter().position(|&t| t + lease <= now));
            st.lost = overdue.map(|i| LeaseLost {
                agent: self.shared.agents[i].name(),
                detail: format!(
                    "no renewal was granted within the lease of {:.1} s",
                    lease.as_secs_f64()
                ),
            });
        }
        st.lost.clone()
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn renew_loop(shared: &Shared) {
    let period = shared.lease.duration / 3;
    loop {
        let st = shared.lock();
        let (st, _) = shared
            .wake
            .wait_timeout_while(st, period, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if st.stop {
            return;
        }
        if st.granted.is_none() {
            continue;
        }
        let generation = st.generation;
        drop(st);
        renew_all(shared, generation, period);
    }
}

/// One round of renewals, every agent at once (a slow agent must not delay the others').
fn renew_all(shared: &Shared, generation: u64, period: Duration) {
    let lease = &shared.lease;
    let results: Vec<(Instant, Result<(), AgentError>)> = std::thread::scope(|scope| {
        let calls: Vec<_> = shared
            .agents
            .iter()
            .map(|a| {
                scope.spawn(move || {
                    let sent = Instant::now();
                    (sent, shared.what.renew(a.as_ref(), lease))
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| {
                c.join().unwrap_or_else(|_| {
                    let failed = AgentError::Failed {
                        agent: "?".into(),
                        message: "the renewal panicked".into(),
                    };
                    (Instant::now(), Err(failed))
                })
            })
            .collect()
    });
    let mut st = shared.lock();
    if st.generation != generation {
        return; // the plan was removed (or replaced) meanwhile: these answers say nothing
    }
    for (i, (sent, r)) in results.into_iter().enumerate() {
        let agent = shared.agents[i].name();
        let Some(granted) = st.granted.as_mut() else {
            return;
        };
        match r {
            Ok(()) => granted[i] = sent,
            Err(e) => {
                // 404: the agent holds no lease for us any more; 409: someone else holds it.
                let gone = matches!(
                    e,
                    AgentError::Rejected {
                        status: 404 | 409,
                        ..
                    }
                );
                // The next try comes a period later: too late if the lease ends before.
                let could_lapse = Instant::now() + period >= granted[i] + lease.duration;
                tracing::warn!(
                    "renewing the lease of {} on agent {agent}: {e}",
                    lease.owner()
                );
                if (gone || could_lapse) && st.lost.is_none() {
                    tracing::error!(
                        "the lease of {} on agent {agent} may lapse or has lapsed: the \
                         experiment's current window is invalid",
                        lease.owner()
                    );
                    st.lost = Some(LeaseLost {
                        agent,
                        detail: e.to_string(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use slowpoke_api::agent as api;

    use super::*;

    /// An agent that counts renewals and fails them, or hangs in them, on demand.
    #[derive(Default)]
    struct Renewals {
        count: AtomicUsize,
        schedules_renewed: AtomicUsize,
        failing: AtomicBool,
        hanging: AtomicBool,
    }

    impl AgentClient for Renewals {
        fn name(&self) -> String {
            "node-7".into()
        }
        fn health(&self) -> Result<api::Health, AgentError> {
            Ok(api::Health {
                status: "ok".into(),
                version: "test".into(),
                ..api::Health::default()
            })
        }
        fn put_service(
            &self,
            _: &str,
            _: &api::ServiceSpec,
        ) -> Result<api::ServiceInfo, AgentError> {
            unreachable!("not used")
        }
        fn delete_service(&self, _: &str) -> Result<(), AgentError> {
            Ok(())
        }
        fn stats(&self) -> Result<api::Stats, AgentError> {
            Ok(api::Stats::default())
        }
        fn set_slowdown(&self, _: &api::SlowdownPlan) -> Result<(), AgentError> {
            Ok(())
        }
        fn clear_slowdown(&self, _: &str) -> Result<(), AgentError> {
            Ok(())
        }
        fn renew_lease(&self, owner: &str, lease: Duration) -> Result<(), AgentError> {
            assert_eq!((owner, lease), ("exp_1", Duration::from_millis(300)));
            self.count.fetch_add(1, Ordering::SeqCst);
            if self.hanging.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(800));
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(AgentError::Unreachable {
                    agent: self.name(),
                    detail: "connection refused".into(),
                });
            }
            Ok(())
        }
        fn renew_scheduling(&self, owner: &str, lease: Duration) -> Result<(), AgentError> {
            assert_eq!((owner, lease), ("exp_1", Duration::from_millis(300)));
            self.schedules_renewed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn owners_are_made_acceptable_to_agents() {
        let l = Lease::new("exp 1/ü", Duration::from_millis(10));
        assert_eq!(l.owner(), "exp_1__");
        assert_eq!(l.duration(), MIN_LEASE, "at least the minimum");
        assert_eq!(Lease::new("", DEFAULT_LEASE).owner(), "slowpoke");
        assert_eq!(Lease::new("x", DEFAULT_LEASE).millis(), 15_000);
    }

    #[test]
    fn renews_only_while_installed_and_reports_a_lease_that_could_lapse() {
        let agent = Arc::new(Renewals::default());
        let shared: SharedAgent = agent.clone();
        let keeper = LeaseKeeper::start(&[shared], Lease::new("exp 1", MIN_LEASE));
        // Installed: renewed every 100 ms.
        keeper.installing();
        wait_until("two renewals", || agent.count.load(Ordering::SeqCst) >= 2);
        assert_eq!(keeper.lost(), None);
        // Removed: no renewal any more (the count stays put for several periods).
        keeper.removed();
        let settled = agent.count.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(350));
        assert!(agent.count.load(Ordering::SeqCst) <= settled + 1);
        assert_eq!(keeper.lost(), None);
        // Installed again and the agent stops answering: lost once the lease could lapse.
        agent.failing.store(true, Ordering::SeqCst);
        keeper.installing();
        wait_until("the lease reported lost", || keeper.lost().is_some());
        let lost = keeper.lost().expect("lost");
        assert_eq!(lost.agent, "node-7");
        assert!(lost.detail.contains("connection refused"), "{lost:?}");
        // Two failures at least: the first left time for another try.
        assert!(agent.count.load(Ordering::SeqCst) >= settled + 2);
    }

    #[test]
    fn a_schedules_keeper_renews_the_schedule_not_the_plan() {
        let agent = Arc::new(Renewals::default());
        let shared: SharedAgent = agent.clone();
        let keeper =
            LeaseKeeper::start_for(&[shared], Lease::new("exp 1", MIN_LEASE), Leased::Schedule);
        keeper.installing();
        wait_until("two schedule renewals", || {
            agent.schedules_renewed.load(Ordering::SeqCst) >= 2
        });
        assert_eq!(agent.count.load(Ordering::SeqCst), 0, "a plan was renewed");
        assert_eq!(keeper.lost(), None);
    }

    #[test]
    fn an_agent_that_hangs_in_a_renewal_is_lost_once_its_lease_ran_out() {
        let agent = Arc::new(Renewals::default());
        agent.hanging.store(true, Ordering::SeqCst);
        let shared: SharedAgent = agent.clone();
        let keeper = LeaseKeeper::start(&[shared], Lease::new("exp 1", MIN_LEASE));
        let installed = Instant::now();
        keeper.installing();
        // The first renewal (at 100 ms) is still hanging when the 300 ms lease runs out.
        wait_until("the lease reported lost", || keeper.lost().is_some());
        assert!(
            installed.elapsed() < Duration::from_millis(800),
            "reported only after the call"
        );
        let lost = keeper.lost().expect("lost");
        assert!(
            lost.detail.contains("within the lease of 0.3 s"),
            "{lost:?}"
        );
    }
}

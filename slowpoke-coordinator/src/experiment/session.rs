//! The session: the app's services registered on every agent, the entry service found, the
//! load running, and the [`PlanGuard`] that removes every delay however the experiment ends.
//! What-if and profile both run inside one ([`in_session`]); cleanup on every exit path
//! (success, error, cancellation, panic) is [`PlanGuard`]'s `Drop` and [`Session::finish`],
//! which `Drop` calls too.

use std::sync::Arc;

use slowpoke_api::agent as api;

use crate::agents::{self, Registration, SharedAgent};
use crate::lease::{Lease, LeaseKeeper};
use crate::model::{Parameters, PausePlan};

use super::app::{App, Backends, Load, LoadStarter, TruthChange};
use super::entry::find_entry;
use super::error::{RunError, during};
use super::monitor::Monitor;
use super::pods::{MAX_DISCARDED, Pods};
use super::result::{ServiceRow, WindowRecord};
use super::spec::{LoadConfig, Safety, Timing};
use super::stop_share;
use super::sync_peers::SyncPeering;
use super::warnings::Warnings;
use super::window::{Measured, window_secs};

/// Keeps the experiment's plan alive while it runs and removes it when dropped, whatever the
/// exit path (panics included). While a plan is installed its lease is renewed on every agent
/// ([`LeaseKeeper`]); if this process dies without dropping the guard (SIGKILL, out of memory),
/// the renewals stop and the agents remove the plan themselves when the lease lapses.
pub struct PlanGuard {
    agents: Vec<SharedAgent>,
    keeper: LeaseKeeper,
}

impl PlanGuard {
    pub fn new(agents: &[SharedAgent], lease: Lease) -> PlanGuard {
        PlanGuard {
            agents: agents.to_vec(),
            keeper: LeaseKeeper::start(agents, lease),
        }
    }

    pub fn lease(&self) -> &Lease {
        self.keeper.lease()
    }
}

impl Drop for PlanGuard {
    fn drop(&mut self) {
        self.keeper.removed();
        for e in agents::clear_everywhere(&self.agents, self.keeper.lease().owner()) {
            tracing::error!("could not remove the slowdown plan: {e}");
        }
    }
}

/// How long an agent that stopped answering is tried again before the experiment calls it lost:
/// an agent restarting comes back within it (as another instance, which ends the experiment with
/// a message saying it restarted).
const RESTART_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The parts of a spec every kind of experiment has: how the session runs.
pub(super) struct Setup<'a> {
    pub load: &'a LoadConfig,
    pub timing: Timing,
    pub safety: Safety,
    /// The entry service when the spec names it.
    pub entry_service: Option<&'a str>,
}

/// Opens a session (services registered, entry found), starts the load, runs `body` in it, and
/// whatever happens closes it (plan removed, truth restored, load stopped, services
/// unregistered) and marks the progress done.
pub(super) fn in_session<T>(
    backends: &mut Backends,
    setup: &Setup<'_>,
    monitor: &Monitor,
    body: impl FnOnce(&mut Session<'_>) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let starter = Arc::clone(&backends.load);
    let mut s = Session::open(backends, setup, monitor)?;
    let r = s
        .start_load(starter.as_ref(), setup.load)
        .and_then(|()| body(&mut s));
    s.finish();
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

/// App + agents + load for one experiment.
pub(super) struct Session<'a> {
    agents: &'a [SharedAgent],
    app: &'a mut dyn App,
    load: Option<Box<dyn Load>>,
    pub(super) monitor: &'a Monitor,
    safety: Safety,
    timing: Timing,
    reg: Registration,
    registered: Vec<String>,
    /// The app's services as registered (what a pod change registers again).
    services: std::collections::BTreeMap<String, api::ServiceSpec>,
    /// The pod and label selectors' pods, followed while the experiment runs.
    pods: Pods,
    /// The service whose visits are the end-to-end requests.
    pub(super) entry: String,
    /// The URL the load hits.
    pub(super) entry_url: String,
    /// Every window measured so far, for the result.
    pub(super) windows: Vec<WindowRecord>,
    pub(super) warnings: Warnings,
    truth_applied: bool,
    finished: bool,
    guard: PlanGuard,
    /// Visits per second of each service in the calibration window (summed over agents): what
    /// a plan's stopped share is computed from.
    visits_per_s: std::collections::BTreeMap<String, f64>,
    /// Each agent's stopped-share caps as its last stats reported them (None: an agent older
    /// than per-plan caps), in agent order.
    stop_caps: Vec<Option<api::StopCap>>,
    /// Each agent's `sync_peers`, decided at the experiment's first plan.
    sync_peers: SyncPeering,
    /// Each agent's stats at the session's first snapshot, in agent order (empty before it):
    /// every later snapshot must come from the same run of the agent ([`agents::restart_between`]).
    first_stats: Vec<api::Stats>,
}

impl<'a> Session<'a> {
    /// Registers the services and finds the entry service. A stale plan of this owner (an
    /// earlier crash) is removed first, so that it cannot bias the baseline; another
    /// experiment's plan whose lease is live is refused by the agents with 409 naming it: two
    /// experiments must not overlap.
    fn open(
        backends: &'a mut Backends,
        setup: &Setup<'_>,
        monitor: &'a Monitor,
    ) -> Result<Session<'a>, RunError> {
        if backends.agents.is_empty() {
            return Err(RunError::BadSpec("no agent to talk to".into()));
        }
        let guard = PlanGuard::new(&backends.agents, backends.lease.clone());
        let agents = backends.agents.as_slice();
        let app = backends.app.as_mut();
        let services = app.services();
        if services.is_empty() {
            return Err(RunError::BadSpec("the app has no services".into()));
        }
        monitor.update(|p| p.phase = "registering services".into());
        if let Some(e) = agents::clear_everywhere(agents, guard.lease().owner())
            .into_iter()
            .next()
        {
            return Err(e.into());
        }
        let has_pods = services.values().any(|s| s.kubernetes.is_some());
        if has_pods {
            monitor.update(|p| p.phase = "resolving pods through the Kubernetes API".into());
        }
        let mut pods = Pods::resolve(&backends.kubernetes, agents, &services)?;
        let placement = pods.placement();
        let reg =
            agents::register_placed(agents, &services, |n, s, i| placement.spec_for(n, s, i))?;
        if let Err(e) = pods.follow(&backends.kubernetes) {
            agents::unregister_services(agents, &services.keys().cloned().collect::<Vec<_>>());
            return Err(e);
        }
        let entry_url = if setup.load.url.is_empty() {
            app.entry_url()
        } else {
            setup.load.url.clone()
        };
        let named = setup
            .entry_service
            .map(str::to_owned)
            .or_else(|| app.entry_service());
        let mut session = Session {
            agents,
            app,
            load: None,
            monitor,
            safety: setup.safety,
            timing: setup.timing,
            reg,
            registered: services.keys().cloned().collect(),
            services,
            pods,
            entry: String::new(),
            entry_url,
            windows: Vec::new(),
            warnings: Warnings::default(),
            truth_applied: false,
            finished: false,
            guard,
            visits_per_s: std::collections::BTreeMap::new(),
            stop_caps: Vec::new(),
            sync_peers: SyncPeering::default(),
            first_stats: Vec::new(),
        };
        match find_entry(named, &session.reg, &session.registered, &session.entry_url) {
            Ok(entry) => {
                session.entry = entry;
                Ok(session)
            }
            Err(e) => {
                session.finish();
                Err(e)
            }
        }
    }

    /// Probes the entry (a non-2xx answer is a warning, no answer an error), starts the load
    /// and warms up.
    fn start_load(&mut self, starter: &dyn LoadStarter, cfg: &LoadConfig) -> Result<(), RunError> {
        let mut cfg = cfg.clone();
        cfg.url.clone_from(&self.entry_url);
        self.monitor
            .update(|p| p.phase = format!("probing {}", self.entry_url));
        match starter.probe(&cfg) {
            Ok(status) if (200..300).contains(&status) => {}
            Ok(status) => self.warnings.push(format!(
                "the entry URL answered HTTP {status} to a probe: non-2xx answers count as errors"
            )),
            Err(detail) => {
                return Err(RunError::EntryUnreachable {
                    url: self.entry_url.clone(),
                    detail,
                });
            }
        }
        self.load = Some(starter.start(&cfg).map_err(RunError::Load)?);
        self.monitor.update(|p| p.phase = "warming up".into());
        self.monitor.sleep(self.timing.warmup_s)
    }

    /// Measures one window (agents' stats and the load's counters at its start and end),
    /// records it, and checks the load's errors and the agents' safety cap. A window during
    /// which pods of the app changed is discarded and measured again ([`Pods`]).
    pub(super) fn measure(&mut self, phase: &str, repetition: usize) -> Result<Measured, RunError> {
        for _ in 0..MAX_DISCARDED {
            if self.pods.pending() {
                let what = self
                    .pods
                    .apply_changes(self.agents, &self.services, &mut self.reg)?;
                tracing::info!("pods changed ({what}): registered again");
            }
            let generation = self.pods.generation();
            let m = self.measure_once(phase)?;
            if self.pods.generation() == generation {
                return self.keep(m, phase, repetition);
            }
            let warning = format!(
                "pods changed during a {phase} window: the window was discarded and measured again with the new pods"
            );
            tracing::warn!("{warning}");
            self.warnings.push(warning);
        }
        Err(RunError::PodsKeepChanging {
            phase: phase.to_owned(),
            windows: MAX_DISCARDED,
        })
    }

    /// One window, not yet kept.
    fn measure_once(&mut self, phase: &str) -> Result<(Measured, f64), RunError> {
        if self.monitor.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        let before = self.snapshot(phase)?;
        let load = self
            .load
            .as_mut()
            .ok_or_else(|| RunError::Load("the load is not running".into()))?;
        load.begin_window();
        self.monitor.sleep(self.timing.window_s)?;
        let lw = load.end_window();
        let after = self.snapshot(phase)?;
        // A plan whose lease may have lapsed was perhaps not in force for the whole window.
        if let Some(lost) = self.guard.keeper.lost() {
            return Err(RunError::LeaseLost {
                agent: lost.agent,
                phase: phase.to_owned(),
                detail: lost.detail,
            });
        }
        let mut agents_window = agents::window(&before, &after);
        agents_window.forget_served(&self.reg.served_endpoints(self.agents));
        let m = Measured {
            load: lw,
            agents: agents_window,
        };
        self.stop_caps = after.agents.iter().map(|a| a.stop_cap).collect();
        Ok((m, window_secs(&before, &after)))
    }

    /// Records a window and checks the load's errors and the agents' safety cap.
    fn keep(
        &mut self,
        (m, secs): (Measured, f64),
        phase: &str,
        repetition: usize,
    ) -> Result<Measured, RunError> {
        let lw = m.load;
        self.windows
            .push(m.record(phase, repetition, &self.entry, secs));
        self.monitor.update(|p| {
            p.windows_done += 1;
            p.last_rps = Some(lw.rps);
        });
        m.note_warnings(phase, &mut self.warnings);
        m.check_safety(phase, &self.safety, &mut self.warnings)?;
        Ok(m)
    }

    /// Every agent's stats, each checked to come from the run of the agent the session began
    /// with: an agent that stopped answering or restarted ends the experiment, named.
    fn snapshot(&mut self, phase: &str) -> Result<agents::StatsSnapshot, RunError> {
        let snap = agents::snapshot_within(self.agents, RESTART_GRACE)
            .map_err(|e| self.agent_failed(e, phase))?;
        if self.first_stats.is_empty() {
            self.first_stats.clone_from(&snap.agents);
        }
        for ((a, first), now) in self.agents.iter().zip(&self.first_stats).zip(&snap.agents) {
            if let Some(detail) = agents::restart_between(first, now) {
                return Err(RunError::AgentRestarted {
                    agent: agents::label(a.as_ref()),
                    during: during(phase),
                    detail,
                });
            }
        }
        Ok(snap)
    }

    /// An agent's failure in the experiment's words: one that does not answer is lost (its
    /// plan lapses with the lease), one that answers with another instance id restarted.
    fn agent_failed(&self, e: agents::AgentError, phase: &str) -> RunError {
        match e {
            agents::AgentError::Unreachable { agent, detail } => RunError::AgentLost {
                agent,
                during: during(phase),
                detail,
                lease_s: self.guard.lease().duration().as_secs_f64(),
            },
            e => {
                // A refusal (e.g. of a plan naming services it no longer knows) from an agent
                // that restarted since the session began is told as the restart.
                let restarted = self
                    .agents
                    .iter()
                    .zip(&self.first_stats)
                    .find_map(|(a, first)| {
                        let now = a.stats().ok()?;
                        let detail = agents::restart_between(first, &now)?;
                        Some((agents::label(a.as_ref()), detail))
                    });
                match restarted {
                    Some((agent, detail)) => RunError::AgentRestarted {
                        agent,
                        during: during(phase),
                        detail,
                    },
                    None => e.into(),
                }
            }
        }
    }

    /// The stopped-share cap to ask each agent for with `plan` (None: its default covers the
    /// need), in agent order; an error naming the need, the agent's ceiling and the options
    /// when an agent does not let a plan stop a service that long. Spin delays stop nothing.
    /// What-ifs and profiles call it right after calibration, so that a plan that cannot run
    /// is refused before any slowed-down window.
    pub(super) fn stop_share_asks(&self, plan: &PausePlan) -> Result<Vec<Option<f64>>, RunError> {
        let need = match self.timing.mode {
            api::Mode::Pause => stop_share::needed(&self.visits_per_s, plan),
            api::Mode::Spin => None,
        };
        self.agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let cap = self.stop_caps.get(i).copied().flatten();
                stop_share::ask(need.as_ref(), cap.as_ref()).map_err(|o| {
                    RunError::StopShareOverCeiling {
                        service: o.need.service,
                        needed_pct: o.need.share * 100.0,
                        agent: a.name(),
                        ceiling_pct: o.ceiling * 100.0,
                    }
                })
            })
            .collect()
    }

    /// Installs `plan` on every agent, under this experiment's lease, asking each for the
    /// stopped share the plan needs ([`Session::stop_share_asks`]), and lets it settle.
    pub(super) fn set_plan(&mut self, plan: &PausePlan) -> Result<(), RunError> {
        let asks = self.stop_share_asks(plan)?;
        let lease = self.guard.lease();
        let wire = api::SlowdownPlan {
            owner: Some(lease.owner().to_owned()),
            lease_ms: Some(lease.millis()),
            lease_remaining_ms: None,
            max_stopped_share: None,
            mode: self.timing.mode,
            quantum_ns: self.timing.quantum_us.map(|us| (us * 1e3) as u64),
            synchronized: self.timing.synchronized,
            sync_peers: None,
            services: plan
                .delays_ns
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        api::ServiceDelay {
                            delay_per_visit_ns: d.round() as u64,
                        },
                    )
                })
                .collect(),
        };
        let peers = self
            .sync_peers
            .for_agents(
                self.agents,
                &wire,
                self.timing.sync_across_nodes,
                &mut self.warnings,
            )
            .to_vec();
        self.guard.keeper.installing();
        for ((a, ask), sync_peers) in self.agents.iter().zip(asks).zip(peers) {
            a.set_slowdown(&api::SlowdownPlan {
                max_stopped_share: ask,
                sync_peers,
                ..wire.clone()
            })
            .map_err(|e| self.agent_failed(e, "installing the slowdown plan"))?;
        }
        self.monitor.sleep(self.timing.settle_s)
    }

    /// Removes the plan from every agent.
    pub(super) fn clear_plan(&mut self) -> Result<(), RunError> {
        self.guard.keeper.removed();
        if let Some(e) = agents::clear_everywhere(self.agents, self.guard.lease().owner())
            .into_iter()
            .next()
        {
            return Err(self.agent_failed(e, "removing the slowdown plan"));
        }
        Ok(())
    }

    /// Really applies `change` to `target` (ground truth), lets it settle, measures a `truth`
    /// window and undoes the change. A failure on the way leaves the change to
    /// [`Session::finish`].
    pub(super) fn measure_truth(
        &mut self,
        target: &str,
        change: TruthChange,
        repetition: usize,
    ) -> Result<Measured, RunError> {
        self.app
            .apply_truth(target, change)
            .map_err(RunError::Truth)?;
        self.truth_applied = true;
        self.monitor.sleep(self.timing.settle_s)?;
        let m = self.measure("truth", repetition);
        self.app.restore_truth().map_err(RunError::Truth)?;
        self.truth_applied = false;
        m
    }

    /// The calibration window (the first baseline) and the model's parameters from it.
    pub(super) fn calibrate(&mut self) -> Result<Parameters, RunError> {
        self.monitor
            .update(|p| p.phase = "calibration baseline".into());
        let cal = self.measure("calibration", 0)?;
        self.visits_per_s = cal
            .agents
            .samples
            .iter()
            .map(|(n, x)| (n.clone(), x.visits))
            .collect();
        self.parameters(&cal)
    }

    /// The model's parameters from one window, relative to the entry service.
    pub(super) fn parameters(&self, m: &Measured) -> Result<Parameters, RunError> {
        Ok(Parameters::from_samples(&m.agents.samples, &self.entry)?)
    }

    /// The result's table of services: parameters, delays, and the agents that own each.
    pub(super) fn rows(
        &self,
        params: &Parameters,
        target: Option<&str>,
        plan: Option<&PausePlan>,
    ) -> Vec<ServiceRow> {
        params
            .services
            .iter()
            .map(|(name, s)| ServiceRow {
                name: name.clone(),
                r: s.r,
                p_us: s.p_ns / 1e3,
                c: s.c,
                d_us: plan.and_then(|p| p.delays_ns.get(name)).map(|d| d / 1e3),
                is_target: target == Some(name.as_str()),
                is_entry: *name == self.entry,
                agents: self
                    .reg
                    .owners
                    .get(name)
                    .map(|o| o.iter().map(|&i| self.agents[i].name()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Removes every delay, restores the truth change, stops the load, unregisters. Idempotent.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.guard.keeper.removed();
        for e in agents::clear_everywhere(self.agents, self.guard.lease().owner()) {
            tracing::error!("could not remove the slowdown plan: {e}");
        }
        if self.truth_applied {
            if let Err(e) = self.app.restore_truth() {
                tracing::error!("could not restore the ground-truth change: {e}");
            }
            self.truth_applied = false;
        }
        if let Some(mut l) = self.load.take() {
            l.stop();
        }
        agents::unregister_services(self.agents, &self.registered);
        self.registered.clear();
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

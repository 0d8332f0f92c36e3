//! The experiment runner: the profiling loop of one what-if or one causal profile.
//!
//! One continuous closed-loop load runs for the whole experiment (the app and the load are never
//! restarted between points, plans change live). Measurements are WINDOWS: agent stats and load
//! counters are snapshotted at t0 and t1. A calibration baseline window gives r_s, p_s, c_s (and
//! so Δ, δ and the pause plan); then repetitions are interleaved — base, slow, [truth], base,
//! slow, [truth], ... — because throughput drifts by a few percent over minutes on a shared
//! machine and interleaving spreads that drift evenly over the three kinds of run.
//!
//! Every exit path (success, error, cancellation, panic) removes the plan from every agent and
//! restores the emulator's ground-truth change: [`PlanGuard`] and [`Session::finish`].
//!
//! The runner is blocking; from async code use [`spawn_what_if`] / [`spawn_profile`], which run it
//! on tokio's blocking pool and hand back an [`ExperimentHandle`] to observe and cancel it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use slowpoke_api::agent as api;

use crate::agents::{self, AgentError, RegisterError, Registration, SharedAgent, StatsSnapshot};
use crate::lease::{Lease, LeaseKeeper};
use crate::model::{
    self, ModelError, Optimization, OptimizationModel as _, Parameters, PausePlan, Resolved,
    TargetUse,
};
use crate::stats;

// ---------------------------------------------------------------------------------------------
// What the runner drives: the app, the load. Traits, so that tests can use fakes.
// ---------------------------------------------------------------------------------------------

/// The application under test: its services (name → selector) and entry URL; an emulated app
/// can also really apply an optimization (ground truth).
pub trait App: Send {
    /// Every service to register, with its selector.
    fn services(&self) -> BTreeMap<String, api::ServiceSpec>;
    /// The URL the load generator hits.
    fn entry_url(&self) -> String;
    /// The service that owns the entry port, when the app knows it.
    fn entry_service(&self) -> Option<String> {
        None
    }
    /// True when [`App::apply_truth`] can really lower a service's per-visit work.
    fn supports_truth(&self) -> bool {
        false
    }
    /// Really applies the optimization to `service`, live (ground truth).
    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        let _ = (service, change);
        Err("this app cannot apply a ground-truth change (only emulated apps can)".into())
    }
    /// Undoes [`App::apply_truth`]; a no-op when nothing is applied.
    fn restore_truth(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The optimization a ground truth must really apply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthChange {
    /// Per-visit time removed from the service, ns (for `cores`: the equivalent Δ).
    pub delta_ns: f64,
    /// The service gets this many cores / worker threads in total (a scaling what-if).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<f64>,
}

/// An app that is already running, described by selectors (`--service NAME=SELECTOR`).
#[derive(Debug, Clone)]
pub struct AttachedApp {
    pub services: BTreeMap<String, api::ServiceSpec>,
    pub entry: String,
    pub entry_service: Option<String>,
}

impl App for AttachedApp {
    fn services(&self) -> BTreeMap<String, api::ServiceSpec> {
        self.services.clone()
    }
    fn entry_url(&self) -> String {
        self.entry.clone()
    }
    fn entry_service(&self) -> Option<String> {
        self.entry_service.clone()
    }
}

/// What the requests of the load look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadConfig {
    pub method: String,
    /// Entry URL; empty means the app's own.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Concurrent connections of the closed loop.
    pub connections: usize,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            method: "GET".into(),
            url: String::new(),
            headers: Vec::new(),
            body: None,
            connections: 64,
            timeout_s: 5.0,
        }
    }
}

/// What the load saw during one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadWindow {
    pub secs: f64,
    pub completed_ok: u64,
    /// Successful requests per second.
    pub rps: f64,
    /// Non-2xx answers, timeouts and connection errors.
    pub errors: u64,
    /// errors / attempts.
    pub error_ratio: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The generator itself was the bottleneck (its CPU share was too high).
    pub generator_bound: bool,
}

/// A running closed-loop load.
pub trait Load: Send {
    /// Marks the start of a window.
    fn begin_window(&mut self);
    /// Ends the window begun last.
    fn end_window(&mut self) -> LoadWindow;
    /// Stops the load (idempotent).
    fn stop(&mut self);
}

/// Starts loads (and probes the entry before that).
pub trait LoadStarter: Send + Sync {
    /// One request to the entry; Ok(status) when it answered at all.
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String>;
    fn start(&self, cfg: &LoadConfig) -> Result<Box<dyn Load>, String>;
}

/// Everything an experiment runs against.
pub struct Backends {
    pub agents: Vec<SharedAgent>,
    pub app: Box<dyn App>,
    pub load: Arc<dyn LoadStarter>,
    /// Who the experiment is to the agents (its id) and the lease its plans get.
    pub lease: Lease,
}

// ---------------------------------------------------------------------------------------------
// Specs
// ---------------------------------------------------------------------------------------------

/// How long each phase lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Load before the first window, seconds.
    pub warmup_s: f64,
    /// One measurement window, seconds.
    pub window_s: f64,
    /// Wait after a plan or a truth change before measuring, seconds.
    pub settle_s: f64,
    /// Pause quantum asked of the agents, µs: debt is paid in pauses of at least this long
    /// (None: the agents' own default). Fewer, longer pauses amortise each stop/resume's cost.
    #[serde(default)]
    pub quantum_us: Option<f64>,
    /// How the agents apply delays: whole-service pauses (default) or in-kernel spin.
    #[serde(default)]
    pub mode: api::Mode,
    /// Pause every delayed service of a node at the same moment (the original's phases)
    /// instead of each on its own debt. Default true (docs/evaluation.md).
    #[serde(default = "yes")]
    pub synchronized: bool,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            warmup_s: 3.0,
            window_s: 2.0,
            settle_s: 0.5,
            quantum_us: Some(DEFAULT_QUANTUM_US),
            mode: api::Mode::Pause,
            synchronized: true,
        }
    }
}

/// The actuators a user can pick (`--actuator`, `"actuator"` in the HTTP API).
pub const ACTUATORS: &str = "synchronized, per-service or spin";

impl Timing {
    /// Sets mode and synchronization from an actuator's name: `synchronized` (pauses of every
    /// delayed service of a node at the same moment: the default, most accurate on shared cores,
    /// docs/evaluation.md), `per-service` (each service pauses on its own debt) or `spin`
    /// (in-kernel busy wait of the visiting thread, ≤ 1 ms per visit; dedicated cores only).
    pub fn set_actuator(&mut self, name: &str) -> Result<(), String> {
        let (mode, synchronized) = match name {
            "synchronized" | "sync" => (api::Mode::Pause, true),
            "per-service" | "pause" => (api::Mode::Pause, false),
            "spin" => (api::Mode::Spin, false),
            other => return Err(format!("actuator `{other}`: use {ACTUATORS}")),
        };
        self.mode = mode;
        self.synchronized = synchronized;
        Ok(())
    }
}

fn yes() -> bool {
    true
}

/// The pause quantum the coordinator asks for, µs. Every stop/resume costs the paused service
/// some wall time beyond the pause itself (waking its threads again), so fewer, longer pauses
/// bias the slowed-down throughput less. Measured on chain3 (e2e test, −400 µs, 2 runs each):
/// prediction error −12.3/−10.9 % at 1 ms, −3.6/+0.6 % at 5 ms, −1.7/−1.0 % at 10 ms.
pub const DEFAULT_QUANTUM_US: f64 = 10_000.0;

/// Share of a node's CPUs busy in the baseline above which the result warns that the node may
/// be the real limit after the optimization.
pub const NODE_SATURATED: f64 = 0.9;

impl Timing {
    fn validate(&self) -> Result<(), RunError> {
        for (what, v) in [
            ("warmup", self.warmup_s),
            ("window (--duration)", self.window_s),
            ("settle", self.settle_s),
            (
                "pause quantum (--quantum-us)",
                self.quantum_us.unwrap_or(0.0),
            ),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(RunError::BadSpec(format!(
                    "{what} must be a non-negative number of seconds (got {v})"
                )));
            }
        }
        if self.window_s <= 0.0 {
            return Err(RunError::BadSpec(
                "the window length (--duration) must be more than 0 s".into(),
            ));
        }
        Ok(())
    }
}

/// Repetitions and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Repeat {
    /// Repetitions always run (the middle 60 % are kept: 3 of 5).
    pub repetitions: usize,
    /// Keep repeating until the prediction's 95 % CI half-width is at most this % (None: never).
    pub precision_pct: Option<f64>,
    /// Stop repeating for precision after this many seconds of the experiment.
    pub budget_s: f64,
    /// Never more repetitions than this.
    pub max_repetitions: usize,
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat {
            repetitions: 5,
            precision_pct: Some(3.0),
            budget_s: 120.0,
            max_repetitions: 30,
        }
    }
}

impl Repeat {
    /// Exactly `n` repetitions, no precision target (tests, benchmarks, scripted runs).
    pub fn fixed(n: usize) -> Repeat {
        Repeat {
            repetitions: n,
            precision_pct: None,
            max_repetitions: n,
            ..Repeat::default()
        }
    }

    fn validate(&self) -> Result<(), RunError> {
        if self.repetitions == 0 {
            return Err(RunError::BadSpec("--repetitions must be at least 1".into()));
        }
        if let Some(p) = self.precision_pct
            && (!p.is_finite() || p <= 0.0)
        {
            return Err(RunError::BadSpec(format!(
                "--precision must be a positive percentage (got {p})"
            )));
        }
        if !self.budget_s.is_finite() || self.budget_s < 0.0 {
            return Err(RunError::BadSpec(format!(
                "the time budget must be a non-negative number of seconds (got {})",
                self.budget_s
            )));
        }
        Ok(())
    }
}

/// When to give up on a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Safety {
    /// Abort when the load's error ratio in a window exceeds this (0.01 = 1 %).
    pub max_error_ratio: f64,
    /// Abort when an agent's safety cap dropped pause debt (the plan could not be applied).
    pub abort_on_cap: bool,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_error_ratio: 0.01,
            abort_on_cap: true,
        }
    }
}

/// One what-if.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIfSpec {
    pub target: String,
    pub optimization: Optimization,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub repeat: Repeat,
    #[serde(default)]
    pub safety: Safety,
    /// Measure the ground truth too (emulated apps).
    #[serde(default)]
    pub truth: bool,
    /// The service owning the entry port, when it cannot be found from the agents' listening ports.
    #[serde(default)]
    pub entry_service: Option<String>,
}

/// A causal profile: a sweep of optimizations of every service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSpec {
    /// Optimizations as percentages of each service's p_s.
    #[serde(default = "default_fractions")]
    pub percents: Vec<f64>,
    /// Services to sweep (default: every service with visits).
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub timing: Timing,
    /// Repetitions of the whole sweep (interleaved with baselines).
    #[serde(default = "default_profile_reps")]
    pub repetitions: usize,
    /// Keep sweeping after `repetitions` until every point's 95 % CI half-width is at most
    /// this (%), or `budget_s` has passed (None: exactly `repetitions` sweeps).
    #[serde(default)]
    pub precision_pct: Option<f64>,
    /// Time budget for the precision target, seconds.
    #[serde(default = "default_profile_budget")]
    pub budget_s: f64,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub entry_service: Option<String>,
}

fn default_profile_budget() -> f64 {
    300.0
}

fn default_fractions() -> Vec<f64> {
    vec![10.0, 30.0, 50.0, 70.0, 90.0]
}

fn default_profile_reps() -> usize {
    3
}

impl Default for ProfileSpec {
    fn default() -> Self {
        ProfileSpec {
            percents: default_fractions(),
            services: None,
            load: LoadConfig::default(),
            timing: Timing {
                warmup_s: 3.0,
                window_s: 1.0,
                settle_s: 0.5,
                ..Timing::default()
            },
            repetitions: default_profile_reps(),
            precision_pct: None,
            budget_s: default_profile_budget(),
            safety: Safety::default(),
            entry_service: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors, progress, cancellation
// ---------------------------------------------------------------------------------------------

/// Why an experiment failed. Whatever the reason, no delay is left installed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    BadSpec(String),
    #[error("unknown target `{target}`: the app's services are {known}")]
    UnknownTarget { target: String, known: String },
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the entry URL {url} does not answer: {detail}")]
    EntryUnreachable { url: String, detail: String },
    #[error(
        "cannot tell which service owns the entry port {port} of {url} (services listening on it: {candidates}); name it with --entry-service"
    )]
    UnknownEntry {
        url: String,
        port: u16,
        candidates: String,
    },
    #[error("cannot start the load: {0}")]
    Load(String),
    #[error(
        "aborted: the load saw {pct:.1} % errors during the {phase} window (limit {limit_pct:.1} %); every delay was removed. Check the app's health or lower the optimization"
    )]
    LoadErrors {
        phase: String,
        pct: f64,
        limit_pct: f64,
    },
    #[error(
        "aborted: the agents' safety cap dropped pause debt of {services} during the {phase} window (the plan asks for more pause than the cap allows); every delay was removed. Try a smaller optimization, or raise the agents' safety cap (--max-stopped-share)"
    )]
    CapHit { phase: String, services: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("ground truth: {0}")]
    Truth(String),
    #[error("cancelled; every delay was removed")]
    Cancelled,
    #[error(
        "aborted: the plan's lease on agent {agent} could not be renewed ({detail}), so the plan may have lapsed during the {phase} window, which is therefore invalid; every delay was removed. Check that the agent is reachable, or give a longer --lease"
    )]
    LeaseLost {
        agent: String,
        phase: String,
        detail: String,
    },
}

/// What an experiment is doing now (for a progress bar or an API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=1, a best estimate.
    pub fraction: f64,
    /// Human-readable phase, e.g. `rep 2/5: slow`.
    pub phase: String,
    pub windows_done: usize,
    /// Last measured throughput, req/s.
    pub last_rps: Option<f64>,
    pub finished: bool,
}

type Callback = Box<dyn Fn(&Progress) + Send + Sync>;

#[derive(Default)]
struct MonitorInner {
    cancelled: AtomicBool,
    progress: Mutex<Progress>,
    callback: Mutex<Option<Callback>>,
}

/// Observes and cancels a running experiment. Cheap to clone; share it with the runner.
#[derive(Clone, Default)]
pub struct Monitor {
    inner: Arc<MonitorInner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("cancelled", &self.is_cancelled())
            .field("progress", &self.progress())
            .finish()
    }
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// Calls `f` on every progress change (from the runner's thread; keep it quick).
    pub fn on_progress(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        *self
            .inner
            .callback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Asks the experiment to stop; it removes every delay and returns [`RunError::Cancelled`].
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The progress now.
    pub fn progress(&self) -> Progress {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Progress)) {
        let p = {
            let mut g = self
                .inner
                .progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut g);
            g.clone()
        };
        if let Some(cb) = self
            .inner
            .callback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            cb(&p);
        }
    }

    /// Sleeps `secs`, waking early (with an error) on cancellation.
    fn sleep(&self, secs: f64) -> Result<(), RunError> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            if self.is_cancelled() {
                return Err(RunError::Cancelled);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

// The result types are part of the wire contract (`--json`, the HTTP API, stored files).
pub use slowpoke_api::coordinator::{
    ProfileCurve, ProfilePoint, ProfileResult, ServiceRow, StopReason, TargetUseRecord,
    WhatIfResult, WindowRecord,
};

// ---------------------------------------------------------------------------------------------
// The session: app + agents + load, shared by what-if and profile
// ---------------------------------------------------------------------------------------------

struct Measured {
    load: LoadWindow,
    agents: agents::StatsWindow,
}

struct Session<'a> {
    agents: &'a [SharedAgent],
    app: &'a mut dyn App,
    load: Option<Box<dyn Load>>,
    monitor: &'a Monitor,
    safety: Safety,
    timing: Timing,
    reg: Registration,
    registered: Vec<String>,
    entry: String,
    entry_url: String,
    windows: Vec<WindowRecord>,
    warnings: Vec<String>,
    truth_applied: bool,
    finished: bool,
    /// Unregistered dependencies seen in any window.
    unregistered: std::collections::BTreeSet<String>,
    guard: PlanGuard,
}

impl<'a> Session<'a> {
    /// Registers the services, finds the entry service, probes the entry, starts the load and
    /// warms up.
    fn open(
        backends: &'a mut Backends,
        load_cfg: &LoadConfig,
        timing: Timing,
        safety: Safety,
        entry_service: Option<&str>,
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
        // A stale plan from an earlier crash must not bias the baseline (another experiment's
        // plan whose lease is live is refused with 409 naming it: two must not overlap).
        if let Some(e) = agents::clear_everywhere(agents, guard.lease().owner())
            .into_iter()
            .next()
        {
            return Err(e.into());
        }
        let reg = agents::register_services(agents, &services)?;
        let registered: Vec<String> = services.keys().cloned().collect();
        let entry_url = if load_cfg.url.is_empty() {
            app.entry_url()
        } else {
            load_cfg.url.clone()
        };
        let mut session = Session {
            agents,
            app,
            load: None,
            monitor,
            safety,
            timing,
            reg,
            registered,
            entry: String::new(),
            entry_url: entry_url.clone(),
            windows: Vec::new(),
            warnings: Vec::new(),
            truth_applied: false,
            finished: false,
            unregistered: std::collections::BTreeSet::new(),
            guard,
        };
        let r = session.find_entry(entry_service);
        match r {
            Ok(()) => Ok(session),
            Err(e) => {
                session.finish();
                Err(e)
            }
        }
    }

    /// The entry service: named, known to the app, or the one listening on the entry port.
    fn find_entry(&mut self, entry_service: Option<&str>) -> Result<(), RunError> {
        if let Some(e) = entry_service
            .map(str::to_owned)
            .or_else(|| self.app.entry_service())
        {
            if !self.reg.owners.contains_key(&e) {
                return Err(RunError::BadSpec(format!(
                    "the entry service `{e}` is not one of the app's services ({})",
                    self.registered.join(", ")
                )));
            }
            self.entry = e;
            return Ok(());
        }
        let port = url_port(&self.entry_url).ok_or_else(|| {
            RunError::BadSpec(format!(
                "the entry URL `{}` is not an http://host:port/ URL",
                self.entry_url
            ))
        })?;
        if let Some(s) = self.reg.owner_of_port(port) {
            self.entry = s.to_owned();
            return Ok(());
        }
        let candidates: Vec<&str> = self
            .reg
            .listen_ports
            .iter()
            .filter(|(_, p)| p.contains(&port))
            .map(|(n, _)| n.as_str())
            .collect();
        Err(RunError::UnknownEntry {
            url: self.entry_url.clone(),
            port,
            candidates: if candidates.is_empty() {
                "none".into()
            } else {
                candidates.join(", ")
            },
        })
    }

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

    /// Measures one window; checks the load's errors and the agents' safety cap.
    fn measure(&mut self, phase: &str, repetition: usize) -> Result<Measured, RunError> {
        if self.monitor.is_cancelled() {
            return Err(RunError::Cancelled);
        }
        let load = self
            .load
            .as_mut()
            .ok_or_else(|| RunError::Load("the load is not running".into()))?;
        let before: StatsSnapshot = agents::snapshot(self.agents)?;
        load.begin_window();
        self.monitor.sleep(self.timing.window_s)?;
        let lw = load.end_window();
        let after = agents::snapshot(self.agents)?;
        // A plan whose lease may have lapsed was perhaps not in force for the whole window.
        if let Some(lost) = self.guard.keeper.lost() {
            return Err(RunError::LeaseLost {
                agent: lost.agent,
                phase: phase.to_owned(),
                detail: lost.detail,
            });
        }
        let aw = agents::window(&before, &after);
        let entry_visits = aw.samples.get(&self.entry).map_or(0.0, |s| s.visits);
        // Each paused service should owe δ per end-to-end request: record their mean.
        let owing: Vec<u64> = aw.owed_ns.values().copied().filter(|&o| o > 0).collect();
        let owed_per_request_us = (!owing.is_empty() && entry_visits > 0.0).then(|| {
            let secs = window_secs(&before, &after);
            let mean = owing.iter().sum::<u64>() as f64 / owing.len() as f64;
            mean / (entry_visits * secs) / 1e3
        });
        self.windows.push(WindowRecord {
            phase: phase.to_owned(),
            repetition,
            rps: lw.rps,
            error_ratio: lw.error_ratio,
            p99_us: lw.p99_us,
            owed_per_request_us,
            node_busy: aw.node_busy.clone(),
            app_cores: aw.nodes.iter().map(|n| n.app_cores).collect(),
        });
        self.monitor.update(|p| {
            p.windows_done += 1;
            p.last_rps = Some(lw.rps);
        });
        for w in &aw.warnings {
            if !self.warnings.contains(w) {
                self.warnings.push(w.clone());
            }
        }
        self.unregistered.extend(aw.unregistered.iter().cloned());
        for s in &aw.approximate {
            let line = format!(
                "visits of `{s}` are approximate (HTTP/2 or pipelining): r and d for it are estimates"
            );
            if !self.warnings.contains(&line) {
                self.warnings.push(line);
            }
        }
        if phase == "base" && aw.node_busy.iter().any(|&b| b > NODE_SATURATED) {
            let line = format!(
                "a node's CPUs were over {:.0} % busy during the baseline: the node, not one \
                 service, may limit the optimized app, and pausing cannot reproduce that limit, \
                 so the prediction may be high (docs/model.md, \"Co-located services\")",
                NODE_SATURATED * 100.0
            );
            if !self.warnings.contains(&line) {
                self.warnings.push(line);
            }
        }
        if lw.generator_bound {
            let line = "the load generator was CPU-bound in some windows: throughput may be the generator's, not the app's".to_owned();
            if !self.warnings.contains(&line) {
                self.warnings.push(line);
            }
        }
        if lw.error_ratio > self.safety.max_error_ratio {
            return Err(RunError::LoadErrors {
                phase: phase.to_owned(),
                pct: lw.error_ratio * 100.0,
                limit_pct: self.safety.max_error_ratio * 100.0,
            });
        }
        let capped: Vec<&String> = aw
            .dropped_ns
            .iter()
            .filter(|&(_, &d)| d > 0)
            .map(|(n, _)| n)
            .collect();
        if !capped.is_empty() {
            let services = capped
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ");
            if self.safety.abort_on_cap {
                return Err(RunError::CapHit {
                    phase: phase.to_owned(),
                    services,
                });
            }
            self.warnings.push(format!(
                "the agents' safety cap dropped pause debt of {services} in the {phase} window"
            ));
        }
        Ok(Measured {
            load: lw,
            agents: aw,
        })
    }

    fn set_plan(&mut self, plan: &PausePlan) -> Result<(), RunError> {
        let lease = self.guard.lease();
        let wire = api::SlowdownPlan {
            owner: Some(lease.owner().to_owned()),
            lease_ms: Some(lease.millis()),
            lease_remaining_ms: None,
            mode: self.timing.mode,
            quantum_ns: self.timing.quantum_us.map(|us| (us * 1e3) as u64),
            synchronized: self.timing.synchronized,
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
        self.guard.keeper.installing();
        for a in self.agents {
            a.set_slowdown(&wire)?;
        }
        self.monitor.sleep(self.timing.settle_s)
    }

    fn clear_plan(&mut self) -> Result<(), RunError> {
        self.guard.keeper.removed();
        if let Some(e) = agents::clear_everywhere(self.agents, self.guard.lease().owner())
            .into_iter()
            .next()
        {
            return Err(e.into());
        }
        Ok(())
    }

    fn parameters(&self, m: &Measured) -> Result<Parameters, RunError> {
        Ok(Parameters::from_samples(&m.agents.samples, &self.entry)?)
    }

    fn rows(
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

    /// The warnings so far, with the unregistered dependencies summarized in one line.
    fn take_warnings(&mut self) -> Vec<String> {
        let mut w = std::mem::take(&mut self.warnings);
        if !self.unregistered.is_empty() {
            let n = self.unregistered.len();
            let shown: Vec<&str> = self
                .unregistered
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            let more = if n > 5 {
                format!(" (+{} more)", n - 5)
            } else {
                String::new()
            };
            w.push(format!(
                "{n} unregistered dependencies (calls to endpoints of no registered service: not paused, they bias the prediction; register them with --service): {}{more}",
                shown.join(", ")
            ));
        }
        w
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

fn window_secs(before: &StatsSnapshot, after: &StatsSnapshot) -> f64 {
    before
        .agents
        .first()
        .zip(after.agents.first())
        .map_or(0.0, |(b, a)| {
            a.timestamp_ns.saturating_sub(b.timestamp_ns) as f64 / 1e9
        })
}

/// The port of an `http://host:port/...` URL (80/443 by default).
pub fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let port_str = if let Some(end) = hostport.strip_prefix('[') {
        end.split_once(']')?.1.strip_prefix(':')
    } else {
        hostport.rsplit_once(':').map(|(_, p)| p)
    };
    match port_str {
        Some(p) => p.parse().ok(),
        None => match scheme {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        },
    }
}

fn known_services(app: &dyn App) -> String {
    app.services()
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// What-if
// ---------------------------------------------------------------------------------------------

/// Runs one what-if to the end (blocking). `monitor` observes and cancels it.
pub fn run_what_if(
    spec: &WhatIfSpec,
    backends: &mut Backends,
    monitor: &Monitor,
) -> Result<WhatIfResult, RunError> {
    let started = Instant::now();
    spec.optimization.validate()?;
    spec.timing.validate()?;
    spec.repeat.validate()?;
    if !backends.app.services().contains_key(&spec.target) {
        return Err(RunError::UnknownTarget {
            target: spec.target.clone(),
            known: known_services(backends.app.as_ref()),
        });
    }
    if spec.truth && !backends.app.supports_truth() {
        return Err(RunError::BadSpec(
            "--truth needs an app that can really apply the optimization: an emulated app (--topology), or a running one with --truth-cmd and --restore-cmd (CLI only)"
                .into(),
        ));
    }
    in_session(
        backends,
        &spec.load,
        spec.timing,
        spec.safety,
        spec.entry_service.as_deref(),
        monitor,
        |s, starter| what_if_inner(spec, s, starter, monitor, started),
    )
}

/// Opens a session (services registered, load running), runs `body` in it, and whatever
/// happens closes it (plan removed, truth restored, load stopped) and marks the progress done.
fn in_session<T>(
    backends: &mut Backends,
    load: &LoadConfig,
    timing: Timing,
    safety: Safety,
    entry_service: Option<&str>,
    monitor: &Monitor,
    body: impl FnOnce(&mut Session<'_>, &dyn LoadStarter) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let starter = Arc::clone(&backends.load);
    let mut s = Session::open(backends, load, timing, safety, entry_service, monitor)?;
    let r = body(&mut s, starter.as_ref());
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

struct Series {
    /// The node-CPU bound computed from each baseline window.
    node_bound: Vec<f64>,
    base: Vec<f64>,
    slow: Vec<f64>,
    truth: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// The target's cores in use and run-queue wait in each baseline and slowed-down window.
    target_base: Vec<TargetUse>,
    target_slow: Vec<TargetUse>,
}

/// The target's cores in use and run-queue wait during a window (None when no agent reports it).
fn target_use(m: &Measured, service: &str) -> Option<TargetUse> {
    m.agents.samples.get(service).map(|x| TargetUse {
        cores: x.cpu_ns / 1e9,
        wait: x.wait_ns / 1e9,
    })
}

/// The node-CPU bound of one baseline window (None when no agent reports its node).
fn window_node_bound(m: &Measured, target: &str, r_target: f64, delta_ns: f64) -> Option<f64> {
    let total_t: f64 = m
        .agents
        .nodes
        .iter()
        .map(|n| n.visits.get(target).copied().unwrap_or(0.0))
        .sum();
    let nodes: Vec<model::NodeLoad> = m
        .agents
        .nodes
        .iter()
        .map(|n| model::NodeLoad {
            cpus: n.cpus,
            busy_share: n.busy_share,
            app_cores: n.app_cores,
            target_share: if total_t > 0.0 {
                n.visits.get(target).copied().unwrap_or(0.0) / total_t
            } else {
                0.0
            },
        })
        .collect();
    model::node_bound(m.load.rps, &nodes, r_target, delta_ns, model::NODE_MAX_BUSY)
}

#[expect(
    clippy::too_many_lines,
    reason = "the what-if protocol (baseline, slowed-down, truth windows) reads top to bottom; issue #14 splits experiment.rs by concept"
)]
fn what_if_inner(
    spec: &WhatIfSpec,
    s: &mut Session<'_>,
    starter: &dyn LoadStarter,
    monitor: &Monitor,
    started: Instant,
) -> Result<WhatIfResult, RunError> {
    s.start_load(starter, &spec.load)?;
    monitor.update(|p| p.phase = "calibration baseline".into());
    let cal = s.measure("calibration", 0)?;
    let params = s.parameters(&cal)?;
    let t = params.get(&spec.target)?;
    let resolved: Resolved = spec.optimization.resolve(&spec.target, t)?;
    let plan = model::pause_plan(&params, &spec.target, resolved.delta_per_request_ns);
    for u in &plan.unvisited {
        s.warnings.push(format!(
            "`{u}` saw no visits in the baseline: it is not paused (is it on the request path?)"
        ));
    }
    let mut series = Series {
        node_bound: Vec::new(),
        base: Vec::new(),
        slow: Vec::new(),
        truth: Vec::new(),
        p50: Vec::new(),
        p99: Vec::new(),
        target_base: Vec::new(),
        target_slow: Vec::new(),
    };
    let per_rep = if spec.truth { 3 } else { 2 };
    let mut rep = 0;
    let stop_reason = loop {
        rep += 1;
        let reps = spec.repeat.repetitions;
        let label = |what: &str| format!("rep {rep}/{reps}: {what}");
        let frac = |k: usize| {
            let planned = (reps * per_rep + 1) as f64;
            let by_windows = ((rep - 1) * per_rep + k + 1) as f64 / planned;
            if rep > reps {
                (started.elapsed().as_secs_f64() / spec.repeat.budget_s.max(1e-9)).min(0.99)
            } else {
                by_windows.min(0.99)
            }
        };
        monitor.update(|p| {
            p.phase = label("baseline");
            p.fraction = frac(0);
        });
        let b = s.measure("base", rep)?;
        // More cores do not lower the CPU a request needs: the node bound keeps all of it.
        let cpu_removed_ns = match spec.optimization {
            Optimization::Cores(_) => 0.0,
            _ => resolved.delta_ns,
        };
        if let Some(bound) = window_node_bound(&b, &spec.target, t.r, cpu_removed_ns) {
            series.node_bound.push(bound);
        }
        series.base.push(b.load.rps);
        series.p50.push(b.load.p50_us);
        series.p99.push(b.load.p99_us);
        series.target_base.extend(target_use(&b, &spec.target));

        monitor.update(|p| {
            p.phase = label("slowed down");
            p.fraction = frac(1);
        });
        s.set_plan(&plan)?;
        let sl = s.measure("slow", rep)?;
        s.clear_plan()?;
        series.target_slow.extend(target_use(&sl, &spec.target));
        series.slow.push(sl.load.rps);
        if let Some(owed) = s.windows.last().and_then(|w| w.owed_per_request_us) {
            let planned = resolved.delta_per_request_ns / 1e3;
            if planned > 0.0 && ((owed - planned) / planned).abs() > 0.15 {
                let line = format!(
                    "inserted pause per request ({owed:.1} µs) differs from the planned δ ({planned:.1} µs) by more than 15 %: visit ratios drift, or some service's visits are miscounted"
                );
                if !s.warnings.iter().any(|w| w.starts_with("inserted pause")) {
                    s.warnings.push(line);
                }
            }
        }

        if spec.truth {
            monitor.update(|p| {
                p.phase = label("ground truth");
                p.fraction = frac(2);
            });
            let change = TruthChange {
                delta_ns: resolved.delta_ns,
                cores: match spec.optimization {
                    Optimization::Cores(n) => Some(n),
                    _ => None,
                },
            };
            s.app
                .apply_truth(&spec.target, change)
                .map_err(RunError::Truth)?;
            s.truth_applied = true;
            s.monitor.sleep(s.timing.settle_s)?;
            let tr = s.measure("truth", rep);
            s.app.restore_truth().map_err(RunError::Truth)?;
            s.truth_applied = false;
            series.truth.push(tr?.load.rps);
        }

        if rep < spec.repeat.repetitions {
            continue;
        }
        let Some(precision) = spec.repeat.precision_pct else {
            break StopReason::Repetitions;
        };
        let slow = stats::trimmed(&series.slow).expect("at least one repetition");
        let pred = slow.map_increasing(|x| model::predict(x, resolved.delta_per_request_ns).ok());
        let hw = pred.map_or(f64::INFINITY, |p| p.half_width_pct());
        if hw <= precision {
            break StopReason::PrecisionReached;
        }
        if started.elapsed().as_secs_f64() >= spec.repeat.budget_s
            || rep >= spec.repeat.max_repetitions.max(spec.repeat.repetitions)
        {
            break StopReason::BudgetExhausted;
        }
    };

    let base = stats::mad_filtered(&series.base).expect("at least one repetition");
    let slow = stats::trimmed(&series.slow).expect("at least one repetition");
    let d = resolved.delta_per_request_ns;
    let pause_pred = slow
        .map_increasing(|x| model::predict(x, d).ok())
        .ok_or_else(|| model::predict(slow.value, d).unwrap_err())?;
    // The bound varies with the baseline window it comes from: its spread is part of the
    // prediction's interval when it binds.
    let bound = stats::median_with_spread(&series.node_bound);
    let node_bound = bound.map(|b| b.value);
    let pred = bound.map_or(pause_pred, |b| pause_pred.min(b));
    if node_bound.is_some_and(|nb| nb < pause_pred.value) {
        s.warnings.push(format!(
            "the node's CPUs, not `{}`, limit the optimized app: the prediction is the node bound ({:.0} req/s), below what pausing alone predicts ({:.0} req/s)",
            spec.target, pred.value, pause_pred.value
        ));
    }
    let target = target_use_record(&series.target_base, &series.target_slow);
    tracing::debug!(target = %spec.target, c = t.c, ?target, "target use: baseline, slowed down");
    if let Some(w) = target.and_then(|u| target_use_warning(&u, &spec.target, t.c)) {
        s.warnings.push(w);
    }
    let truth = stats::trimmed(&series.truth);
    let error_pct = truth.map(|t| (pred.value - t.value) / t.value * 100.0);
    let baseline_error_pct = truth.map(|t| (base.value - t.value) / t.value * 100.0);
    if let Some(t) = truth {
        s.warnings.push(format!(
            "ground-truth noise: its 95 % CI half-width is ±{:.1} %",
            t.half_width_pct()
        ));
    }
    let services = s.rows(&params, Some(&spec.target), Some(&plan));
    Ok(WhatIfResult {
        id: new_id("whatif", &spec.target),
        created: now_rfc3339(),
        target: spec.target.clone(),
        optimization: spec.optimization,
        entry: s.entry.clone(),
        entry_url: s.entry_url.clone(),
        delta_us: resolved.delta_ns / 1e3,
        delta_ns_per_request: d,
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
        pause_predicted_rps: pause_pred.value,
        node_bound_rps: node_bound,
        target_use: target,
        truth_rps: truth.map(|t| t.value),
        truth_ci_low: truth.map(|t| t.ci_low),
        truth_ci_high: truth.map(|t| t.ci_high),
        error_pct,
        baseline_error_pct,
        p50_latency_us: stats::median(&series.p50).unwrap_or(0.0),
        p99_latency_us: stats::median(&series.p99).unwrap_or(0.0),
        services,
        repetitions: slow.n,
        kept: slow.kept,
        stop_reason,
        precision_pct: spec.repeat.precision_pct,
        // The pause experiment's own precision: a node bound clips the interval, it does not
        // make the measurement more precise.
        achieved_precision_pct: pause_pred.half_width_pct(),
        warnings: s.take_warnings(),
        windows: std::mem::take(&mut s.windows),
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// The target's use of its cores in the baseline and slowed-down runs: medians over the
/// baseline and slowed-down windows (None when either has none).
pub fn target_use_record(base: &[TargetUse], slowed: &[TargetUse]) -> Option<TargetUseRecord> {
    let median = |w: &[TargetUse]| {
        let cores: Vec<f64> = w.iter().map(|u| u.cores).collect();
        let wait: Vec<f64> = w.iter().map(|u| u.wait).collect();
        Some(TargetUse {
            cores: stats::median(&cores)?,
            wait: stats::median(&wait)?,
        })
    };
    Some(TargetUseRecord {
        baseline: median(base)?,
        slowed: median(slowed)?,
    })
}

/// The warning for a target (parallelism `c`) that worked less while the others were paused
/// ([`model::target_shortfall`]), if it did.
pub fn target_use_warning(u: &TargetUseRecord, target: &str, c: f64) -> Option<String> {
    let why = model::target_shortfall(u.baseline, u.slowed, c)?;
    Some(shortfall_warning(target, c, u.baseline, u.slowed, why))
}

/// The text of [`target_use_warning`].
fn shortfall_warning(
    target: &str,
    c: f64,
    base: TargetUse,
    slow: TargetUse,
    why: model::Shortfall,
) -> String {
    let pct = |x: f64| x / c * 100.0;
    match why {
        model::Shortfall::RanDry { kept } => format!(
            "`{target}` ran dry while the others were paused: it used {:.0} % of its {c} core(s) \
             in the slowed-down runs against {:.0} % in the baseline ({:.0} % of it), so the \
             slowed-down throughput and the prediction are too low. Too few requests in flight: \
             raise --connections (docs/model.md, \"Requests in flight\")",
            pct(slow.cores),
            pct(base.cores),
            kept * 100.0
        ),
        model::Shortfall::CrowdedOut { kept } => format!(
            "`{target}` was crowded out of the shared CPUs while the others caught up after their \
             pauses: it used {:.0} % of its {c} core(s) in the slowed-down runs against {:.0} % in \
             the baseline ({:.0} % of it) and waited for a CPU {:.0} % of the time against {:.0} %, \
             so the slowed-down throughput and the prediction are too low: read the prediction as \
             a lower bound (docs/model.md, \"Shared cores\")",
            pct(slow.cores),
            pct(base.cores),
            kept * 100.0,
            pct(slow.wait),
            pct(base.wait)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Profile
// ---------------------------------------------------------------------------------------------

/// Runs a causal profile (blocking): every service, every percentage, `repetitions` times,
/// each sweep preceded by a baseline window.
pub fn run_profile(
    spec: &ProfileSpec,
    backends: &mut Backends,
    monitor: &Monitor,
) -> Result<ProfileResult, RunError> {
    let started = Instant::now();
    spec.timing.validate()?;
    if spec.repetitions == 0 {
        return Err(RunError::BadSpec("--repetitions must be at least 1".into()));
    }
    if spec.percents.is_empty() {
        return Err(RunError::BadSpec(
            "give at least one percentage to sweep".into(),
        ));
    }
    for &p in &spec.percents {
        Optimization::Percent(p).validate()?;
    }
    if let Some(list) = &spec.services {
        let known = backends.app.services();
        for name in list {
            if !known.contains_key(name) {
                return Err(RunError::UnknownTarget {
                    target: name.clone(),
                    known: known_services(backends.app.as_ref()),
                });
            }
        }
    }
    in_session(
        backends,
        &spec.load,
        spec.timing,
        spec.safety,
        spec.entry_service.as_deref(),
        monitor,
        |s, starter| profile_inner(spec, s, starter, monitor, started),
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "the profile sweep reads top to bottom; issue #14 replaces its parallel maps with one PointSeries per point"
)]
fn profile_inner(
    spec: &ProfileSpec,
    s: &mut Session<'_>,
    starter: &dyn LoadStarter,
    monitor: &Monitor,
    started: Instant,
) -> Result<ProfileResult, RunError> {
    s.start_load(starter, &spec.load)?;
    monitor.update(|p| p.phase = "calibration baseline".into());
    let cal = s.measure("calibration", 0)?;
    let params = s.parameters(&cal)?;
    let targets: Vec<String> = match &spec.services {
        Some(list) => list.clone(),
        None => params
            .services
            .iter()
            .filter(|(_, p)| p.r > 0.0 && p.p_ns > 0.0)
            .map(|(n, _)| n.clone())
            .collect(),
    };
    // (service, percent) → resolved, or the reason there is none.
    let mut points: Vec<(String, f64, Result<Resolved, String>)> = Vec::new();
    for t in &targets {
        let tp = params.get(t)?;
        for &pct in &spec.percents {
            points.push((
                t.clone(),
                pct,
                Optimization::Percent(pct)
                    .resolve(t, tp)
                    .map_err(|e| e.to_string()),
            ));
        }
    }
    let total = spec.repetitions * (1 + points.len());
    let mut done = 0usize;
    let mut base = Vec::new();
    let mut slow: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
    let mut bounds: BTreeMap<(String, u64), Vec<f64>> = BTreeMap::new();
    let mut failed: BTreeMap<(String, u64), String> = BTreeMap::new();
    // Each target's use of its cores, for the ran-dry / crowded-out check.
    let mut base_use: BTreeMap<String, Vec<TargetUse>> = BTreeMap::new();
    let mut slow_use: BTreeMap<(String, u64), Vec<TargetUse>> = BTreeMap::new();
    let mut rep = 0;
    loop {
        rep += 1;
        let sweeps = spec.repetitions.max(rep);
        monitor.update(|p| {
            p.phase = format!("sweep {rep}/{sweeps}: baseline");
            p.fraction = (done as f64 / total as f64).min(0.99);
        });
        let b = s.measure("base", rep)?;
        for (t, pct, res) in &points {
            if let Ok(res) = res {
                let r_t = params.services.get(t).map_or(0.0, |x| x.r);
                if let Some(nb) = window_node_bound(&b, t, r_t, res.delta_ns) {
                    bounds
                        .entry((t.clone(), pct.to_bits()))
                        .or_default()
                        .push(nb);
                }
            }
        }
        base.push(b.load.rps);
        for t in &targets {
            base_use
                .entry(t.clone())
                .or_default()
                .extend(target_use(&b, t));
        }
        done += 1;
        for (t, pct, res) in &points {
            let key = (t.clone(), pct.to_bits());
            done += 1;
            let Ok(res) = res else { continue };
            if failed.contains_key(&key) {
                continue;
            }
            monitor.update(|p| {
                p.phase = format!("sweep {rep}/{sweeps}: {t} -{pct} %");
                p.fraction = (done as f64 / total as f64).min(0.99);
            });
            let plan = model::pause_plan(&params, t, res.delta_per_request_ns);
            s.set_plan(&plan)?;
            let m = s.measure(&format!("slow:{t}:{pct}"), rep);
            s.clear_plan()?;
            match m {
                Ok(m) => {
                    slow_use
                        .entry(key.clone())
                        .or_default()
                        .extend(target_use(&m, t));
                    slow.entry(key).or_default().push(m.load.rps);
                }
                Err(RunError::CapHit { .. }) => {
                    failed.insert(key, "the agents' safety cap was hit".into());
                }
                Err(e) => return Err(e),
            }
        }
        if rep < spec.repetitions {
            continue;
        }
        let Some(precision) = spec.precision_pct else {
            break;
        };
        // Every measured point's pause prediction must be precise enough.
        let worst = points
            .iter()
            .filter_map(|(t, pct, res)| {
                let r = res.as_ref().ok()?;
                let v = slow.get(&(t.clone(), pct.to_bits()))?;
                let est = stats::trimmed(v)?;
                Some(
                    est.map_increasing(|x| model::predict(x, r.delta_per_request_ns).ok())
                        .map_or(f64::INFINITY, |p| p.half_width_pct()),
                )
            })
            .fold(0.0, f64::max);
        if worst <= precision
            || started.elapsed().as_secs_f64() >= spec.budget_s
            || rep >= MAX_PROFILE_SWEEPS
        {
            break;
        }
    }
    for (t, pct, _) in &points {
        let (Some(base), Some(slowed)) =
            (base_use.get(t), slow_use.get(&(t.clone(), pct.to_bits())))
        else {
            continue;
        };
        let c = params.services.get(t).map_or(0.0, |x| x.c);
        if let Some(w) = target_use_record(base, slowed).and_then(|u| target_use_warning(&u, t, c))
        {
            s.warnings.push(format!("{t} −{pct} %: {w}"));
        }
    }
    let base_est = stats::mad_filtered(&base).expect("at least one repetition");
    let mut curves: Vec<ProfileCurve> = targets
        .iter()
        .map(|t| {
            let tp = params.services[t];
            let points: Vec<ProfilePoint> = points
                .iter()
                .filter(|(n, _, _)| n == t)
                .map(|(_, pct, res)| {
                    let key = (t.clone(), pct.to_bits());
                    let bound = bounds.get(&key).and_then(|b| stats::median_with_spread(b));
                    profile_point(
                        *pct,
                        res,
                        slow.get(&key),
                        failed.get(&key),
                        base_est.value,
                        bound,
                    )
                })
                .collect();
            let max_gain_pct = points
                .iter()
                .filter_map(|p| p.gain_pct)
                .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
            ProfileCurve {
                service: t.clone(),
                p_us: tp.p_ns / 1e3,
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
    let services = s.rows(&params, None, None);
    Ok(ProfileResult {
        id: new_id("profile", &s.entry),
        created: now_rfc3339(),
        entry: s.entry.clone(),
        entry_url: s.entry_url.clone(),
        baseline_rps: base_est.value,
        baseline_ci_low: base_est.ci_low,
        baseline_ci_high: base_est.ci_high,
        services,
        curves,
        repetitions: rep,
        warnings: s.take_warnings(),
        windows: std::mem::take(&mut s.windows),
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Most sweeps a profile with a precision target runs.
const MAX_PROFILE_SWEEPS: usize = 30;

fn profile_point(
    percent: f64,
    res: &Result<Resolved, String>,
    slow: Option<&Vec<f64>>,
    failed: Option<&String>,
    base: f64,
    node_bound: Option<stats::Estimate>,
) -> ProfilePoint {
    let mut p = ProfilePoint {
        node_bound_rps: node_bound.map(|b| b.value),
        achieved_precision_pct: None,
        percent,
        delta_us: 0.0,
        delta_ns_per_request: 0.0,
        slow_rps: None,
        predicted_rps: None,
        predicted_ci_low: None,
        predicted_ci_high: None,
        gain_pct: None,
        error: None,
    };
    let r = match res {
        Ok(r) => r,
        Err(e) => {
            p.error = Some(e.clone());
            return p;
        }
    };
    p.delta_us = r.delta_ns / 1e3;
    p.delta_ns_per_request = r.delta_per_request_ns;
    if let Some(f) = failed {
        p.error = Some(f.clone());
        return p;
    }
    let Some(est) = slow.and_then(|v| stats::trimmed(v)) else {
        p.error = Some("not measured".into());
        return p;
    };
    p.slow_rps = Some(est.value);
    match est.map_increasing(|x| model::predict(x, r.delta_per_request_ns).ok()) {
        Some(pred) => {
            p.achieved_precision_pct = Some(pred.half_width_pct());
            let pred = node_bound.map_or(pred, |b| pred.min(b));
            p.predicted_rps = Some(pred.value);
            p.predicted_ci_low = Some(pred.ci_low);
            p.predicted_ci_high = Some(pred.ci_high);
            p.gain_pct = Some((pred.value - base) / base * 100.0);
        }
        None => {
            p.error = model::predict(est.value, r.delta_per_request_ns)
                .err()
                .map(|e| e.to_string());
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Async API
// ---------------------------------------------------------------------------------------------

/// A running experiment, for async callers (the HTTP server).
pub struct ExperimentHandle<T> {
    pub monitor: Monitor,
    join: tokio::task::JoinHandle<Result<T, RunError>>,
}

impl<T> ExperimentHandle<T> {
    /// The progress now.
    pub fn progress(&self) -> Progress {
        self.monitor.progress()
    }
    /// Asks the experiment to stop (it removes every delay first).
    pub fn cancel(&self) {
        self.monitor.cancel();
    }
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
    /// Waits for the end.
    pub async fn wait(self) -> Result<T, RunError> {
        match self.join.await {
            Ok(r) => r,
            Err(e) => Err(RunError::BadSpec(format!(
                "the experiment task failed: {e}"
            ))),
        }
    }
}

/// Starts a what-if on tokio's blocking pool. Needs a tokio runtime.
pub fn spawn_what_if(spec: WhatIfSpec, mut backends: Backends) -> ExperimentHandle<WhatIfResult> {
    let monitor = Monitor::new();
    let m = monitor.clone();
    let join = tokio::task::spawn_blocking(move || run_what_if(&spec, &mut backends, &m));
    ExperimentHandle { monitor, join }
}

/// Starts a profile on tokio's blocking pool. Needs a tokio runtime.
pub fn spawn_profile(spec: ProfileSpec, mut backends: Backends) -> ExperimentHandle<ProfileResult> {
    let monitor = Monitor::new();
    let m = monitor.clone();
    let join = tokio::task::spawn_blocking(move || run_profile(&spec, &mut backends, &m));
    ExperimentHandle { monitor, join }
}

// ---------------------------------------------------------------------------------------------
// Ids and time
// ---------------------------------------------------------------------------------------------

fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    // Days-from-civil inverse (H. Hinnant's algorithm), UTC.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now as `2026-11-22T04:31:12Z`.
pub fn now_rfc3339() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now().as_secs());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A sortable, unique-enough id: `20261122T043112-123-whatif-cart`.
pub fn new_id(kind: &str, what: &str) -> String {
    let now = unix_now();
    let (y, mo, d, h, mi, s) = civil(now.as_secs());
    let safe: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}-{:03}-{kind}-{safe}",
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeWorld;

    fn quick_timing() -> Timing {
        Timing {
            warmup_s: 0.0,
            window_s: 0.02,
            settle_s: 0.0,
            quantum_us: None,
            ..Timing::default()
        }
    }

    fn spec(opt: Optimization) -> WhatIfSpec {
        WhatIfSpec {
            target: "cart".into(),
            optimization: opt,
            load: LoadConfig::default(),
            timing: quick_timing(),
            repeat: Repeat::fixed(3),
            safety: Safety::default(),
            truth: true,
            entry_service: None,
        }
    }

    fn close(a: f64, b: f64, rel: f64) {
        assert!(
            (a - b).abs() <= rel * b.abs(),
            "{a} != {b} (±{} %)",
            rel * 100.0
        );
    }

    /// Nothing installed, nothing registered, the load stopped.
    fn assert_clean(w: &FakeWorld) {
        assert!(
            w.plan().is_empty(),
            "a plan is left installed: {:?}",
            w.plan()
        );
        assert!(
            !w.truth_applied(),
            "the ground-truth change is left applied"
        );
        assert!(
            w.registered().is_empty(),
            "services left registered: {:?}",
            w.registered()
        );
        let log = w.log();
        if let Some(last_set) = log.iter().rposition(|e| e == "set_slowdown") {
            assert!(
                log[last_set..].iter().any(|e| e == "clear_slowdown"),
                "no clear after the last set: {log:?}"
            );
        }
        if log.iter().any(|e| e == "load_start") {
            let last = log.iter().rev().find(|e| *e != "clear_slowdown");
            assert_eq!(last.map(String::as_str), Some("load_stop"), "{log:?}");
        }
    }

    #[test]
    fn what_if_on_the_fake_chain_predicts_the_truth_and_interleaves() {
        let w = FakeWorld::chain();
        let mut b = w.backends();
        // Δ = 200 µs on cart: δ = 200·1/2 = 100 µs; X_base = 1/300 µs = 3333.3 req/s;
        // X_opt = 1/max(100, 400/2, 100) µs = 5000 req/s; X_slow = 1/(200 + 100) µs.
        let r = run_what_if(&spec(Optimization::DeltaUs(200.0)), &mut b, &Monitor::new()).unwrap();
        close(r.delta_ns_per_request, 100_000.0, 0.001);
        close(r.baseline_rps, 3333.33, 0.001);
        close(r.slow_rps, 3333.33, 0.001);
        close(r.predicted_rps, 5000.0, 0.005);
        close(
            r.truth_rps.unwrap(),
            w.true_throughput("cart", 200_000.0),
            1e-9,
        );
        assert!(r.error_pct.unwrap().abs() < 0.5, "{r:?}");
        close(r.baseline_error_pct.unwrap(), -33.33, 0.01);
        assert_eq!(r.entry, "front");
        assert_eq!(r.stop_reason, StopReason::Repetitions);
        assert_eq!((r.repetitions, r.kept), (3, 3));
        let db = r.services.iter().find(|s| s.name == "db").unwrap();
        close(db.r, 2.0, 0.001);
        close(db.d_us.unwrap(), 50.0, 0.002);
        assert!(
            r.services
                .iter()
                .find(|s| s.name == "cart")
                .unwrap()
                .d_us
                .is_none()
        );
        // calibration, then (base, slow, truth) × 3, each slow inside set/clear, each truth
        // inside truth/restore.
        let mut log: Vec<String> = w.log();
        // The runner clears once more on its way out, and its guard once again: harmless.
        while log.len() > 2
            && log[log.len() - 1] == "clear_slowdown"
            && log[log.len() - 2] == "clear_slowdown"
        {
            log.pop();
        }
        let expected_rep = [
            "window:base",
            "set_slowdown",
            "window:slow",
            "clear_slowdown",
            "truth",
            "window:truth",
            "restore",
        ];
        let mut expected = vec!["clear_slowdown", "load_start", "window:base"];
        for _ in 0..3 {
            expected.extend(expected_rep);
        }
        expected.extend(["clear_slowdown", "load_stop", "clear_slowdown"]);
        assert_eq!(log, expected);
        let phases: Vec<&str> = r.windows.iter().map(|w| w.phase.as_str()).collect();
        assert_eq!(
            phases,
            [
                "calibration",
                "base",
                "slow",
                "truth",
                "base",
                "slow",
                "truth",
                "base",
                "slow",
                "truth"
            ]
        );
        assert_clean(&w);
    }

    #[test]
    fn json_has_the_documented_fields() {
        let w = FakeWorld::chain();
        let r = run_what_if(
            &spec(Optimization::Speedup(2.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "target",
            "delta_us",
            "delta_ns_per_request",
            "baseline_rps",
            "baseline_ci_low",
            "baseline_ci_high",
            "slow_rps",
            "predicted_rps",
            "predicted_ci_low",
            "predicted_ci_high",
            "truth_rps",
            "error_pct",
            "baseline_error_pct",
            "p99_latency_us",
            "services",
            "stop_reason",
            "warnings",
        ] {
            assert!(
                v.get(key).is_some_and(|x| !x.is_null()),
                "missing {key}: {v}"
            );
        }
        let row = &v["services"][0];
        for key in ["name", "r", "p_us", "c", "d_us"] {
            assert!(row.get(key).is_some(), "service row lacks {key}: {row}");
        }
        assert_eq!(v["stop_reason"], "repetitions");
        // Round trip through the stored form.
        let stored = crate::results::StoredResult::WhatIf(r.clone());
        let back: crate::results::StoredResult =
            serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        // (serde_json's default float parsing may differ in the last digit: compare fields.)
        let crate::results::StoredResult::WhatIf(b) = back else {
            panic!("a what-if read back as something else")
        };
        assert_eq!(
            (b.id, b.target, b.services.len()),
            (r.id, r.target, r.services.len())
        );
        close(b.predicted_rps, r.predicted_rps, 1e-12);
    }

    #[test]
    fn a_result_with_unbounded_intervals_reads_back() {
        let w = FakeWorld::chain();
        let mut r = run_what_if(
            &spec(Optimization::Speedup(2.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap();
        // One repetition has no interval; an unresolvable top is unbounded.
        r.baseline_ci_low = f64::NAN;
        r.slow_ci_high = f64::NAN;
        r.predicted_ci_high = f64::INFINITY;
        let text = serde_json::to_string(&crate::results::StoredResult::WhatIf(r)).unwrap();
        assert!(text.contains("\"predicted_ci_high\":null"), "{text}");
        let back: crate::results::StoredResult = serde_json::from_str(&text).unwrap();
        let crate::results::StoredResult::WhatIf(b) = back else {
            panic!("a what-if read back as something else")
        };
        assert!(b.baseline_ci_low.is_nan() && b.slow_ci_high.is_nan());
        assert!(b.predicted_ci_high.is_infinite());
    }

    #[test]
    fn precision_reached_stops_early() {
        let w = FakeWorld::chain();
        let mut s = spec(Optimization::Speedup(2.0));
        s.truth = false;
        s.repeat.precision_pct = Some(3.0);
        let r = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap();
        assert_eq!(r.stop_reason, StopReason::PrecisionReached);
        assert_eq!(r.repetitions, 3);
        assert!(r.achieved_precision_pct <= 3.0);
        assert_clean(&w);
    }

    #[test]
    fn noisy_runs_stop_at_the_budget_and_say_so() {
        let w = FakeWorld::chain();
        // Noise on every window, ±20 %; an odd cycle so slow windows see all of it.
        w.set_noise(vec![1.0, 1.2, 0.85]);
        let mut s = spec(Optimization::Percent(30.0));
        s.truth = false;
        s.repeat.precision_pct = Some(0.5);
        s.repeat.max_repetitions = 6;
        let r = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap();
        assert_eq!(r.stop_reason, StopReason::BudgetExhausted);
        assert_eq!(r.repetitions, 6);
        // ⌊6/5⌋ = 1 trimmed at each end.
        assert_eq!(r.kept, 4);
        assert!(r.achieved_precision_pct > 0.5);
        assert!(r.predicted_ci_low < r.predicted_rps && r.predicted_rps < r.predicted_ci_high);
        assert_clean(&w);
    }

    #[test]
    fn load_errors_abort_and_remove_the_plan() {
        let w = FakeWorld::chain();
        w.set_slow_error_ratio(0.05);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, RunError::LoadErrors { ref phase, .. } if phase == "slow"),
            "{e}"
        );
        assert!(e.to_string().contains("5.0 % errors"), "{e}");
        assert_clean(&w);
    }

    #[test]
    fn cap_hit_aborts_and_removes_the_plan() {
        let w = FakeWorld::chain();
        w.set_cap_when_slow(true);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::CapHit { .. }), "{e}");
        assert_clean(&w);
    }

    #[test]
    fn agent_failures_leave_no_plan() {
        let w = FakeWorld::chain();
        w.set_fail_set_slowdown(true);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(matches!(e, RunError::Agent(_)), "{e}");
        assert_clean(&w);

        let w = FakeWorld::chain();
        // Stats fail mid-experiment (calibration takes calls 1-2, base 3-4, slow 5-6).
        w.set_fail_stats_after(6);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unreachable"), "{e}");
        assert_clean(&w);
    }

    #[test]
    fn cancellation_removes_the_plan() {
        let w = FakeWorld::chain();
        let m = Monitor::new();
        let m2 = m.clone();
        m.on_progress(move |p| {
            if p.phase.contains("ground truth") {
                m2.cancel();
            }
        });
        let e =
            run_what_if(&spec(Optimization::DeltaUs(100.0)), &mut w.backends(), &m).unwrap_err();
        assert!(matches!(e, RunError::Cancelled), "{e}");
        assert!(m.progress().finished);
        assert_clean(&w);
    }

    #[test]
    fn bad_input_is_named() {
        let w = FakeWorld::chain();
        let mut s = spec(Optimization::DeltaUs(100.0));
        s.target = "checkout".into();
        let e = run_what_if(&s, &mut w.backends(), &Monitor::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown target `checkout`: the app's services are cart, db, front"
        );
        // cart spends 600 µs per visit.
        let e = run_what_if(
            &spec(Optimization::DeltaUs(700.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(
            matches!(e, RunError::Model(ModelError::DeltaTooLarge { .. })),
            "{e}"
        );
        assert!(!w.log().contains(&"set_slowdown".to_owned()));
        assert_clean(&w);

        let w = FakeWorld::chain();
        w.set_probe_fails(true);
        let e = run_what_if(
            &spec(Optimization::DeltaUs(100.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not answer"), "{e}");
        assert_clean(&w);

        let e = run_what_if(
            &spec(Optimization::DeltaUs(-1.0)),
            &mut w.backends(),
            &Monitor::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("positive"), "{e}");
    }

    #[test]
    fn a_service_no_agent_resolves_is_an_error() {
        let w = FakeWorld::chain();
        let mut b = w.backends();
        let mut services = b.app.services();
        services.insert(
            "ghost".into(),
            api::ServiceSpec {
                ports: Some(vec![9999]),
                ..Default::default()
            },
        );
        b.app = Box::new(AttachedApp {
            services,
            entry: "http://127.0.0.1:8080/".into(),
            entry_service: None,
        });
        let mut s = spec(Optimization::DeltaUs(100.0));
        s.truth = false;
        let e = run_what_if(&s, &mut b, &Monitor::new()).unwrap_err();
        assert!(
            e.to_string().contains("no agent can resolve `ghost`"),
            "{e}"
        );
        assert_clean(&w);
        // --truth on an attached app is refused up front.
        s.truth = true;
        let e = run_what_if(&s, &mut b, &Monitor::new()).unwrap_err();
        assert!(
            e.to_string()
                .contains("--truth needs an app that can really apply"),
            "{e}"
        );
    }

    #[test]
    fn profile_ranks_the_bottleneck_first() {
        let w = FakeWorld::chain();
        let spec = ProfileSpec {
            timing: quick_timing(),
            repetitions: 2,
            ..ProfileSpec::default()
        };
        let r = run_profile(&spec, &mut w.backends(), &Monitor::new()).unwrap();
        assert_eq!(r.curves.len(), 3);
        assert_eq!(r.curves[0].service, "cart");
        // cart −50 %: Δ = 300 µs, δ = 150 µs, X_opt = 1/max(100, 150, 100) µs = 6666.7 req/s.
        let p50 = r.curves[0]
            .points
            .iter()
            .find(|p| (p.percent - 50.0).abs() < 1e-9)
            .unwrap();
        close(p50.predicted_rps.unwrap(), 6666.67, 0.005);
        // front is not the bottleneck: no gain.
        let front = r.curves.iter().find(|c| c.service == "front").unwrap();
        assert!(front.max_gain_pct.unwrap().abs() < 0.5, "{front:?}");
        // 2 × (1 base + 3 services × 5 points) + calibration.
        assert_eq!(r.windows.len(), 2 * 16 + 1);
        assert_clean(&w);
    }

    #[test]
    fn profile_with_a_precision_target_stops_once_every_point_meets_it() {
        // The fake world obeys the model exactly: every sweep gives the same numbers, so any
        // precision target is met right after the configured sweeps.
        let w = FakeWorld::chain();
        let spec = ProfileSpec {
            timing: quick_timing(),
            services: Some(vec!["cart".into()]),
            repetitions: 3,
            precision_pct: Some(3.0),
            ..ProfileSpec::default()
        };
        let r = run_profile(&spec, &mut w.backends(), &Monitor::new()).unwrap();
        assert_eq!(r.repetitions, 3);
        assert_eq!(r.windows.len(), 3 * 6 + 1);
        let p = &r.curves[0].points[0];
        assert!(p.achieved_precision_pct.unwrap() <= 3.0, "{p:?}");
        assert_clean(&w);
    }

    #[tokio::test]
    async fn spawned_experiments_can_be_observed_and_cancelled() {
        let w = FakeWorld::chain();
        let mut s = spec(Optimization::DeltaUs(100.0));
        s.timing.window_s = 0.2;
        s.repeat.repetitions = 50;
        let h = spawn_what_if(s, w.backends());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!h.progress().phase.is_empty());
        h.cancel();
        let e = h.wait().await.unwrap_err();
        assert!(matches!(e, RunError::Cancelled));
        assert_clean(&w);
    }

    #[test]
    fn ports_of_urls() {
        assert_eq!(url_port("http://127.0.0.1:8080/x"), Some(8080));
        assert_eq!(url_port("http://localhost/"), Some(80));
        assert_eq!(url_port("https://h"), Some(443));
        assert_eq!(url_port("http://[::1]:9000/a"), Some(9000));
        assert_eq!(url_port("localhost:80"), None);
    }

    #[test]
    fn civil_time() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-22T04:31:12Z
        assert_eq!(civil(1_795_321_872), (2026, 11, 22, 4, 31, 12));
    }
}

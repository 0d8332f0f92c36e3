//! The agent: registry + kernel programs + one pause actuator per service + guardian, behind a
//! small synchronous API (the HTTP layer in `http.rs` and the in-process coordinator both use it).
//!
//! Threads: a resolver (re-resolves selectors every `resolve_interval`, pushes membership to the
//! kernel, measures cores, watches the guardian), a dispatcher (routes the kernel's pause
//! requests to the service's actuator without going through the async runtime), and one pause
//! thread per service (`actuator.rs`).
//!
//! Lock order: `state` before `kernel`. Pause threads take only `kernel` (through
//! [`KernelDebt`]), never `state`, so flushing an actuator while holding `state` is safe.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    actuator::{
        self, Actuator, ActuatorConfig, DebtSource, OnKernelPause, PauseOutcome, PauseRecord,
    },
    api::{self, Mode, ServiceInfo, ServiceList, ServiceSpec, SlowdownPlan},
    error::AgentError,
    guardian::{AgentLock, Guardian},
    kernel::{Kernel, KernelCounters, MAX_SERVICES, PauseRequest, ServiceId},
    registry::{self, CpuAccount, Resolved, Selector, WaitAccount},
    state::{self, StateFile},
};

/// Agent settings. `Default` gives the documented defaults.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Lock file and state file live here (default `/run/slowpoke`).
    pub state_dir: PathBuf,
    /// Debt is paid in pauses of at least this long (default 1 ms).
    pub quantum_ns: u64,
    /// Largest accepted `delay_per_visit_ns` (default 100 ms).
    pub max_delay_per_visit_ns: u64,
    /// Safety cap: largest share of wall time a service may spend stopped (default 0.5).
    pub max_stopped_share: f64,
    /// Sliding window of the safety cap (default 1 s).
    pub stop_window: Duration,
    /// How often selectors are re-resolved (default 250 ms).
    pub resolve_interval: Duration,
    /// A delayed service whose debt did not grow for this long is idle: its debt below the
    /// quantum is paid (default 50 ms).
    pub idle_interval: Duration,
    /// Window over which threads doing socket work count as serving threads (default 2 s).
    pub serving_window: Duration,
    /// TEST ONLY. Keep running when the kernel programs do not load (no visits, no plans) and
    /// enable the manual pause endpoint `POST /v1/debug/pause/{name}`. Never set in production.
    pub test_hooks: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/run/slowpoke"),
            quantum_ns: crate::kernel::DEFAULT_QUANTUM_NS,
            max_delay_per_visit_ns: 100_000_000,
            max_stopped_share: 0.5,
            stop_window: Duration::from_secs(1),
            resolve_interval: Duration::from_millis(250),
            idle_interval: Duration::from_millis(50),
            serving_window: Duration::from_secs(2),
            test_hooks: false,
        }
    }
}

/// The node agent. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

type SharedKernel = Arc<Mutex<Option<Kernel>>>;

struct Inner {
    cfg: AgentConfig,
    kernel: SharedKernel,
    /// Why the kernel programs are not loaded (test hooks only).
    kernel_error: Option<String>,
    features: BTreeMap<String, String>,
    state_file: Arc<StateFile>,
    state: Mutex<State>,
    /// Service id -> actuator, for the dispatcher's hot path.
    by_id: RwLock<HashMap<ServiceId, Arc<Actuator>>>,
    guardian: Mutex<Option<Guardian>>,
    lock: Mutex<Option<AgentLock>>,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, Service>,
    plan: SlowdownPlan,
    quantum_ns: u64,
    max_stopped_share: f64,
}

struct Service {
    id: ServiceId,
    spec: ServiceSpec,
    selector: Selector,
    /// Bumped on every PUT: a resolution started before it is discarded.
    generation: u64,
    resolved: Resolved,
    actuator: Arc<Actuator>,
    cpu: CpuAccount,
    wait: WaitAccount,
    cores: f64,
}

impl Service {
    fn info(&self, name: &str) -> ServiceInfo {
        ServiceInfo {
            name: name.to_string(),
            spec: self.spec.clone(),
            pids: self.resolved.pids.clone(),
            listen_ports: self.resolved.listen_ports.clone(),
        }
    }
}

/// The kernel's per-service debt as a [`DebtSource`].
struct KernelDebt {
    kernel: SharedKernel,
    id: ServiceId,
}

impl DebtSource for KernelDebt {
    fn owed_ns(&mut self) -> u64 {
        lock(&self.kernel)
            .as_ref()
            .and_then(|k| k.counters(self.id).ok())
            .map_or(0, |c| c.owed_ns)
    }
    fn rearm(&mut self, settled_ns: u64) {
        if let Some(k) = lock(&self.kernel).as_mut()
            && let Err(e) = k.rearm(self.id, settled_ns)
        {
            tracing::warn!(id = self.id, "re-arming the pause trigger failed: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn delayed_owner(name: &str) -> String {
    format!("delayed:{name}")
}

/// Upper bound on how long clearing a plan waits for one service's last pause.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

impl Agent {
    /// Takes the lock, resumes whatever a previous agent left listed, forks the guardian, loads
    /// the kernel programs and starts the resolver and dispatcher threads.
    #[allow(clippy::unused_async)] // async by contract: a later version may await the kernel load
    pub async fn start(cfg: AgentConfig) -> Result<Agent, AgentError> {
        validate_config(&cfg)?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            AgentError::Internal(format!(
                "cannot create the state directory {}: {e} (use --state-dir)",
                cfg.state_dir.display()
            ))
        })?;
        let agent_lock = AgentLock::acquire(&cfg.state_dir)?;
        match state::resume_leftovers(&cfg.state_dir) {
            Ok(p) if !p.is_empty() => {
                tracing::warn!(pids = ?p, "resumed processes a previous agent left listed as possibly stopped");
            }
            Ok(_) => {}
            Err(e) => {
                return Err(AgentError::Internal(format!(
                    "cannot read or reset the state file in {}: {e}",
                    cfg.state_dir.display()
                )));
            }
        }
        let state_file = Arc::new(StateFile::new(&cfg.state_dir));
        let guardian = Guardian::spawn(state_file.path())
            .map_err(|e| AgentError::Internal(format!("cannot fork the guardian process: {e}")))?;
        let mut features = BTreeMap::new();
        let (kernel, kernel_error) = match Kernel::load(cfg.quantum_ns) {
            Ok(k) => {
                features.extend(k.features());
                features.insert("kernel".into(), "on".into());
                (Some(k), None)
            }
            Err(e) if cfg.test_hooks => {
                tracing::warn!(
                    "kernel programs not loaded ({e}); running without them (test hooks)"
                );
                features.insert("kernel".into(), format!("off: {e}"));
                (None, Some(e.to_string()))
            }
            Err(e) => {
                return Err(AgentError::Unavailable(format!(
                    "cannot load the kernel programs: {e}. The agent needs root (CAP_BPF and \
                     CAP_PERFMON) and a kernel with BTF and the sock tracepoints; see docs/agent.md"
                )));
            }
        };
        features.insert("realtime_resumer".into(), probe_realtime());
        features.insert("guardian".into(), format!("on (pid {})", guardian.pid()));
        let kernel: SharedKernel = Arc::new(Mutex::new(kernel));
        let requests = match lock(&kernel).as_mut().map(Kernel::take_pause_requests) {
            Some(Ok(rx)) => Some(rx),
            Some(Err(e)) => {
                return Err(AgentError::Unavailable(format!(
                    "kernel pause requests: {e}"
                )));
            }
            None => None,
        };
        let inner = Arc::new(Inner {
            kernel,
            kernel_error,
            features,
            state_file,
            state: Mutex::new(State {
                quantum_ns: cfg.quantum_ns,
                max_stopped_share: cfg.max_stopped_share,
                plan: SlowdownPlan {
                    mode: Mode::Pause,
                    quantum_ns: Some(cfg.quantum_ns),
                    synchronized: false,
                    services: BTreeMap::new(),
                },
                ..State::default()
            }),
            by_id: RwLock::new(HashMap::new()),
            guardian: Mutex::new(Some(guardian)),
            lock: Mutex::new(Some(agent_lock)),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            cfg,
        });
        let agent = Agent { inner };
        if let Some(rx) = requests {
            let a = agent.clone();
            std::thread::Builder::new()
                .name("pause-dispatch".into())
                .spawn(move || a.dispatch(rx))
                .map_err(|e| AgentError::Internal(format!("cannot start the dispatcher: {e}")))?;
        }
        let a = agent.clone();
        let resolver = std::thread::Builder::new()
            .name("resolver".into())
            .spawn(move || a.resolve_loop())
            .map_err(|e| AgentError::Internal(format!("cannot start the resolver: {e}")))?;
        lock(&agent.inner.threads).push(resolver);
        tracing::info!(state_dir = %agent.inner.cfg.state_dir.display(), "agent started");
        Ok(agent)
    }

    pub fn config(&self) -> &AgentConfig {
        &self.inner.cfg
    }

    fn check_running(&self) -> Result<(), AgentError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(AgentError::Unavailable("the agent is shutting down".into()));
        }
        Ok(())
    }

    fn exclude(&self) -> Vec<u32> {
        let mut v = vec![std::process::id()];
        if let Some(g) = lock(&self.inner.guardian).as_ref() {
            v.push(g.pid());
        }
        v
    }

    /// Registers (or replaces) a service. Its selector must match at least one process now.
    pub fn put_service(&self, name: &str, spec: ServiceSpec) -> Result<ServiceInfo, AgentError> {
        self.check_running()?;
        registry::validate_name(name)?;
        let selector = Selector::from_spec(&spec)?;
        let resolved = selector.resolve(spec.listen_ports.as_deref(), &self.exclude())?;
        if resolved.pids.is_empty() {
            return Err(selector.nothing_matched());
        }
        let mut st = lock(&self.inner.state);
        let st = &mut *st;
        let delayed = st.plan.services.contains_key(name);
        if delayed {
            self.record_delayed(name, &resolved.pids)?;
        }
        let svc = if let Some(svc) = st.services.get_mut(name) {
            svc.spec = spec;
            svc.selector = selector;
            svc.generation += 1;
            svc
        } else {
            let used: Vec<ServiceId> = st.services.values().map(|s| s.id).collect();
            let id = (0..MAX_SERVICES)
                .find(|i| !used.contains(i))
                .ok_or_else(|| {
                    AgentError::Conflict(format!(
                        "this agent tracks at most {MAX_SERVICES} services; delete one first"
                    ))
                })?;
            let actuator = Arc::new(Actuator::spawn(
                name,
                self.inner.state_file.clone(),
                Box::new(KernelDebt {
                    kernel: self.inner.kernel.clone(),
                    id,
                }),
                ActuatorConfig {
                    quantum_ns: st.quantum_ns,
                    max_stopped_share: st.max_stopped_share,
                    window_ns: self.inner.cfg.stop_window.as_nanos() as u64,
                    idle_ns: self.inner.cfg.idle_interval.as_nanos() as u64,
                },
            ));
            self.inner
                .by_id
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, actuator.clone());
            let threads = registry::thread_count(&resolved.pids);
            let cores = spec.cores.unwrap_or_else(|| {
                registry::effective_cores(registry::usable_cpus(&resolved.pids), 0, threads)
            });
            st.services.entry(name.to_string()).or_insert(Service {
                id,
                spec,
                selector,
                generation: 0,
                resolved: Resolved::default(),
                actuator,
                cpu: CpuAccount::default(),
                wait: WaitAccount::default(),
                cores,
            })
        };
        if let Some(c) = svc.spec.cores {
            svc.cores = c;
        }
        apply_resolution(&self.inner.kernel, svc, resolved)?;
        svc.cpu.update(&svc.resolved.pids);
        svc.wait.update(&svc.resolved.pids);
        tracing::info!(service = name, pids = ?svc.resolved.pids, ports = ?svc.resolved.listen_ports, "service registered");
        Ok(svc.info(name))
    }

    /// Forgets a service (removing its delay first, paying its leftover debt).
    pub fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.check_running()?;
        let mut st = lock(&self.inner.state);
        if !st.services.contains_key(name) {
            return Err(unknown_service(name));
        }
        if st.plan.services.contains_key(name) {
            let mut plan = st.plan.clone();
            plan.services.remove(name);
            self.apply_plan(&mut st, plan)?;
        }
        let svc = st.services.remove(name).expect("checked above");
        drop(st);
        self.inner
            .by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&svc.id);
        if let Some(k) = lock(&self.inner.kernel).as_mut() {
            k.remove_service(svc.id)?;
        }
        tracing::info!(service = name, "service deleted");
        Ok(())
    }

    pub fn service(&self, name: &str) -> Result<ServiceInfo, AgentError> {
        let st = lock(&self.inner.state);
        st.services
            .get(name)
            .map(|s| s.info(name))
            .ok_or_else(|| unknown_service(name))
    }

    pub fn services(&self) -> ServiceList {
        let st = lock(&self.inner.state);
        ServiceList {
            services: st
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.info(n)))
                .collect(),
        }
    }

    /// A snapshot of every service's counters.
    pub fn stats(&self) -> api::Stats {
        let mut st = lock(&self.inner.state);
        let share = st.max_stopped_share;
        let window = self.inner.cfg.stop_window;
        // Hold the kernel lock only for the map reads (pause threads re-arm through it).
        let (counters, unregistered_dependencies) = {
            let kernel = lock(&self.inner.kernel);
            let counters: HashMap<ServiceId, KernelCounters> = st
                .services
                .values()
                .filter_map(|s| Some((s.id, kernel.as_ref()?.counters(s.id).ok()?)))
                .collect();
            let deps = kernel
                .as_ref()
                .map(|k| unregistered_dependencies(k, &st.services))
                .unwrap_or_default();
            (counters, deps)
        };
        let mut services = BTreeMap::new();
        for (name, svc) in &mut st.services {
            let kc = counters.get(&svc.id).copied().unwrap_or_default();
            let a = svc.actuator.stats();
            let mut warnings = Vec::new();
            if a.dropped_ns > 0 {
                warnings.push(format!(
                    "safety cap reached: {:.1} ms of pause debt dropped (a service may be stopped at \
                     most {:.0} % of any {} ms); lower the delays or raise --max-stopped-share",
                    a.dropped_ns as f64 / 1e6,
                    share * 100.0,
                    window.as_millis()
                ));
            }
            if kc.visits_approximate {
                warnings.push(
                    "multiplexed or pipelined traffic seen (e.g. HTTP/2): visit counts are approximate".into(),
                );
            }
            if let Some(why) = &a.realtime_off
                && a.pauses > 0
            {
                warnings.push(why.clone());
            }
            let pids = svc.resolved.pids.clone();
            services.insert(
                name.clone(),
                api::ServiceStats {
                    visits: kc.visits,
                    bytes_in: kc.bytes_in,
                    bytes_out: kc.bytes_out,
                    pause_ns: a.pause_ns,
                    cpu_ns: svc.cpu.update(&pids),
                    wait_ns: svc.wait.update(&pids),
                    cores: svc.cores,
                    pids,
                    calls_out: kc.calls_out,
                    pauses: a.pauses,
                    owed_ns: kc.owed_ns.max(a.owed_ns),
                    dropped_ns: a.dropped_ns,
                    spin_ns: kc.spin_ns,
                    visits_approximate: kc.visits_approximate,
                    warnings,
                },
            );
        }
        api::Stats {
            timestamp_ns: actuator::monotonic_ns(),
            services,
            unregistered_dependencies,
            node: crate::procfs::node_cpu().map(|(cpus, cpu_busy_ns, cpu_total_ns)| {
                api::NodeStats {
                    cpus,
                    cpu_busy_ns,
                    cpu_total_ns,
                }
            }),
        }
    }

    /// Replaces the plan in force. The whole plan is validated first: on error nothing changes.
    pub fn set_slowdown(&self, plan: SlowdownPlan) -> Result<(), AgentError> {
        self.check_running()?;
        let mut st = lock(&self.inner.state);
        self.validate_plan(&st, &plan)?;
        self.apply_plan(&mut st, plan)
    }

    /// The plan in force.
    pub fn slowdown(&self) -> SlowdownPlan {
        lock(&self.inner.state).plan.clone()
    }

    /// Removes every delay, paying leftover debt first.
    pub fn clear_slowdown(&self) -> Result<(), AgentError> {
        let mut st = lock(&self.inner.state);
        let plan = SlowdownPlan {
            mode: st.plan.mode,
            quantum_ns: Some(st.quantum_ns),
            synchronized: st.plan.synchronized,
            services: BTreeMap::new(),
        };
        self.apply_plan(&mut st, plan)
    }

    /// Stops the whole service for `ns` now and resumes it, outside any plan, debt accounting and
    /// the safety cap (manual checks and tests; counted in `pause_ns`).
    pub fn pause_now(&self, name: &str, ns: u64) -> Result<PauseOutcome, AgentError> {
        self.check_running()?;
        if ns > 60_000_000_000 {
            return Err(AgentError::BadRequest(
                "a manual pause is at most 60 s".into(),
            ));
        }
        let act = {
            let st = lock(&self.inner.state);
            st.services
                .get(name)
                .map(|s| s.actuator.clone())
                .ok_or_else(|| unknown_service(name))?
        };
        act.pause_now(ns)
            .ok_or_else(|| AgentError::Internal("the pause thread of this service is gone".into()))
    }

    /// The last pauses of a service (oldest first, at most [`actuator::RECENT_PAUSES`]): kind,
    /// stop and resume times. Diagnostics and tests (e.g. how close synchronized pauses are).
    pub fn recent_pauses(&self, name: &str) -> Result<Vec<PauseRecord>, AgentError> {
        let st = lock(&self.inner.state);
        st.services
            .get(name)
            .map(|s| s.actuator.recent_pauses())
            .ok_or_else(|| unknown_service(name))
    }

    pub fn health(&self) -> api::Health {
        let mut features = self.inner.features.clone();
        let guardian_up = lock(&self.inner.guardian)
            .as_ref()
            .is_some_and(Guardian::alive);
        if !guardian_up {
            features.insert(
                "guardian".into(),
                "off: the guardian process is not running".into(),
            );
        }
        let status = if self.inner.stopping.load(Ordering::SeqCst) {
            "stopping"
        } else if self.inner.kernel_error.is_some() || !guardian_up {
            "degraded"
        } else {
            "ok"
        };
        api::Health {
            status: status.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features,
        }
    }

    /// Removes the plan (paying leftover debt), resumes every process of every service, detaches
    /// the kernel programs, stops the guardian and releases the lock.
    pub async fn shutdown(self) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || Agent { inner }.shutdown_blocking()).await;
    }

    fn shutdown_blocking(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for a in self
            .inner
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            a.cancel_pause();
        }
        if let Err(e) = self.clear_slowdown() {
            tracing::warn!("removing the plan at shutdown: {e}");
        }
        for t in lock(&self.inner.threads).drain(..) {
            let _ = t.join();
        }
        let services: Vec<Service> = {
            let mut st = lock(&self.inner.state);
            std::mem::take(&mut st.services).into_values().collect()
        };
        self.inner
            .by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for svc in services {
            for &p in &svc.resolved.pids {
                actuator::resume_pid(p);
            }
            drop(svc); // joins its pause thread
        }
        drop(lock(&self.inner.kernel).take());
        if let Some(g) = lock(&self.inner.guardian).take() {
            g.stop(Duration::from_millis(500));
        }
        if let Err(e) = self.inner.state_file.set("", &[]) {
            tracing::warn!("cannot reset the state file: {e}");
        }
        drop(lock(&self.inner.lock).take());
        tracing::info!("agent stopped");
    }

    fn record_delayed(&self, name: &str, pids: &[u32]) -> Result<(), AgentError> {
        self.inner
            .state_file
            .set(&delayed_owner(name), pids)
            .map_err(|e| {
                AgentError::Internal(format!(
                    "cannot write the state file {}: {e}",
                    self.inner.state_file.path().display()
                ))
            })
    }

    fn validate_plan(&self, st: &State, plan: &SlowdownPlan) -> Result<(), AgentError> {
        let max = self.inner.cfg.max_delay_per_visit_ns;
        for (name, d) in &plan.services {
            if !st.services.contains_key(name) {
                return Err(AgentError::BadRequest(format!(
                    "unknown service {name:?} in the plan: register it first with PUT /v1/services/{name}"
                )));
            }
            if d.delay_per_visit_ns > max {
                return Err(AgentError::BadRequest(format!(
                    "delay_per_visit_ns of {name:?} is {} ns, above the limit of {max} ns \
                     (--max-delay-ms); lower it",
                    d.delay_per_visit_ns
                )));
            }
        }
        if let Some(q) = plan.quantum_ns
            && !(1_000..=1_000_000_000).contains(&q)
        {
            return Err(AgentError::BadRequest(format!(
                "quantum_ns must be between 1000 (1 µs) and 1000000000 (1 s), got {q}"
            )));
        }
        if plan.synchronized && plan.mode != Mode::Pause {
            return Err(AgentError::BadRequest(
                "synchronized applies to pauses only (mode \"pause\"): spin delays are spent in \
                 the visiting thread, there is no debt to pay together; drop \"synchronized\" or \
                 use mode \"pause\""
                    .into(),
            ));
        }
        let wants_delay = plan.services.values().any(|d| d.delay_per_visit_ns > 0);
        if wants_delay && lock(&self.inner.kernel).is_none() {
            return Err(AgentError::Unavailable(format!(
                "the kernel programs are not loaded ({}): plans need them to count visits",
                self.inner
                    .kernel_error
                    .as_deref()
                    .unwrap_or("unknown reason")
            )));
        }
        Ok(())
    }

    /// Applies a validated plan: removed delays first (their debt paid), then the new ones.
    fn apply_plan(&self, st: &mut State, mut plan: SlowdownPlan) -> Result<(), AgentError> {
        let quantum = plan.quantum_ns.unwrap_or(self.inner.cfg.quantum_ns);
        plan.quantum_ns = Some(quantum);
        if quantum != st.quantum_ns {
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_quantum(quantum)?;
            }
            st.quantum_ns = quantum;
            for s in st.services.values() {
                s.actuator.set_config(quantum, st.max_stopped_share);
            }
        }
        let old = std::mem::take(&mut st.plan.services);
        // Removed (or zeroed, or mode changed): stop the debt, pay what is left, forget the pids.
        for (name, old_d) in &old {
            let keep = plan
                .services
                .get(name)
                .is_some_and(|d| d.delay_per_visit_ns > 0)
                && plan.mode == st.plan.mode;
            let Some(svc) = st.services.get(name) else {
                continue;
            };
            if keep || old_d.delay_per_visit_ns == 0 {
                continue;
            }
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_delay(svc.id, 0, st.plan.mode, false)?;
            }
            svc.actuator.flush(FLUSH_TIMEOUT);
            svc.actuator.set_active(false);
            // A stop the kernel made just before the delay went away has been handled by the
            // flush; resume once more in case.
            for &p in &svc.resolved.pids {
                actuator::resume_pid(p);
            }
            self.record_delayed(name, &[])?;
        }
        for (name, d) in &plan.services {
            let Some(svc) = st.services.get(name) else {
                continue;
            };
            if d.delay_per_visit_ns == 0 {
                continue;
            }
            self.record_delayed(name, &svc.resolved.pids)?;
            let pause = plan.mode == Mode::Pause;
            if let Some(k) = lock(&self.inner.kernel).as_mut() {
                k.set_delay(svc.id, d.delay_per_visit_ns, plan.mode, pause)?;
            }
            svc.actuator.set_active(pause);
        }
        set_sync_hooks(&st.services, &plan);
        st.plan = plan;
        tracing::info!(plan = ?st.plan, "slowdown plan in force");
        Ok(())
    }

    /// Routes the kernel's pause requests to the service's actuator.
    fn dispatch(&self, mut rx: tokio::sync::mpsc::UnboundedReceiver<PauseRequest>) {
        if let Err(why) = actuator::make_thread_precise() {
            tracing::debug!("dispatcher: {why}");
        }
        while let Some(req) = rx.blocking_recv() {
            let act = self
                .inner
                .by_id
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&req.service)
                .cloned();
            match act {
                Some(a) => a.kernel_request(req),
                None => {
                    if let Some(t) = req.stopped_tgid {
                        actuator::resume_pid(t);
                    }
                }
            }
            if self.inner.stopping.load(Ordering::SeqCst) {
                break;
            }
        }
    }

    fn resolve_loop(&self) {
        let interval = self.inner.cfg.resolve_interval;
        while !self.inner.stopping.load(Ordering::SeqCst) {
            let next = std::time::Instant::now() + interval;
            self.resolve_once();
            self.watch_guardian();
            while std::time::Instant::now() < next && !self.inner.stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10).min(interval));
            }
        }
    }

    /// One pass: re-resolve every selector (outside the lock), then apply what changed.
    pub fn resolve_once(&self) {
        let work: Vec<(String, u64, Selector, Option<Vec<u16>>)> = {
            let st = lock(&self.inner.state);
            st.services
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        s.generation,
                        s.selector.clone(),
                        s.spec.listen_ports.clone(),
                    )
                })
                .collect()
        };
        let exclude = self.exclude();
        let since = actuator::monotonic_ns()
            .saturating_sub(self.inner.cfg.serving_window.as_nanos() as u64);
        for (name, generation, selector, ports) in work {
            let Ok(resolved) = selector.resolve(ports.as_deref(), &exclude) else {
                continue;
            };
            let usable = registry::usable_cpus(&resolved.pids);
            let threads = registry::thread_count(&resolved.pids);
            let mut st = lock(&self.inner.state);
            let delayed = st
                .plan
                .services
                .get(&name)
                .is_some_and(|d| d.delay_per_visit_ns > 0);
            let Some(svc) = st.services.get_mut(&name) else {
                continue;
            };
            if svc.generation != generation {
                continue;
            }
            if svc.spec.cores.is_none() {
                let serving = lock(&self.inner.kernel)
                    .as_ref()
                    .map_or(0, |k| k.serving_threads(svc.id, since));
                svc.cores = registry::effective_cores(usable, serving, threads);
            }
            if svc.resolved == resolved {
                continue;
            }
            if delayed {
                // New processes must be listed before the kernel may stop them.
                let mut listed = resolved.pids.clone();
                listed.extend(&svc.resolved.pids);
                listed.sort_unstable();
                listed.dedup();
                if let Err(e) = self.record_delayed(&name, &listed) {
                    tracing::error!("{e}");
                    continue;
                }
            }
            tracing::debug!(service = %name, pids = ?resolved.pids, "membership changed");
            if let Err(e) = apply_resolution(&self.inner.kernel, svc, resolved) {
                tracing::warn!(service = %name, "updating the kernel membership: {e}");
            }
            if delayed {
                let pids = svc.resolved.pids.clone();
                if let Err(e) = self.record_delayed(&name, &pids) {
                    tracing::error!("{e}");
                }
            }
        }
    }

    fn watch_guardian(&self) {
        let mut g = lock(&self.inner.guardian);
        if g.as_ref().is_some_and(Guardian::alive) || self.inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        tracing::warn!("the guardian process is gone; starting a new one");
        match Guardian::spawn(self.inner.state_file.path()) {
            Ok(n) => *g = Some(n),
            Err(e) => tracing::error!("cannot fork a new guardian: {e}"),
        }
    }
}

fn validate_config(cfg: &AgentConfig) -> Result<(), AgentError> {
    if !(cfg.max_stopped_share > 0.0 && cfg.max_stopped_share <= 1.0) {
        return Err(AgentError::BadRequest(format!(
            "max_stopped_share must be in (0, 1], got {}",
            cfg.max_stopped_share
        )));
    }
    if !(1_000..=1_000_000_000).contains(&cfg.quantum_ns) {
        return Err(AgentError::BadRequest(format!(
            "the quantum must be between 1 µs and 1 s, got {} ns",
            cfg.quantum_ns
        )));
    }
    if cfg.resolve_interval.is_zero() || cfg.stop_window.is_zero() {
        return Err(AgentError::BadRequest(
            "resolve_interval and stop_window must be positive".into(),
        ));
    }
    Ok(())
}

fn unknown_service(name: &str) -> AgentError {
    AgentError::NotFound(format!(
        "no service named {name:?}; list them with GET /v1/services or register it with PUT /v1/services/{name}"
    ))
}

/// Synchronized pause plans: each delayed service's quantum pause makes every other delayed
/// service of the plan pay what it owes at once. Any other plan: no hooks.
fn set_sync_hooks(services: &BTreeMap<String, Service>, plan: &SlowdownPlan) {
    let members: Vec<&str> = if plan.synchronized && plan.mode == Mode::Pause {
        plan.services
            .iter()
            .filter(|(n, d)| d.delay_per_visit_ns > 0 && services.contains_key(*n))
            .map(|(n, _)| n.as_str())
            .collect()
    } else {
        Vec::new()
    };
    for (name, svc) in services {
        let hook: Option<OnKernelPause> = members.contains(&name.as_str()).then(|| {
            let others: Vec<actuator::PayHandle> = members
                .iter()
                .filter(|&&m| m != name)
                .filter_map(|m| services.get(*m).map(|s| s.actuator.pay_handle()))
                .collect();
            let hook: OnKernelPause = Arc::new(move || {
                for o in &others {
                    o.pay_now();
                }
            });
            hook
        });
        svc.actuator.set_on_kernel_pause(hook);
    }
}

/// Stores a resolution and pushes it to the kernel and the actuator.
fn apply_resolution(
    kernel: &SharedKernel,
    svc: &mut Service,
    resolved: Resolved,
) -> Result<(), AgentError> {
    if let Some(k) = lock(kernel).as_mut() {
        k.set_members(svc.id, &resolved.pids)?;
        k.set_cgroup_members(svc.id, &resolved.cgroup_ids)?;
        k.set_server_ports(svc.id, &resolved.listen_ports, &resolved.other_ports)?;
    }
    svc.actuator.set_pids(&resolved.pids);
    svc.resolved = resolved;
    Ok(())
}

/// Outgoing endpoints that belong to no registered service (an unpaused hidden dependency).
fn unregistered_dependencies(
    kernel: &Kernel,
    services: &BTreeMap<String, Service>,
) -> Vec<api::UnregisteredDependency> {
    let names: HashMap<ServiceId, &str> =
        services.iter().map(|(n, s)| (s.id, n.as_str())).collect();
    let mut agg: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
    for ep in kernel.outgoing_endpoints() {
        let registered = services.values().any(|s| {
            s.resolved.listen_ports.contains(&ep.port)
                && (ep.addr.is_loopback() || ep.addr.is_unspecified())
        });
        if registered {
            continue;
        }
        let Some(from) = names.get(&ep.service) else {
            continue;
        };
        *agg.entry(((*from).to_string(), ep.addr.to_string(), ep.port))
            .or_default() += ep.calls;
    }
    agg.into_iter()
        .map(|((from, addr, port), calls)| {
            let local = addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            let pid = if local {
                crate::procfs::pids_listening_on(&[port]).into_iter().next()
            } else {
                None
            };
            api::UnregisteredDependency {
                from,
                addr,
                port,
                pid,
                comm: pid.and_then(crate::procfs::comm),
                calls,
            }
        })
        .collect()
}

/// Tries `SCHED_FIFO` on a throw-away thread: "on" or why not.
fn probe_realtime() -> String {
    std::thread::spawn(|| match actuator::make_thread_precise() {
        Ok(()) => "on".to_string(),
        Err(why) => format!("off: {why}"),
    })
    .join()
    .unwrap_or_else(|_| "off: probe failed".into())
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.inner.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

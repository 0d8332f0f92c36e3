//! The agent: registry + kernel programs + one pause actuator per service + guardian, behind a
//! small synchronous API (the HTTP layer in `http/` and the in-process coordinator both use it).
//!
//! Threads: a resolver (re-resolves selectors every `resolve_interval`, pushes membership to the
//! kernel, measures cores, watches the guardian), a dispatcher (routes the kernel's pause
//! requests to the service's actuator without going through the async runtime), a lease watcher
//! (removes a plan whose lease lapsed), and one pause thread per service (`actuator/`).
//!
//! Lock order: `state` before `kernel`. Pause threads take only `kernel` (through `KernelDebt`
//! in `dispatch.rs`), never `state`, so flushing an actuator while holding `state` is safe.
//!
//! Files: `config.rs` (settings), `services.rs` (register, replace, forget), `resolver.rs` (the
//! resolver thread), `protect.rs` (protected processes: the registry's guard, the kernel's deny
//! maps), `heartbeat.rs` (the progress the kernel heartbeat vouches for), `plan.rs` (slowdown
//! plans), `lease.rs` (their owners and leases), `dispatch.rs` (kernel <-> actuators, manual
//! pauses), `stats.rs` (the counters snapshot); this file holds the agent's state and lifecycle.

mod config;
mod dispatch;
mod heartbeat;
mod lease;
mod plan;
mod protect;
mod resolver;
mod services;
mod stats;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub use config::{AgentConfig, DEFAULT_LEASE, DEFAULT_MAX_LEASE};

use crate::{
    actuator::Actuator,
    api::{self, Mode, ServiceSpec, SlowdownPlan},
    error::AgentError,
    kernel::{Beater, Kernel, ServiceId},
    registry::{CpuAccount, Resolved, Selector, WaitAccount},
    safety::{
        guardian::Guardian,
        lease::Lease,
        lock::AgentLock,
        state::{self, StateFile},
    },
    sys::{sched::probe_realtime, signal::resume_pid},
};

/// The node agent. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

type SharedKernel = Arc<Mutex<Option<Kernel>>>;

struct Inner {
    cfg: AgentConfig,
    kernel: SharedKernel,
    /// Why the kernel programs are not loaded (only with test hooks: otherwise start fails).
    kernel_error: Option<String>,
    features: BTreeMap<String, String>,
    state_file: Arc<StateFile>,
    state: Mutex<State>,
    /// Service id -> actuator, for the dispatcher's hot path.
    by_id: RwLock<HashMap<ServiceId, Arc<Actuator>>>,
    guardian: Mutex<Option<Guardian>>,
    /// What the kernel heartbeat vouches for (resolver and dispatcher progress).
    progress: Arc<heartbeat::Progress>,
    /// Beats the kernel's heartbeat while `progress` is fresh; dropped first at shutdown.
    beater: Mutex<Option<Beater>>,
    lock: Mutex<Option<AgentLock>>,
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Everything a call may change, behind one lock: the services and the plan in force.
#[derive(Default)]
struct State {
    services: BTreeMap<String, Service>,
    plan: SlowdownPlan,
    /// Who holds `plan` and until when; `Some` exactly while the plan names services.
    lease: Option<Lease>,
    /// Plans removed because their lease lapsed (`slowpoke_lease_expired_total`).
    leases_expired: u64,
    quantum_ns: u64,
    max_stopped_share: f64,
}

/// One registered service: its selector, what it resolved to last, its actuator and its CPU
/// accounts.
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unknown_service(name: &str) -> AgentError {
    AgentError::NotFound(format!(
        "no service named {name:?}; list them with GET /v1/services or register it with PUT /v1/services/{name}"
    ))
}

impl Agent {
    /// Takes the lock, resumes whatever a previous agent left listed, forks the guardian, loads
    /// the kernel programs and starts the resolver and dispatcher threads.
    #[allow(clippy::unused_async)] // async by contract: a later version may await the kernel load
    pub async fn start(cfg: AgentConfig) -> Result<Agent, AgentError> {
        cfg.validate()?;
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
            #[cfg(feature = "test-hooks")]
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
        // Without beats the kernel stops nothing: start them right after the load.
        let progress = Arc::new(heartbeat::Progress::default());
        let beater = kernel
            .as_ref()
            .map(|k| heartbeat::start(k, &progress, &mut features))
            .transpose()?;
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
                    ..SlowdownPlan::default()
                },
                ..State::default()
            }),
            by_id: RwLock::new(HashMap::new()),
            guardian: Mutex::new(Some(guardian)),
            progress,
            beater: Mutex::new(beater),
            lock: Mutex::new(Some(agent_lock)),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            cfg,
        });
        let agent = Agent { inner };
        // Before any service exists: the agent, its guardian, pid 1 and the agent's cgroup.
        agent.protect_in_kernel(&lock(&agent.inner.state), &agent.protection());
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
        let a = agent.clone();
        let leases = std::thread::Builder::new()
            .name("lease-watch".into())
            .spawn(move || a.lease_loop())
            .map_err(|e| AgentError::Internal(format!("cannot start the lease watcher: {e}")))?;
        lock(&agent.inner.threads).push(leases);
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
        // From here on the kernel stops nothing itself; what is left is paid the user-space way.
        drop(lock(&self.inner.beater).take());
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
                resume_pid(p);
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
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.inner.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

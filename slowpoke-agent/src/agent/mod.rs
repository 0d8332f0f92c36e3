//! The agent: registry + kernel programs + one pause actuator per service + guardian, behind a
//! small synchronous API (the HTTP layer in `http/` and the in-process coordinator both use it).
//!
//! Threads: a resolver (re-resolves selectors every `resolve_interval`, lists members in the
//! state file before pushing them to the kernel, measures cores, watches the guardian, ticks the
//! agent's [`Progress`]), a dispatcher (routes the kernel's pause requests to the service's
//! actuator without going through the async runtime; if their stream ends, stops all pausing),
//! a lease watcher (removes a plan whose lease lapsed), the kernel heartbeat's beater and the
//! watchdog feeder (each goes on only while the progress is fresh), the peer-sync receiver
//! (with a sync socket: peers' synchronized-pause datagrams), the tail scheduler (`scheduling/`,
//! idle without a schedule), and one pause thread per service (`actuator/`).
//!
//! Lock order: `state` before `kernel`. Pause threads take only `kernel` (through `KernelDebt`
//! in `dispatch.rs`), never `state`, so flushing an actuator while holding `state` is safe.
//!
//! Files: `config.rs` (settings), `services.rs` (register, replace, forget), `resolver.rs` (the
//! resolver thread), `protect.rs` (protected processes: the registry's guard, the kernel's deny
//! maps), `heartbeat.rs` (the progress the kernel heartbeat vouches for), `plan.rs` (slowdown
//! plans), `lease.rs` (their owners and leases), `dispatch.rs` (kernel <-> actuators, manual
//! pauses), `scheduling/` (tail-latency scheduling: oldest request first), `peer_sync/` (synchronized pauses between nodes: the UDP datagrams and their
//! receiver thread), `stats.rs` (the counters snapshot); this file holds the agent's state and
//! lifecycle.

mod config;
mod dispatch;
mod heartbeat;
mod lease;
pub mod peer_sync;
mod plan;
mod protect;
mod resolver;
mod scheduling;
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

pub use config::{AgentConfig, DEFAULT_LEASE, DEFAULT_MAX_LEASE, DEFAULT_MAX_PLAN_STOPPED_SHARE};

use self::peer_sync::PeerSync;
use crate::{
    actuator::Actuator,
    api::{self, Mode, ServiceSpec, SlowdownPlan},
    error::AgentError,
    kernel::{Beater, Kernel, PauseRequest, ServiceId},
    registry::{CpuAccount, Listeners, Resolved, SchedAccount, Selector},
    safety::{
        guardian::Guardian,
        lease::Lease,
        lock::AgentLock,
        state::{self, StateFile},
        watchdog::{FEED_PERIOD, Feeder, Progress, SharedPage, WatchdogCounts},
    },
    sys::{clock::monotonic_ns, sched::probe_realtime, signal::resume_pid},
};

/// The node agent. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

type SharedKernel = Arc<Mutex<Option<Kernel>>>;

struct Inner {
    cfg: AgentConfig,
    /// This run's random id (`instance` in health and stats): clients tell a restart by it.
    instance: String,
    kernel: SharedKernel,
    /// Why the kernel programs are not loaded (only with test hooks: otherwise start fails).
    kernel_error: Option<String>,
    features: BTreeMap<String, String>,
    state_file: Arc<StateFile>,
    state: Mutex<State>,
    /// Service id -> actuator, for the dispatcher's hot path.
    by_id: RwLock<HashMap<ServiceId, Arc<Actuator>>>,
    guardian: Mutex<Option<Guardian>>,
    /// Shared with every guardian: the progress stamp and the watchdog's counters.
    page: Arc<SharedPage>,
    /// Ticked by the resolver and the dispatcher: "the agent makes progress". The kernel
    /// heartbeat's beater and the watchdog feeder go on only while it is fresh.
    progress: Arc<Progress>,
    /// Beats the kernel's heartbeat while `progress` is fresh; dropped first at shutdown.
    beater: Mutex<Option<Beater>>,
    feeder: Mutex<Option<Feeder>>,
    /// Why the kernel's pause requests are no longer read (the event reader died): plans with
    /// delays are refused from then on.
    events_lost: Mutex<Option<String>>,
    lock: Mutex<Option<AgentLock>>,
    /// The sync socket (`--sync-listen`): synchronized pauses between nodes.
    peer_sync: Option<Arc<PeerSync>>,
    /// The tail scheduler's thread (idle without a schedule).
    scheduler: scheduling::Scheduler,
    /// The sockets' owners, kept across the resolver's passes (`registry::listeners`).
    listeners: Mutex<Listeners>,
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
    /// Plans and schedules removed because their lease lapsed (`slowpoke_lease_expired_total`).
    leases_expired: u64,
    /// The tail schedule in force (`scheduling/`), with its lease.
    schedule: Option<scheduling::Schedule>,
    quantum_ns: u64,
    /// The stopped-share cap in force: the plan's `max_stopped_share` while it holds one, else
    /// the agent's default.
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
    sched: SchedAccount,
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
        repair_leftovers(&cfg)?;
        let state_file = Arc::new(StateFile::new(&cfg.state_dir));
        let internal = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| AgentError::Internal(format!("{what}: {e}"))
        };
        let page = Arc::new(
            SharedPage::new(Some(cfg.watchdog_after))
                .map_err(internal("cannot map the page shared with the guardian"))?,
        );
        let progress = Arc::new(Progress::default());
        let feeder = Feeder::start(page.clone(), FEED_PERIOD, {
            let (progress, limit) = (progress.clone(), cfg.progress_limit());
            move || progress.within(limit)
        })
        .map_err(internal("cannot start the watchdog feeder thread"))?;
        let guardian = Guardian::spawn_with(state_file.path(), page.clone())
            .map_err(internal("cannot fork the guardian process"))?;
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
        let beater = kernel
            .as_ref()
            .map(|k| heartbeat::start(k, &progress, &mut features))
            .transpose()?;
        features.insert("realtime_resumer".into(), probe_realtime());
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
        let peer_sync = bind_sync_socket(&cfg)?;
        let scheduler = scheduling::start(&kernel, &page, &mut features)?;
        let inner = Arc::new(Inner {
            scheduler,
            peer_sync,
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
            page,
            progress,
            beater: Mutex::new(beater),
            feeder: Mutex::new(Some(feeder)),
            events_lost: Mutex::new(None),
            lock: Mutex::new(Some(agent_lock)),
            listeners: Mutex::new(Listeners::new()),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            instance: new_instance_id(),
            cfg,
        });
        let agent = Agent { inner };
        // Before any service exists: the agent, its guardian, pid 1 and the agent's cgroup.
        agent.protect_in_kernel(&lock(&agent.inner.state), &agent.protection());
        agent.start_threads(requests)?;
        tracing::info!(state_dir = %agent.inner.cfg.state_dir.display(), "agent started");
        Ok(agent)
    }

    /// The dispatcher (with kernel programs), the resolver, the lease watcher and the peer-sync
    /// receiver (with a sync socket).
    fn start_threads(
        &self,
        requests: Option<tokio::sync::mpsc::UnboundedReceiver<PauseRequest>>,
    ) -> Result<(), AgentError> {
        let spawn = |name: &str, what: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| AgentError::Internal(format!("cannot start the {what}: {e}")))
        };
        if let Some(rx) = requests {
            let a = self.clone();
            spawn(
                "pause-dispatch",
                "dispatcher",
                Box::new(move || a.dispatch(rx)),
            )?;
        }
        let a = self.clone();
        let resolver = spawn("resolver", "resolver", Box::new(move || a.resolve_loop()))?;
        lock(&self.inner.threads).push(resolver);
        let a = self.clone();
        let leases = spawn(
            "lease-watch",
            "lease watcher",
            Box::new(move || a.lease_loop()),
        )?;
        lock(&self.inner.threads).push(leases);
        if let Some(sync) = self.inner.peer_sync.clone() {
            let a = self.clone();
            let receiver = spawn(
                "peer-sync",
                "peer-sync receiver",
                Box::new(move || sync.receive_loop(&a.inner.stopping)),
            )?;
            lock(&self.inner.threads).push(receiver);
        }
        Ok(())
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
        let mut reasons = Vec::new();
        self.guardian_health(&mut features, &mut reasons);
        if let Some(e) = &self.inner.kernel_error {
            reasons.push(format!("the kernel programs are not loaded: {e}"));
        }
        if let Some(why) = lock(&self.inner.events_lost).as_ref() {
            reasons.push(format!(
                "the kernel's pause requests are no longer read ({why}): every delay was removed \
                 and every member resumed, and plans with delays are refused; restart the agent"
            ));
        }
        let status = if self.inner.stopping.load(Ordering::SeqCst) {
            "stopping"
        } else if reasons.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        api::Health {
            status: status.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            features,
            reasons,
            warnings: self.watchdog_warning().into_iter().collect(),
            sync_addr: self
                .inner
                .peer_sync
                .as_ref()
                .map(|p| p.local_addr().to_string()),
            instance: self.inner.instance.clone(),
        }
    }

    /// What the guardian's watchdog did so far (it resumed processes while the agent was stuck).
    pub fn watchdog_counts(&self) -> WatchdogCounts {
        self.inner.page.counts()
    }

    fn guardian_health(&self, features: &mut BTreeMap<String, String>, reasons: &mut Vec<String>) {
        let guardian = lock(&self.inner.guardian);
        if let Some(g) = guardian.as_ref().filter(|g| g.alive()) {
            features.insert("guardian".into(), format!("on (pid {})", g.pid()));
            if let Some(setup) = g.setup() {
                let (close, oom) = setup.describe();
                features.insert("guardian_close".into(), close);
                features.insert("guardian_oom".into(), oom);
            }
        } else {
            features.insert(
                "guardian".into(),
                "off: the guardian process is not running".into(),
            );
            reasons.push(
                "the guardian process is not running: nothing would resume stopped processes \
                 if the agent died now (the agent forks a new one at its next resolver pass; \
                 see its log)"
                    .into(),
            );
        }
        if let Some(after) = self.inner.page.stale_after() {
            features.insert(
                "guardian_watchdog".into(),
                format!(
                    "on: resumes every listed process after {} ms without progress of the agent",
                    after.as_millis()
                ),
            );
        }
    }

    fn watchdog_warning(&self) -> Option<String> {
        let c = self.inner.page.counts();
        (c.episodes > 0).then(|| {
            let ago = monotonic_ns().saturating_sub(c.last_pass_ns) as f64 / 1e9;
            format!(
                "the guardian's watchdog resumed every listed process {} time(s) in {} \
                 episode(s), the last {ago:.1} s ago, because the agent made no progress for \
                 over {} ms (stopped by a signal, hung or starved); pauses in progress then \
                 ended early",
                c.passes,
                c.episodes,
                self.inner.cfg.watchdog_after.as_millis()
            )
        })
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
        self.clear_scheduling();
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
        drop(lock(&self.inner.feeder).take());
        if let Err(e) = self.inner.state_file.clear() {
            tracing::warn!("cannot reset the state file: {e}");
        }
        drop(lock(&self.inner.lock).take());
        tracing::info!("agent stopped");
    }
}

/// The sync socket the settings ask for. A defaulted address that is taken (another agent on
/// the same IP) leaves the agent without one, with a warning; an explicit one must bind.
fn bind_sync_socket(cfg: &AgentConfig) -> Result<Option<Arc<PeerSync>>, AgentError> {
    let Some(addr) = cfg.sync_listen else {
        return Ok(None);
    };
    match PeerSync::bind(addr) {
        Ok(p) => {
            tracing::info!(addr = %p.local_addr(), "synchronized pauses between nodes: listening");
            Ok(Some(Arc::new(p)))
        }
        Err(e) if cfg.sync_listen_defaulted => {
            tracing::warn!(
                "no sync socket: cannot bind UDP {addr} ({e}); plans with sync_peers are refused \
                 (give a free address with --sync-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(AgentError::Unavailable(format!(
            "cannot bind the sync socket on UDP {addr}: {e} (is another agent using it? choose \
             another --sync-listen)"
        ))),
    }
}

/// Start-up repair: resumes what a previous agent left listed (see `safety::state`).
fn repair_leftovers(cfg: &AgentConfig) -> Result<(), AgentError> {
    let repair = state::resume_leftovers(&cfg.state_dir).map_err(|e| {
        AgentError::Internal(format!(
            "cannot read or reset the state file in {}: {e}; check the directory's permissions \
             (--state-dir)",
            cfg.state_dir.display()
        ))
    })?;
    if !repair.resumed.is_empty() || !repair.in_cgroups.is_empty() {
        tracing::warn!(
            pids = ?repair.resumed,
            in_cgroups = ?repair.in_cgroups,
            "resumed processes a previous agent left listed as possibly stopped"
        );
    }
    if !repair.reused.is_empty() {
        tracing::info!(
            pids = ?repair.reused,
            "left alone: these listed pids now belong to other processes"
        );
    }
    if !repair.legacy.is_empty() {
        tracing::warn!(
            pids = ?repair.legacy,
            "resumed the bare pids of an older agent's stopped.json without checking that they \
             are still the same processes (that format has no start times); the file is removed"
        );
    }
    Ok(())
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state_dir", &self.inner.cfg.state_dir)
            .finish_non_exhaustive()
    }
}

/// A random id for this run of the agent (16 hex digits from the kernel's random source; the
/// pid and start time if that cannot be read): a restart changes it.
fn new_instance_id() -> String {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let id = if random.is_ok() {
        u64::from_ne_bytes(bytes)
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        now ^ u64::from(std::process::id()).rotate_left(40)
    };
    format!("{id:016x}")
}

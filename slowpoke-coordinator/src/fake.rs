//! A fake world for tests: an app, an agent and a load that obey the model exactly.
//!
//! Throughput follows the bottleneck law with pauses: 1/X = max_s(r_s·p_s/c_s + r_s·d_s), with
//! T's p lowered by the ground-truth Δ when applied. Under the plan d_s = δ/r_s that gives
//! exactly 1/X_slow = 1/X_opt + δ, so a correct runner predicts the truth exactly (up to the
//! injected noise). Counters are integrated over real time, dilated ×1000 so that short test
//! windows still see many visits. Every call is logged, in order, for interleaving tests.
//!
//! Test-only: compiled under `cfg(test)` and with the cargo feature `fake` (which `cargo xtask
//! test` turns on for the integration tests), never into the release library.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use slowpoke_api::agent as api;

use crate::agents::{AgentClient, AgentError, SharedAgent};
use crate::experiment::{App, Backends, Load, LoadConfig, LoadStarter, LoadWindow, TruthChange};
use crate::lease::{DEFAULT_LEASE, Lease};

const DILATION: f64 = 1000.0;

/// One fake service: visits per request, CPU ns per visit, cores, listening port.
#[derive(Debug, Clone, Copy)]
pub struct FakeService {
    pub r: f64,
    pub p_ns: f64,
    pub c: f64,
    pub port: u16,
}

#[derive(Debug)]
struct State {
    services: BTreeMap<String, FakeService>,
    entry_port: u16,
    plan: BTreeMap<String, f64>,
    truth: Option<(String, f64)>,
    t0: Instant,
    last: Instant,
    visits: BTreeMap<String, f64>,
    cpu: BTreeMap<String, f64>,
    owed: BTreeMap<String, f64>,
    dropped: BTreeMap<String, f64>,
    noise: Vec<f64>,
    noise_idx: usize,
    log: Vec<String>,
    registered: Vec<String>,
    /// The last spec each service was registered with.
    specs: BTreeMap<String, api::ServiceSpec>,
    /// Error ratio the load reports while a plan is in force.
    pub slow_error_ratio: f64,
    cap_when_slow: bool,
    fail_set_slowdown: bool,
    fail_renew_lease: bool,
    /// The owner of the last plan put.
    owner: Option<String>,
    probe_fails: bool,
    fail_stats_after: Option<usize>,
    /// From this `GET /v1/stats` call on, the agent is a new run: another instance id and its
    /// counters started again.
    restart_at: Option<usize>,
    instance: String,
    stats_calls: usize,
    /// The tail schedule in force (`/v1/scheduling`), if any.
    schedule: Option<api::SchedulingPlan>,
}

impl State {
    fn throughput(&self) -> f64 {
        let worst = self
            .services
            .iter()
            .map(|(n, s)| {
                let mut p = s.p_ns;
                if let Some((t, d)) = &self.truth
                    && t == n
                {
                    p -= d;
                }
                s.r * p / s.c + s.r * self.plan.get(n).copied().unwrap_or(0.0)
            })
            .fold(0.0, f64::max);
        1e9 / worst
    }

    fn advance(&mut self) {
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64() * DILATION;
        self.last = now;
        let x = self.throughput();
        for (n, s) in &self.services {
            let v = s.r * x * dt;
            *self.visits.entry(n.clone()).or_default() += v;
            *self.cpu.entry(n.clone()).or_default() += v * s.p_ns;
            let d = self.plan.get(n).copied().unwrap_or(0.0);
            if self.cap_when_slow && d > 0.0 {
                *self.dropped.entry(n.clone()).or_default() += v * d;
            } else {
                *self.owed.entry(n.clone()).or_default() += v * d;
            }
        }
    }
}

/// The shared fake world. Clone it freely.
#[derive(Clone, Debug)]
pub struct FakeWorld {
    state: Arc<Mutex<State>>,
}

impl FakeWorld {
    /// A world whose entry service is `entry` (it must be in `services`).
    pub fn new(services: &[(&str, FakeService)], entry: &str) -> FakeWorld {
        let services: BTreeMap<String, FakeService> = services
            .iter()
            .map(|(n, s)| ((*n).to_owned(), *s))
            .collect();
        let entry_port = services[entry].port;
        let now = Instant::now();
        FakeWorld {
            state: Arc::new(Mutex::new(State {
                services,
                entry_port,
                plan: BTreeMap::new(),
                truth: None,
                t0: now,
                last: now,
                visits: BTreeMap::new(),
                cpu: BTreeMap::new(),
                owed: BTreeMap::new(),
                dropped: BTreeMap::new(),
                noise: vec![1.0],
                noise_idx: 0,
                log: Vec::new(),
                registered: Vec::new(),
                specs: BTreeMap::new(),
                slow_error_ratio: 0.0,
                cap_when_slow: false,
                fail_set_slowdown: false,
                fail_renew_lease: false,
                owner: None,
                probe_fails: false,
                fail_stats_after: None,
                restart_at: None,
                instance: "fake-1".into(),
                stats_calls: 0,
                schedule: None,
            })),
        }
    }

    /// A 3-service chain front → cart → db (front is the entry on port 8080); cart is the
    /// bottleneck: terms front 100 µs, cart 1·600/2 = 300 µs, db 2·50/1 = 100 µs.
    pub fn chain() -> FakeWorld {
        FakeWorld::new(
            &[
                (
                    "front",
                    FakeService {
                        r: 1.0,
                        p_ns: 100_000.0,
                        c: 1.0,
                        port: 8080,
                    },
                ),
                (
                    "cart",
                    FakeService {
                        r: 1.0,
                        p_ns: 600_000.0,
                        c: 2.0,
                        port: 8081,
                    },
                ),
                (
                    "db",
                    FakeService {
                        r: 2.0,
                        p_ns: 50_000.0,
                        c: 1.0,
                        port: 8082,
                    },
                ),
            ],
            "front",
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Multiplicative noise factors applied to successive load windows (cycled).
    pub fn set_noise(&self, factors: Vec<f64>) {
        let mut s = self.lock();
        s.noise = factors;
        s.noise_idx = 0;
    }
    /// The load reports this error ratio while a plan is in force.
    pub fn set_slow_error_ratio(&self, r: f64) {
        self.lock().slow_error_ratio = r;
    }
    /// The agent's safety cap drops all debt while a plan is in force.
    pub fn set_cap_when_slow(&self, on: bool) {
        self.lock().cap_when_slow = on;
    }
    /// `PUT /v1/slowdown` fails.
    pub fn set_fail_set_slowdown(&self, on: bool) {
        self.lock().fail_set_slowdown = on;
    }
    /// `POST /v1/slowdown/renew` answers 404, as an agent whose lease for us lapsed does.
    pub fn set_fail_renew_lease(&self, on: bool) {
        self.lock().fail_renew_lease = on;
    }
    /// The owner named by the last plan put.
    pub fn plan_owner(&self) -> Option<String> {
        self.lock().owner.clone()
    }
    /// The entry does not answer.
    pub fn set_probe_fails(&self, on: bool) {
        self.lock().probe_fails = on;
    }
    /// `GET /v1/stats` fails from the n-th call on.
    pub fn set_fail_stats_after(&self, n: usize) {
        self.lock().fail_stats_after = Some(n);
    }
    /// The agent restarts right before the n-th `GET /v1/stats` call: a new instance id, its
    /// counters from zero.
    pub fn set_restart_at(&self, n: usize) {
        self.lock().restart_at = Some(n);
    }
    /// Every call, in order: `set_slowdown`, `clear_slowdown`, `truth`, `restore`, `window`, ...
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }
    /// The plan in force now (ns per visit).
    /// The tail schedule the fake agent holds.
    pub fn schedule(&self) -> Option<api::SchedulingPlan> {
        self.lock().schedule.clone()
    }

    pub fn plan(&self) -> BTreeMap<String, f64> {
        self.lock().plan.clone()
    }
    /// True while a ground-truth change is applied.
    pub fn truth_applied(&self) -> bool {
        self.lock().truth.is_some()
    }
    /// Services registered now.
    /// The last spec `name` was registered with.
    pub fn spec_of(&self, name: &str) -> Option<api::ServiceSpec> {
        self.lock().specs.get(name).cloned()
    }

    pub fn registered(&self) -> Vec<String> {
        self.lock().registered.clone()
    }
    /// The true throughput with `target` lowered by `delta_ns` per visit and no plan.
    pub fn true_throughput(&self, target: &str, delta_ns: f64) -> f64 {
        let s = self.lock();
        let mut copy = State {
            services: s.services.clone(),
            entry_port: s.entry_port,
            plan: BTreeMap::new(),
            truth: Some((target.to_owned(), delta_ns)),
            t0: s.t0,
            last: s.last,
            visits: BTreeMap::new(),
            cpu: BTreeMap::new(),
            owed: BTreeMap::new(),
            dropped: BTreeMap::new(),
            noise: vec![],
            noise_idx: 0,
            log: vec![],
            registered: vec![],
            specs: BTreeMap::new(),
            slow_error_ratio: 0.0,
            cap_when_slow: false,
            fail_set_slowdown: false,
            fail_renew_lease: false,
            owner: None,
            probe_fails: false,
            fail_stats_after: None,
            restart_at: None,
            instance: String::new(),
            stats_calls: 0,
            schedule: None,
        };
        copy.plan.clear();
        copy.throughput()
    }

    /// An agent, an app and a load on this world.
    pub fn backends(&self) -> Backends {
        Backends {
            agents: vec![Arc::new(FakeAgent(self.clone())) as SharedAgent],
            app: Box::new(FakeApp(self.clone())),
            load: Arc::new(FakeLoadStarter(self.clone())),
            lease: Lease::new("fake-experiment", DEFAULT_LEASE),
            kubernetes: std::sync::Arc::default(),
        }
    }
}

/// The fake agent.
pub struct FakeAgent(pub FakeWorld);

impl AgentClient for FakeAgent {
    fn name(&self) -> String {
        "fake".into()
    }
    /// The Kubernetes node the fake pods of pod and label selectors run on.
    fn node(&self) -> Option<String> {
        Some("fake-node".into())
    }
    fn health(&self) -> Result<api::Health, AgentError> {
        Ok(api::Health {
            status: "ok".into(),
            version: "fake".into(),
            features: BTreeMap::new(),
            reasons: Vec::new(),
            warnings: Vec::new(),
            sync_addr: None,
            instance: self.0.lock().instance.clone(),
        })
    }
    fn put_service(
        &self,
        name: &str,
        spec: &api::ServiceSpec,
    ) -> Result<api::ServiceInfo, AgentError> {
        let mut s = self.0.lock();
        let port = s.services.get(name).map(|f| f.port);
        let resolves = match (&spec.ports, port) {
            (Some(ports), Some(p)) => ports.contains(&p),
            (None, Some(_)) => true,
            _ => false,
        };
        if !s.registered.iter().any(|r| r == name) {
            s.registered.push(name.to_owned());
        }
        s.specs.insert(name.to_owned(), spec.clone());
        Ok(api::ServiceInfo {
            name: name.to_owned(),
            spec: spec.clone(),
            pids: if resolves { vec![1000] } else { vec![] },
            listen_ports: if resolves {
                port.into_iter().collect()
            } else {
                vec![]
            },
            excluded: vec![],
        })
    }
    fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.0.lock().registered.retain(|r| r != name);
        Ok(())
    }
    fn stats(&self) -> Result<api::Stats, AgentError> {
        let mut s = self.0.lock();
        s.stats_calls += 1;
        if let Some(n) = s.fail_stats_after
            && s.stats_calls >= n
        {
            return Err(AgentError::Unreachable {
                agent: "fake".into(),
                detail: "connection refused".into(),
            });
        }
        s.advance();
        if s.restart_at == Some(s.stats_calls) {
            s.instance = "fake-2".into();
            s.visits.clear();
            s.cpu.clear();
        }
        let ts = ((s.last - s.t0).as_secs_f64() * DILATION * 1e9) as u64;
        let services = s
            .services
            .iter()
            .filter(|(n, _)| s.registered.contains(n))
            .map(|(n, f)| {
                (
                    n.clone(),
                    api::ServiceStats {
                        visits: s.visits.get(n).copied().unwrap_or(0.0) as u64,
                        cpu_ns: s.cpu.get(n).copied().unwrap_or(0.0) as u64,
                        cores: f.c,
                        pids: vec![1000],
                        owed_ns: s.owed.get(n).copied().unwrap_or(0.0) as u64,
                        dropped_ns: s.dropped.get(n).copied().unwrap_or(0.0) as u64,
                        ..Default::default()
                    },
                )
            })
            .collect();
        Ok(api::Stats {
            timestamp_ns: ts,
            services,
            instance: s.instance.clone(),
            ..Default::default()
        })
    }
    fn set_slowdown(&self, plan: &api::SlowdownPlan) -> Result<(), AgentError> {
        let mut s = self.0.lock();
        if s.fail_set_slowdown {
            return Err(AgentError::Failed {
                agent: "fake".into(),
                message: "injected failure".into(),
            });
        }
        s.advance();
        s.owner.clone_from(&plan.owner);
        s.plan = plan
            .services
            .iter()
            .map(|(n, d)| (n.clone(), d.delay_per_visit_ns as f64))
            .collect();
        s.log.push("set_slowdown".into());
        Ok(())
    }
    fn clear_slowdown(&self, _owner: &str) -> Result<(), AgentError> {
        let mut s = self.0.lock();
        s.advance();
        s.plan.clear();
        s.log.push("clear_slowdown".into());
        Ok(())
    }
    /// Not logged: renewals come from the keeper's thread at any moment, the log is for the
    /// runner's own order of calls.
    /// Holds one schedule of registered services, like the agent (no policies change here).
    fn set_scheduling(
        &self,
        plan: &api::SchedulingPlan,
    ) -> Result<api::SchedulingPlan, AgentError> {
        let mut s = self.0.lock();
        if let Some(unknown) = plan.services.iter().find(|n| !s.registered.contains(*n)) {
            return Err(AgentError::Rejected {
                agent: "fake".into(),
                what: "PUT /v1/scheduling".into(),
                status: 400,
                message: format!("services: unknown service {unknown:?}"),
            });
        }
        s.schedule = Some(plan.clone());
        s.log.push(format!("set_scheduling {:?}", plan.policy));
        Ok(plan.clone())
    }
    fn scheduling(&self) -> Result<Option<api::SchedulingPlan>, AgentError> {
        Ok(self.0.lock().schedule.clone())
    }
    fn clear_scheduling(&self, _owner: &str) -> Result<(), AgentError> {
        let mut s = self.0.lock();
        if s.schedule.take().is_some() {
            s.log.push("clear_scheduling".into());
        }
        Ok(())
    }
    fn renew_scheduling(
        &self,
        _owner: &str,
        _lease: std::time::Duration,
    ) -> Result<(), AgentError> {
        if self.0.lock().schedule.is_some() {
            Ok(())
        } else {
            Err(AgentError::Rejected {
                agent: "fake".into(),
                what: "POST /v1/scheduling/renew".into(),
                status: 404,
                message: "no schedule holds a lease to renew".into(),
            })
        }
    }
    fn renew_lease(&self, _owner: &str, _lease: std::time::Duration) -> Result<(), AgentError> {
        if self.0.lock().fail_renew_lease {
            return Err(AgentError::Rejected {
                agent: "fake".into(),
                what: "POST /v1/slowdown/renew".into(),
                status: 404,
                message: "no slowdown plan holds a lease to renew".into(),
            });
        }
        Ok(())
    }
}

/// The fake app: one `port:` selector per service; supports ground truth.
pub struct FakeApp(pub FakeWorld);

impl App for FakeApp {
    fn services(&self) -> BTreeMap<String, api::ServiceSpec> {
        self.0
            .lock()
            .services
            .iter()
            .map(|(n, f)| {
                (
                    n.clone(),
                    api::ServiceSpec {
                        ports: Some(vec![f.port]),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }
    fn entry_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.0.lock().entry_port)
    }
    fn supports_truth(&self) -> bool {
        true
    }
    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        let mut s = self.0.lock();
        s.advance();
        s.truth = Some((service.to_owned(), change.delta_ns));
        s.log.push("truth".into());
        Ok(())
    }
    fn restore_truth(&mut self) -> Result<(), String> {
        let mut s = self.0.lock();
        s.advance();
        if s.truth.take().is_some() {
            s.log.push("restore".into());
        }
        Ok(())
    }
}

/// Starts [`FakeLoad`]s.
pub struct FakeLoadStarter(pub FakeWorld);

impl LoadStarter for FakeLoadStarter {
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String> {
        if self.0.lock().probe_fails {
            return Err(format!("connection refused ({})", cfg.url));
        }
        Ok(200)
    }
    fn start(&self, _cfg: &LoadConfig) -> Result<Box<dyn Load>, String> {
        self.0.lock().log.push("load_start".into());
        Ok(Box::new(FakeLoad(self.0.clone())))
    }
}

/// A load whose windows report the world's throughput times the next noise factor.
pub struct FakeLoad(pub FakeWorld);

impl Load for FakeLoad {
    fn begin_window(&mut self) {}
    fn end_window(&mut self) -> LoadWindow {
        let mut s = self.0.lock();
        let factor = if s.noise.is_empty() {
            1.0
        } else {
            s.noise[s.noise_idx % s.noise.len()]
        };
        s.noise_idx += 1;
        let rps = s.throughput() * factor;
        let error_ratio = if s.plan.is_empty() {
            0.0
        } else {
            s.slow_error_ratio
        };
        let phase = if !s.plan.is_empty() {
            "slow"
        } else if s.truth.is_some() {
            "truth"
        } else {
            "base"
        };
        s.log.push(format!("window:{phase}"));
        LoadWindow {
            secs: 1.0,
            completed_ok: rps as u64,
            rps,
            errors: 0,
            error_ratio,
            p50_us: 1000.0,
            p99_us: 5000.0,
            generator_bound: false,
        }
    }
    fn stop(&mut self) {
        self.0.lock().log.push("load_stop".into());
    }
}

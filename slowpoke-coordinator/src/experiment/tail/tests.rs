//! The comparison's protocol on the fake world (no root): which schedule each window ran
//! under, and that none is left on any exit path. The load is a stand-in whose latencies depend
//! on the schedule in force, so the ratios are known exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use slowpoke_api::agent::{self as api, SchedulingPolicy};
use slowpoke_api::coordinator::TailArm;

use super::{LatencyWindow, OpenLoad, TailSpec, run_tail};
use crate::agents::{AgentClient, AgentError, SharedAgent};
use crate::experiment::{LoadConfig, Monitor, RunError};
use crate::fake::{FakeAgent, FakeApp, FakeWorld};
use crate::lease::{DEFAULT_LEASE, Lease};

/// Answers each window with latencies set by the schedule in force: 1000–2000 µs without one,
/// half that under oldest-first, double under per-service FIFO. Cancels the comparison or
/// fails at a given window.
struct ByPolicy {
    world: FakeWorld,
    seen: Mutex<Vec<Option<SchedulingPolicy>>>,
    cancel_at: Option<(usize, Monitor)>,
    fail_at: Option<usize>,
}

impl ByPolicy {
    fn new(world: &FakeWorld) -> ByPolicy {
        ByPolicy {
            world: world.clone(),
            seen: Mutex::new(Vec::new()),
            cancel_at: None,
            fail_at: None,
        }
    }
    fn seen(&self) -> Vec<Option<SchedulingPolicy>> {
        self.seen.lock().unwrap().clone()
    }
}

impl OpenLoad for ByPolicy {
    fn window(
        &self,
        cfg: &LoadConfig,
        rate_rps: f64,
        _warmup: Duration,
        length: Duration,
        _seed: u64,
    ) -> Result<LatencyWindow, String> {
        assert!(!cfg.url.is_empty(), "the entry URL is filled in");
        let policy = self.world.schedule().map(|p| p.policy);
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(policy);
            seen.len()
        };
        if let Some((at, m)) = &self.cancel_at
            && n == *at
        {
            m.cancel();
        }
        if self.fail_at == Some(n) {
            return Err("the generator died".into());
        }
        let scale = match policy {
            None => 2,
            Some(SchedulingPolicy::OldestFirst) => 1,
            Some(SchedulingPolicy::PerServiceFifo) => 4,
        };
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in 500..1000 {
            h.record(v * scale).unwrap();
        }
        Ok(LatencyWindow {
            secs: length.as_secs_f64(),
            completed_ok: (rate_rps * length.as_secs_f64()) as u64,
            errors: 0,
            latency_us: h,
            failed_as_us: 5_000_000,
        })
    }
}

fn spec(repetitions: usize) -> TailSpec {
    TailSpec {
        rate_rps: 100.0,
        window_s: 1.0,
        warmup_s: 0.0,
        repetitions,
        ..TailSpec::default()
    }
}

fn agents(w: &FakeWorld) -> Vec<SharedAgent> {
    vec![Arc::new(FakeAgent(w.clone())) as SharedAgent]
}

fn lease() -> Lease {
    Lease::new("tail-test", DEFAULT_LEASE)
}

#[test]
fn arms_interleave_each_under_its_schedule_and_none_is_left() {
    let w = FakeWorld::chain();
    let load = ByPolicy::new(&w);
    let r = run_tail(
        &spec(2),
        &FakeApp(w.clone()),
        &agents(&w),
        lease(),
        &load,
        &Monitor::new(),
    )
    .expect("runs");
    let arms = [
        None,
        Some(SchedulingPolicy::OldestFirst),
        Some(SchedulingPolicy::PerServiceFifo),
    ];
    assert_eq!(load.seen(), [arms, arms].concat());
    assert!(r.arms.iter().all(|a| a.ran));
    let ratio = |arm: TailArm| {
        r.arms
            .iter()
            .find(|a| a.arm == arm)
            .unwrap()
            .p99_vs_default
            .unwrap()
            .value
    };
    assert!((ratio(TailArm::OldestFirst) - 0.5).abs() < 0.01, "{r:?}");
    assert!((ratio(TailArm::PerServiceFifo) - 2.0).abs() < 0.02, "{r:?}");
    assert_eq!(r.windows.len(), 6);
    assert_eq!(w.schedule(), None, "a schedule is left");
    assert_eq!(r.services, vec!["cart", "db", "front"]);
}

#[test]
fn the_schedule_is_removed_after_a_cancel_and_after_a_failure() {
    // Cancelled during the oldest-first window of the first repetition.
    let w = FakeWorld::chain();
    let monitor = Monitor::new();
    let load = ByPolicy {
        cancel_at: Some((2, monitor.clone())),
        ..ByPolicy::new(&w)
    };
    let r = run_tail(
        &spec(3),
        &FakeApp(w.clone()),
        &agents(&w),
        lease(),
        &load,
        &monitor,
    );
    assert!(matches!(r, Err(RunError::Cancelled)), "{r:?}");
    assert_eq!(load.seen()[1], Some(SchedulingPolicy::OldestFirst));
    assert_eq!(w.schedule(), None, "the schedule outlived the cancel");
    // The load fails under per-service FIFO.
    let w = FakeWorld::chain();
    let load = ByPolicy {
        fail_at: Some(3),
        ..ByPolicy::new(&w)
    };
    let r = run_tail(
        &spec(3),
        &FakeApp(w.clone()),
        &agents(&w),
        lease(),
        &load,
        &Monitor::new(),
    );
    assert!(
        matches!(&r, Err(RunError::Load(m)) if m.contains("died")),
        "{r:?}"
    );
    assert_eq!(w.schedule(), None, "the schedule outlived the failure");
    assert!(
        w.log().iter().any(|l| l == "clear_scheduling"),
        "{:?}",
        w.log()
    );
}

/// The fake agent without its scheduling calls: what an agent older than `/v1/scheduling` is.
struct Older(FakeAgent);

impl AgentClient for Older {
    fn name(&self) -> String {
        self.0.name()
    }
    fn health(&self) -> Result<api::Health, AgentError> {
        self.0.health()
    }
    fn put_service(&self, n: &str, s: &api::ServiceSpec) -> Result<api::ServiceInfo, AgentError> {
        self.0.put_service(n, s)
    }
    fn delete_service(&self, n: &str) -> Result<(), AgentError> {
        self.0.delete_service(n)
    }
    fn stats(&self) -> Result<api::Stats, AgentError> {
        self.0.stats()
    }
    fn set_slowdown(&self, p: &api::SlowdownPlan) -> Result<(), AgentError> {
        self.0.set_slowdown(p)
    }
    fn clear_slowdown(&self, o: &str) -> Result<(), AgentError> {
        self.0.clear_slowdown(o)
    }
    fn renew_lease(&self, o: &str, l: Duration) -> Result<(), AgentError> {
        self.0.renew_lease(o, l)
    }
}

#[test]
fn an_agent_without_tail_scheduling_leaves_its_arms_not_run_and_default_measured() {
    let w = FakeWorld::chain();
    let load = ByPolicy::new(&w);
    let older: Vec<SharedAgent> = vec![Arc::new(Older(FakeAgent(w.clone())))];
    let r = run_tail(
        &spec(2),
        &FakeApp(w.clone()),
        &older,
        lease(),
        &load,
        &Monitor::new(),
    )
    .expect("default still runs");
    assert_eq!(load.seen(), vec![None, None], "only default windows");
    let default = &r.arms[0];
    assert!(default.ran && default.p99_us.is_some());
    for a in &r.arms[1..] {
        assert!(!a.ran, "{a:?}");
        let e = a.error.as_deref().unwrap();
        assert!(e.contains("lacks tail scheduling"), "{e}");
    }
}

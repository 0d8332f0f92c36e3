//! The agent's settings and their validation (checked once, at start).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    error::AgentError,
    kernel::DEFAULT_QUANTUM_NS,
    safety::{
        lease::{LeaseLimits, MIN_LEASE},
        protect::ProtectRules,
        watchdog::FEED_PERIOD,
    },
};

/// Lease of a plan that names none (`lease_ms`): long enough for a person with curl to look at
/// the effect, short enough that a dead client's plan goes away soon.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Longest lease the agent grants unless its operator says otherwise (`--max-lease-s`).
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_mins(5);

/// The most a plan may ask for in `max_stopped_share` unless the operator says otherwise
/// (`--max-plan-stopped-share`). Large enough for a virtual speedup of 90 % of a busy service's
/// time (the others stopped about 90 % of the time, docs/model.md "The stopped share a plan
/// needs"), small enough that every service still runs at least 100 ms of every second, so the
/// health checks and timeouts of a second or more around it keep seeing it alive.
pub const DEFAULT_MAX_PLAN_STOPPED_SHARE: f64 = 0.9;

/// The shortest [`AgentConfig::progress_limit`].
const PROGRESS_LIMIT_MIN: Duration = Duration::from_secs(5);

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
    /// The most a plan may ask for in its own `max_stopped_share`, which applies while the plan
    /// is in force (default 0.9, `--max-plan-stopped-share`; at most 1). A default cap above it
    /// raises it: see [`AgentConfig::plan_ceiling`].
    pub max_plan_stopped_share: f64,
    /// Sliding window of the safety cap (default 1 s).
    pub stop_window: Duration,
    /// How often selectors are re-resolved (default 250 ms).
    pub resolve_interval: Duration,
    /// A delayed service whose debt did not grow for this long is idle: its debt below the
    /// quantum is paid (default 50 ms).
    pub idle_interval: Duration,
    /// Window over which threads doing socket work count as serving threads (default 2 s).
    pub serving_window: Duration,
    /// Processes never stopped, and the optional tenant confinement (default: pid 1, kernel
    /// threads, the agent and its cgroup, the names of `DEFAULT_PROTECTED_COMMS`).
    pub protect: ProtectRules,
    /// Lease of a plan that names none (default 15 s; at most `max_lease`).
    pub default_lease: Duration,
    /// Longest lease a plan may ask for (default 300 s, `--max-lease-s`).
    pub max_lease: Duration,
    /// The guardian's watchdog: once the agent made no progress for this long (stopped by an
    /// outsider, hung), the guardian resumes every listed process, and keeps doing so while it
    /// stays stuck (default 1 s; see `safety/watchdog.rs`).
    pub watchdog_after: Duration,
    /// The UDP address where peer agents' synchronized-pause datagrams arrive (`--sync-listen`;
    /// default none: an agent without it takes no network input, and refuses plans with
    /// `sync_peers`).
    pub sync_listen: Option<SocketAddr>,
    /// `sync_listen` was derived (from `--listen`), not asked for: when it cannot be bound the
    /// agent runs without a sync socket instead of failing.
    pub sync_listen_defaulted: bool,
    /// The node's CPUs (`--node-cpus`): what the node stats of `GET /v1/stats` count, so that
    /// a node confined to a cpuset (a test-bed node, a VM slice) reports its own CPUs and the
    /// coordinator's node bound is per node. None: every online CPU.
    pub node_cpus: Option<Vec<u32>>,
    /// The node is this cgroup v2 directory (`--node-cgroup`): the node stats' busy time is its
    /// processes' CPU time, so programs on the same CPUs but not on the node (the one-machine
    /// cluster's load generator) do not count as the node's load. None: everything on the CPUs.
    pub node_cgroup: Option<std::path::PathBuf>,
    /// Where `pods` selectors look for the kubelet's pod cgroups (`--pod-cgroup-root`,
    /// repeatable). Empty (the default): the cgroup2 mount, then the v1 `cpu` and `pids`
    /// hierarchies (`registry::pods::default_roots`).
    pub pod_cgroup_roots: Vec<PathBuf>,
    /// TEST ONLY (cargo feature `test-hooks`, absent from release builds). Keep running when the
    /// kernel programs do not load (no visits, no plans) and enable the manual pause endpoint
    /// `POST /v1/debug/pause/{name}`.
    #[cfg(feature = "test-hooks")]
    pub test_hooks: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/run/slowpoke"),
            quantum_ns: DEFAULT_QUANTUM_NS,
            max_delay_per_visit_ns: 100_000_000,
            max_stopped_share: 0.5,
            max_plan_stopped_share: DEFAULT_MAX_PLAN_STOPPED_SHARE,
            stop_window: Duration::from_secs(1),
            resolve_interval: Duration::from_millis(250),
            idle_interval: Duration::from_millis(50),
            serving_window: Duration::from_secs(2),
            protect: ProtectRules::default(),
            default_lease: DEFAULT_LEASE,
            max_lease: DEFAULT_MAX_LEASE,
            watchdog_after: Duration::from_secs(1),
            sync_listen: None,
            sync_listen_defaulted: false,
            node_cpus: None,
            node_cgroup: None,
            pod_cgroup_roots: Vec::new(),
            #[cfg(feature = "test-hooks")]
            test_hooks: false,
        }
    }
}

impl AgentConfig {
    /// Refuses settings the agent cannot honour, saying which one to change.
    pub(super) fn validate(&self) -> Result<(), AgentError> {
        if !(self.max_stopped_share > 0.0 && self.max_stopped_share <= 1.0) {
            return Err(AgentError::BadRequest(format!(
                "max_stopped_share must be in (0, 1], got {}",
                self.max_stopped_share
            )));
        }
        if !(self.max_plan_stopped_share > 0.0 && self.max_plan_stopped_share <= 1.0) {
            return Err(AgentError::BadRequest(format!(
                "max_plan_stopped_share (--max-plan-stopped-share) must be in (0, 1], got {}",
                self.max_plan_stopped_share
            )));
        }
        if !(1_000..=1_000_000_000).contains(&self.quantum_ns) {
            return Err(AgentError::BadRequest(format!(
                "the quantum must be between 1 µs and 1 s, got {} ns",
                self.quantum_ns
            )));
        }
        self.protect.validate().map_err(AgentError::BadRequest)?;
        if self.resolve_interval.is_zero() || self.stop_window.is_zero() {
            return Err(AgentError::BadRequest(
                "resolve_interval and stop_window must be positive".into(),
            ));
        }
        if self.max_lease < MIN_LEASE || !(MIN_LEASE..=self.max_lease).contains(&self.default_lease)
        {
            return Err(AgentError::BadRequest(format!(
                "the maximum lease must be at least {} ms and the default lease between that and \
                 the maximum; got a default of {} ms and a maximum of {} ms (--max-lease-s)",
                MIN_LEASE.as_millis(),
                self.default_lease.as_millis(),
                self.max_lease.as_millis()
            )));
        }
        if self.watchdog_after < 4 * FEED_PERIOD {
            return Err(AgentError::BadRequest(format!(
                "watchdog_after must be at least {} ms (four progress stamps), got {} ms",
                (4 * FEED_PERIOD).as_millis(),
                self.watchdog_after.as_millis()
            )));
        }
        Ok(())
    }

    /// The most a plan may ask for: `max_plan_stopped_share`, or the default cap when that is
    /// higher (an operator who lets every service be stopped 95 % of the time lets plans too).
    pub fn plan_ceiling(&self) -> f64 {
        self.max_plan_stopped_share.max(self.max_stopped_share)
    }

    /// The lease lengths clients may ask for.
    pub(super) fn lease_limits(&self) -> LeaseLimits {
        LeaseLimits {
            default: self.default_lease,
            max: self.max_lease,
        }
    }

    /// How long the agent may go without a resolver pass before it counts as hung: its
    /// progress stamp then stops, and the guardian's watchdog acts `watchdog_after` later. Long
    /// enough for what legitimately holds the registry lock (removing a plan waits up to 3 s
    /// per service for its last pause), at least 5 s.
    pub fn progress_limit(&self) -> Duration {
        (4 * self.resolve_interval).max(PROGRESS_LIMIT_MIN)
    }
}

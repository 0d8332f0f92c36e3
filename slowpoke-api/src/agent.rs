//! The agent's HTTP API types. They are the documentation of the wire format (docs/api.md mirrors
//! them, and the agent's OpenAPI document is generated from them) and are shared with the
//! coordinator, which talks to agents in-process or over HTTP with exactly these types.
//!
//! Fixed interface (docs/api.md): extend, don't rename.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::ErrorBody;

mod scheduling;
pub use scheduling::{SchedulingPlan, SchedulingPolicy, SchedulingStats};

/// How a service is found on this node. Exactly one selector per service.
///
/// Wire form: `{"ports":[8080]}`, `{"pids":[123,124]}`, `{"cgroup":"/sys/fs/cgroup/..."}`,
/// `{"comm":"nginx"}`, `{"pods":[{"uid":"...","name":"shop/cart-0","containers":["..."]}]}`
/// (optionally with `"ports"`: then the ports are looked up inside the pods' network
/// namespaces). Optional extras in the same object: `"cores"` (override of the measured
/// effective parallelism) and `"listen_ports"` (the service's listening ports when they cannot be
/// discovered from /proc).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Processes owning a listening TCP socket on one of these ports: in the agent's network
    /// namespace (the host's), or, given with `pods`, in the pods' own network namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub ports: Option<Vec<u16>>,
    /// These processes (thread-group ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub pids: Option<Vec<u32>>,
    /// Every process in this cgroup (v1 or v2 path, absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Every process whose `comm` (/proc/PID/comm) equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Every process of these Kubernetes pods on this node (of the listed containers only,
    /// when a pod lists any), found in the kubelet's cgroups (systemd or cgroupfs driver,
    /// cgroup v2 or v1). The coordinator fills it in from a `kubernetes` selector: the agent
    /// never talks to the Kubernetes API. Empty only with `may_be_absent` (none of the
    /// service's pods is on this node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<PodMember>>,
    /// A pod or label selector (`pod:NS/NAME`, `label:NS/k=v`) for the coordinator to resolve
    /// through the Kubernetes API into `pods`, one node's pods per agent. Agents refuse it (400):
    /// only the coordinator's `POST /v1/experiments` and `slowpoke what-if` take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeSelector>,
    /// Override of the effective parallelism `cores` reported in stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<f64>,
    /// Listening ports of the service when they cannot be discovered from /proc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_ports: Option<Vec<u16>>,
    /// The service may have no process on this agent's node (an app spread over several
    /// nodes; the coordinator sets it when it talks to more than one agent): when the selector
    /// matches nothing here, or only processes outside the agent's `--allow-cgroup` (another
    /// node's, on a shared kernel), registering succeeds with no members (`pids: []`), and
    /// processes that appear later join at the next resolution. Without it, such a selector is
    /// refused (400, or 403 for protected processes), which catches a mistyped selector.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_be_absent: bool,
}

/// One Kubernetes pod of a service, as the coordinator resolved it for the agent of the pod's
/// node (`ServiceSpec::pods`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PodMember {
    /// The pod's `metadata.uid`: the kubelet names the pod's cgroup after it.
    pub uid: String,
    /// `NAMESPACE/NAME`, for messages.
    pub name: String,
    /// Ids of the pod's running containers (`status.containerStatuses[].containerID` without
    /// the `containerd://`, `cri-o://` or `docker://` prefix). Empty: every process of the pod,
    /// its sandbox (`pause`) included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
}

/// Pods chosen by name or by labels in one namespace (`pod:NS/NAME`, `label:NS/k=v[,k=v]`):
/// the coordinator resolves it through the Kubernetes API (docs/api.md, "Pod and label
/// selectors").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KubeSelector {
    pub namespace: String,
    /// One pod by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Every pod carrying all these labels (a Deployment's replicas).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl KubeSelector {
    /// How the user wrote it (`pod:shop/cart-0`, `label:shop/app=cart`), for messages.
    pub fn display(&self) -> String {
        match &self.pod {
            Some(p) => format!("pod:{}/{p}", self.namespace),
            None => format!("label:{}/{}", self.namespace, self.label_selector()),
        }
    }

    /// The labels as the API's `labelSelector` query (`app=cart,tier=web`).
    pub fn label_selector(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A registered service as the agent sees it now (`GET /v1/services`, `PUT` answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceInfo {
    /// `[A-Za-z0-9._-]{1,64}`.
    pub name: String,
    pub spec: ServiceSpec,
    /// Processes currently resolved from the selector.
    pub pids: Vec<u32>,
    /// Listening TCP ports: a receive on one of them is a visit.
    pub listen_ports: Vec<u16>,
    /// Processes the selector matched that the agent never stops (protected: pid 1, kernel
    /// threads, the agent and its cgroup, protected names, outside `--allow-uid` /
    /// `--allow-cgroup`), with the reason; they are not members. Re-checked at every resolution.
    #[serde(default)]
    pub excluded: Vec<ExcludedProcess>,
}

/// A process a selector matched but the agent leaves out because it is protected
/// (docs/agent.md, "Protected processes").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExcludedProcess {
    pub pid: u32,
    /// Its name (`/proc/PID/comm`).
    pub comm: String,
    /// Why it is protected, e.g. `pid 1, the node's init`.
    pub reason: String,
}

/// `GET /v1/services`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceList {
    pub services: BTreeMap<String, ServiceInfo>,
}

/// Per-service counters of `GET /v1/stats`. Every `u64` is a monotonic counter since the service
/// was registered; consumers take differences between two snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStats {
    /// Requests served (see docs/model.md, "Visits without tracing").
    pub visits: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Achieved pause time: stop sent -> resume sent, summed over pauses.
    pub pause_ns: u64,
    /// CPU time used by the service's processes (user + system), all threads.
    pub cpu_ns: u64,
    /// Time the service's threads were runnable but waited for a CPU (the scheduler's
    /// `run_delay`, summed over threads; 0 without scheduler statistics). With `cpu_ns` it tells
    /// a service that had no work (idle) from one crowded out by others on shared cores.
    #[serde(default)]
    pub wait_ns: u64,
    /// Timeslices the service's threads ran on a CPU (the third field of the scheduler's
    /// `schedstat`, summed over threads; mostly one per wake-up; 0 without scheduler statistics).
    /// Per request, it tells how often a service's threads sleep and wake between requests.
    #[serde(default)]
    pub timeslices: u64,
    /// Effective parallelism: min(usable CPUs, threads that can serve at once), or the override.
    pub cores: f64,
    pub pids: Vec<u32>,
    /// Outgoing calls (client-side requests) made by the service.
    #[serde(default)]
    pub calls_out: u64,
    /// Number of pauses taken.
    #[serde(default)]
    pub pauses: u64,
    /// Pause debt owed in total (sum of `delay_per_visit` over visits under a plan).
    #[serde(default)]
    pub owed_ns: u64,
    /// Debt dropped by the safety cap (share of wall time stopped), never paid.
    #[serde(default)]
    pub dropped_ns: u64,
    /// Spin-mode busy delay actually spent in the kernel.
    #[serde(default)]
    pub spin_ns: u64,
    /// In-kernel stops refused because the visiting process is protected (the kernel's deny
    /// maps: pid 1, the agent, its guardian and cgroup, the processes a resolution left out).
    #[serde(default)]
    pub denied_stops: u64,
    /// In-kernel stops skipped because the agent's heartbeat was stale (the agent stopped, hung
    /// or not beating): the pause went the user-space way, or not at all.
    #[serde(default)]
    pub stale_stops: u64,
    /// Stops of the service's processes the kernel refused (`EPERM`: the agent lacks
    /// `CAP_KILL` for a process of another user): those processes were not paused, and the
    /// plan's effect on them is missing.
    #[serde(default)]
    pub refused_stops: u64,
    /// True when the service's traffic makes visit counting approximate (HTTP/2, pipelining).
    #[serde(default)]
    pub visits_approximate: bool,
    /// Human-readable warnings (cap reached, approximate visits, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The service's last pauses, oldest first: only when asked with
    /// `GET /v1/stats?recent_pauses=N` (N from 0 to 512), absent otherwise. For
    /// diagnostics and benchmarks (how close synchronized pauses are, on one node or across
    /// nodes: all times are the node's `CLOCK_MONOTONIC`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_pauses: Vec<PauseInfo>,
}

/// One pause of a service as its actuator made it (`GET /v1/stats?recent_pauses=N`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PauseInfo {
    /// Why it was made: `kernel` (the service's own debt reached the quantum), `synchronized`
    /// (another service's pause, on this node or a peer node's, made it pay what it owed),
    /// `idle` (debt below the quantum paid when the service went idle), `flush` (the delay was
    /// removed), `manual`.
    pub kind: String,
    /// `CLOCK_MONOTONIC` of the stop and of the last resume sent.
    pub start_ns: u64,
    pub end_ns: u64,
    /// What the pause asked for (the achieved time is `end_ns - start_ns`).
    pub requested_ns: u64,
}

/// An outgoing connection of a registered service to an endpoint that belongs to no registered
/// service: an unpaused hidden dependency biases every prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnregisteredDependency {
    /// The registered service that calls out.
    pub from: String,
    pub addr: String,
    pub port: u16,
    /// Owning process when the endpoint is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Sends + receives seen on such connections.
    pub calls: u64,
}

/// `GET /v1/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// `CLOCK_MONOTONIC` of the agent when the snapshot was taken.
    pub timestamp_ns: u64,
    pub services: BTreeMap<String, ServiceStats>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unregistered_dependencies: Vec<UnregisteredDependency>,
    /// The node's CPUs as a whole: services on one node share them, which the model accounts
    /// for (docs/model.md, "Co-located services").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeStats>,
    /// The safety cap on stopped time: the agent's default, the most a plan may ask for, and
    /// the cap in force now. A client reads it before it installs a plan, to ask for the share
    /// its plan needs ([`SlowdownPlan::max_stopped_share`]) or to refuse up front. Absent from
    /// agents older than the field: they accept no per-plan cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_cap: Option<StopCap>,
    /// This run of the agent: a random id drawn at its start. Counters are monotonic only
    /// within one run: a client that sees the id change between two snapshots knows the agent
    /// restarted (and lost its counters, services and plan) in between. Absent from older agents.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The datagrams of synchronized pauses between nodes (the agent's `--sync-listen`
    /// socket); absent when the agent has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_sync: Option<PeerSyncStats>,
    /// What the tail scheduler did since the schedule in force began (`PUT /v1/scheduling`);
    /// absent without a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingStats>,
}

/// Counters of the synchronized-pause datagrams this agent sent to and took from its peers
/// (monotonic since the agent started). A datagram is dropped, and counted under the first
/// reason that applies, when it is malformed, when no plan with `sync_peers` is in force, when
/// its MAC does not verify with the plan's key, or when its sequence number does not exceed the
/// last one accepted from its sender (a replay or a reordering).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerSyncStats {
    /// The UDP address the agent receives on (`--sync-listen`).
    pub addr: String,
    /// Datagrams sent (one per peer per quantum pause of a delayed service here).
    pub sent: u64,
    /// Sends the kernel refused or could not queue (non-blocking: never waited for).
    pub send_failed: u64,
    /// Valid datagrams taken: each made every delayed service here pay what it owed.
    pub accepted: u64,
    pub dropped_malformed: u64,
    pub dropped_no_plan: u64,
    pub dropped_bad_mac: u64,
    pub dropped_replayed: u64,
}

/// The safety cap on the share of wall time a service may spend stopped (any sliding 1 s
/// window), as `GET /v1/stats` reports it. Shares are in (0, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StopCap {
    /// The cap outside plans that ask for their own (`--max-stopped-share`, default 0.5).
    pub max_stopped_share: f64,
    /// The most a plan may ask for in `max_stopped_share` (`--max-plan-stopped-share`, default
    /// 0.9): the operator's bound on what a network client may ask.
    pub max_plan_stopped_share: f64,
    /// The cap in force now: the plan's when it asked for one, else the default.
    pub in_force: f64,
}

/// CPU of the whole node (`/proc/stat`), monotonic counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStats {
    /// The node's CPUs: the agent's `--node-cpus` (e.g. a test-bed node's cpuset), else every
    /// online CPU.
    pub cpus: u32,
    /// CPU time spent busy (everything but idle and iowait), the node's CPUs summed.
    pub cpu_busy_ns: u64,
    /// All CPU time (busy + idle + iowait), the node's CPUs summed.
    pub cpu_total_ns: u64,
}

/// How a delay is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Stop every process of the service (SIGSTOP), sleep the owed time, resume (SIGCONT).
    #[default]
    Pause,
    /// Busy-wait the visiting thread in the kernel (bounded per visit); dedicated cores only.
    Spin,
}

/// The delay of one service in a plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceDelay {
    pub delay_per_visit_ns: u64,
}

/// `PUT /v1/slowdown` body and `GET /v1/slowdown` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SlowdownPlan {
    #[serde(default)]
    pub mode: Mode,
    /// Debt is batched into pauses of at least this long (default 1 ms; 1 µs to 1 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 1_000_000_000))]
    pub quantum_ns: Option<u64>,
    /// Synchronized pauses (pause mode only): when one service's debt triggers a pause, every
    /// other service of the plan on this node that owes anything pays it at the same moment,
    /// as the original's phases do. Default false: each service pays its own debt independently.
    /// With mode `spin` it is refused (400).
    #[serde(default)]
    pub synchronized: bool,
    pub services: BTreeMap<String, ServiceDelay>,
    /// How long the plan stays in force without a renewal, ms: when it lapses the agent removes
    /// the plan and resumes every member, so a client that dies (SIGKILL, out of memory, lost
    /// network) cannot leave services slowed down. Default: the agent's default lease (15 s);
    /// at most the maximum its operator set (`--max-lease-s`, default 300 s), above it 400.
    /// Renew with `POST /v1/slowdown/renew` ([`LeaseRenewal`]) or a PUT by the same owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Who holds the plan (the coordinator sends its experiment id; default `anonymous`). While
    /// the lease is live, a PUT or DELETE by another owner is refused with 409 naming the holder.
    /// `[A-Za-z0-9._:@-]{1,128}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The share of wall time each service of the plan may spend stopped while this plan is in
    /// force (its lease), instead of the agent's default cap (`--max-stopped-share`, 0.5): a
    /// virtual speedup of Δ stops the other services about that share of the time, more than
    /// the default allows for large Δ. When the plan is removed, replaced or lapses the default
    /// returns. At most the agent's ceiling (`--max-plan-stopped-share`, default 0.9; both in
    /// `GET /v1/stats` → `stop_cap`), above it 400 and nothing changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0.0, maximum = 1.0))]
    pub max_stopped_share: Option<f64>,
    /// Answers only (ignored in a PUT): what is left of the lease, ms. Absent when no plan holds
    /// a lease (no services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_remaining_ms: Option<u64>,
    /// Synchronized pauses between nodes: when a delayed service here starts a quantum pause,
    /// the agent sends a datagram to every peer, and a peer's datagram makes every delayed
    /// service here pay what it owes at once, so a synchronized plan's phases line up across
    /// nodes. Only with `synchronized: true` and mode `pause`, on an agent started with a sync
    /// socket (`--sync-listen`); 400 otherwise. The coordinator fills it when an experiment
    /// spans several agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_peers: Option<SyncPeers>,
}

/// The peers of a synchronized plan (`SlowdownPlan::sync_peers`) and the key that
/// authenticates their datagrams.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SyncPeers {
    /// 64 hex digits: a fresh random 32-byte key per experiment, shared by its agents. Every
    /// datagram carries an HMAC-SHA256 under it, so only a holder of the plan (which only an
    /// authenticated caller can install) can make a service pause. Required in a PUT; never
    /// shown back (absent from `GET /v1/slowdown`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub key: String,
    /// The other agents' sync addresses (`IP:PORT`, as their `GET /v1/health` reports
    /// `sync_addr`), at most 256. Empty: this node sends nothing (it still takes peers'
    /// datagrams).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 256))]
    pub peers: Vec<String>,
}

/// `POST /v1/slowdown/renew` body: extends the lease of the plan in force without applying it
/// again (a PUT of the same plan renews too, but re-applies it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRenewal {
    /// Must be the plan's owner (409 otherwise; 404 when no plan holds a lease any more).
    pub owner: String,
    /// The new lease from now, ms (default: the length granted last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// `GET /v1/health`. Over TCP without the token (a liveness probe) only `status` is sent:
/// version and features (which name the guardian's pid) are for authenticated callers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, `degraded` (see `reasons`) or `stopping`.
    pub status: String,
    /// The agent's version (its crate's); absent in a status-only answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Kernel features probed at start, with the reason when one is off; absent in a
    /// status-only answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, String>,
    /// Why `status` is `degraded`, each saying what to do (empty otherwise): kernel programs
    /// not loaded, guardian not running, the kernel's pause requests no longer read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What the operator should know although the agent works, e.g. that the guardian's
    /// watchdog resumed processes while the agent was stopped or hung.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The UDP address (`IP:PORT`) where this agent takes its peers' synchronized-pause
    /// datagrams (`--sync-listen`), for the coordinator to hand to the other agents in
    /// `SlowdownPlan::sync_peers`; absent when the agent has none, and in a status-only answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_addr: Option<String>,
    /// This run of the agent (as in [`Stats::instance`]); absent in a status-only answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

impl Health {
    /// The answer to a caller without credentials: the status, nothing else.
    #[must_use]
    pub fn status_only(&self) -> Health {
        Health {
            status: self.status.clone(),
            version: String::new(),
            features: BTreeMap::new(),
            reasons: Vec::new(),
            warnings: Vec::new(),
            sync_addr: None,
            instance: String::new(),
        }
    }
}

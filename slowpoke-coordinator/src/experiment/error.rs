//! [`RunError`]: why an experiment failed. Every message says what to change, naming the spec's
//! fields (`entry_service`, `truth`, ...) rather than one caller's flags: the CLI and the HTTP
//! server both run experiments.

use crate::agents::{AgentError, RegisterError};
use crate::model::ModelError;

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
    #[error(transparent)]
    Kubernetes(#[from] crate::kubernetes::KubeError),
    #[error(
        "aborted: the app's pods changed during each of {windows} windows in a row ({phase}), so none could be measured; every delay was removed. Run the experiment when the pods are stable (no rollout, no autoscaling)"
    )]
    PodsKeepChanging { phase: String, windows: usize },
    #[error("the entry URL {url} does not answer: {detail}")]
    EntryUnreachable { url: String, detail: String },
    #[error(
        "cannot tell which service owns the entry port {port} of {url} (services listening on it: {candidates}); name the entry service in `entry_service`"
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
        "aborted: the agents' safety cap dropped pause debt of {services} during the {phase} window (the plan asks for more pause than the cap allows); every delay was removed. Try a smaller optimization, or raise the agents' safety cap (--max-stopped-share, or --max-plan-stopped-share, the most a plan may ask for)"
    )]
    CapHit { phase: String, services: String },
    #[error(
        "cannot run this optimization: its plan stops `{service}` about {needed_pct:.0} % of the time, more than agent {agent} lets a plan ask for ({ceiling_pct:.0} %, slowpoke-agent --max-plan-stopped-share); it was refused before any slowed-down window. Try a smaller optimization, or have the agent's operator raise --max-plan-stopped-share (at most 1; slowpoke's in-process agent allows at least --max-stopped-share)"
    )]
    StopShareOverCeiling {
        service: String,
        needed_pct: f64,
        agent: String,
        ceiling_pct: f64,
    },
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
    #[error(
        "aborted: agent {agent} stopped answering during {during}: {detail}; every delay was removed from the agents still reachable, and its plan lapses with its lease within {lease_s:.0} s (the agent then resumes everything on its own). Check that node and its agent, then run the experiment again"
    )]
    AgentLost {
        agent: String,
        during: String,
        detail: String,
        lease_s: f64,
    },
    #[error(
        "aborted: agent {agent} restarted during {during} ({detail}): a restarted agent has lost its counters, services and plan, so the windows cannot be compared; every delay was removed. Run the experiment again once the agent is up (see its log for why it restarted)"
    )]
    AgentRestarted {
        agent: String,
        during: String,
        detail: String,
    },
}

/// How messages name the moment of an experiment a `phase` (a window's) stands for.
pub(super) fn during(phase: &str) -> String {
    if phase.starts_with("slow") {
        "the slowed-down windows".into()
    } else if phase == "base" {
        "the baseline windows".into()
    } else if phase == "truth" {
        "the ground-truth window".into()
    } else if phase.contains(' ') {
        phase.into()
    } else {
        format!("the {phase} window")
    }
}

//! What the runner drives: the application under test ([`App`]), its load ([`Load`], started by
//! a [`LoadStarter`]) and the agents, bundled as [`Backends`]. Traits, so that tests can drive
//! the same runner with a fake world (`crate::fake`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use slowpoke_api::agent as api;

use super::error::RunError;
use super::spec::LoadConfig;
use crate::agents::SharedAgent;
use crate::kubernetes::KubeAccess;
use crate::lease::Lease;

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
    /// The Kubernetes API, for pod and label selectors (connected on first use).
    pub kubernetes: Arc<KubeAccess>,
}

/// Every name in `names` must be one of the app's services.
pub(super) fn require_services<'n>(
    app: &dyn App,
    names: impl IntoIterator<Item = &'n String>,
) -> Result<(), RunError> {
    let known = app.services();
    match names.into_iter().find(|n| !known.contains_key(*n)) {
        None => Ok(()),
        Some(unknown) => Err(RunError::UnknownTarget {
            target: unknown.clone(),
            known: known.keys().cloned().collect::<Vec<_>>().join(", "),
        }),
    }
}

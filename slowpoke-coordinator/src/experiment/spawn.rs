//! The async API: [`spawn_what_if`] / [`spawn_profile`] / [`spawn_tail`] run the blocking runner on tokio's
//! blocking pool and hand back an [`ExperimentHandle`] to observe, cancel and await it.

use super::app::Backends;
use super::error::RunError;
use super::monitor::{Monitor, Progress};
use super::profile::run_profile;
use super::result::{ProfileResult, WhatIfResult};
use super::spec::{ProfileSpec, WhatIfSpec};
use super::tail::{RealOpenLoad, TailSpec, run_tail};
use super::what_if::run_what_if;
use slowpoke_api::coordinator::TailResult;

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

/// Starts a tail comparison on tokio's blocking pool, with `slowpoke-load`'s open loop (the
/// backends' closed-loop starter is not used). Needs a tokio runtime.
pub fn spawn_tail(spec: TailSpec, backends: Backends) -> ExperimentHandle<TailResult> {
    let monitor = Monitor::new();
    let m = monitor.clone();
    let join = tokio::task::spawn_blocking(move || {
        let load = RealOpenLoad::new(spec.load_priority).map_err(RunError::BadSpec)?;
        run_tail(
            &spec,
            backends.app.as_ref(),
            &backends.agents,
            backends.lease.clone(),
            &load,
            &m,
        )
    });
    ExperimentHandle { monitor, join }
}

/// Starts a profile on tokio's blocking pool. Needs a tokio runtime.
pub fn spawn_profile(spec: ProfileSpec, mut backends: Backends) -> ExperimentHandle<ProfileResult> {
    let monitor = Monitor::new();
    let m = monitor.clone();
    let join = tokio::task::spawn_blocking(move || run_profile(&spec, &mut backends, &m));
    ExperimentHandle { monitor, join }
}

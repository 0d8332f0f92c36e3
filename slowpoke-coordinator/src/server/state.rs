//! The server's state: its configuration, the experiments it started (each an [`Entry`], oldest
//! first) and a short-lived cache of the stored results' summaries.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use slowpoke_api::auth::{BearerPolicy, HostAllowList};
use slowpoke_api::coordinator::Status;
use tokio::sync::watch;

use super::blocking;
use super::request::Kind;
use super::{ApiError, Launcher, ServeConfig, ServePolicy};
use crate::agents::SharedAgent;
use crate::experiment::Monitor;
use crate::results::{self, ResultStore, StoredResult};

/// How long the list of stored results is reused before the results directory is read again.
const STORED_TTL: Duration = Duration::from_secs(3);

/// How long `DELETE` (and a shutdown) waits for the runner to remove its delays before
/// answering anyway.
pub(super) const CANCEL_WAIT: Duration = Duration::from_secs(30);

/// One experiment this server started, from its request to its end.
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) kind: Kind,
    /// What was asked, e.g. `cart 2x speedup`, until there is a result to summarize.
    pub(super) asked: String,
    pub(super) created: String,
    pub(super) status: watch::Sender<Status>,
    pub(super) monitor: Monitor,
    pub(super) agents: Vec<SharedAgent>,
    pub(super) error: Option<String>,
    pub(super) result: Option<StoredResult>,
}

pub(super) struct Inner {
    pub(super) auth: BearerPolicy,
    pub(super) hosts: Arc<HostAllowList>,
    pub(super) policy: ServePolicy,
    pub(super) store: ResultStore,
    pub(super) agents: Vec<SharedAgent>,
    pub(super) launcher: Arc<dyn Launcher>,
    pub(super) lease: Duration,
    /// Experiments of this server, oldest first.
    pub(super) experiments: Mutex<Vec<Entry>>,
    /// The stored results' summaries, and when they were read: the page polls the list every
    /// second while an experiment runs, and reading every result file each time is wasteful.
    pub(super) stored: Mutex<Option<(Instant, Vec<results::ResultSummary>)>>,
}

/// The server's shared state; build it with [`AppState::new`] and pass it to [`router`](super::router).
#[derive(Clone)]
pub struct AppState {
    pub(super) inner: Arc<Inner>,
}

impl AppState {
    /// The state of a server with this configuration and bearer rule ([`bearer_policy`](super::bearer_policy); its
    /// token, not `cfg.token`, is enforced).
    pub fn new(cfg: &ServeConfig, auth: BearerPolicy) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                auth,
                hosts: Arc::new(HostAllowList::new(
                    cfg.listen,
                    cfg.policy.allowed_hosts.iter().cloned(),
                )),
                policy: cfg.policy.clone(),
                store: ResultStore::new(cfg.results_dir.clone()),
                agents: cfg.agents.clone(),
                launcher: Arc::clone(&cfg.launcher),
                lease: cfg.lease,
                experiments: Mutex::new(Vec::new()),
                stored: Mutex::new(None),
            }),
        }
    }

    pub(super) fn experiments(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.inner
            .experiments
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn with_entry<R>(&self, id: &str, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        self.experiments().iter_mut().find(|e| e.id == id).map(f)
    }

    /// Summaries of the stored results, re-read at most every [`STORED_TTL`] (results written by
    /// the CLI show up within that time; this server's own are in memory at once).
    pub(super) async fn stored_summaries(&self) -> Result<Vec<results::ResultSummary>, ApiError> {
        {
            let g = self
                .inner
                .stored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((at, list)) = g.as_ref()
                && at.elapsed() < STORED_TTL
            {
                return Ok(list.clone());
            }
        }
        let store = self.inner.store.clone();
        let list = blocking(move || {
            store.list().map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot list the results: {e:#}"),
                )
            })
        })
        .await?;
        *self
            .inner
            .stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// Cancels the running experiment, if any, and waits until it removed its delays.
    pub async fn cancel_running(&self) {
        let active: Vec<(Monitor, watch::Receiver<Status>)> = self
            .experiments()
            .iter()
            .filter(|e| e.status.borrow().is_active())
            .map(|e| (e.monitor.clone(), e.status.subscribe()))
            .collect();
        for (m, mut rx) in active {
            m.cancel();
            let _ = tokio::time::timeout(CANCEL_WAIT, rx.wait_for(|s| !s.is_active())).await;
        }
    }
}

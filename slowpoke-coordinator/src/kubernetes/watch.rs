//! Following the selected pods during an experiment: a pod that restarts (new container ids),
//! moves, or a Deployment that scales changes the members, and a window measured across such a
//! change mixes two apps. One watch per selector, from the `resourceVersion` of the list the
//! experiment started with; any event re-lists the selector (a handful of pods) and compares
//! the members, so a missed detail of an event cannot leave a stale view. A `410 Gone` (the
//! version was compacted away) also re-lists, and the watch resumes from the new list's
//! version; a watch the server ends is resumed where it stopped.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};
use slowpoke_api::agent::KubeSelector;

use super::{Cluster, KubeError, PodSet};

/// How long one watch call lasts before it is renewed (the server may end it earlier).
const WATCH_TIMEOUT_S: u32 = 240;
/// Pause before retrying after an error (the API server restarting, a network blip).
const RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Shared {
    /// Bumped whenever a selector's members changed.
    generation: u64,
    sets: BTreeMap<String, PodSet>,
    /// The last error of each selector's watch, for the experiment's warnings.
    errors: BTreeMap<String, String>,
}

/// The watches of an experiment's pod and label selectors; stopped when dropped.
pub struct PodWatch {
    shared: Arc<Mutex<Shared>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Keeps the runtime the tasks run on.
    _cluster: Arc<Cluster>,
}

impl PodWatch {
    /// Watches each service's selector from the set it was resolved to.
    pub fn start(
        cluster: Arc<Cluster>,
        selectors: BTreeMap<String, (KubeSelector, PodSet)>,
    ) -> PodWatch {
        let shared = Arc::new(Mutex::new(Shared {
            sets: selectors
                .iter()
                .map(|(n, (_, s))| (n.clone(), s.clone()))
                .collect(),
            ..Shared::default()
        }));
        let tasks = selectors
            .into_iter()
            .map(|(service, (sel, set))| {
                // The client only: a task holding the cluster (its runtime) could be the one to
                // drop it, which a runtime refuses.
                let client = cluster.client.clone();
                let shared = shared.clone();
                cluster.rt.spawn(async move {
                    follow(&client, &service, &sel, set.resource_version, &shared).await;
                })
            })
            .collect();
        PodWatch {
            shared,
            tasks,
            _cluster: cluster,
        }
    }

    /// Changes so far: compare two readings to know whether members changed in between.
    pub fn generation(&self) -> u64 {
        lock(&self.shared).generation
    }

    /// Each service's members now.
    pub fn sets(&self) -> BTreeMap<String, PodSet> {
        lock(&self.shared).sets.clone()
    }

    /// The watches' last errors (service → message), cleared by reading.
    pub fn take_errors(&self) -> BTreeMap<String, String> {
        std::mem::take(&mut lock(&self.shared).errors)
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches one selector until aborted.
async fn follow(
    client: &kube::Client,
    service: &str,
    sel: &KubeSelector,
    mut rv: String,
    shared: &Mutex<Shared>,
) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &sel.namespace);
    let mut wp = WatchParams::default().timeout(WATCH_TIMEOUT_S);
    wp = match &sel.pod {
        Some(name) => wp.fields(&format!("metadata.name={name}")),
        None => wp.labels(&sel.label_selector()),
    };
    loop {
        match watch_once(&api, &wp, &rv).await {
            Ok(Next::Resume(at)) => {
                rv = at;
                continue;
            }
            Ok(Next::Relist) => {}
            Err(e) => {
                lock(shared).errors.insert(service.to_owned(), e);
                tokio::time::sleep(RETRY).await;
            }
        }
        match relist(client, sel).await {
            Ok(set) => {
                rv.clone_from(&set.resource_version);
                let mut s = lock(shared);
                let changed = s
                    .sets
                    .get(service)
                    .is_none_or(|old| old.membership() != set.membership());
                if changed {
                    tracing::info!(service, pods = ?set.membership(), "pod membership changed");
                    s.generation += 1;
                }
                s.sets.insert(service.to_owned(), set);
            }
            Err(e) => {
                lock(shared)
                    .errors
                    .insert(service.to_owned(), e.to_string());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

enum Next {
    /// The watch ended quietly: resume from this version.
    Resume(String),
    /// Something changed, or the version is gone: list again.
    Relist,
}

/// One watch call: returns at its first event (or its end).
async fn watch_once(api: &Api<Pod>, wp: &WatchParams, rv: &str) -> Result<Next, String> {
    let mut stream = api
        .watch(wp, rv)
        .await
        .map_err(|e| format!("watching pods: {e}"))?
        .boxed();
    let mut at = rv.to_owned();
    while let Some(ev) = stream
        .try_next()
        .await
        .map_err(|e| format!("watching pods: {e}"))?
    {
        match ev {
            WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_) => {
                return Ok(Next::Relist);
            }
            WatchEvent::Bookmark(b) => at = b.metadata.resource_version,
            WatchEvent::Error(status) if status.code == 410 => {
                tracing::debug!("watch of pods: {} (410): listing again", status.message);
                return Ok(Next::Relist);
            }
            WatchEvent::Error(status) => {
                return Err(format!(
                    "watching pods: the API answered {}: {}",
                    status.code, status.message
                ));
            }
        }
    }
    Ok(Next::Resume(at))
}

/// The selector's set now (an empty set is a set: scaled to zero, the named pod deleted).
async fn relist(client: &kube::Client, sel: &KubeSelector) -> Result<PodSet, KubeError> {
    match super::fetch(client, sel).await {
        Err(KubeError::NoSuchPod { .. }) => Ok(PodSet::default()),
        r => r,
    }
}

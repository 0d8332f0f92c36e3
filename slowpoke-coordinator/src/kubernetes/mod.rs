//! Pod and label selectors (`pod:NS/NAME`, `label:NS/k=v`) resolved through the Kubernetes API
//! into (node, pod UID, container ids), then placed on the agents of those nodes: each agent
//! gets only its node's pods as a `pods` selector and finds their processes in the kubelet's
//! cgroups. The coordinator is the only Slowpoke component that talks to the API server, so the
//! agents need no credentials and no Kubernetes client.
//!
//! Rooms: [`Cluster`] (the connection: in-cluster service account or kubeconfig, and the calls,
//! blocking, on its own small runtime) here; turning API objects into members and the errors
//! in words in `pods.rs`; which agent gets which pods in `place.rs`; following pods that
//! restart or scale during an experiment (a watch, with the re-list a `410 Gone` asks for) in
//! `watch.rs`.
//!
//! The API objects are k8s-openapi's for Kubernetes 1.35 (the minor the deploy manifests pin;
//! the fields read here are the same in every supported minor).

mod place;
mod pods;
mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use slowpoke_api::agent::KubeSelector;

pub use place::{Placement, place};
pub use pods::{KubeError, PodSet, ResolvedPod};
pub use watch::PodWatch;

/// How the coordinator reaches the Kubernetes API, connected on first use (an experiment
/// without pod or label selectors never needs a cluster): `kubeconfig` (`--kubeconfig FILE`),
/// else what `kube::Config::infer` finds (`$KUBECONFIG`, `~/.kube/config`, the pod's service
/// account when the coordinator runs in the cluster).
#[derive(Default)]
pub struct KubeAccess {
    pub kubeconfig: Option<PathBuf>,
    connected: Mutex<Option<Arc<Cluster>>>,
}

impl KubeAccess {
    pub fn new(kubeconfig: Option<PathBuf>) -> KubeAccess {
        KubeAccess {
            kubeconfig,
            connected: Mutex::new(None),
        }
    }

    /// The connection, made now if not yet.
    pub fn cluster(&self) -> Result<Arc<Cluster>, KubeError> {
        let mut c = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = &*c {
            return Ok(c.clone());
        }
        let cluster = Arc::new(Cluster::connect(self.kubeconfig.as_deref())?);
        *c = Some(cluster.clone());
        Ok(cluster)
    }
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

/// A connection to one cluster's API server. The coordinator's experiment code is blocking, so
/// the client runs on a runtime of its own (one worker thread: a few calls per experiment and
/// the watches).
pub struct Cluster {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Cluster {
    /// Connects with `kubeconfig`, or with what `kube::Config::infer` finds.
    pub fn connect(kubeconfig: Option<&Path>) -> Result<Cluster, KubeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kubernetes")
            .enable_all()
            .build()
            .map_err(|e| KubeError::Config(format!("cannot start its runtime: {e}")))?;
        let config = rt.block_on(async {
            match kubeconfig {
                Some(path) => {
                    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                        KubeError::Config(format!(
                            "cannot read --kubeconfig {}: {e}",
                            path.display()
                        ))
                    })?;
                    kube::Config::from_custom_kubeconfig(
                        file,
                        &kube::config::KubeConfigOptions::default(),
                    )
                    .await
                    .map_err(|e| KubeError::Config(format!("--kubeconfig {}: {e}", path.display())))
                }
                None => kube::Config::infer().await.map_err(|e| {
                    KubeError::Config(format!(
                        "no Kubernetes configuration found ({e}): give --kubeconfig FILE, set \
                         KUBECONFIG, or run the coordinator in a pod with a service account"
                    ))
                }),
            }
        })?;
        // The client's request buffer is a task on this runtime: made inside it.
        let client = rt
            .block_on(async { kube::Client::try_from(config) })
            .map_err(|e| KubeError::Config(format!("cannot make a Kubernetes client: {e}")))?;
        Ok(Cluster { rt, client })
    }

    /// The selector's running pods now, and the list's `resourceVersion` (where a watch
    /// starts). A named pod that does not exist or does not run, or a label selector matching
    /// no running pod, is an error saying so.
    pub fn pods(&self, sel: &KubeSelector) -> Result<PodSet, KubeError> {
        let set = self.list(sel)?;
        if set.pods.is_empty() {
            return Err(KubeError::NoPods {
                selector: sel.display(),
                seen: set.not_running.clone(),
            });
        }
        Ok(set)
    }

    /// Like [`Cluster::pods`], but an empty set is a set (during an experiment, a Deployment
    /// scaled to zero has no members, and the watch waits for new ones).
    pub(crate) fn list(&self, sel: &KubeSelector) -> Result<PodSet, KubeError> {
        self.rt.block_on(fetch(&self.client, sel))
    }
}

/// A named pod with `get` (404, a `Status` object, when there is none), a label selector with
/// `list` (its `resourceVersion` is where a watch starts). A free function over the client, not
/// a method of [`Cluster`]: the watch tasks run on the cluster's runtime and must not hold it
/// (a runtime cannot be dropped from one of its own tasks).
async fn fetch(client: &kube::Client, sel: &KubeSelector) -> Result<PodSet, KubeError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &sel.namespace);
    match &sel.pod {
        Some(name) => api
            .get(name)
            .await
            .map(|pod| PodSet::from_pods(&[pod], None))
            .map_err(|e| pods::api_error(e, "get", sel)),
        None => api
            .list(&ListParams::default().labels(&sel.label_selector()))
            .await
            .map(|l| PodSet::from_list(&l))
            .map_err(|e| pods::api_error(e, "list", sel)),
    }
}

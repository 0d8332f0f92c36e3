//! API objects to members, and the API's refusals in words that say what to do.

use k8s_openapi::api::core::v1::Pod;
use kube::core::ObjectList;
use slowpoke_api::agent::{KubeSelector, PodMember};

/// A pod that runs on a node: where, and what its agent needs to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPod {
    /// `spec.nodeName`: the agent of this node owns the pod.
    pub node: String,
    pub member: PodMember,
}

/// The running pods of a selector at one `resourceVersion`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSet {
    /// Sorted by name.
    pub pods: Vec<ResolvedPod>,
    /// Where a watch of the same pods starts.
    pub resource_version: String,
    /// Pods matched but not running (pending, finished, being deleted), `name (phase)`: a
    /// message about an empty set names them.
    pub not_running: Vec<String>,
}

impl PodSet {
    pub fn from_list(list: &ObjectList<Pod>) -> PodSet {
        let rv = list.metadata.resource_version.clone();
        PodSet::from_pods(&list.items, rv)
    }

    /// `rv`: the list's; for a single pod its own.
    pub fn from_pods(pods: &[Pod], rv: Option<String>) -> PodSet {
        let rv = rv.or_else(|| {
            pods.first()
                .and_then(|p| p.metadata.resource_version.clone())
        });
        let mut set = PodSet {
            resource_version: rv.unwrap_or_default(),
            ..PodSet::default()
        };
        for pod in pods {
            match running(pod) {
                Ok(p) => set.pods.push(p),
                Err(why) => set.not_running.push(why),
            }
        }
        set.pods.sort_by(|a, b| a.member.name.cmp(&b.member.name));
        set
    }

    /// The members as (node, uid, containers): what changes the agents' view.
    pub fn membership(&self) -> Vec<(String, String, Vec<String>)> {
        self.pods
            .iter()
            .map(|p| {
                (
                    p.node.clone(),
                    p.member.uid.clone(),
                    p.member.containers.clone(),
                )
            })
            .collect()
    }
}

/// The pod as a member if it runs on a node (phase `Running`, not being deleted), its running
/// containers' ids without the runtime prefix; else `name (why)`.
pub fn running(pod: &Pod) -> Result<ResolvedPod, String> {
    let m = &pod.metadata;
    let name = format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or("?"),
        m.name.as_deref().unwrap_or("?")
    );
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Unknown");
    if phase != "Running" {
        return Err(format!("{name} ({phase})"));
    }
    if m.deletion_timestamp.is_some() {
        return Err(format!("{name} (terminating)"));
    }
    let (Some(node), Some(uid)) = (
        pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        m.uid.clone(),
    ) else {
        return Err(format!("{name} (not scheduled)"));
    };
    let mut containers: Vec<String> = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .filter_map(|c| c.container_id.as_deref())
        .map(|id| id.rsplit_once("://").map_or(id, |(_, id)| id).to_owned())
        .collect();
    containers.sort();
    Ok(ResolvedPod {
        node,
        member: PodMember {
            uid,
            name,
            containers,
        },
    })
}

/// Resolving a pod or label selector failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes: {0}")]
    Config(String),
    #[error(
        "pod {namespace}/{name} does not exist (the Kubernetes API answered 404): check the \
         name with `kubectl get pods -n {namespace}`"
    )]
    NoSuchPod { namespace: String, name: String },
    #[error(
        "`{selector}` matches no running pod{}: check it with `kubectl get pods -n <namespace> -l <labels>`",
        if seen.is_empty() { String::new() } else { format!(" (matched but not running: {})", seen.join(", ")) }
    )]
    NoPods { selector: String, seen: Vec<String> },
    #[error(
        "the Kubernetes API refused to {verb} pods in namespace {namespace} for `{selector}` \
         (403 Forbidden: {message}). The coordinator's identity needs a ClusterRole (or a Role \
         in {namespace}) with the rule `apiGroups: [\"\"], resources: [\"pods\"], verbs: \
         [\"get\", \"list\", \"watch\"]` bound to it (deploy/kubernetes/, docs/deploy.md)"
    )]
    Forbidden {
        verb: String,
        namespace: String,
        selector: String,
        message: String,
    },
    #[error("the Kubernetes API answered {code} to `{selector}`: {message}")]
    Api {
        selector: String,
        code: u16,
        message: String,
    },
    #[error(
        "cannot reach the Kubernetes API for `{selector}`: {detail} (is the API server's address \
         in the kubeconfig right, and its certificate trusted?)"
    )]
    Unreachable { selector: String, detail: String },
    #[error(
        "pod {pod} of service `{service}` runs on node {node}, which has no agent{agents}: start \
         slowpoke-agent there (the DaemonSet) and name the node in the cluster description with \
         its Kubernetes node name"
    )]
    NoAgentOnNode {
        service: String,
        pod: String,
        node: String,
        agents: String,
    },
}

/// The API's answer to `verb` for `sel`, in words.
pub fn api_error(e: kube::Error, verb: &str, sel: &KubeSelector) -> KubeError {
    match e {
        kube::Error::Api(status) => match status.code {
            403 => KubeError::Forbidden {
                verb: verb.to_owned(),
                namespace: sel.namespace.clone(),
                selector: sel.display(),
                message: status.message.clone(),
            },
            404 if sel.pod.is_some() => KubeError::NoSuchPod {
                namespace: sel.namespace.clone(),
                name: sel.pod.clone().unwrap_or_default(),
            },
            code => KubeError::Api {
                selector: sel.display(),
                code,
                message: status.message.clone(),
            },
        },
        e => KubeError::Unreachable {
            selector: sel.display(),
            detail: e.to_string(),
        },
    }
}

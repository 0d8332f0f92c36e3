//! Kubernetes pods on this node, found where the kubelet puts them: a pod's cgroup is named after
//! its UID, a container's after its id, in one of a few fixed layouts. The coordinator resolves a
//! `pod:`/`label:` selector through the Kubernetes API into (node, pod UID, container ids) and
//! hands each agent its node's pods; the agent never talks to the API server (it stays small and
//! needs no cluster credentials), and it needs no container runtime socket either: the cgroup
//! names are the kubelet's contract with the runtimes.
//!
//! Layouts (`<u>` is the UID with `-` replaced by `_`, no quality-of-service level for `Guaranteed` pods):
//! - systemd driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<u>.slice/`, the
//!   containers in `cri-containerd-<id>.scope`, `crio-<id>.scope` or `docker-<id>.scope`;
//! - cgroupfs driver: `kubepods/<qos>/pod<uid>/`, the containers in `<id>` (CRI-O: `crio-<id>`).
//!
//! They are looked for under each root in turn: the cgroup2 mount, then the cgroup v1 `cpu` and
//! `pids` hierarchies (a v1 node's kubelet creates every pod in each controller's hierarchy; on
//! a hybrid node systemd mirrors its slices in the unified one), or the agent's
//! `--pod-cgroup-root` directories.

use std::path::{Path, PathBuf};

use crate::{api::PodMember, error::AgentError};

/// Quality-of-service levels as they appear in cgroup names; `""` is Guaranteed (no level).
const QOS: [&str; 3] = ["", "burstable", "besteffort"];

/// A `pods` selector: the pods, the ports inside them (when given), where to look.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSelector {
    pub pods: Vec<PodMember>,
    /// Members are only the pods' processes listening on one of these ports, in the pod's own
    /// network namespace.
    pub ports: Option<Vec<u16>>,
    /// Cgroup hierarchy roots to search, in order.
    pub roots: Vec<PathBuf>,
}

/// Where the kubelet's cgroups can be: the cgroup2 mount, then the v1 `cpu` and `pids`
/// hierarchies, as mounted now (`/proc/mounts`).
pub fn default_roots() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut v2 = Vec::new();
    let mut v1 = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, dir, fstype, opts, ..] = f[..] else {
            continue;
        };
        if fstype == "cgroup2" {
            v2.push(PathBuf::from(dir));
        } else if fstype == "cgroup" {
            let opts: Vec<&str> = opts.split(',').collect();
            // cpu first: it is the hierarchy that holds a pod's CPU limits.
            if opts.contains(&"cpu") {
                v1.insert(0, PathBuf::from(dir));
            } else if opts.contains(&"pids") {
                v1.push(PathBuf::from(dir));
            }
        }
    }
    v2.extend(v1);
    v2
}

/// Checks what goes into cgroup paths: a UID is hex digits and `-`, a container id
/// alphanumeric (a `containerd://`-style prefix is dropped). Anything else is refused, so no
/// `..` or `/` can walk out of the kubelet's directories.
/// An empty list is only for a service that `may_be_absent` (the coordinator found none of
/// its pods on this node).
pub fn check(pods: &[PodMember], may_be_absent: bool) -> Result<Vec<PodMember>, AgentError> {
    if pods.is_empty() && !may_be_absent {
        return Err(AgentError::BadRequest(
            "\"pods\" must list at least one pod (or say \"may_be_absent\": true)".into(),
        ));
    }
    pods.iter()
        .map(|p| {
            let uid_ok = !p.uid.is_empty()
                && p.uid.len() <= 64
                && p.uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if !uid_ok {
                return Err(AgentError::BadRequest(format!(
                    "pod {}: uid {:?} is not a Kubernetes UID (metadata.uid, e.g. \
                     6f1c2a9e-0d1b-4c55-9a51-3a1fbc2e8d10)",
                    p.name, p.uid
                )));
            }
            let containers = p
                .containers
                .iter()
                .map(|c| {
                    let id = c.rsplit_once("://").map_or(c.as_str(), |(_, id)| id);
                    if id.is_empty()
                        || id.len() > 128
                        || !id.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        return Err(AgentError::BadRequest(format!(
                            "pod {}: container id {c:?} is not a runtime's container id \
                             (status.containerStatuses[].containerID)",
                            p.name
                        )));
                    }
                    Ok(id.to_owned())
                })
                .collect::<Result<_, _>>()?;
            Ok(PodMember {
                uid: p.uid.to_ascii_lowercase(),
                name: p.name.clone(),
                containers,
            })
        })
        .collect()
}

/// The pod's cgroup directory: the first layout that exists under the first root that has it.
pub fn pod_dir(roots: &[PathBuf], uid: &str) -> Option<PathBuf> {
    let systemd = uid.replace('-', "_");
    roots.iter().find_map(|root| {
        QOS.iter().find_map(|qos| {
            let (slice, cgroupfs) = if qos.is_empty() {
                (
                    format!("kubepods.slice/kubepods-pod{systemd}.slice"),
                    format!("kubepods/pod{uid}"),
                )
            } else {
                (
                    format!(
                        "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{systemd}.slice"
                    ),
                    format!("kubepods/{qos}/pod{uid}"),
                )
            };
            [slice, cgroupfs]
                .into_iter()
                .map(|rel| root.join(rel))
                .find(|d| d.join("cgroup.procs").exists())
        })
    })
}

/// A container's directory in its pod's: the runtimes' scope names (systemd driver) or the bare
/// id (cgroupfs driver).
pub fn container_dir(pod: &Path, id: &str) -> Option<PathBuf> {
    [
        format!("cri-containerd-{id}.scope"),
        format!("crio-{id}.scope"),
        format!("docker-{id}.scope"),
        id.to_owned(),
        format!("crio-{id}"),
    ]
    .into_iter()
    .map(|name| pod.join(name))
    .find(|d| d.join("cgroup.procs").exists())
}

/// The cgroup directories of the selected pods found now: each pod's listed containers (the
/// whole pod when it lists none). Pods and containers not found are listed in `missing`, in
/// words; a pod that went away between two resolutions simply has no members.
pub fn dirs(sel: &PodSelector) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for p in &sel.pods {
        let Some(pod) = pod_dir(&sel.roots, &p.uid) else {
            missing.push(format!("pod {} (uid {})", p.name, p.uid));
            continue;
        };
        if p.containers.is_empty() {
            found.push(pod);
            continue;
        }
        for id in &p.containers {
            match container_dir(&pod, id) {
                Some(d) => found.push(d),
                None => missing.push(format!(
                    "container {id} of pod {} (in {})",
                    p.name,
                    pod.display()
                )),
            }
        }
    }
    (found, missing)
}

/// Why a `pods` registration cannot be done: some pods or containers have no cgroup here.
pub fn not_found(sel: &PodSelector, missing: &[String]) -> AgentError {
    let roots: Vec<String> = sel.roots.iter().map(|r| r.display().to_string()).collect();
    AgentError::BadRequest(format!(
        "no cgroup on this node for {}: looked under {} for kubepods.slice/… (systemd driver) \
         and kubepods/… (cgroupfs driver). Is the pod scheduled on this agent's node (the \
         coordinator matches Kubernetes node names to agents), still running (a restarted \
         container has a new id: resolve again), and does the kubelet use another cgroup root \
         (give it with --pod-cgroup-root)?",
        missing.join(", "),
        if roots.is_empty() {
            "no cgroup mount".to_owned()
        } else {
            roots.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, containers: &[&str]) -> PodMember {
        PodMember {
            uid: uid.into(),
            name: "shop/cart-0".into(),
            containers: containers.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    #[test]
    fn ids_that_could_leave_the_kubelet_directories_are_refused() {
        assert!(check(&[], false).is_err());
        assert!(check(&[], true).is_ok(), "none of the pods on this node");
        assert!(check(&[pod("../x", &[])], false).is_err());
        assert!(check(&[pod("abc-123", &["../../etc"])], false).is_err());
        assert!(check(&[pod("abc-123", &["a/b"])], false).is_err());
        let ok = check(
            &[pod("ABC-123", &["containerd://ff00", "cri-o://aa"])],
            false,
        )
        .unwrap();
        assert_eq!(ok[0].uid, "abc-123");
        assert_eq!(ok[0].containers, ["ff00", "aa"]);
    }

    #[test]
    fn layouts_are_found_in_a_plain_directory_tree() {
        // The layout logic alone, on ordinary directories with a `cgroup.procs` file; the
        // integration test `agent_pods` runs it on real cgroup hierarchies with processes.
        let tmp = std::env::temp_dir().join(format!("spk-pods-{}", std::process::id()));
        let uid = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";
        let dir = tmp.join(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_aaaa_bbbb_cccc_000000000001.slice",
        );
        let ctr = dir.join("crio-beef.scope");
        std::fs::create_dir_all(&ctr).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        std::fs::write(ctr.join("cgroup.procs"), "").unwrap();
        let roots = vec![PathBuf::from("/nonexistent"), tmp.clone()];
        assert_eq!(pod_dir(&roots, uid), Some(dir.clone()));
        assert_eq!(container_dir(&dir, "beef"), Some(ctr.clone()));
        let sel = PodSelector {
            pods: vec![pod(uid, &["beef", "dead"]), pod("ffff", &[])],
            ports: None,
            roots,
        };
        let (found, missing) = dirs(&sel);
        assert_eq!(found, vec![ctr]);
        assert_eq!(missing.len(), 2, "{missing:?}");
        let e = not_found(&sel, &missing).to_string();
        assert!(
            e.contains("container dead") && e.contains("uid ffff"),
            "{e}"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

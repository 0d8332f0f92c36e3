//! Which agent gets which pods: an agent is matched to the Kubernetes node of the same name
//! (the cluster description's node `name`, or the host name for the in-process agent), and
//! is sent only that node's pods. A pod on a node without an agent is an error naming both.

use std::collections::BTreeMap;

use slowpoke_api::agent::{KubeSelector, PodMember, ServiceSpec};

use super::{KubeAccess, KubeError, PodSet};
use crate::agents::SharedAgent;

/// The pods of every service given by a pod or label selector, per agent.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Service → (its selector, the pods it resolved to).
    pub resolved: BTreeMap<String, (KubeSelector, PodSet)>,
    /// Service → each agent's pods, in agent order.
    pub by_agent: BTreeMap<String, Vec<Vec<PodMember>>>,
}

impl Placement {
    /// What agent `i` is asked to register for `name`: `spec` as is, or for a pod or label
    /// selector that node's pods (none: registered with no members, `may_be_absent`).
    pub fn spec_for(&self, name: &str, spec: &ServiceSpec, i: usize) -> ServiceSpec {
        match self.by_agent.get(name) {
            None => spec.clone(),
            Some(per_agent) => {
                let pods = per_agent.get(i).cloned().unwrap_or_default();
                ServiceSpec {
                    may_be_absent: spec.may_be_absent || pods.is_empty(),
                    pods: Some(pods),
                    kubernetes: None,
                    ..spec.clone()
                }
            }
        }
    }

    /// Places a service's new set (after a change during the experiment).
    pub fn update(
        &mut self,
        agents: &[SharedAgent],
        service: &str,
        set: PodSet,
    ) -> Result<(), KubeError> {
        let per_agent = assign(service, &set, agents)?;
        if let Some((_, s)) = self.resolved.get_mut(service) {
            *s = set;
        }
        self.by_agent.insert(service.to_owned(), per_agent);
        Ok(())
    }
}

/// Resolves every pod and label selector among `services` and places the pods on `agents`.
/// Services without one are left out (their spec goes to every agent as is).
pub fn place(
    access: &KubeAccess,
    agents: &[SharedAgent],
    services: &BTreeMap<String, ServiceSpec>,
) -> Result<Placement, KubeError> {
    let mut out = Placement::default();
    for (name, spec) in services {
        let Some(sel) = &spec.kubernetes else {
            continue;
        };
        let set = access.cluster()?.pods(sel)?;
        out.by_agent
            .insert(name.clone(), assign(name, &set, agents)?);
        out.resolved.insert(name.clone(), (sel.clone(), set));
    }
    Ok(out)
}

/// Each agent's share of `set`, in agent order.
pub fn assign(
    service: &str,
    set: &PodSet,
    agents: &[SharedAgent],
) -> Result<Vec<Vec<PodMember>>, KubeError> {
    let nodes: Vec<Option<String>> = agents.iter().map(|a| a.node()).collect();
    let mut out = vec![Vec::new(); agents.len()];
    for p in &set.pods {
        let Some(i) = nodes.iter().position(|n| n.as_deref() == Some(&p.node)) else {
            let named: Vec<String> = agents
                .iter()
                .zip(&nodes)
                .map(|(a, n)| match n {
                    Some(n) => format!("node {n}"),
                    None => format!("{} (no node name)", a.name()),
                })
                .collect();
            return Err(KubeError::NoAgentOnNode {
                service: service.to_owned(),
                pod: p.member.name.clone(),
                node: p.node.clone(),
                agents: format!(" (agents: {})", named.join(", ")),
            });
        };
        out[i].push(p.member.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::ResolvedPod;
    use super::*;
    use crate::agents::HttpAgent;

    fn pod(name: &str, node: &str) -> ResolvedPod {
        ResolvedPod {
            node: node.into(),
            member: PodMember {
                uid: format!("uid-{name}"),
                name: format!("shop/{name}"),
                containers: vec!["c1".into()],
            },
        }
    }

    #[test]
    fn pods_go_to_the_agent_of_their_node_only() {
        let agents: Vec<SharedAgent> = vec![
            Arc::new(HttpAgent::new("http://10.0.0.1:7171", None).on_node("node-a")),
            Arc::new(HttpAgent::new("http://10.0.0.2:7171", None).on_node("node-b")),
        ];
        let set = PodSet {
            pods: vec![pod("cart-0", "node-b"), pod("cart-1", "node-b")],
            ..PodSet::default()
        };
        let per = assign("cart", &set, &agents).unwrap();
        assert!(per[0].is_empty());
        assert_eq!(per[1].len(), 2);
        let mut placement = Placement::default();
        placement.by_agent.insert("cart".into(), per);
        let spec = ServiceSpec {
            kubernetes: Some(KubeSelector {
                namespace: "shop".into(),
                ..KubeSelector::default()
            }),
            ports: Some(vec![8080]),
            ..ServiceSpec::default()
        };
        let a = placement.spec_for("cart", &spec, 0);
        assert_eq!(a.pods, Some(vec![]));
        assert!(a.may_be_absent && a.kubernetes.is_none());
        let b = placement.spec_for("cart", &spec, 1);
        assert_eq!(b.pods.as_ref().map(Vec::len), Some(2));
        assert_eq!(
            b.ports,
            Some(vec![8080]),
            "the port inside the pods goes along"
        );

        let set = PodSet {
            pods: vec![pod("cart-2", "node-c")],
            ..PodSet::default()
        };
        let e = assign("cart", &set, &agents).unwrap_err().to_string();
        assert!(
            e.contains("pod shop/cart-2 of service `cart` runs on node node-c, which has no agent")
                && e.contains("node node-a, node node-b"),
            "{e}"
        );
    }
}

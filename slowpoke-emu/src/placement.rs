//! An app across the nodes of a cluster (`slowpoke-emu run FILE --cluster C.json --node N`): which
//! service runs on which node, the ports every node agrees on, and how a runner enters its node.
//!
//! Each node runs its own runner, and no runner talks to another: they agree because every one
//! computes the same [`Placement`] (the topology's `node` fields, overridden by `--place`) and the
//! same ports (service `i` of the WHOLE topology, in name order, on `base + i`, its control port on
//! `base + n + i`, unless the service fixes its `port`). A call to a service on another node goes
//! to that node's address from the cluster description, so it crosses the cluster network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::str::FromStr;

use slowpoke_api::cluster::{ClusterFile, ClusterNode};

use crate::topology::Topology;

/// The first port of a cluster run when `--base-port` is not given: every node must know every
/// other node's ports without asking, so cluster runs never use ephemeral ports.
pub const CLUSTER_BASE_PORT: u16 = 7300;

/// Service name → node name.
pub type Placement = BTreeMap<String, String>;

/// `--place SERVICE=NODE`: puts one service on a node, whatever the topology's `node` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceArg {
    pub service: String,
    pub node: String,
}

impl FromStr for PlaceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((svc, node)) if !svc.trim().is_empty() && !node.trim().is_empty() => {
                Ok(PlaceArg {
                    service: svc.trim().to_owned(),
                    node: node.trim().to_owned(),
                })
            }
            _ => Err(format!("{s:?}: expected SERVICE=NODE")),
        }
    }
}

impl fmt::Display for PlaceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.service, self.node)
    }
}

impl PlaceArg {
    /// One `--place` per entry of `placement`.
    pub fn all(placement: &Placement) -> Vec<PlaceArg> {
        placement
            .iter()
            .map(|(service, node)| PlaceArg {
                service: service.clone(),
                node: node.clone(),
            })
            .collect()
    }
}

/// Where every service of `topo` runs: its `node`, overridden by `overrides`. Every service must
/// land on a node of `cluster`; the error names the services that do not and the nodes there are.
pub fn place(
    topo: &Topology,
    cluster: &ClusterFile,
    overrides: &[PlaceArg],
) -> Result<Placement, String> {
    let mut placement: Placement = topo
        .services
        .iter()
        .filter_map(|(name, svc)| Some((name.clone(), svc.node.clone()?)))
        .collect();
    for o in overrides {
        if !topo.services.contains_key(&o.service) {
            return Err(format!(
                "--place {o}: the topology has no service {} (services: {})",
                o.service,
                topo.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        placement.insert(o.service.clone(), o.node.clone());
    }
    for (service, node) in &placement {
        if cluster.node(node).is_none() {
            return Err(format!(
                "service {service} is placed on node {node}, which the cluster description does not \
                 list (nodes: {}); fix its \"node\" or give --place {service}=NODE",
                cluster.names()
            ));
        }
    }
    let unplaced: Vec<&str> = topo
        .services
        .keys()
        .filter(|s| !placement.contains_key(*s))
        .map(String::as_str)
        .collect();
    if !unplaced.is_empty() {
        return Err(format!(
            "service(s) {} are on no node: give each a \"node\" in the topology or --place SERVICE=NODE \
             (nodes: {})",
            unplaced.join(", "),
            cluster.names()
        ));
    }
    Ok(placement)
}

/// Spreads `topo`'s services over `nodes` round robin in name order (for the evaluation's
/// services-over-nodes setting), with `pin` = (service, node) placed first and the others going
/// round robin around it. `nodes` must not be empty.
pub fn spread(topo: &Topology, nodes: &[String], pin: Option<(&str, &str)>) -> Placement {
    assert!(!nodes.is_empty(), "spread over no node");
    let mut placement = Placement::new();
    if let Some((service, node)) = pin {
        placement.insert(service.to_owned(), node.to_owned());
    }
    let mut next = 0;
    for name in topo.services.keys() {
        if !placement.contains_key(name) {
            placement.insert(name.clone(), nodes[next % nodes.len()].clone());
            next += 1;
        }
    }
    placement
}

/// What `run --cluster F --node N --place ...` hands the runner.
#[derive(Debug, Clone)]
pub struct ClusterArgs {
    pub file: ClusterFile,
    /// The node this runner runs.
    pub node: String,
    pub place: Vec<PlaceArg>,
}

/// One runner's part of a cluster run: which node it is and where every service is.
#[derive(Debug, Clone)]
pub struct ClusterRun {
    /// This runner's node.
    pub node: ClusterNode,
    /// Every service of the topology → (its node's name, its node's address).
    pub homes: BTreeMap<String, (String, IpAddr)>,
}

impl ClusterRun {
    /// Places `topo` on `cluster` (see [`place`]) for the runner of node `node`.
    pub fn new(
        topo: &Topology,
        cluster: &ClusterFile,
        node: &str,
        overrides: &[PlaceArg],
    ) -> Result<ClusterRun, String> {
        let this = find_node(cluster, node)?;
        let placement = place(topo, cluster, overrides)?;
        if !placement.values().any(|n| n == node) {
            return Err(format!(
                "no service is placed on node {node} ({}): nothing to run there; start the runners of \
                 the nodes that host services",
                placement
                    .iter()
                    .map(|(s, n)| format!("{s} on {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let homes = placement
            .into_iter()
            .map(|(s, n)| {
                let addr = cluster.node(&n).expect("checked by place").address;
                (s, (n, addr))
            })
            .collect();
        Ok(ClusterRun {
            node: this.clone(),
            homes,
        })
    }

    /// Whether `service` runs on this runner's node.
    pub fn is_local(&self, service: &str) -> bool {
        self.homes
            .get(service)
            .is_some_and(|(n, _)| *n == self.node.name)
    }

    /// The address `service` listens on (its node's).
    pub fn address(&self, service: &str) -> IpAddr {
        self.homes[service].1
    }

    /// The name of `service`'s node.
    pub fn node_of(&self, service: &str) -> &str {
        &self.homes[service].0
    }
}

/// The node called `name`, or an error listing the nodes there are.
pub fn find_node<'a>(cluster: &'a ClusterFile, name: &str) -> Result<&'a ClusterNode, String> {
    cluster.node(name).ok_or_else(|| {
        format!(
            "node {name} is not in the cluster description (nodes: {}); give --node one of them",
            cluster.names()
        )
    })
}

/// Moves this process into `node` when the description says how (test bed: `netns` and `cgroups`)
/// and it is not already in the node's network namespace; returns whether it moved. Call it
/// before any thread exists: `setns` changes only the calling thread, and the services must
/// inherit both the namespace and the cgroups from the runner. On a real machine (no `netns`)
/// it does nothing: the node is the machine.
pub fn enter(node: &ClusterNode) -> Result<bool, String> {
    let Some(netns) = &node.netns else {
        return Ok(false);
    };
    let path = Path::new("/run/netns").join(netns);
    let want = std::fs::metadata(&path).map_err(|e| {
        format!(
            "node {}'s network namespace {} is not there ({e}): bring the test bed up (`cargo xtask \
             cluster up`) or use the description it wrote",
            node.name,
            path.display()
        )
    })?;
    let have = std::fs::metadata("/proc/self/ns/net")
        .map_err(|e| format!("reading /proc/self/ns/net: {e}"))?;
    if (want.dev(), want.ino()) == (have.dev(), have.ino()) {
        return Ok(false);
    }
    let file =
        std::fs::File::open(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!(
            "entering node {}'s network namespace {}: {e} (run as root)",
            node.name,
            path.display()
        )
    })?;
    let pid = std::process::id().to_string();
    for dir in &node.cgroups {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, &pid).map_err(|e| {
            format!(
                "joining node {}'s cgroup ({}): {e} (run as root; is the test bed up?)",
                node.name,
                procs.display()
            )
        })?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::parse;

    fn three() -> Topology {
        parse(
            r#"{"entry":{"service":"a","endpoint":"x"},"services":{
              "a":{"node":"n1","endpoints":{"x":{"calls":[{"service":"b","endpoint":"x"}]}}},
              "b":{"endpoints":{"x":{"calls":[{"service":"c","endpoint":"x"}]}}},
              "c":{"node":"n2","endpoints":{"x":{}}}}}"#,
            "t.json",
        )
        .unwrap()
    }

    fn cluster() -> ClusterFile {
        ClusterFile::parse(
            r#"{"nodes":[{"name":"n1","address":"10.0.0.1","agent":"http://10.0.0.1:7171"},
                         {"name":"n2","address":"10.0.0.2","agent":"http://10.0.0.2:7171"}]}"#,
            Path::new("."),
        )
        .unwrap()
    }

    fn arg(s: &str) -> PlaceArg {
        s.parse().unwrap()
    }

    #[test]
    fn the_topology_places_and_place_overrides() {
        let e = place(&three(), &cluster(), &[]).unwrap_err();
        assert!(
            e.contains("(s) b are on no node") && e.contains("nodes: n1, n2"),
            "{e}"
        );
        let p = place(&three(), &cluster(), &[arg("b=n2"), arg("a=n2")]).unwrap();
        assert_eq!(
            p.values().map(String::as_str).collect::<Vec<_>>(),
            ["n2", "n2", "n2"]
        );
        let e = place(&three(), &cluster(), &[arg("b=n9")]).unwrap_err();
        assert!(
            e.contains("service b is placed on node n9") && e.contains("n1, n2"),
            "{e}"
        );
        let e = place(&three(), &cluster(), &[arg("zz=n1")]).unwrap_err();
        assert!(e.contains("no service zz"), "{e}");
        assert!("b".parse::<PlaceArg>().is_err() && "=n1".parse::<PlaceArg>().is_err());
    }

    #[test]
    fn a_runner_knows_every_home_and_refuses_an_empty_or_unknown_node() {
        let run = ClusterRun::new(&three(), &cluster(), "n2", &[arg("b=n1")]).unwrap();
        assert!(!run.is_local("a") && !run.is_local("b") && run.is_local("c"));
        assert_eq!(run.address("b"), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(run.node_of("c"), "n2");
        let e = ClusterRun::new(&three(), &cluster(), "n3", &[arg("b=n1")]).unwrap_err();
        assert!(
            e.contains("node n3 is not in") && e.contains("n1, n2"),
            "{e}"
        );
        let e =
            ClusterRun::new(&three(), &cluster(), "n2", &[arg("b=n1"), arg("c=n1")]).unwrap_err();
        assert!(e.contains("no service is placed on node n2"), "{e}");
    }

    #[test]
    fn spread_goes_round_robin_in_name_order_around_the_pin() {
        let nodes = ["n1".to_owned(), "n2".to_owned()];
        let p = spread(&three(), &nodes, None);
        assert_eq!(
            p.values().map(String::as_str).collect::<Vec<_>>(),
            ["n1", "n2", "n1"]
        );
        let p = spread(&three(), &nodes, Some(("b", "n1")));
        assert_eq!(
            p.values().map(String::as_str).collect::<Vec<_>>(),
            ["n1", "n1", "n2"]
        );
        assert_eq!(PlaceArg::all(&p)[2].to_string(), "c=n2");
    }

    #[test]
    fn enter_does_nothing_on_a_real_machine() {
        let n = cluster().nodes[0].clone();
        assert_eq!(enter(&n), Ok(false));
    }
}

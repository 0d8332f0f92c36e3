//! `cargo xtask cluster up [--nodes N] | down`: a cluster on one machine (docs/multi-node.md).
//!
//! `up` brings up the nodes of `slowpoke_testkit::cluster` (a network namespace on the bridge
//! `spk-br0` and a cgroup with a cpuset each) and starts one `slowpoke-agent` per node inside it
//! as `slowpoke_testkit::cluster_agent` does for the tests too (the node's address only, a token
//! file of its own, `--allow-cgroup` the node's cgroup, `--node-cpus` its cpuset). Then it
//! prints where each agent is. The agents outlive this command; `down` stops them
//! (SIGTERM, so that they resume whatever they stopped) and removes everything, also what a
//! `up` killed with SIGKILL left.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use slowpoke_api::cluster::ClusterFile;
use slowpoke_testkit::cluster::{self, Cluster};
use slowpoke_testkit::cluster_agent::{NodeAgent, random_token, stop_agents};

use crate::{cargo, run, target_dir};

/// How long an agent may take to load its kernel programs and answer.
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// How long `down` waits for the agents to exit after SIGTERM before killing them.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What `up` does.
pub struct UpOptions {
    pub nodes: usize,
    /// Print one JSON array instead of a table.
    pub json: bool,
    /// The agent to start; None: build the debug `slowpoke-agent` and use it.
    pub agent_bin: Option<PathBuf>,
    /// One token in every node's token file (for clients that take one token for all agents;
    /// `slowpoke --cluster` reads each node's own).
    pub same_token: bool,
}

/// Where one node's agent is, as printed.
#[derive(serde::Serialize)]
struct NodeInfo {
    node: String,
    addr: String,
    cpus: String,
    cgroup: PathBuf,
    agent_url: String,
    token_file: PathBuf,
    state_dir: PathBuf,
    agent_log: PathBuf,
    agent_pid: u32,
}

pub fn up(root: &Path, opts: &UpOptions) -> Result<()> {
    let agent_bin = if let Some(bin) = &opts.agent_bin {
        bin.clone()
    } else {
        run(cargo(root).args(["build", "-p", "slowpoke-agent", "--bin", "slowpoke-agent"]))?;
        target_dir(root).join("debug/slowpoke-agent")
    };
    if !agent_bin.is_file() {
        bail!(
            "{} does not exist: build it or give --agent-bin",
            agent_bin.display()
        );
    }
    stop_all();
    let cluster = Cluster::try_up(opts.nodes).context(
        "bringing up the nodes (as root, with iproute2; `cargo xtask cluster down` cleans up)",
    )?;
    let base = target_dir(root).join("cluster");
    let _ = std::fs::remove_dir_all(&base);
    let mut agents = Vec::new();
    let shared = random_token()?;
    // An error drops `cluster`, which removes the nodes and every agent started in them.
    for node in cluster.nodes() {
        let token = if opts.same_token {
            shared.clone()
        } else {
            random_token()?
        };
        let dir = base.join(&node.name);
        agents.push(NodeAgent::start(node, &agent_bin, &dir, &token, &[])?);
    }
    for a in &agents {
        a.wait_ready(READY_TIMEOUT)?;
    }
    let infos: Vec<NodeInfo> = cluster
        .nodes()
        .iter()
        .zip(&agents)
        .map(|(node, a)| NodeInfo {
            node: node.name.clone(),
            addr: node.addr.to_string(),
            cpus: node.cpus.clone(),
            cgroup: node.cgroup.clone(),
            agent_url: a.url.clone(),
            token_file: a.token_file.clone(),
            state_dir: a.state_dir.clone(),
            agent_log: a.log.clone(),
            agent_pid: a.pid(),
        })
        .collect();
    let description = base.join(CLUSTER_FILE);
    write_description(&description, cluster.nodes(), &infos)?;
    cluster.keep();
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&infos)?);
    } else {
        for i in &infos {
            println!(
                "{}  {}  cpus {}  agent {}  token {}",
                i.node,
                i.addr,
                i.cpus,
                i.agent_url,
                i.token_file.display()
            );
        }
        println!(
            "cluster description: {} (slowpoke --cluster, slowpoke-emu run --cluster)",
            description.display()
        );
        println!(
            "(logs: {}/spk-n*/agent.log; stop with `cargo xtask cluster down`)",
            base.display()
        );
    }
    Ok(())
}

/// The cluster description `up` writes beside the nodes' directories (target/cluster/).
pub const CLUSTER_FILE: &str = "cluster.json";

/// Writes the cluster description (`slowpoke_api::cluster`): each node's address, agent and token
/// file (relative to the file), and how to enter it (network namespace, cgroups, cpus).
fn write_description(path: &Path, nodes: &[cluster::Node], infos: &[NodeInfo]) -> Result<()> {
    let file = ClusterFile {
        nodes: nodes
            .iter()
            .zip(infos)
            .map(|(n, i)| n.describe(&i.agent_url, Some(PathBuf::from(&n.name).join("token"))))
            .collect(),
    };
    file.check().map_err(anyhow::Error::msg)?;
    std::fs::write(path, serde_json::to_string_pretty(&file)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Stops the agents (SIGTERM, then whatever is left is killed) and removes the cluster.
pub fn down() -> Result<()> {
    stop_all();
    let removed = Cluster::clean_leftovers().context("removing the cluster")?;
    eprintln!(
        "xtask: cluster down: removed {} ({})",
        removed.len(),
        if removed.is_empty() {
            "nothing was up".to_owned()
        } else {
            removed.join(", ")
        }
    );
    Ok(())
}

/// Stops the agents (SIGTERM), waiting [`STOP_TIMEOUT`] for them before the teardown kills them.
fn stop_all() {
    let left = stop_agents(STOP_TIMEOUT);
    if !left.is_empty() {
        eprintln!(
            "xtask: agents {left:?} did not exit {STOP_TIMEOUT:?} after SIGTERM: killing them"
        );
    }
}

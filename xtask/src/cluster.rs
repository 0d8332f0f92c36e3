//! `cargo xtask cluster up [--nodes N] | down`: a cluster on one machine (docs/multi-node.md).
//!
//! `up` brings up the nodes of `slowpoke_testkit::cluster` (a network namespace on the bridge
//! `spk-br0` and a cgroup with a cpuset each) and starts one `slowpoke-agent` per node inside it:
//! listening on the node's address only, with a token file of its own (mode 0600), a state
//! directory of its own, and `--allow-cgroup` the node's cgroup, so that it cannot stop anything
//! outside its node. The agent itself sits in the node's `daemon` sub-cgroup: an agent protects
//! every process of its own cgroup, so inside the node's cgroup it would protect the whole node.
//! Then it prints where each agent is. The agents outlive this command; `down` stops them
//! (SIGTERM, so that they resume whatever they stopped) and removes everything, also what a
//! `up` killed with SIGKILL left.

use std::{
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use slowpoke_api::cluster::ClusterFile;
use slowpoke_testkit::cluster::{self, Cluster, Place};

use crate::{
    cargo, run,
    schemathesis::{random_token, write_private},
    target_dir,
};

/// The agent's port on every node (its default port: each node has an address of its own).
const AGENT_PORT: u16 = 7171;
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
    /// One token in every node's token file: the coordinator takes a single
    /// `--agent-token-file` for all its agents.
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
    stop_agents();
    let cluster = Cluster::try_up(opts.nodes).context(
        "bringing up the nodes (as root, with iproute2; `cargo xtask cluster down` cleans up)",
    )?;
    let base = target_dir(root).join("cluster");
    let _ = std::fs::remove_dir_all(&base);
    let mut infos = Vec::new();
    let shared = random_token()?;
    // An error drops `cluster`, which removes the nodes and every agent started in them.
    for node in cluster.nodes() {
        let token = if opts.same_token {
            shared.clone()
        } else {
            random_token()?
        };
        infos.push(start_agent(
            node,
            &agent_bin,
            &base.join(&node.name),
            &token,
        )?);
    }
    for info in &infos {
        wait_ready(info)?;
    }
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
    stop_agents();
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

fn start_agent(
    node: &cluster::Node,
    agent_bin: &Path,
    dir: &Path,
    token: &str,
) -> Result<NodeInfo> {
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let token_file = dir.join("token");
    write_private(&token_file, token)?;
    let agent_log = dir.join("agent.log");
    let log = std::fs::File::create(&agent_log)
        .with_context(|| format!("creating {}", agent_log.display()))?;
    let listen = SocketAddr::from((node.addr, AGENT_PORT));
    let mut cmd = Command::new(agent_bin);
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--token-file")
        .arg(&token_file)
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--allow-cgroup")
        .arg(&node.cgroup)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the shell's next command does not reach it.
        .process_group(0);
    let child = cluster::spawn_in(node, Place::Daemon, &mut cmd)
        .with_context(|| format!("starting {} in {}", agent_bin.display(), node.name))?;
    Ok(NodeInfo {
        node: node.name.clone(),
        addr: node.addr.to_string(),
        cpus: node.cpus.clone(),
        cgroup: node.cgroup.clone(),
        agent_url: format!("http://{listen}"),
        token_file,
        state_dir,
        agent_log,
        agent_pid: child.id(),
    })
}

/// Waits until the agent answers `GET /v1/health` with its token, from the root namespace (so
/// across the bridge), failing early with its log when it exits.
fn wait_ready(info: &NodeInfo) -> Result<()> {
    let token = std::fs::read_to_string(&info.token_file)?;
    let http = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    let url = format!("{}/v1/health", info.agent_url);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http
            .get(&url)
            .set("Authorization", &format!("Bearer {}", token.trim()))
            .call();
        if matches!(&answer, Ok(r) if r.status() == 200) {
            return Ok(());
        }
        if slowpoke_testkit::proc_state(info.agent_pid).is_none_or(|s| s == 'Z') {
            bail!(
                "the agent of {} exited; its log {}:\n{}",
                info.node,
                info.agent_log.display(),
                std::fs::read_to_string(&info.agent_log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the agent of {} did not answer {url} within {READY_TIMEOUT:?}: see {}",
                info.node,
                info.agent_log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to every process in the nodes' daemon cgroups (the agents and their guardians),
/// then waits for them to exit: a terminated agent resumes what it stopped and detaches its
/// kernel programs, which SIGKILL would leave to its guardian.
fn stop_agents() {
    let pids = Cluster::leftover_pids(Place::Daemon);
    for &pid in &pids {
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) on the processes of the cluster's daemon cgroups.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while pids
        .iter()
        .any(|&p| slowpoke_testkit::proc_state(p).is_some_and(|s| s != 'Z'))
    {
        if Instant::now() > deadline {
            eprintln!(
                "xtask: agents {pids:?} did not exit {STOP_TIMEOUT:?} after SIGTERM: killing them"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

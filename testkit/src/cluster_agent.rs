//! One `slowpoke-agent` per node of a [`Cluster`](crate::cluster::Cluster), started the way
//! `cargo xtask cluster up` and the cluster tests both do: in the node's `daemon` sub-cgroup (an
//! agent protects every process of its own cgroup, so inside the node's cgroup it would protect
//! the whole node), listening on the node's address only, with a token file of its own (mode
//! 0600), a state directory of its own, `--allow-cgroup` the node's cgroup (it cannot stop
//! anything outside its node), `--node-cpus` the node's cpuset (its node stats count only the
//! node's CPUs) and `--node-cgroup` the node's cgroup (their busy time is the node's processes',
//! not the load generator's that shares the CPUs here but would run elsewhere on a real cluster).

use std::{
    io::{self, Read as _, Write as _},
    net::SocketAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::cluster::{Cluster, Node, Place, spawn_in};

/// The agent's port on every node (its default port: each node has an address of its own).
pub const AGENT_PORT: u16 = 7171;

/// A node's agent, started by [`NodeAgent::start`]. Dropping it leaves the process running (the
/// cluster's teardown stops it); [`NodeAgent::child`] is there to kill or wait for it.
pub struct NodeAgent {
    /// The node's name (`spk-n<i>`).
    pub node: String,
    /// `http://10.77.0.<10+i>:7171`.
    pub url: String,
    pub token: String,
    pub token_file: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub child: Child,
}

impl NodeAgent {
    /// Starts `bin` as `node`'s agent, its files in `dir` (`token`, `state/`, `agent.log`),
    /// with `extra` arguments after the usual ones. Returns once it is started, not ready:
    /// see [`NodeAgent::wait_ready`].
    pub fn start(
        node: &Node,
        bin: &Path,
        dir: &Path,
        token: &str,
        extra: &[&str],
    ) -> io::Result<NodeAgent> {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| io::Error::other(format!("creating {}: {e}", state_dir.display())))?;
        let token_file = dir.join("token");
        write_private(&token_file, token)?;
        let log_path = dir.join("agent.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| io::Error::other(format!("creating {}: {e}", log_path.display())))?;
        let listen = SocketAddr::from((node.addr, AGENT_PORT));
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(listen.to_string())
            .arg("--token-file")
            .arg(&token_file)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--allow-cgroup")
            .arg(&node.cgroup)
            .arg("--node-cpus")
            .arg(&node.cpus)
            .arg("--node-cgroup")
            .arg(&node.cgroup)
            .args(extra)
            .env_remove("SLOWPOKE_AGENT_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for the shell's next command does not reach it.
            .process_group(0);
        let child = spawn_in(node, Place::Daemon, &mut cmd).map_err(|e| {
            io::Error::other(format!("starting {} in {}: {e}", bin.display(), node.name))
        })?;
        Ok(NodeAgent {
            node: node.name.clone(),
            url: format!("http://{listen}"),
            token: token.to_owned(),
            token_file,
            state_dir,
            log: log_path,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its Unix socket: the node's own way in, which needs no network.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("agent.sock")
    }

    /// Waits until the agent answers `GET /v1/health` with its token, from this process's
    /// network namespace (so across the bridge from the root one), failing early with its log
    /// when it exits.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<()> {
        let http = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(2))
            .build();
        let url = format!("{}/v1/health", self.url);
        let deadline = Instant::now() + timeout;
        loop {
            let answer = http
                .get(&url)
                .set("Authorization", &format!("Bearer {}", self.token))
                .call();
            if matches!(&answer, Ok(r) if r.status() == 200) {
                return Ok(());
            }
            if crate::proc_state(self.pid()).is_none_or(|s| s == 'Z') {
                return Err(io::Error::other(format!(
                    "the agent of {} exited; its log {}:\n{}",
                    self.node,
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the agent of {} did not answer {url} within {timeout:?}: see {}",
                    self.node,
                    self.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes the cluster description (`slowpoke_api::cluster`, what `--cluster FILE` reads) of
/// `nodes` with their `agents` (same order) to `path`: each node's address, its agent's URL and
/// token file, and how to enter it.
pub fn write_description(nodes: &[Node], agents: &[NodeAgent], path: &Path) -> io::Result<()> {
    let file = slowpoke_api::cluster::ClusterFile {
        nodes: nodes
            .iter()
            .zip(agents)
            .map(|(n, a)| n.describe(&a.url, Some(a.token_file.clone())))
            .collect(),
    };
    std::fs::write(
        path,
        serde_json::to_string_pretty(&file).map_err(io::Error::other)?,
    )
}

/// SIGTERM to every process in the nodes' daemon cgroups (the agents and their guardians),
/// then waits up to `timeout` for them to exit: a terminated agent resumes what it stopped and
/// detaches its kernel programs, which SIGKILL would leave to its guardian. Returns the pids
/// still running after `timeout`.
pub fn stop_agents(timeout: Duration) -> Vec<u32> {
    let pids = Cluster::leftover_pids(Place::Daemon);
    for &pid in &pids {
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) on the processes of the cluster's daemon cgroups.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let running = || -> Vec<u32> {
        pids.iter()
            .copied()
            .filter(|&p| crate::proc_state(p).is_some_and(|s| s != 'Z'))
            .collect()
    };
    let deadline = Instant::now() + timeout;
    while !running().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    running()
}

/// A fresh random token (64 hex digits from the kernel's random source).
pub fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// Writes `text` to `path`, readable by its owner only (mode 0600): what token files need.
pub fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::other(format!("creating {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
}

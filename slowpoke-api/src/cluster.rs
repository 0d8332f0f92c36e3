//! The cluster description: which nodes an experiment spans, where each node's agent listens and
//! which token it takes, and (on the one-machine test bed) how to enter a node.
//!
//! One JSON file read by the coordinator (`slowpoke ... --cluster FILE`, `SLOWPOKE_CLUSTER`) and
//! by the emulator (`slowpoke-emu run --cluster FILE --node NAME`); `cargo xtask cluster up`
//! writes one for its nodes (docs/multi-node.md):
//!
//! ```json
//! {"nodes": [
//!   {"name": "spk-n1", "address": "10.77.0.11", "agent": "http://10.77.0.11:7171",
//!    "token_file": "spk-n1/token"},
//!   {"name": "spk-n2", "address": "10.77.0.12", "agent": "http://10.77.0.12:7171",
//!    "token_file": "spk-n2/token"}
//! ]}
//! ```
//!
//! Relative paths are relative to the file's directory. Only the types and their checks live
//! here: reading the token files is the caller's job.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// A whole cluster description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The nodes, each with one agent (at least one; names and addresses distinct).
    pub nodes: Vec<ClusterNode>,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterNode {
    /// The node's name (`[A-Za-z0-9._-]{1,63}`): what topologies place services on
    /// (`"node"`) and what messages name.
    pub name: String,
    /// The node's address on the cluster network: services placed on the node listen there and
    /// the other nodes reach them there.
    pub address: IpAddr,
    /// The node's agent: `http://HOST:PORT` (or `https://`).
    pub agent: String,
    /// The file holding that agent's bearer token (mode 0600 or stricter recommended); absent:
    /// the coordinator's default token (`--agent-token-file`, `SLOWPOKE_AGENT_TOKEN_FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// One-machine test bed only: the network namespace (`ip netns` name) a process of this
    /// node runs in. Absent on real machines: the node is the machine itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// One-machine test bed only: the cgroup directories a process of this node joins (the
    /// node's cgroup v2 directory and, on a hybrid machine, its v1 cpuset directory).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroups: Vec<PathBuf>,
    /// The node's CPUs as a cpuset list (`0-3,6`), informational (absent: all of the machine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
}

impl ClusterFile {
    /// Parses a description (JSON) and checks it; relative paths are resolved against
    /// `base_dir` (the file's directory). Errors say what to fix.
    pub fn parse(text: &str, base_dir: &Path) -> Result<ClusterFile, String> {
        let mut file: ClusterFile =
            serde_json::from_str(text).map_err(|e| format!("not a cluster description: {e}"))?;
        file.check()?;
        for n in &mut file.nodes {
            if let Some(t) = &mut n.token_file
                && t.is_relative()
            {
                *t = base_dir.join(&*t);
            }
            for c in &mut n.cgroups {
                if c.is_relative() {
                    *c = base_dir.join(&*c);
                }
            }
        }
        Ok(file)
    }

    /// Reads and parses a description file.
    pub fn load(path: &Path) -> Result<ClusterFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the cluster description {}: {e}",
                path.display()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        ClusterFile::parse(&text, dir).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node names, comma-separated (for messages).
    pub fn names(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Names valid and distinct, addresses distinct, agents URLs, at least one node.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("\"nodes\" is empty: list at least one node with its agent".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !valid_node_name(&n.name) {
                return Err(format!(
                    "node {i}: name `{}` must be 1 to 63 of A-Z a-z 0-9 . _ -",
                    n.name
                ));
            }
            if !(n.agent.starts_with("http://") || n.agent.starts_with("https://")) {
                return Err(format!(
                    "node {}: agent `{}` is not a URL: write http://HOST:7171",
                    n.name, n.agent
                ));
            }
            if let Some(other) = self.nodes[..i].iter().find(|o| o.name == n.name) {
                return Err(format!("two nodes are called `{}`", other.name));
            }
            if let Some(other) = self.nodes[..i].iter().find(|o| o.address == n.address) {
                return Err(format!(
                    "nodes `{}` and `{}` have the same address {}",
                    other.name, n.name, n.address
                ));
            }
        }
        Ok(())
    }
}

/// A CPU list in the kernel's cpuset syntax (`0-2,5` -> `[0, 1, 2, 5]`; sorted, no
/// duplicates): a node's `cpus` here, `slowpoke-agent --node-cpus`, `cpuset.cpus` files.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let bad = || format!("`{}` is not a CPU list: write e.g. 0-3,6", text.trim());
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if a > b || b - a > 65_535 {
            return Err(bad());
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A node name: 1 to 63 of `A-Z a-z 0-9 . _ -` (what topologies place services on too).
pub fn valid_node_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"{"nodes": [
        {"name": "spk-n1", "address": "10.77.0.11", "agent": "http://10.77.0.11:7171",
         "token_file": "spk-n1/token", "netns": "spk-n1", "cgroups": ["/sys/fs/cgroup/a"], "cpus": "0"},
        {"name": "spk-n2", "address": "10.77.0.12", "agent": "http://10.77.0.12:7171"}
    ]}"#;

    #[test]
    fn parses_and_resolves_relative_paths() {
        let f = ClusterFile::parse(TWO, Path::new("/tmp/c")).unwrap();
        assert_eq!(f.nodes.len(), 2);
        let n1 = f.node("spk-n1").unwrap();
        assert_eq!(
            n1.token_file.as_deref(),
            Some(Path::new("/tmp/c/spk-n1/token"))
        );
        assert_eq!(n1.cgroups, vec![PathBuf::from("/sys/fs/cgroup/a")]);
        assert_eq!(f.node("spk-n2").unwrap().token_file, None);
        assert_eq!(f.names(), "spk-n1, spk-n2");
        assert!(f.node("spk-n3").is_none());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5\n"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("3,1,1-2"), Ok(vec![1, 2, 3]));
        for bad in ["", "a", "2-1", "1,", "-1", "0-70000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_what_cannot_work() {
        let base = Path::new(".");
        let bad = |text: &str, says: &str| {
            let e = ClusterFile::parse(text, base).unwrap_err();
            assert!(e.contains(says), "{e} should say {says}");
        };
        bad(r#"{"nodes": []}"#, "at least one node");
        bad(
            r#"{"nodes": [{"name": "a b", "address": "10.0.0.1", "agent": "http://x:1"}]}"#,
            "name `a b`",
        );
        bad(
            r#"{"nodes": [{"name": "a", "address": "10.0.0.1", "agent": "x:1"}]}"#,
            "not a URL",
        );
        bad(
            r#"{"nodes": [{"name": "a", "address": "10.0.0.1", "agent": "http://x:1"},
                          {"name": "a", "address": "10.0.0.2", "agent": "http://y:1"}]}"#,
            "two nodes are called `a`",
        );
        bad(
            r#"{"nodes": [{"name": "a", "address": "10.0.0.1", "agent": "http://x:1"},
                          {"name": "b", "address": "10.0.0.1", "agent": "http://y:1"}]}"#,
            "same address",
        );
        bad(
            r#"{"nodes": [{"name": "a", "address": "nowhere", "agent": "http://x:1"}]}"#,
            "not a cluster",
        );
        bad(r#"{"nodes": [], "extra": 1}"#, "unknown field");
    }
}

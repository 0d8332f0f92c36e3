//! The agents of a cluster description (`--cluster FILE`, `SLOWPOKE_CLUSTER`): one
//! [`HttpAgent`] per node, named by the node and holding that node's own token.

use std::path::Path;

use anyhow::Context as _;
use slowpoke_api::cluster::ClusterFile;

use super::http::HttpAgent;
use super::local::read_token;

/// Reads the description at `path` and makes its agents ([`agents_of`]).
pub fn cluster_agents(path: &Path, default_token: Option<&Path>) -> anyhow::Result<Vec<HttpAgent>> {
    let file = ClusterFile::load(path).map_err(anyhow::Error::msg)?;
    agents_of(&file, default_token)
}

/// One agent per node, in the file's order, named by the node. Each takes its node's
/// `token_file`; a node without one takes the default token (`default_token`, else
/// `$SLOWPOKE_AGENT_TOKEN`), so a cluster whose agents share one token needs no token files.
/// Every token is read here, before anything is asked of any agent: a missing file is an error
/// naming the node, not a 401 in the middle of an experiment.
pub fn agents_of(
    file: &ClusterFile,
    default_token: Option<&Path>,
) -> anyhow::Result<Vec<HttpAgent>> {
    let default = read_token(default_token)?;
    file.nodes
        .iter()
        .map(|n| {
            let token = match &n.token_file {
                Some(f) => Some(slowpoke_api::auth::read_token_file(f).with_context(|| {
                    format!(
                        "node {}: cannot use its agent's token file {} (the cluster description's `token_file`)",
                        n.name,
                        f.display()
                    )
                })?),
                None => default.clone(),
            };
            Ok(HttpAgent::new(&n.agent, token).on_node(&n.name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::agents::AgentClient as _;

    fn private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn each_node_has_its_name_and_token_file() {
        let dir = slowpoke_testkit::TempDir::new("cluster-agents");
        private(&dir.path().join("t1"), "one\n");
        private(&dir.path().join("default"), "shared");
        let text = r#"{"nodes": [
            {"name": "spk-n1", "address": "10.77.0.11", "agent": "http://10.77.0.11:7171", "token_file": "t1"},
            {"name": "spk-n2", "address": "10.77.0.12", "agent": "http://10.77.0.12:7171/"}
        ]}"#;
        let file = ClusterFile::parse(text, dir.path()).unwrap();
        let agents = agents_of(&file, Some(&dir.path().join("default"))).unwrap();
        let names: Vec<_> = agents.iter().map(|a| (a.name(), a.url())).collect();
        assert_eq!(
            names,
            vec![
                ("spk-n1".to_owned(), "http://10.77.0.11:7171".to_owned()),
                ("spk-n2".to_owned(), "http://10.77.0.12:7171".to_owned()),
            ]
        );
        assert_eq!(agents[0].token(), Some("one"));
        assert_eq!(agents[1].token(), Some("shared"));
    }

    #[test]
    fn a_missing_token_file_names_the_node() {
        let dir = slowpoke_testkit::TempDir::new("cluster-agents");
        let text = r#"{"nodes": [
            {"name": "spk-n1", "address": "10.77.0.11", "agent": "http://10.77.0.11:7171", "token_file": "gone"}
        ]}"#;
        let file = ClusterFile::parse(text, dir.path()).unwrap();
        let Err(e) = agents_of(&file, None) else {
            panic!("a token file that is not there was accepted")
        };
        let e = format!("{e:#}");
        assert!(e.contains("node spk-n1") && e.contains("gone"), "{e}");
    }

    #[test]
    fn an_unreachable_agent_is_named_by_its_node_and_url() {
        // Port 9 on loopback: nothing listens there, the connection is refused at once.
        let a = HttpAgent::new("http://127.0.0.1:9", None).on_node("spk-n2");
        let e = a.health().unwrap_err().to_string();
        assert!(e.contains("agent spk-n2 (http://127.0.0.1:9)"), "{e}");
    }
}

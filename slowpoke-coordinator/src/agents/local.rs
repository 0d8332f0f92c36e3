//! Finding the agents of this node: the bearer token for TCP agents, and the node's agent daemon
//! behind its root-only socket.

use super::http::HttpAgent;

/// Reads the agents' bearer token: the file when given (an unreadable or empty file is an
/// error), else `$SLOWPOKE_AGENT_TOKEN` ([`slowpoke_api::auth::token_from_file_or_env`]).
pub fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    Ok(slowpoke_api::auth::token_from_file_or_env(
        file,
        slowpoke_api::auth::AGENT_TOKEN_ENV,
    )?)
}

/// The state directory of a node's agent daemon unless it was given another
/// (`slowpoke-agent --state-dir`); its socket is `agent.sock` in there.
pub const DEFAULT_AGENT_STATE_DIR: &str = "/run/slowpoke";

/// The socket of the agent daemon on this node: `STATE_DIR/agent.sock`.
pub fn local_socket(state_dir: Option<&std::path::Path>) -> std::path::PathBuf {
    state_dir
        .unwrap_or(std::path::Path::new(DEFAULT_AGENT_STATE_DIR))
        .join("agent.sock")
}

/// The agent daemon on this node, if its socket exists and can be trusted: a socket file owned
/// by root (or by this user) that others may not write to. Anything else at that path is an
/// error, not something to talk to: whoever made it could answer as the agent and steer the
/// experiment. (No secret is at stake: the socket never gets a token.) A TCP port on this node
/// is never probed: anybody may listen there, and it would get the token.
pub fn local_daemon(state_dir: Option<&std::path::Path>) -> anyhow::Result<Option<HttpAgent>> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let path = local_socket(state_dir);
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(None);
    };
    // SAFETY: a plain getter.
    let me = unsafe { libc::geteuid() };
    let problem = if !meta.file_type().is_socket() {
        Some("it is not a socket".to_owned())
    } else if meta.uid() != 0 && meta.uid() != me {
        Some(format!(
            "it belongs to uid {}, not root: an agent's socket is root's",
            meta.uid()
        ))
    } else if meta.mode() & 0o002 != 0 {
        Some(format!(
            "its mode {:o} lets anyone write to it",
            meta.mode() & 0o777
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        anyhow::bail!(
            "refusing the agent socket {}: {problem}; remove it (or fix the agent's --socket), or name an agent with --agent",
            path.display()
        );
    }
    Ok(Some(HttpAgent::new(
        &format!("unix:{}", path.display()),
        None,
    )))
}

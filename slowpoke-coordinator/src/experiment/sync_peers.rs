//! Synchronized pauses between nodes, the coordinator's part (issue #16, item 4): when an
//! experiment with synchronized pauses talks to several agents, each agent's plan names the
//! others' sync addresses and one fresh random key, so a quantum pause on one node makes the
//! delayed services of every node pay at the same moment (docs/multi-node.md, "Synchronized
//! pauses between nodes").

use std::fmt::Write as _;

use slowpoke_api::agent::{self as api, Mode};

use super::warnings::Warnings;
use crate::agents::SharedAgent;

/// Each agent's `sync_peers`, decided once per experiment (one key for all its plans).
#[derive(Debug, Default)]
pub(super) struct SyncPeering {
    decided: Option<Vec<Option<api::SyncPeers>>>,
}

impl SyncPeering {
    /// The `sync_peers` of each agent's copy of `plan`, in agent order: none unless the plan
    /// is synchronized pauses and there are several agents, each with a reachable sync address
    /// (otherwise pauses are synchronized within each node only, and the result says why).
    pub(super) fn for_agents(
        &mut self,
        agents: &[SharedAgent],
        plan: &api::SlowdownPlan,
        warnings: &mut Warnings,
    ) -> &[Option<api::SyncPeers>] {
        self.decided.get_or_insert_with(|| {
            if !plan.synchronized || plan.mode != Mode::Pause || agents.len() < 2 {
                return vec![None; agents.len()];
            }
            match sync_addrs(agents) {
                Ok(addrs) => assign(&addrs, &random_key())
                    .into_iter()
                    .map(Some)
                    .collect(),
                Err(why) => {
                    warnings.once(format!(
                        "pauses are synchronized within each node only: {why}"
                    ));
                    vec![None; agents.len()]
                }
            }
        })
    }
}

/// Every agent's sync address (`GET /v1/health`), or why one cannot be had.
fn sync_addrs(agents: &[SharedAgent]) -> Result<Vec<String>, String> {
    agents
        .iter()
        .map(|a| {
            let h = a
                .health()
                .map_err(|e| format!("agent {} did not say its sync address ({e})", a.name()))?;
            let addr = h.sync_addr.ok_or_else(|| {
                format!(
                    "agent {} has no sync address (start it with --listen or --sync-listen)",
                    a.name()
                )
            })?;
            match addr.parse::<std::net::SocketAddr>() {
                Ok(s) if !s.ip().is_unspecified() => Ok(addr),
                _ => Err(format!(
                    "agent {} has the sync address {addr}, which its peers cannot reach (start \
                     it with --sync-listen <its IP>:7172)",
                    a.name()
                )),
            }
        })
        .collect()
}

/// Agent `i`'s peers are every address but its own, all under `key`.
fn assign(addrs: &[String], key: &str) -> Vec<api::SyncPeers> {
    (0..addrs.len())
        .map(|i| api::SyncPeers {
            key: key.to_owned(),
            peers: addrs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, a)| a.clone())
                .collect(),
        })
        .collect()
}

/// 32 random bytes as 64 hex digits (`rand`'s thread generator: ChaCha seeded from the OS).
fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_agent_gets_the_others_and_one_key() {
        let addrs = ["10.77.0.11:7172", "10.77.0.12:7172", "10.77.0.13:7172"].map(String::from);
        let got = assign(&addrs, "k");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].peers, ["10.77.0.12:7172", "10.77.0.13:7172"]);
        assert_eq!(got[1].peers, ["10.77.0.11:7172", "10.77.0.13:7172"]);
        assert_eq!(got[2].peers, ["10.77.0.11:7172", "10.77.0.12:7172"]);
        assert!(got.iter().all(|p| p.key == "k"));
    }

    #[test]
    fn keys_are_fresh_64_hex_digits() {
        let (a, b) = (random_key(), random_key());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}

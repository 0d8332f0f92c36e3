//! Synchronized pauses between nodes, the coordinator's part (issue #16, item 4): when an
//! experiment with synchronized pauses talks to several agents, each agent's plan names the
//! others' sync addresses and one fresh random key, so a quantum pause on one node makes the
//! delayed services of every node pay at the same moment (docs/multi-node.md, "Synchronized
//! pauses between nodes").

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
    /// `across_nodes` false (the actuator `synchronized-per-node`) leaves every node on its own
    /// phases.
    pub(super) fn for_agents(
        &mut self,
        agents: &[SharedAgent],
        plan: &api::SlowdownPlan,
        across_nodes: bool,
        warnings: &mut Warnings,
    ) -> &[Option<api::SyncPeers>] {
        self.decided.get_or_insert_with(|| {
            if !across_nodes || !plan.synchronized || plan.mode != Mode::Pause || agents.len() < 2 {
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
    hex::encode(rand::random::<[u8; 32]>())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::agents::{AgentClient, AgentError};

    /// An agent that only answers its health, with this sync address.
    struct Health(&'static str, Option<&'static str>);

    impl AgentClient for Health {
        fn name(&self) -> String {
            self.0.into()
        }
        fn health(&self) -> Result<api::Health, AgentError> {
            Ok(api::Health {
                status: "ok".into(),
                sync_addr: self.1.map(String::from),
                ..api::Health::default()
            })
        }
        fn put_service(
            &self,
            _: &str,
            _: &api::ServiceSpec,
        ) -> Result<api::ServiceInfo, AgentError> {
            unreachable!()
        }
        fn delete_service(&self, _: &str) -> Result<(), AgentError> {
            unreachable!()
        }
        fn stats(&self) -> Result<api::Stats, AgentError> {
            unreachable!()
        }
        fn set_slowdown(&self, _: &api::SlowdownPlan) -> Result<(), AgentError> {
            unreachable!()
        }
        fn clear_slowdown(&self, _: &str) -> Result<(), AgentError> {
            unreachable!()
        }
        fn renew_lease(&self, _: &str, _: Duration) -> Result<(), AgentError> {
            unreachable!()
        }
    }

    fn agents(list: &[(&'static str, Option<&'static str>)]) -> Vec<SharedAgent> {
        list.iter()
            .map(|&(n, a)| Arc::new(Health(n, a)) as SharedAgent)
            .collect()
    }

    fn synchronized() -> api::SlowdownPlan {
        api::SlowdownPlan {
            synchronized: true,
            ..api::SlowdownPlan::default()
        }
    }

    #[test]
    fn several_agents_with_sync_addresses_get_each_other_once_per_experiment() {
        let agents = agents(&[
            ("n1", Some("10.77.0.11:7172")),
            ("n2", Some("10.77.0.12:7172")),
        ]);
        let mut w = Warnings::default();
        let mut peering = SyncPeering::default();
        let first = peering
            .for_agents(&agents, &synchronized(), true, &mut w)
            .to_vec();
        let p1 = first[0].as_ref().expect("peers for n1");
        let p2 = first[1].as_ref().expect("peers for n2");
        assert_eq!(p1.peers, ["10.77.0.12:7172"]);
        assert_eq!(p2.peers, ["10.77.0.11:7172"]);
        assert_eq!(p1.key, p2.key);
        // The next plan of the same experiment: the same key.
        assert_eq!(
            peering.for_agents(&agents, &synchronized(), true, &mut w),
            first
        );
        assert!(w.take().is_empty());
    }

    #[test]
    fn an_agent_without_a_usable_sync_address_leaves_every_node_on_its_own() {
        for (addr, why) in [
            (None, "has no sync address"),
            (Some("0.0.0.0:7172"), "cannot reach"),
        ] {
            let agents = agents(&[("n1", Some("10.77.0.11:7172")), ("n2", addr)]);
            let mut w = Warnings::default();
            let got = SyncPeering::default()
                .for_agents(&agents, &synchronized(), true, &mut w)
                .to_vec();
            assert_eq!(got, [None, None]);
            let said = w.take();
            assert!(
                said.len() == 1
                    && said[0]
                        .starts_with("pauses are synchronized within each node only: agent n2")
                    && said[0].contains(why),
                "{said:?}"
            );
        }
    }

    #[test]
    fn one_agent_or_an_unsynchronized_plan_has_no_peers() {
        let two = agents(&[
            ("n1", Some("10.77.0.11:7172")),
            ("n2", Some("10.77.0.12:7172")),
        ]);
        let mut w = Warnings::default();
        let plain = api::SlowdownPlan::default();
        assert_eq!(
            SyncPeering::default().for_agents(&two, &plain, true, &mut w),
            [None, None]
        );
        // `synchronized-per-node`: synchronized within each node, no peering.
        assert_eq!(
            SyncPeering::default().for_agents(&two, &synchronized(), false, &mut w),
            [None, None]
        );
        let one = agents(&[("n1", Some("10.77.0.11:7172"))]);
        assert_eq!(
            SyncPeering::default().for_agents(&one, &synchronized(), true, &mut w),
            [None]
        );
        assert!(w.take().is_empty());
    }

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

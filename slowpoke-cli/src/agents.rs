//! `slowpoke agents`: the node agents, their health, kernel features and clock offset.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use slowpoke_coordinator::agents::{self, HttpAgent, SharedAgent};

use crate::common;
use crate::connect::named_agents;

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// The agents to list: --cluster FILE, --agent URL (default: the daemon on this node, its
    /// socket STATE_DIR/agent.sock).
    #[command(flatten)]
    pub(crate) to: common::AgentArgs,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(serde::Serialize)]
pub(crate) struct AgentRow {
    /// The agent's node (from --cluster), else its URL.
    pub(crate) agent: String,
    pub(crate) url: String,
    pub(crate) healthy: bool,
    pub(crate) status: String,
    pub(crate) version: Option<String>,
    pub(crate) features: BTreeMap<String, String>,
    /// The agent's clock against this machine's (`CLOCK_MONOTONIC`), from timed calls.
    pub(crate) clock: Option<agents::ClockOffset>,
}

/// Timed calls per agent for its clock offset.
const CLOCK_CALLS: usize = 5;

pub(crate) fn list_agents(a: &ListArgs) -> anyhow::Result<()> {
    let named = named_agents(&a.to)?;
    let local = named.is_empty();
    let list = if local {
        // Checked like any local daemon before it is asked anything.
        let state_dir = a.to.agent_state_dir.as_deref();
        let _ = agents::local_daemon(state_dir)?;
        let socket = format!("unix:{}", agents::local_socket(state_dir).display());
        vec![std::sync::Arc::new(HttpAgent::new(&socket, None)) as SharedAgent]
    } else {
        named
    };
    // The agents are asked at the same time: a node that does not answer costs one timeout.
    let rows: Vec<AgentRow> = agents::on_every_agent(&list, |ag| match ag.health() {
        Ok(h) => AgentRow {
            agent: ag.name(),
            url: ag.url(),
            healthy: h.status == "ok",
            status: h.status,
            version: Some(h.version),
            features: h.features,
            clock: agents::clock_offset(ag, CLOCK_CALLS).ok().flatten(),
        },
        Err(e) => AgentRow {
            agent: ag.name(),
            url: ag.url(),
            healthy: false,
            status: e.to_string(),
            version: None,
            features: BTreeMap::new(),
            clock: None,
        },
    });
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in &rows {
            let name = if r.agent == r.url {
                r.agent.clone()
            } else {
                format!("{} ({})", r.agent, r.url)
            };
            println!(
                "{:<28} {:<8} {}",
                name,
                if r.healthy { "healthy" } else { "DOWN" },
                r.version.as_deref().unwrap_or("")
            );
            if !r.healthy {
                println!("    {}", r.status);
            }
            if let Some(c) = &r.clock {
                println!(
                    "    clock: {:+.3} ms ± {:.3} ms against this machine's",
                    c.offset_ns as f64 / 1e6,
                    c.uncertainty_ns as f64 / 1e6
                );
            }
            for (k, v) in &r.features {
                println!("    {k}: {v}");
            }
        }
        if local && !rows[0].healthy {
            println!(
                "(no agent daemon on this node: `slowpoke what-if` then starts an agent in its own process)"
            );
        }
    }
    if rows.iter().all(|r| r.healthy) {
        Ok(())
    } else {
        bail!(
            "{} of {} agents are not healthy",
            rows.iter().filter(|r| !r.healthy).count(),
            rows.len()
        )
    }
}

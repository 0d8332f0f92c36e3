//! `slowpoke agents`: the node agents, their health, kernel features and clock offset.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use slowpoke_coordinator::agents;

use crate::connect::http_agents;

#[derive(Args, Debug)]
pub(crate) struct AgentArgs {
    /// Agent URLs (default: the daemon on this node, unix:/run/slowpoke/agent.sock).
    #[arg(long = "agent", value_name = "URL")]
    pub(crate) agent: Vec<String>,
    #[arg(long, value_name = "FILE")]
    pub(crate) agent_token_file: Option<PathBuf>,
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(serde::Serialize)]
pub(crate) struct AgentRow {
    pub(crate) agent: String,
    pub(crate) healthy: bool,
    pub(crate) status: String,
    pub(crate) version: Option<String>,
    pub(crate) features: BTreeMap<String, String>,
    /// The agent's clock against this machine's (`CLOCK_MONOTONIC`), from timed calls.
    pub(crate) clock: Option<agents::ClockOffset>,
}

/// Timed calls per agent for its clock offset.
const CLOCK_CALLS: usize = 5;

pub(crate) fn list_agents(a: &AgentArgs) -> anyhow::Result<()> {
    let urls = if a.agent.is_empty() {
        // Checked like any local daemon before it is asked anything.
        let _ = agents::local_daemon(None)?;
        vec![format!("unix:{}", agents::local_socket(None).display())]
    } else {
        a.agent.clone()
    };
    let list = http_agents(&urls, a.agent_token_file.as_deref())?;
    let rows: Vec<AgentRow> = list
        .iter()
        .map(|ag| match ag.health() {
            Ok(h) => AgentRow {
                agent: ag.name(),
                healthy: h.status == "ok",
                status: h.status,
                version: Some(h.version),
                features: h.features,
                clock: agents::clock_offset(ag.as_ref(), CLOCK_CALLS)
                    .ok()
                    .flatten(),
            },
            Err(e) => AgentRow {
                agent: ag.name(),
                healthy: false,
                status: e.to_string(),
                version: None,
                features: BTreeMap::new(),
                clock: None,
            },
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<28} {:<8} {}",
                r.agent,
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
        if a.agent.is_empty() && !rows[0].healthy {
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

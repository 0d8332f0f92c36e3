//! Which agents an experiment talks to: `--cluster FILE`'s nodes or `--agent` URLs, else the
//! daemon on this node (its socket), else an agent in this process (feature `in-process`, needs
//! root).

use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "in-process")]
use anyhow::Context as _;
use anyhow::bail;
use slowpoke_coordinator::agents::{self, AgentClient as _, HttpAgent, SharedAgent};
#[cfg(feature = "in-process")]
use slowpoke_coordinator::real::InProcessAgent;

use crate::common::{AgentArgs, CommonArgs, stopped_share_arg};

/// The agents an experiment uses, and the in-process one to shut down at the end.
pub(crate) struct AgentSet {
    pub(crate) agents: Vec<SharedAgent>,
    #[cfg(feature = "in-process")]
    pub(crate) in_process: Option<slowpoke_agent::Agent>,
}

impl AgentSet {
    /// Agents running elsewhere (daemons reached over HTTP).
    pub(crate) fn remote(agents: Vec<SharedAgent>) -> AgentSet {
        AgentSet {
            agents,
            #[cfg(feature = "in-process")]
            in_process: None,
        }
    }

    /// Shuts the in-process agent down, if one was started (it resumes whatever it paused).
    #[cfg_attr(not(feature = "in-process"), allow(clippy::unused_self))]
    pub(crate) fn shutdown(self, rt: &tokio::runtime::Runtime) {
        #[cfg(feature = "in-process")]
        if let Some(a) = self.in_process {
            rt.block_on(a.shutdown());
        }
        #[cfg(not(feature = "in-process"))]
        let _ = rt;
    }
}

pub(crate) fn http_agents(
    urls: &[String],
    token_file: Option<&Path>,
) -> anyhow::Result<Vec<SharedAgent>> {
    let token = agents::read_token(token_file)?;
    urls.iter()
        .map(|u| {
            if !u.starts_with("http://")
                && !u.starts_with("https://")
                && agents::socket_path(u).is_none()
            {
                bail!(
                    "--agent `{u}` is not a URL: write http://host:7171 or unix:/run/slowpoke/agent.sock"
                );
            }
            Ok(Arc::new(HttpAgent::new(u, token.clone())) as SharedAgent)
        })
        .collect()
}

/// The agents `to` names explicitly: the cluster description's nodes (each with its own token)
/// or the `--agent` URLs; empty when it names none. Both at once is an error: which token goes
/// to which agent would be a guess.
pub(crate) fn named_agents(to: &AgentArgs) -> anyhow::Result<Vec<SharedAgent>> {
    match &to.cluster {
        Some(file) if !to.agent.is_empty() => bail!(
            "--cluster {} and --agent both name the agents: give one (the cluster description lists every node's agent and token; SLOWPOKE_CLUSTER counts as --cluster)",
            file.display()
        ),
        Some(file) => Ok(
            agents::cluster_agents(file, to.agent_token_file.as_deref())?
                .into_iter()
                .map(|a| Arc::new(a) as SharedAgent)
                .collect(),
        ),
        None if to.agent.is_empty() => Ok(Vec::new()),
        None => http_agents(&to.agent, to.agent_token_file.as_deref()),
    }
}

pub(crate) fn connect_agents(
    rt: &tokio::runtime::Runtime,
    c: &CommonArgs,
) -> anyhow::Result<AgentSet> {
    if let Some(share) = c.max_stopped_share {
        stopped_share_arg(share)?;
    }
    connect(rt, &c.agents, c.max_stopped_share, None)
}

/// `--cluster` nodes or `--agent` URLs when given; else the daemon on this node, else an agent
/// in this process.
/// `max_stopped_share` is the user's `--max-stopped-share` (a running agent keeps its own: a
/// warning), `in_process_ceiling` the command's own most a plan may ask of an agent in this
/// process (default the agent's, 0.9; at least `max_stopped_share`).
pub(crate) fn connect(
    rt: &tokio::runtime::Runtime,
    to: &AgentArgs,
    max_stopped_share: Option<f64>,
    in_process_ceiling: Option<f64>,
) -> anyhow::Result<AgentSet> {
    let state_dir = to.agent_state_dir.as_deref();
    let ignored_cap = || {
        if max_stopped_share.is_some() {
            eprintln!(
                "warning: --max-stopped-share sets the cap of an agent in this process; a running agent keeps its own (slowpoke-agent --max-stopped-share)"
            );
        }
    };
    let list = named_agents(to)?;
    if !list.is_empty() {
        ignored_cap();
        for a in &list {
            a.health()?;
        }
        return Ok(AgentSet::remote(list));
    }
    // A daemon on this node wins (it holds the node's lock); else start one in this process.
    // It is found through its socket only: a TCP port on this node could be anybody's, and
    // would get the token.
    if let Some(local) = agents::local_daemon(state_dir)?
        && local.health().is_ok()
    {
        ignored_cap();
        return Ok(AgentSet::remote(vec![Arc::new(local)]));
    }
    start_in_process(rt, state_dir, max_stopped_share, in_process_ceiling)
}

/// No agent is running on this node: start one in this process (needs root). The user's
/// `--max-stopped-share` is its default cap; a plan may ask for up to `plan_ceiling` (default
/// the agent's) or that cap, whichever is higher (`AgentConfig::plan_ceiling`).
#[cfg(feature = "in-process")]
pub(crate) fn start_in_process(
    rt: &tokio::runtime::Runtime,
    state_dir: Option<&Path>,
    max_stopped_share: Option<f64>,
    plan_ceiling: Option<f64>,
) -> anyhow::Result<AgentSet> {
    let mut cfg = slowpoke_agent::AgentConfig::default();
    if let Some(d) = state_dir {
        d.clone_into(&mut cfg.state_dir);
    }
    if let Some(share) = max_stopped_share {
        cfg.max_stopped_share = share;
    }
    if let Some(ceiling) = plan_ceiling {
        cfg.max_plan_stopped_share = ceiling;
    }
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .with_context(|| format!("no --agent given and no agent daemon answers on {}, so slowpoke starts one in this process (needs root)", agents::local_socket(state_dir).display()))?;
    let inner = agent.agent().clone();
    Ok(AgentSet {
        agents: vec![Arc::new(agent)],
        in_process: Some(inner),
    })
}

/// This build has no in-process agent: say so instead of failing somewhere later.
#[cfg(not(feature = "in-process"))]
pub(crate) fn start_in_process(
    _rt: &tokio::runtime::Runtime,
    state_dir: Option<&Path>,
    _max_stopped_share: Option<f64>,
    _plan_ceiling: Option<f64>,
) -> anyhow::Result<AgentSet> {
    bail!(
        "no --agent given and no agent daemon answers on {}; this slowpoke was built \
         without the in-process agent (cargo feature `in-process`), so it needs a running agent: \
         start `slowpoke-agent` on this node, or give --agent URL (e.g. --agent http://10.0.0.2:7171)",
        agents::local_socket(state_dir).display()
    )
}

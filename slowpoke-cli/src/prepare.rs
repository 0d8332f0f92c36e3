//! Everything an experiment runs against, prepared in the order that fails cheapest first: the
//! app's description and target, the entry's answer, then the agents and the app itself.

use std::sync::Arc;

use anyhow::bail;
use slowpoke_coordinator::experiment::{Backends, LoadConfig, LoadStarter as _};
use slowpoke_coordinator::kubernetes::KubeAccess;
use slowpoke_coordinator::lease::Lease;
use slowpoke_coordinator::real::{CommandTruthApp, RealLoadStarter, TruthCommands};
use slowpoke_coordinator::spec_builder::Emulator;

use crate::common::CommonArgs;
use crate::connect::{AgentSet, connect_agents};
use crate::progress::runtime;

/// Starts the emulated apps of `--topology`; without the feature `emu`, none (a topology is
/// refused with a message saying so).
#[cfg(feature = "emu")]
pub(crate) const EMULATOR: Option<&dyn Emulator> = Some(&slowpoke_eval::EmuApps);
#[cfg(not(feature = "emu"))]
pub(crate) const EMULATOR: Option<&dyn Emulator> = None;

/// With `--cluster`, a `--topology` app is spread over the cluster's nodes (each service where
/// the topology's `"node"` puts it, else round robin; docs/multi-node.md).
#[cfg(feature = "emu")]
fn cluster_emulator(c: &CommonArgs) -> Option<Box<dyn Emulator>> {
    c.agents
        .cluster
        .as_ref()
        .map(|f| Box::new(slowpoke_eval::EmuApps::on_cluster(f.clone())) as Box<dyn Emulator>)
}

#[cfg(not(feature = "emu"))]
fn cluster_emulator(_c: &CommonArgs) -> Option<Box<dyn Emulator>> {
    None
}

pub(crate) struct Prepared {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) agents: AgentSet,
    pub(crate) backends: Backends,
}

/// Checks what can be checked cheaply, then connects the agents and starts the app (whose
/// ground truth is `truth` when given).
pub(crate) fn prepare(
    c: &CommonArgs,
    target: Option<&str>,
    load: &LoadConfig,
    truth: Option<TruthCommands>,
    lease: Lease,
) -> anyhow::Result<Prepared> {
    let plan = c.app_request()?;
    let names = plan.service_names(EMULATOR).map_err(anyhow::Error::msg)?;
    if let Some(t) = target
        && !names.iter().any(|n| n == t)
    {
        bail!(
            "unknown target `{t}`: the app's services are {}",
            names.join(", ")
        );
    }
    if plan.topology.is_none()
        && let Some(entry) = &plan.entry
    {
        // Fail fast, before any agent is touched.
        let mut probe = load.clone();
        probe.url.clone_from(entry);
        if let Err(e) = RealLoadStarter.probe(&probe) {
            bail!("the entry URL {entry} does not answer: {e}");
        }
    }
    let rt = runtime()?;
    let agents = connect_agents(&rt, c)?;
    let mut app = match cluster_emulator(c) {
        Some(on_cluster) => plan.start(Some(&*on_cluster)),
        None => plan.start(EMULATOR),
    }
    .map_err(anyhow::Error::msg)?;
    if let Some(commands) = truth {
        app = Box::new(CommandTruthApp::new(app, commands));
    }
    let backends = Backends {
        agents: agents.agents.clone(),
        app,
        load: Arc::new(RealLoadStarter),
        lease,
        kubernetes: Arc::new(KubeAccess::new(c.agents.kubeconfig.clone())),
    };
    Ok(Prepared {
        rt,
        agents,
        backends,
    })
}

pub(crate) fn shutdown(p: Prepared) {
    let Prepared {
        rt,
        agents,
        backends,
    } = p;
    drop(backends);
    agents.shutdown(&rt);
}

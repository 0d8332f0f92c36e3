//! `slowpoke serve`: the HTTP API and web page over the agents, with this binary's launcher
//! (running apps, and emulated ones with the feature `emu`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use slowpoke_coordinator::results::ResultStore;
use slowpoke_coordinator::server;

use crate::common::AgentArgs;
use crate::common::lease_arg;
use crate::connect::connect;
use crate::progress::runtime;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Listen address; off loopback --token-file is mandatory.
    #[arg(long, default_value = slowpoke_coordinator::server::DEFAULT_LISTEN)]
    pub(crate) listen: std::net::SocketAddr,
    /// Bearer token every /v1 call must carry.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Where results are stored and read from.
    #[arg(long, value_name = "DIR")]
    pub(crate) results_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) agents: AgentArgs,
    /// A name this server answers to besides localhost, 127.0.0.1, [::1] and the listen address
    /// (the Host header; repeatable; needs --token-file).
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub(crate) allowed_host: Vec<String>,
    /// A host an experiment's `entry` may send load to (repeatable). Default: loopback only.
    #[arg(long = "allow-entry-host", value_name = "HOST[:PORT]")]
    pub(crate) allow_entry_host: Vec<slowpoke_coordinator::server::EntryHost>,
    /// The directory experiments' `topology` files must be in (default: none; requests naming a
    /// topology are refused).
    #[arg(long, value_name = "DIR")]
    pub(crate) topology_dir: Option<PathBuf>,
    /// Lease of each experiment's plans on the agents, seconds: renewed while it runs; if the
    /// server dies, the agents remove its plan within this long.
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    pub(crate) lease: f64,
}

pub(crate) fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let token = a
        .token_file
        .as_deref()
        .map(slowpoke_api::auth::read_token_file)
        .transpose()?;
    // Checked before any agent is started: a refusal must not leave one behind.
    let token = server::bearer_policy(a.listen, token)?
        .token()
        .map(str::to_owned);
    let policy = server::ServePolicy {
        allowed_hosts: a.allowed_host.clone(),
        entry_hosts: a.allow_entry_host.clone(),
        topology_dir: a.topology_dir.clone(),
        ..server::ServePolicy::default()
    };
    policy.check_start(token.is_some())?;
    let lease = lease_arg(a.lease)?;
    let rt = runtime()?;
    let set = connect(&rt, &a.agents, None, None)?;
    let cfg = server::ServeConfig {
        listen: a.listen,
        token,
        results_dir: a
            .results_dir
            .clone()
            .unwrap_or_else(ResultStore::default_dir),
        agents: set.agents.clone(),
        launcher: Arc::new(launcher().with_kubeconfig(a.agents.kubeconfig.clone())),
        policy,
        lease,
    };
    eprintln!("slowpoke serve: http://{}/", a.listen);
    let r = rt.block_on(server::serve(cfg));
    set.shutdown(&rt);
    r
}

/// Running apps, and emulated ones (`topology`) when this binary has the emulator.
fn launcher() -> server::RealLauncher {
    #[cfg(feature = "emu")]
    return server::RealLauncher::with_emulator(Arc::new(slowpoke_eval::EmuApps));
    #[cfg(not(feature = "emu"))]
    server::RealLauncher::default()
}

//! The emulated app behind the runner's [`App`] trait: [`EmuApp`] starts a topology with
//! `slowpoke-emu` and applies ground truth live (lowers the target's per-visit work, or changes
//! its worker threads); [`EmuApps`] is the [`Emulator`] the `slowpoke` binary and server use for
//! `--topology` / `topology`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use slowpoke_api::agent as api;
use slowpoke_api::cluster::ClusterFile;
use slowpoke_coordinator::experiment::{App, TruthChange};
use slowpoke_coordinator::spec_builder::Emulator;

/// Which per-visit work a ground truth lowers when a what-if removes Δ from a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TruthOn {
    /// The endpoints' `cpu_us` (work outside any lock).
    #[default]
    Cpu,
    /// The endpoints' `lock_us` (the critical section under the service's mutex).
    Lock,
}

impl TruthOn {
    fn key(self) -> &'static str {
        self.setting(0.0).key()
    }

    /// The emulator setting that puts `us` µs of this work on a visit.
    fn setting(self, us: f64) -> slowpoke_emu::Setting {
        match self {
            TruthOn::Cpu => slowpoke_emu::Setting::CpuUs(us),
            TruthOn::Lock => slowpoke_emu::Setting::LockUs(us),
        }
    }
}

/// What a ground-truth change replaced, to put it back.
enum Applied {
    /// (service, which work, endpoint → original value in µs).
    Work(String, TruthOn, BTreeMap<String, f64>),
    /// (service, original threads).
    Threads(String, u32),
}

/// An emulated app started from a topology file; it applies ground truth live by lowering the
/// target's endpoints' `cpu_us` (or `lock_us`), or by changing its worker threads.
pub struct EmuApp {
    app: slowpoke_emu::RunningApp,
    topology: slowpoke_emu::Topology,
    truth_on: TruthOn,
    /// Parallelism declared for some services (`cores` of their specs).
    cores: BTreeMap<String, f64>,
    /// The truth change while it is applied.
    applied: Option<Applied>,
}

impl EmuApp {
    /// Starts `path` with `sets` applied (`svc.endpoint.key=value`), services on 127.0.0.1.
    pub fn start(path: &Path, sets: &[slowpoke_emu::Set]) -> anyhow::Result<EmuApp> {
        Self::start_opts(path, sets, None)
    }

    /// Starts `path` across the nodes of a cluster description: one `slowpoke-emu run --cluster
    /// --node` per node that hosts services (placed by the topology's `node` fields and
    /// `cluster.place`, e.g. [`slowpoke_emu::placement::spread`]). The services' selectors stay
    /// pids + listen ports, which every agent of the one-machine test bed can see (each agent's
    /// `--allow-cgroup` leaves the other nodes' processes out); on real machines run
    /// `slowpoke-emu run --cluster F --node N` on each machine and register `port:` selectors.
    pub fn start_on(
        path: &Path,
        sets: &[slowpoke_emu::Set],
        cluster: &slowpoke_emu::ClusterStart,
    ) -> anyhow::Result<EmuApp> {
        Self::start_opts(path, sets, Some(cluster))
    }

    fn start_opts(
        path: &Path,
        sets: &[slowpoke_emu::Set],
        cluster: Option<&slowpoke_emu::ClusterStart>,
    ) -> anyhow::Result<EmuApp> {
        let mut topology = slowpoke_emu::load(path)
            .with_context(|| format!("cannot load the topology {}", path.display()))?;
        for s in sets {
            topology
                .apply(s)
                .map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
        }
        let mut opts = slowpoke_emu::StartOptions::new(&topology);
        opts.cluster = cluster.cloned();
        let app = slowpoke_emu::RunningApp::start_with(&opts)
            .with_context(|| format!("cannot start the emulated app {}", path.display()))?;
        Ok(EmuApp {
            app,
            topology,
            truth_on: TruthOn::Cpu,
            cores: BTreeMap::new(),
            applied: None,
        })
    }

    /// Declares `service`'s parallelism to the agents (its spec's `cores`) instead of letting
    /// them measure it, as a user would for a lock-bound service.
    #[must_use]
    pub fn with_cores(mut self, service: &str, cores: f64) -> EmuApp {
        self.cores.insert(service.to_owned(), cores);
        self
    }

    /// Which work the ground truth lowers (default: `cpu_us`).
    #[must_use]
    pub fn with_truth_on(mut self, on: TruthOn) -> EmuApp {
        self.truth_on = on;
        self
    }

    pub fn running(&self) -> &slowpoke_emu::RunningApp {
        &self.app
    }

    pub fn topology(&self) -> &slowpoke_emu::Topology {
        &self.topology
    }

    fn lower_work(&mut self, service: &str, delta_ns: f64) -> Result<(), String> {
        let svc = self
            .topology
            .services
            .get(service)
            .ok_or_else(|| format!("`{service}` is not in the topology"))?;
        let key = self.truth_on.key();
        let delta_us = delta_ns / 1e3;
        let mut originals = BTreeMap::new();
        for (ep, e) in &svc.endpoints {
            let have = match self.truth_on {
                TruthOn::Cpu => e.cpu_us,
                TruthOn::Lock => e.lock_us,
            };
            if have < delta_us {
                return Err(format!(
                    "endpoint {service}.{ep} has only {have:.1} µs of {key} per visit, less than Δ = {delta_us:.1} µs: the ground truth cannot remove that much work (choose a smaller optimization)"
                ));
            }
            originals.insert(ep.clone(), have);
        }
        let control = self.app.control(service).map_err(|e| format!("{e:#}"))?;
        self.applied = Some(Applied::Work(
            service.to_owned(),
            self.truth_on,
            BTreeMap::new(),
        ));
        for (ep, orig) in &originals {
            control
                .set(
                    slowpoke_emu::Scope::Endpoint(ep),
                    self.truth_on.setting(orig - delta_us),
                )
                .map_err(|e| format!("{e:#}"))?;
            if let Some(Applied::Work(_, _, done)) = self.applied.as_mut() {
                done.insert(ep.clone(), *orig);
            }
        }
        Ok(())
    }

    fn set_threads(&mut self, service: &str, cores: f64) -> Result<(), String> {
        let svc = self
            .topology
            .services
            .get(service)
            .ok_or_else(|| format!("`{service}` is not in the topology"))?;
        if cores.fract() != 0.0 || cores < 1.0 {
            return Err(format!(
                "the emulator scales a service by whole worker threads: --cores {cores} is not a positive integer"
            ));
        }
        let original = svc.threads;
        set_threads_live(&self.app, service, cores as u32)?;
        self.applied = Some(Applied::Threads(service.to_owned(), original));
        Ok(())
    }
}

impl App for EmuApp {
    fn services(&self) -> BTreeMap<String, api::ServiceSpec> {
        // Pids select the processes; only the service port counts visits (not the control port).
        self.app
            .services
            .iter()
            .map(|(name, info)| {
                (
                    name.clone(),
                    api::ServiceSpec {
                        pids: Some(info.pids.clone()),
                        listen_ports: Some(vec![info.port]),
                        cores: self.cores.get(name).copied(),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn entry_url(&self) -> String {
        self.app.entry.clone()
    }

    fn entry_service(&self) -> Option<String> {
        Some(self.topology.entry.service.clone())
    }

    fn supports_truth(&self) -> bool {
        true
    }

    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        self.restore_truth()?;
        match change.cores {
            Some(n) => self.set_threads(service, n),
            None => self.lower_work(service, change.delta_ns),
        }
    }

    fn restore_truth(&mut self) -> Result<(), String> {
        match self.applied.take() {
            None => Ok(()),
            Some(Applied::Threads(service, n)) => set_threads_live(&self.app, &service, n),
            Some(Applied::Work(service, on, originals)) => {
                let control = self.app.control(&service).map_err(|e| format!("{e:#}"))?;
                let mut first_err = None;
                for (ep, orig) in originals {
                    let scope = slowpoke_emu::Scope::Endpoint(&ep);
                    if let Err(e) = control.set(scope, on.setting(orig)) {
                        first_err.get_or_insert(format!("{e:#}"));
                    }
                }
                first_err.map_or(Ok(()), Err)
            }
        }
    }
}

impl Drop for EmuApp {
    fn drop(&mut self) {
        let _ = self.restore_truth();
    }
}

/// The [`Emulator`] of the `slowpoke` binary: starts [`EmuApp`]s from topology files on this
/// machine; [`EmuApps::on_cluster`] gives one that spreads them over a cluster's nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmuApps;

impl EmuApps {
    /// The emulator for `--topology F --cluster C.json`: every app starts across the nodes of
    /// the description at `cluster` (see [`ClusterEmuApps`]).
    pub fn on_cluster(cluster: impl Into<PathBuf>) -> ClusterEmuApps {
        ClusterEmuApps {
            cluster: cluster.into(),
        }
    }
}

/// An [`Emulator`] that starts each app across the nodes of a cluster description
/// ([`EmuApp::start_on`]). Services go where the topology's `node` fields say; a topology that
/// places none is spread round robin in name order over all the description's nodes (a
/// topology that places only some is an error naming the others). Test bed convenience: the
/// services are selected by pid, as every agent on one machine sees every pid.
#[derive(Debug, Clone)]
pub struct ClusterEmuApps {
    /// The cluster description (`slowpoke_api::cluster::ClusterFile`).
    pub cluster: PathBuf,
}

impl ClusterEmuApps {
    /// Where this topology's services go: `spread` over every node when it places none.
    fn placement(&self, path: &Path) -> Result<slowpoke_emu::ClusterStart, String> {
        let topology = slowpoke_emu::load(path)
            .map_err(|e| format!("cannot load the topology {}: {e:#}", path.display()))?;
        let mut start = slowpoke_emu::ClusterStart {
            file: self.cluster.clone(),
            place: Vec::new(),
        };
        if topology.services.values().all(|s| s.node.is_none()) {
            let file = ClusterFile::load(&self.cluster)?;
            let nodes: Vec<String> = file.nodes.iter().map(|n| n.name.clone()).collect();
            let spread = slowpoke_emu::placement::spread(&topology, &nodes, None);
            start.place = slowpoke_emu::PlaceArg::all(&spread);
        }
        Ok(start)
    }
}

impl Emulator for ClusterEmuApps {
    fn check_sets(&self, set: &[String]) -> Result<(), String> {
        EmuApps.check_sets(set)
    }

    fn service_names(&self, path: &Path, set: &[String]) -> Result<Vec<String>, String> {
        EmuApps.service_names(path, set)
    }

    fn start(&self, path: &Path, set: &[String]) -> Result<Box<dyn App>, String> {
        let cluster = self.placement(path)?;
        let app =
            EmuApp::start_on(path, &parse_sets(set)?, &cluster).map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(app))
    }
}

/// `svc.endpoint.key=value` changes, parsed.
fn parse_sets(set: &[String]) -> Result<Vec<slowpoke_emu::Set>, String> {
    set.iter()
        .map(|s| s.parse().map_err(|e| format!("set `{s}`: {e}")))
        .collect()
}

impl Emulator for EmuApps {
    fn check_sets(&self, set: &[String]) -> Result<(), String> {
        parse_sets(set).map(drop)
    }

    fn service_names(&self, path: &Path, set: &[String]) -> Result<Vec<String>, String> {
        parse_sets(set)?;
        let topology = slowpoke_emu::load(path)
            .map_err(|e| format!("cannot load the topology {}: {e:#}", path.display()))?;
        Ok(topology.services.keys().cloned().collect())
    }

    fn start(&self, path: &Path, set: &[String]) -> Result<Box<dyn App>, String> {
        let app = EmuApp::start(path, &parse_sets(set)?).map_err(|e| format!("{e:#}"))?;
        Ok(Box::new(app))
    }
}

/// Changes a running service's CPU parallelism (worker threads) live.
fn set_threads_live(
    app: &slowpoke_emu::RunningApp,
    service: &str,
    threads: u32,
) -> Result<(), String> {
    app.control(service)
        .and_then(|c| {
            c.set(
                slowpoke_emu::Scope::Service,
                slowpoke_emu::Setting::Threads(threads),
            )
        })
        .map_err(|e| format!("{e:#}"))
}

//! The real backends behind the runner's traits: the in-process agent
//! (`slowpoke_agent::Agent`), the closed-loop load (`slowpoke_load::LoadGenerator`) and the
//! emulated app (`slowpoke_emu::RunningApp`, with live ground truth).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use slowpoke_agent::api;

use crate::agents::{AgentClient, AgentError};
use crate::experiment::{App, Load, LoadConfig, LoadStarter, LoadWindow};

// ---------------------------------------------------------------------------------------------
// In-process agent
// ---------------------------------------------------------------------------------------------

/// The node agent running inside this process (one node, no daemon needed).
pub struct InProcessAgent {
    agent: slowpoke_agent::Agent,
}

impl InProcessAgent {
    /// Starts an agent in this process (needs root and a tokio runtime).
    pub async fn start(cfg: slowpoke_agent::AgentConfig) -> Result<InProcessAgent, AgentError> {
        slowpoke_agent::Agent::start(cfg)
            .await
            .map(|agent| InProcessAgent { agent })
            .map_err(|e| map_err("starting the in-process agent", &e))
    }

    /// The agent itself (e.g. to shut it down).
    pub fn into_inner(self) -> slowpoke_agent::Agent {
        self.agent
    }

    pub fn agent(&self) -> &slowpoke_agent::Agent {
        &self.agent
    }
}

fn map_err(what: &str, e: &slowpoke_agent::AgentError) -> AgentError {
    AgentError::Rejected {
        agent: "in-process".into(),
        what: what.into(),
        status: e.status().as_u16(),
        message: e.to_string(),
    }
}

impl AgentClient for InProcessAgent {
    fn name(&self) -> String {
        "in-process".into()
    }
    fn health(&self) -> Result<api::Health, AgentError> {
        Ok(self.agent.health())
    }
    fn put_service(
        &self,
        name: &str,
        spec: &api::ServiceSpec,
    ) -> Result<api::ServiceInfo, AgentError> {
        self.agent
            .put_service(name, spec.clone())
            .map_err(|e| map_err(&format!("registering `{name}`"), &e))
    }
    fn delete_service(&self, name: &str) -> Result<(), AgentError> {
        self.agent
            .delete_service(name)
            .map_err(|e| map_err(&format!("unregistering `{name}`"), &e))
    }
    fn stats(&self) -> Result<api::Stats, AgentError> {
        Ok(self.agent.stats())
    }
    fn set_slowdown(&self, plan: &api::SlowdownPlan) -> Result<(), AgentError> {
        self.agent
            .set_slowdown(plan.clone())
            .map_err(|e| map_err("the slowdown plan", &e))
    }
    fn clear_slowdown(&self) -> Result<(), AgentError> {
        self.agent
            .clear_slowdown()
            .map_err(|e| map_err("clearing the slowdown plan", &e))
    }
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

/// Starts [`slowpoke_load::LoadGenerator`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealLoadStarter;

fn template(cfg: &LoadConfig) -> Result<slowpoke_load::RequestTemplate, String> {
    let method = slowpoke_load::parse_method(&cfg.method).map_err(|e| e.to_string())?;
    Ok(slowpoke_load::RequestTemplate {
        method,
        url: cfg.url.clone(),
        headers: cfg.headers.clone(),
        body: cfg.body.clone().unwrap_or_default().into(),
        weight: 1,
    })
}

impl LoadStarter for RealLoadStarter {
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(cfg.timeout_s.clamp(0.5, 10.0)))
            .build();
        let mut req = agent.request(&cfg.method, &cfg.url);
        for (k, v) in &cfg.headers {
            req = req.set(k, v);
        }
        let res = match &cfg.body {
            Some(b) => req.send_string(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(r.status()),
            Err(ureq::Error::Status(code, _)) => Ok(code),
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        }
    }

    fn start(&self, cfg: &LoadConfig) -> Result<Box<dyn Load>, String> {
        let spec = slowpoke_load::LoadSpec {
            requests: vec![template(cfg)?],
            connections: cfg.connections,
            timeout: Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup: Duration::ZERO,
        };
        let generator = slowpoke_load::LoadGenerator::start(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(RealLoad {
            generator: Some(generator),
            mark: None,
        }))
    }
}

/// A running [`slowpoke_load::LoadGenerator`].
pub struct RealLoad {
    generator: Option<slowpoke_load::LoadGenerator>,
    mark: Option<slowpoke_load::Snapshot>,
}

impl Load for RealLoad {
    fn begin_window(&mut self) {
        self.mark = self
            .generator
            .as_ref()
            .map(slowpoke_load::LoadGenerator::snapshot);
    }

    fn end_window(&mut self) -> LoadWindow {
        let (Some(g), Some(mark)) = (self.generator.as_ref(), self.mark.take()) else {
            return LoadWindow::default();
        };
        let w = g.snapshot().window_since(&mark);
        LoadWindow {
            secs: w.secs,
            completed_ok: w.completed_ok,
            rps: w.rps,
            errors: w.non_2xx + w.timeouts + w.conn_errors,
            error_ratio: w.error_ratio,
            p50_us: w.p50_us,
            p99_us: w.p99_us,
            generator_bound: w.generator_bound,
        }
    }

    fn stop(&mut self) {
        if let Some(g) = self.generator.take() {
            g.stop();
        }
    }
}

impl Drop for RealLoad {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Emulated app
// ---------------------------------------------------------------------------------------------

/// An emulated app started from a topology file; it applies ground truth live by lowering the
/// target's endpoints' `cpu_us`.
pub struct EmuApp {
    app: slowpoke_emu::RunningApp,
    topology: slowpoke_emu::Topology,
    /// (service, endpoint → original cpu_us) while a truth change is applied.
    applied: Option<(String, BTreeMap<String, f64>)>,
}

impl EmuApp {
    /// Starts `path` with `sets` applied (`svc.endpoint.key=value`), services on 127.0.0.1.
    pub fn start(path: &Path, sets: &[slowpoke_emu::Set]) -> anyhow::Result<EmuApp> {
        let mut topology = slowpoke_emu::load(path)
            .with_context(|| format!("cannot load the topology {}", path.display()))?;
        for s in sets {
            topology
                .apply(s)
                .map_err(|e| anyhow::anyhow!("--set {s}: {e}"))?;
        }
        let app = slowpoke_emu::RunningApp::start(&topology, &[], "127.0.0.1")
            .with_context(|| format!("cannot start the emulated app {}", path.display()))?;
        Ok(EmuApp {
            app,
            topology,
            applied: None,
        })
    }

    pub fn running(&self) -> &slowpoke_emu::RunningApp {
        &self.app
    }

    pub fn topology(&self) -> &slowpoke_emu::Topology {
        &self.topology
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

    fn apply_truth(&mut self, service: &str, delta_ns: f64) -> Result<(), String> {
        self.restore_truth()?;
        let svc = self
            .topology
            .services
            .get(service)
            .ok_or_else(|| format!("`{service}` is not in the topology"))?;
        let delta_us = delta_ns / 1e3;
        let mut originals = BTreeMap::new();
        for (ep, e) in &svc.endpoints {
            if e.cpu_us < delta_us {
                return Err(format!(
                    "endpoint {service}.{ep} burns only {:.1} µs of CPU per visit, less than Δ = {delta_us:.1} µs: the ground truth cannot remove that much work (choose a smaller optimization)",
                    e.cpu_us
                ));
            }
            originals.insert(ep.clone(), e.cpu_us);
        }
        self.applied = Some((service.to_owned(), BTreeMap::new()));
        for (ep, orig) in &originals {
            self.app
                .set_live(service, ep, "cpu_us", orig - delta_us)
                .map_err(|e| format!("{e:#}"))?;
            if let Some((_, done)) = self.applied.as_mut() {
                done.insert(ep.clone(), *orig);
            }
        }
        Ok(())
    }

    fn restore_truth(&mut self) -> Result<(), String> {
        let Some((service, originals)) = self.applied.take() else {
            return Ok(());
        };
        let mut first_err = None;
        for (ep, orig) in originals {
            if let Err(e) = self.app.set_live(&service, &ep, "cpu_us", orig) {
                first_err.get_or_insert(format!("{e:#}"));
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for EmuApp {
    fn drop(&mut self) {
        let _ = self.restore_truth();
    }
}

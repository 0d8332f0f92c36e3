//! Part 3, the load recorded: a [`LoadStarter`] that starts the same generator the CLI starts
//! (what `RealLoadStarter::start` does) and keeps, for every window the runner measures, the
//! generator's own figures (CPU share, run-queue wait, CPU per request) and the node's busy share.

use std::sync::{Arc, Mutex, PoisonError};

use slowpoke_bench::machine::CpuTicks;
use slowpoke_coordinator::experiment::{Load, LoadConfig, LoadStarter, LoadWindow};
use slowpoke_coordinator::real::{RealLoadStarter, load_window};

/// One measured window as the generator and the node saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowCpu {
    /// Generator CPU / (window × online CPUs).
    pub(crate) generator_cpu_share: f64,
    pub(crate) generator_cores: f64,
    /// Run-queue wait of the generator's threads / window.
    pub(crate) generator_wait_share: f64,
    pub(crate) generator_cpu_us_per_request: f64,
    pub(crate) generator_bound: bool,
    /// Busy share of all the node's CPUs (`/proc/stat`).
    pub(crate) node_busy_share: f64,
}

/// A [`LoadStarter`] like [`RealLoadStarter`] that records every window's generator and node CPU.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    windows: Arc<Mutex<Vec<WindowCpu>>>,
}

impl Recorder {
    /// The windows recorded since the last call.
    pub(crate) fn take(&self) -> Vec<WindowCpu> {
        std::mem::take(&mut *self.windows.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl LoadStarter for Recorder {
    fn probe(&self, cfg: &LoadConfig) -> Result<u16, String> {
        RealLoadStarter.probe(cfg)
    }

    fn start(&self, cfg: &LoadConfig) -> Result<Box<dyn Load>, String> {
        // What `RealLoadStarter::start` does.
        let method = slowpoke_load::parse_method(&cfg.method).map_err(|e| e.to_string())?;
        let spec = slowpoke_load::LoadSpec {
            requests: vec![slowpoke_load::RequestTemplate {
                method,
                url: cfg.url.clone(),
                headers: cfg.headers.clone(),
                body: cfg.body.clone().unwrap_or_default().into(),
                weight: 1,
            }],
            connections: cfg.connections,
            timeout: std::time::Duration::from_secs_f64(cfg.timeout_s.max(0.001)),
            warmup: std::time::Duration::ZERO,
            arrivals: slowpoke_load::Arrivals::Closed,
        };
        let generator = slowpoke_load::LoadGenerator::start(spec).map_err(|e| e.to_string())?;
        Ok(Box::new(RecordedLoad {
            generator: Some(generator),
            mark: None,
            windows: Arc::clone(&self.windows),
        }))
    }
}

struct RecordedLoad {
    generator: Option<slowpoke_load::LoadGenerator>,
    mark: Option<(slowpoke_load::Snapshot, CpuTicks)>,
    windows: Arc<Mutex<Vec<WindowCpu>>>,
}

impl Load for RecordedLoad {
    fn begin_window(&mut self) {
        self.mark = self
            .generator
            .as_ref()
            .map(|g| (g.snapshot(), CpuTicks::read()));
    }

    fn end_window(&mut self) -> LoadWindow {
        let (Some(g), Some((mark, t0))) = (self.generator.as_ref(), self.mark.take()) else {
            return LoadWindow::default();
        };
        let w = g.snapshot().window_since(&mark);
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(WindowCpu {
                generator_cpu_share: w.cpu_share,
                generator_cores: w.generator_cores,
                generator_wait_share: w.generator_wait_share,
                generator_cpu_us_per_request: w.cpu_ns_per_request / 1e3,
                generator_bound: w.generator_bound,
                node_busy_share: CpuTicks::read().busy_share_since(&t0),
            });
        load_window(&w)
    }

    fn stop(&mut self) {
        if let Some(g) = self.generator.take() {
            g.stop();
        }
    }
}

impl Drop for RecordedLoad {
    fn drop(&mut self) {
        self.stop();
    }
}

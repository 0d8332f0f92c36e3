//! What the parts measure with: the kernel programs loaded alone, and a library [`Agent`] of the
//! bench's own (a private state directory, so it never contends for the node's agent lock).

use slowpoke_agent::{
    Agent, AgentConfig,
    kernel::{DEFAULT_QUANTUM_NS, Kernel},
};

/// The kernel programs, attached (they stay attached until the value is dropped).
pub(crate) fn load_kernel() -> Kernel {
    Kernel::load(DEFAULT_QUANTUM_NS)
        .unwrap_or_else(|e| panic!("loading the kernel programs (run as root): {e}"))
}

/// A library agent of the bench's own (temporary state dir, its runtime).
pub(crate) struct BenchAgent {
    pub(crate) agent: Agent,
    rt: tokio::runtime::Runtime,
    state_dir: std::path::PathBuf,
}

impl BenchAgent {
    /// The default config with a fresh state dir named after `part`, and `max_stopped_share`
    /// when given.
    pub(crate) fn start(part: &str, max_stopped_share: Option<f64>) -> BenchAgent {
        let state_dir =
            std::env::temp_dir().join(format!("slowpoke-bench-{part}-{}", std::process::id()));
        std::fs::create_dir_all(&state_dir).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let agent = rt
            .block_on(Agent::start(AgentConfig {
                state_dir: state_dir.clone(),
                max_stopped_share: max_stopped_share
                    .unwrap_or(AgentConfig::default().max_stopped_share),
                ..AgentConfig::default()
            }))
            .unwrap_or_else(|e| panic!("starting the agent (run as root): {e}"));
        BenchAgent {
            agent,
            rt,
            state_dir,
        }
    }

    pub(crate) fn shutdown(self) {
        self.rt.block_on(self.agent.shutdown());
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

//! What to run: a [`WhatIfSpec`] or a [`ProfileSpec`], with the [`Timing`], [`Repeat`],
//! [`Safety`] and [`LoadConfig`] they share, and their checks. The specs are serde types (the
//! library's way to describe an experiment); their checks name the spec's own fields
//! (`timing.window_s`, `repeat.repetitions`, ...), whoever filled them in: the CLI and the HTTP
//! server check their own flags and fields first and may say it in their words.

use serde::{Deserialize, Serialize};
use slowpoke_api::agent as api;

use super::error::RunError;
use crate::model::{Optimization, OptimizationModel as _};

/// What the requests of the load look like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadConfig {
    pub method: String,
    /// Entry URL; empty means the app's own.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Concurrent connections of the closed loop.
    pub connections: usize,
    /// Per-request timeout, seconds.
    pub timeout_s: f64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            method: "GET".into(),
            url: String::new(),
            headers: Vec::new(),
            body: None,
            connections: 64,
            timeout_s: 5.0,
        }
    }
}

impl LoadConfig {
    /// The load's request as `slowpoke-load` takes it (the closed loop of `real` and the tail
    /// comparison's open loop).
    pub fn request_template(&self) -> Result<slowpoke_load::RequestTemplate, String> {
        let method = slowpoke_load::parse_method(&self.method).map_err(|e| e.to_string())?;
        Ok(slowpoke_load::RequestTemplate {
            method,
            url: self.url.clone(),
            headers: self.headers.clone(),
            body: self.body.clone().unwrap_or_default().into(),
            weight: 1,
        })
    }
}

/// How long each phase lasts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// Load before the first window, seconds.
    pub warmup_s: f64,
    /// One measurement window, seconds.
    pub window_s: f64,
    /// Wait after a plan or a truth change before measuring, seconds.
    pub settle_s: f64,
    /// Pause quantum asked of the agents, µs: debt is paid in pauses of at least this long
    /// (None: the agents' own default). Fewer, longer pauses amortise each stop/resume's cost.
    #[serde(default)]
    pub quantum_us: Option<f64>,
    /// How the agents apply delays: whole-service pauses (default) or in-kernel spin.
    #[serde(default)]
    pub mode: api::Mode,
    /// Pause every delayed service of a node at the same moment (the original's phases)
    /// instead of each on its own debt. Default true (docs/evaluation.md).
    #[serde(default = "yes")]
    pub synchronized: bool,
    /// With `synchronized` and several agents: a pause on one node makes the delayed services of
    /// every node pay at once (the agents tell each other, docs/multi-node.md). False keeps the
    /// pauses synchronized within each node only, each node on its own phases (the actuator
    /// `synchronized-per-node`, to measure what the peering buys). Default true.
    #[serde(default = "yes")]
    pub sync_across_nodes: bool,
}

/// The defaults answer a what-if in about 15 s here (`cargo xtask bench whatif` measures them
/// side by side with the protocol before, [`Timing::THOROUGH`]: docs/coordinator.md).
impl Default for Timing {
    fn default() -> Self {
        // Shorter windows than the thorough protocol, the same actuator.
        Timing {
            warmup_s: 2.0,
            window_s: 1.0,
            settle_s: 0.25,
            ..Timing::THOROUGH
        }
    }
}

impl Timing {
    /// The windows of the what-if protocol until 2026-12-06 (3 s warm-up, 2 s windows, 0.5 s
    /// settle): about twice as long per repetition as the defaults. The accuracy suites keep
    /// it, so that their runs stay comparable across that change; `bench whatif` compares it
    /// with the defaults.
    pub const THOROUGH: Timing = Timing {
        warmup_s: 3.0,
        window_s: 2.0,
        settle_s: 0.5,
        quantum_us: Some(DEFAULT_QUANTUM_US),
        mode: api::Mode::Pause,
        synchronized: true,
        sync_across_nodes: true,
    };
}

fn yes() -> bool {
    true
}

/// The pause quantum the coordinator asks for, µs. Every stop/resume costs the paused service
/// some wall time beyond the pause itself (waking its threads again), so fewer, longer pauses
/// bias the slowed-down throughput less. Measured on chain3 (e2e test, −400 µs, 2 runs each):
/// prediction error −12.3/−10.9 % at 1 ms, −3.6/+0.6 % at 5 ms, −1.7/−1.0 % at 10 ms.
pub const DEFAULT_QUANTUM_US: f64 = 10_000.0;

/// The actuators a user can pick (`--actuator`, `"actuator"` in the HTTP API).
pub const ACTUATORS: &str = "synchronized, synchronized-per-node, per-service or spin";

impl Timing {
    /// Sets mode and synchronization from an actuator's name: `synchronized` (pauses of every
    /// delayed service of a node at the same moment, and across nodes when the experiment spans
    /// several: the default, most accurate on shared cores, docs/evaluation.md),
    /// `synchronized-per-node` (the same within each node, every node on its own phases),
    /// `per-service` (each service pauses on its own debt) or `spin` (in-kernel busy wait of the
    /// visiting thread, ≤ 1 ms per visit; dedicated cores only).
    pub fn set_actuator(&mut self, name: &str) -> Result<(), String> {
        let (mode, synchronized, across) = match name {
            "synchronized" | "sync" => (api::Mode::Pause, true, true),
            "synchronized-per-node" => (api::Mode::Pause, true, false),
            "per-service" | "pause" => (api::Mode::Pause, false, false),
            "spin" => (api::Mode::Spin, false, false),
            other => return Err(format!("actuator `{other}`: use {ACTUATORS}")),
        };
        self.mode = mode;
        self.synchronized = synchronized;
        self.sync_across_nodes = across;
        Ok(())
    }

    /// Every length a non-negative number, the window more than none.
    fn validate(&self) -> Result<(), RunError> {
        for (field, unit, v) in [
            ("warmup_s", "seconds", self.warmup_s),
            ("window_s", "seconds", self.window_s),
            ("settle_s", "seconds", self.settle_s),
            ("quantum_us", "µs", self.quantum_us.unwrap_or(0.0)),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(RunError::BadSpec(format!(
                    "`timing.{field}` must be a non-negative number of {unit} (got {v})"
                )));
            }
        }
        if self.window_s <= 0.0 {
            return Err(RunError::BadSpec(format!(
                "`timing.window_s`, the length of a measurement window, must be more than 0 seconds (got {})",
                self.window_s
            )));
        }
        Ok(())
    }
}

/// Repetitions and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Repeat {
    /// Repetitions always run (the middle 60 % are kept: 3 of 5).
    pub repetitions: usize,
    /// Keep repeating until the prediction's 95 % CI half-width is at most this % (None: never).
    pub precision_pct: Option<f64>,
    /// Stop repeating for precision when another repetition would end after this many seconds
    /// of the experiment.
    pub budget_s: f64,
    /// Never more repetitions than this.
    pub max_repetitions: usize,
}

impl Default for Repeat {
    fn default() -> Self {
        // The thorough protocol's repetitions, within a deadline instead of 120 s.
        Repeat {
            budget_s: DEFAULT_BUDGET_S,
            ..Repeat::THOROUGH
        }
    }
}

/// When a what-if stops repeating for its precision by default, seconds since it began: a
/// repetition that would end later does not start. Five repetitions of the default windows end
/// after about 14 s, so noisy windows stop there with the precision they reached (`--budget`
/// buys more).
pub const DEFAULT_BUDGET_S: f64 = 15.0;

impl Repeat {
    /// The repetitions of the what-if protocol until 2026-12-06: 5, then more until 3 %
    /// precision or 120 s (with [`Timing::THOROUGH`]).
    pub const THOROUGH: Repeat = Repeat {
        repetitions: 5,
        precision_pct: Some(3.0),
        budget_s: 120.0,
        max_repetitions: 30,
    };

    /// Exactly `n` repetitions, no precision target (tests, benchmarks, scripted runs).
    pub fn fixed(n: usize) -> Repeat {
        Repeat {
            repetitions: n,
            precision_pct: None,
            max_repetitions: n,
            ..Repeat::default()
        }
    }

    /// At least one repetition; a positive precision target if any; a non-negative budget.
    fn validate(&self) -> Result<(), RunError> {
        if self.repetitions == 0 {
            return Err(RunError::BadSpec(
                "`repeat.repetitions` must be at least 1 (got 0)".into(),
            ));
        }
        if let Some(p) = self.precision_pct
            && (!p.is_finite() || p <= 0.0)
        {
            return Err(RunError::BadSpec(format!(
                "`repeat.precision_pct` must be a positive percentage, or none for no precision target (got {p})"
            )));
        }
        if !self.budget_s.is_finite() || self.budget_s < 0.0 {
            return Err(RunError::BadSpec(format!(
                "`repeat.budget_s`, the time budget for the precision target, must be a non-negative number of seconds (got {})",
                self.budget_s
            )));
        }
        Ok(())
    }
}

/// When to give up on a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Safety {
    /// Abort when the load's error ratio in a window exceeds this (0.01 = 1 %).
    pub max_error_ratio: f64,
    /// Abort when an agent's safety cap dropped pause debt (the plan could not be applied).
    pub abort_on_cap: bool,
}

impl Default for Safety {
    fn default() -> Self {
        Safety {
            max_error_ratio: 0.01,
            abort_on_cap: true,
        }
    }
}

/// One what-if.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIfSpec {
    pub target: String,
    pub optimization: Optimization,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub repeat: Repeat,
    #[serde(default)]
    pub safety: Safety,
    /// Measure the ground truth too (emulated apps).
    #[serde(default)]
    pub truth: bool,
    /// The service owning the entry port, when it cannot be found from the agents' listening ports.
    #[serde(default)]
    pub entry_service: Option<String>,
}

impl WhatIfSpec {
    /// The checks that need no app and no measurement: the optimization's numbers, the timing,
    /// the repetitions.
    pub(super) fn validate(&self) -> Result<(), RunError> {
        self.optimization.validate()?;
        self.timing.validate()?;
        self.repeat.validate()
    }
}

/// A causal profile: a sweep of optimizations of every service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSpec {
    /// Optimizations as percentages of each service's p_s.
    #[serde(default = "default_fractions")]
    pub percents: Vec<f64>,
    /// Services to sweep (default: every service with visits).
    #[serde(default)]
    pub services: Option<Vec<String>>,
    #[serde(default)]
    pub load: LoadConfig,
    #[serde(default)]
    pub timing: Timing,
    /// Repetitions of the whole sweep (interleaved with baselines).
    #[serde(default = "default_profile_reps")]
    pub repetitions: usize,
    /// Keep sweeping after `repetitions` until every point's 95 % CI half-width is at most
    /// this (%), or `budget_s` has passed (None: exactly `repetitions` sweeps).
    #[serde(default)]
    pub precision_pct: Option<f64>,
    /// Time budget for the precision target, seconds.
    #[serde(default = "default_profile_budget")]
    pub budget_s: f64,
    #[serde(default)]
    pub safety: Safety,
    #[serde(default)]
    pub entry_service: Option<String>,
}

fn default_profile_budget() -> f64 {
    300.0
}

fn default_fractions() -> Vec<f64> {
    vec![10.0, 30.0, 50.0, 70.0, 90.0]
}

fn default_profile_reps() -> usize {
    3
}

impl Default for ProfileSpec {
    fn default() -> Self {
        ProfileSpec {
            percents: default_fractions(),
            services: None,
            load: LoadConfig::default(),
            timing: Timing {
                warmup_s: 3.0,
                window_s: 1.0,
                settle_s: 0.5,
                ..Timing::default()
            },
            repetitions: default_profile_reps(),
            precision_pct: None,
            budget_s: default_profile_budget(),
            safety: Safety::default(),
            entry_service: None,
        }
    }
}

impl ProfileSpec {
    /// The checks that need no app and no measurement: the timing, the sweeps, the percentages.
    pub(super) fn validate(&self) -> Result<(), RunError> {
        self.timing.validate()?;
        if self.repetitions == 0 {
            return Err(RunError::BadSpec(
                "`repetitions`, the sweeps of a profile, must be at least 1 (got 0)".into(),
            ));
        }
        if self.percents.is_empty() {
            return Err(RunError::BadSpec(
                "`percents` is empty: give at least one percentage to sweep".into(),
            ));
        }
        for &p in &self.percents {
            Optimization::Percent(p).validate()?;
        }
        Ok(())
    }
}

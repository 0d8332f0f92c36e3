//! Runs an evaluation suite against the real agent(s) and the emulator: one running app per
//! case, every point a what-if with ground truth (base, slow, truth interleaved, repeated),
//! every setting of a point run back to back on the same instance. Results are written after
//! every point, so an interrupted suite resumes where it stopped (`--resume`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use slowpoke_api::agent as api;

use crate::emu_app::{EmuApp, TruthOn};
use crate::suite::{Case, CaseKind};
use crate::summary::{self, Point};
use slowpoke_coordinator::agents::SharedAgent;
use slowpoke_coordinator::experiment::{
    self, App, Backends, LoadConfig, Monitor, Repeat, Safety, TargetUseRecord, Timing, TruthChange,
    WhatIfResult, WhatIfSpec,
};
use slowpoke_coordinator::lease::Lease;
use slowpoke_coordinator::model::{Optimization, TargetUse};
use slowpoke_coordinator::real::RealLoadStarter;
use slowpoke_coordinator::results::{ResultStore, StoredResult};
use slowpoke_coordinator::stats;

/// How the agents apply a plan: actuator, synchronization and pause quantum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub mode: api::Mode,
    pub synchronized: bool,
    pub quantum_us: f64,
    /// Synchronized pauses across the nodes of a cluster too (`sync-`), or within each node
    /// only (`nodesync-`, [`Timing::sync_across_nodes`]); one node: the same thing.
    #[serde(default = "across_nodes")]
    pub across_nodes: bool,
}

fn across_nodes() -> bool {
    true
}

impl Setting {
    /// `pause-10ms`, `sync-10ms` (synchronized pauses), `nodesync-10ms` (synchronized within
    /// each node only), `spin`.
    pub fn name(&self) -> String {
        let q = self.quantum_us / 1e3;
        match (self.mode, self.synchronized, self.across_nodes) {
            (api::Mode::Spin, _, _) => "spin".into(),
            (api::Mode::Pause, false, _) => format!("pause-{q}ms"),
            (api::Mode::Pause, true, true) => format!("sync-{q}ms"),
            (api::Mode::Pause, true, false) => format!("nodesync-{q}ms"),
        }
    }
}

impl std::str::FromStr for Setting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "setting `{s}`: write pause-<ms>ms, sync-<ms>ms, nodesync-<ms>ms or spin (e.g. \
                 pause-10ms, sync-1ms)"
            )
        };
        if s == "spin" {
            return Ok(Setting {
                mode: api::Mode::Spin,
                synchronized: false,
                quantum_us: experiment::DEFAULT_QUANTUM_US,
                across_nodes: false,
            });
        }
        let (kind, q) = s.split_once('-').ok_or_else(bad)?;
        let ms: f64 = q
            .strip_suffix("ms")
            .and_then(|x| x.parse().ok())
            .ok_or_else(bad)?;
        if !(ms.is_finite() && (0.001..=1000.0).contains(&ms)) {
            return Err(format!("setting `{s}`: the quantum must be 0.001–1000 ms"));
        }
        let (synchronized, across_nodes) = match kind {
            "pause" => (false, false),
            "sync" => (true, true),
            "nodesync" => (true, false),
            _ => return Err(bad()),
        };
        Ok(Setting {
            mode: api::Mode::Pause,
            synchronized,
            quantum_us: ms * 1e3,
            across_nodes,
        })
    }
}

impl Default for Setting {
    /// The coordinator's defaults (`Timing::default()`).
    fn default() -> Self {
        let t = Timing::default();
        Setting {
            mode: t.mode,
            synchronized: t.synchronized,
            quantum_us: t.quantum_us.unwrap_or(experiment::DEFAULT_QUANTUM_US),
            across_nodes: t.sync_across_nodes,
        }
    }
}

/// Where the services run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Every service on every CPU (the scheduler decides).
    Shared,
    /// The target alone on the last CPU, every other service on the others (the control case:
    /// the target's core is its own, as with one service per node).
    Pinned,
    /// Spread over the nodes of a cluster description (round robin in name order, the target on
    /// the first node), each node's services measured and paused by that node's agent
    /// ([`ClusterSetup`]; docs/multi-node.md).
    Cluster,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::Shared => "shared",
            Placement::Pinned => "pinned",
            Placement::Cluster => "cluster",
        }
    }
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(Placement::Shared),
            "pinned" => Ok(Placement::Pinned),
            "cluster" => Ok(Placement::Cluster),
            other => Err(format!(
                "placement `{other}`: use shared, pinned or cluster"
            )),
        }
    }
}

/// Where placement `cluster` runs: the cluster description the emulator spreads each case over,
/// and the agents of its nodes.
#[derive(Clone)]
pub struct ClusterSetup {
    /// The cluster description (`slowpoke_api::cluster::ClusterFile`, e.g. the one `cargo xtask
    /// cluster up` writes).
    pub file: PathBuf,
    /// Its nodes' names, in the file's order (the target goes on the first).
    pub nodes: Vec<String>,
    /// One agent per node.
    pub agents: Vec<SharedAgent>,
}

/// What to run and where to write it.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub suite: String,
    pub out_dir: PathBuf,
    pub resume: bool,
    pub settings: Vec<Setting>,
    pub placements: Vec<Placement>,
    pub repetitions: usize,
    pub window_s: f64,
    /// Repeat a point beyond `repetitions` until the prediction's CI half-width is at most
    /// this % (None: exactly `repetitions`), for at most `budget_s` seconds.
    pub precision_pct: Option<f64>,
    pub budget_s: f64,
    pub connections: usize,
}

/// `results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsFile {
    pub suite: String,
    pub started: String,
    pub updated: String,
    /// CPUs, kernel, load average when the suite started and at its last point.
    pub machine: serde_json::Value,
    pub repetitions: usize,
    pub window_s: f64,
    /// `--precision` of the run that started the file (None: fixed repetitions).
    #[serde(default)]
    pub precision_pct: Option<f64>,
    pub points: Vec<Point>,
}

/// CPUs, kernel and load average of this machine now.
pub fn machine() -> serde_json::Value {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "kernel": kernel.trim(),
        "loadavg": loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// An app several what-ifs share (one running instance per case).
#[derive(Clone)]
struct SharedApp(Arc<Mutex<EmuApp>>);

impl SharedApp {
    fn with<T>(&self, f: impl FnOnce(&mut EmuApp) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl App for SharedApp {
    fn services(&self) -> std::collections::BTreeMap<String, api::ServiceSpec> {
        self.with(|a| a.services())
    }
    fn entry_url(&self) -> String {
        self.with(|a| a.entry_url())
    }
    fn entry_service(&self) -> Option<String> {
        self.with(|a| a.entry_service())
    }
    fn supports_truth(&self) -> bool {
        true
    }
    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        self.with(|a| a.apply_truth(service, change))
    }
    fn restore_truth(&mut self) -> Result<(), String> {
        self.with(App::restore_truth)
    }
}

/// Pins every thread of every process of `pids` to `cpus`.
fn pin(pids: &[u32], cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` is below the number of CPUs, far below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    for &pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("cannot list the threads of pid {pid}"))?;
        for t in tasks.filter_map(Result::ok) {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // SAFETY: sets the affinity of one thread from a valid set.
            let r = unsafe {
                libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &raw const set)
            };
            if r != 0 {
                bail!(
                    "cannot pin thread {tid} of pid {pid}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    Ok(())
}

/// Starts the case's app: on this node, or spread over `cluster`'s nodes with the target on the
/// first (placement `cluster`).
fn start_app(
    case: &Case,
    topo_path: &Path,
    truth_on: TruthOn,
    on_cluster: bool,
    cluster: Option<&ClusterSetup>,
) -> anyhow::Result<SharedApp> {
    let mut emu = match (on_cluster, cluster) {
        (false, _) => EmuApp::start(topo_path, &[])?,
        (true, None) => bail!(
            "placement `cluster` needs a cluster: give --cluster FILE (e.g. the target/cluster/cluster.json of `cargo xtask cluster up`)"
        ),
        (true, Some(c)) => {
            let first = c.nodes.first().context("the cluster has no node")?;
            let placement = slowpoke_emu::placement::spread(
                &case.topology,
                &c.nodes,
                Some((case.target.as_str(), first.as_str())),
            );
            let start = slowpoke_emu::ClusterStart {
                file: c.file.clone(),
                place: slowpoke_emu::placement::PlaceArg::all(&placement),
            };
            EmuApp::start_on(topo_path, &[], &start)?
        }
    }
    .with_truth_on(truth_on);
    if let Some(c) = case.target_cores {
        emu = emu.with_cores(&case.target, c);
    }
    Ok(SharedApp(Arc::new(Mutex::new(emu))))
}

/// Unpins a pinned app before it goes (a later case starts fresh processes anyway), then drops it.
fn unpin(app: Option<(bool, SharedApp)>, placed: Option<Placement>) {
    if let Some((_, app)) = app
        && placed == Some(Placement::Pinned)
    {
        let _ = place(&app, "", Placement::Shared);
    }
}

fn place(app: &SharedApp, target: &str, placement: Placement) -> anyhow::Result<()> {
    let n = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let all: Vec<usize> = (0..n).collect();
    let services = app.with(|a| a.running().services.clone());
    for (name, info) in &services {
        let cpus: Vec<usize> = match placement {
            Placement::Shared => all.clone(),
            Placement::Pinned if n < 2 => bail!("--placement pinned needs at least 2 CPUs"),
            Placement::Pinned if name == target => vec![n - 1],
            Placement::Pinned => (0..n - 1).collect(),
            Placement::Cluster => {
                bail!("placement `cluster` runs on the cluster's nodes: not pinned here")
            }
        };
        pin(&info.pids, &cpus)?;
    }
    Ok(())
}

/// The configured work a point's Δ % applies to, µs (mean over the target's endpoints).
fn configured_work_us(case: &Case) -> f64 {
    let eps = &case.topology.services[&case.target].endpoints;
    let sum: f64 = eps
        .values()
        .map(|e| match case.kind {
            CaseKind::Lock => e.lock_us,
            _ => e.cpu_us,
        })
        .sum();
    sum / eps.len().max(1) as f64
}

fn median_busy(r: &WhatIfResult, phase: &str) -> Option<f64> {
    let v: Vec<f64> = r
        .windows
        .iter()
        .filter(|w| w.phase == phase)
        .filter_map(|w| w.node_busy.first().copied())
        .collect();
    stats::median(&v)
}

fn pct_of(a: f64, b: f64) -> f64 {
    (a - b) / b * 100.0
}

/// Turns a what-if result into a point.
fn point_from(
    case: &Case,
    setting: &Setting,
    placement: Placement,
    pct: f64,
    r: &WhatIfResult,
) -> Point {
    fill_point(empty_point(case, setting, placement, pct), r)
}

/// Fills a point whose identity (family, case, target, setting, Δ ...) is set with what the
/// what-if `r` measured: throughputs, errors, noise, node and target use.
pub fn fill_point(point: Point, r: &WhatIfResult) -> Point {
    let truth_runs: Vec<f64> = r
        .windows
        .iter()
        .filter(|w| w.phase == "truth")
        .map(|w| w.rps)
        .collect();
    let spread = stats::median(&truth_runs).map(|m| {
        let max = truth_runs.iter().copied().fold(f64::MIN, f64::max);
        let min = truth_runs.iter().copied().fold(f64::MAX, f64::min);
        (max - min) / m * 100.0
    });
    let truth = r.truth_rps;
    Point {
        pause_error_pct: truth.map(|t| pct_of(r.pause_predicted_rps, t)),
        truth_gain_pct: truth.map(|t| pct_of(t, r.baseline_rps)),
        truth_noise_pct: match (r.truth_ci_low, r.truth_ci_high, truth) {
            (Some(lo), Some(hi), Some(t)) if lo.is_finite() && hi.is_finite() => {
                Some((hi - lo) / 2.0 / t * 100.0)
            }
            _ => None,
        },
        truth_spread_pct: spread,
        predicted_noise_pct: (r.predicted_ci_low.is_finite()
            && r.predicted_ci_high.is_finite()
            && r.predicted_rps > 0.0)
            .then(|| (r.predicted_ci_high - r.predicted_ci_low) / 2.0 / r.predicted_rps * 100.0),
        node_busy_base: median_busy(r, "base"),
        node_busy_truth: median_busy(r, "truth"),
        target_kept_pct: r.target_use.and_then(|u| u.kept_pct()),
        target_wait_base_pct: target_wait_pct(r, |u| u.baseline),
        target_wait_slow_pct: target_wait_pct(r, |u| u.slowed),
        baseline_rps: Some(r.baseline_rps),
        predicted_rps: Some(r.predicted_rps),
        pause_predicted_rps: Some(r.pause_predicted_rps),
        node_bound_rps: r.node_bound_rps,
        regime: r.regime.as_ref().map(|g| {
            serde_json::to_value(g.limit)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }),
        truth_rps: truth,
        error_pct: r.error_pct,
        strawman_error_pct: r.baseline_error_pct,
        repetitions: r.repetitions,
        duration_s: r.duration_s,
        result_id: Some(r.id.clone()),
        ..point
    }
}

/// The target's run-queue wait in one phase, % of its cores (c from the what-if's service rows).
fn target_wait_pct(r: &WhatIfResult, phase: impl Fn(&TargetUseRecord) -> TargetUse) -> Option<f64> {
    let c = r.services.iter().find(|s| s.is_target)?.c;
    let u = phase(r.target_use.as_ref()?);
    (c > 0.0).then(|| u.wait / c * 100.0)
}

fn empty_point(case: &Case, setting: &Setting, placement: Placement, pct: f64) -> Point {
    Point {
        family: case.family.clone(),
        topology: case.id.clone(),
        mode: case.mode.clone(),
        target: case.target.clone(),
        role: case.role.name().into(),
        shape: case.shape.into(),
        kind: match case.kind {
            CaseKind::Work => "work",
            CaseKind::Lock => "lock",
            CaseKind::Scaling => "scaling",
        }
        .into(),
        setting: setting.name(),
        placement: placement.name().into(),
        delta_pct: pct,
        delta_us: match case.kind {
            CaseKind::Scaling => 0.0,
            _ => configured_work_us(case) * pct / 100.0,
        },
        ..Point::default()
    }
}

/// Writes results.json, report.md and plot.svg into `dir` (atomically per file).
pub fn write_outputs(dir: &Path, file: &ResultsFile) -> anyhow::Result<()> {
    let write = |name: &str, text: &str| -> anyhow::Result<()> {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name))
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    write("results.json", &serde_json::to_string_pretty(file)?)?;
    let more = file.precision_pct.map_or(String::new(), |p| {
        format!(" (more until the prediction's 95 % CI is within ±{p} %)")
    });
    let context = format!(
        "Suite `{}`, started {}, last point {}; machine: {}; {} repetitions{more} of {} s \
         windows per phase, the middle 60 % kept.",
        file.suite, file.started, file.updated, file.machine, file.repetitions, file.window_s
    );
    write(
        "report.md",
        &summary::markdown(
            &format!("Slowpoke accuracy: suite `{}`", file.suite),
            &context,
            &file.points,
        ),
    )?;
    write("plot.svg", &crate::plot::eval_svg(&file.points)?)?;
    Ok(())
}

/// Adds a point and rewrites the outputs, after every point: an interruption loses at most the
/// point in progress.
pub fn record(dir: &Path, file: &mut ResultsFile, point: Point) -> anyhow::Result<()> {
    file.points.push(point);
    file.updated = experiment::now_rfc3339();
    file.machine["loadavg_last"] = machine()["loadavg"].clone();
    write_outputs(dir, file)
}

/// Reads an earlier results.json of `dir` (for `--resume`).
pub fn read_results(dir: &Path) -> anyhow::Result<Option<ResultsFile>> {
    let path = dir.join("results.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a results file of this version", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The results of `opts.out_dir` to continue (`--resume`: its failed points dropped, to run
/// again), or a new, empty file. Refuses to overwrite results without `--resume`, and to mix
/// suites in one directory.
pub fn open_results(opts: &EvalOptions) -> anyhow::Result<ResultsFile> {
    let earlier = read_results(&opts.out_dir)?;
    let mut file = match (earlier, opts.resume) {
        (Some(f), true) => {
            if f.suite != opts.suite {
                bail!(
                    "{} holds the `{}` suite, not `{}`: choose another --out",
                    opts.out_dir.display(),
                    f.suite,
                    opts.suite
                );
            }
            f
        }
        (Some(_), false) => bail!(
            "{} already holds results: pass --resume to continue them, or choose another --out",
            opts.out_dir.display()
        ),
        (None, _) => ResultsFile {
            suite: opts.suite.clone(),
            started: experiment::now_rfc3339(),
            updated: experiment::now_rfc3339(),
            machine: machine(),
            repetitions: opts.repetitions,
            window_s: opts.window_s,
            precision_pct: opts.precision_pct,
            points: Vec::new(),
        },
    };
    file.points.retain(|p| p.error.is_none());
    Ok(file)
}

/// Runs `cases`; `say` gets one line per event (progress). Returns the results file.
#[expect(
    clippy::too_many_lines,
    reason = "the suite loop reads top to bottom (resume, points, progress, summary); issue #14 moves eval into its own crate and splits it"
)]
pub fn run(
    cases: &[Case],
    opts: &EvalOptions,
    agents: &[SharedAgent],
    cluster: Option<&ClusterSetup>,
    store: &ResultStore,
    monitor: &Monitor,
    say: &dyn Fn(&str),
) -> anyhow::Result<ResultsFile> {
    std::fs::create_dir_all(opts.out_dir.join("topologies"))
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let mut file = open_results(opts)?;
    let done: std::collections::BTreeSet<String> = file.points.iter().map(Point::key).collect();
    let total: usize = cases
        .iter()
        .map(|c| c.points.len() * opts.settings.len() * opts.placements.len())
        .sum();
    let mut n = file.points.len().min(total);
    let started = Instant::now();
    let mut ran = 0usize;
    for case in cases {
        let todo: Vec<(Placement, f64, Setting)> = opts
            .placements
            .iter()
            .flat_map(|&pl| {
                // Rotate the settings' order from point to point so none always runs first.
                case.points.iter().enumerate().flat_map(move |(k, &pct)| {
                    let m = opts.settings.len();
                    (0..m).map(move |j| (pl, pct, opts.settings[(j + k) % m]))
                })
            })
            .filter(|(pl, pct, s)| {
                !done.contains(&summary::point_key(&case.id, &s.name(), pl.name(), *pct))
            })
            .collect();
        if todo.is_empty() {
            continue;
        }
        let topo_path = opts
            .out_dir
            .join("topologies")
            .join(format!("{}.json", case.id));
        slowpoke_emu::topology::save(&case.topology, &topo_path)?;
        let truth_on = if case.kind == CaseKind::Lock {
            TruthOn::Lock
        } else {
            TruthOn::Cpu
        };
        // One running app per case and kind of placement: on this node (`shared`, `pinned`:
        // re-pinned in place) or spread over the cluster's nodes.
        let mut app: Option<(bool, SharedApp)> = None;
        let mut placed = None;
        for (placement, pct, setting) in &todo {
            let on_cluster = *placement == Placement::Cluster;
            if app.as_ref().is_none_or(|(c, _)| *c != on_cluster) {
                unpin(app.take(), placed);
                let started = start_app(case, &topo_path, truth_on, on_cluster, cluster)?;
                app = Some((on_cluster, started));
                placed = None;
            }
            let (_, app) = app.as_ref().expect("started above");
            if !on_cluster && placed != Some(*placement) {
                place(app, &case.target, *placement)?;
            }
            placed = Some(*placement);
            n += 1;
            let optimization = match case.kind {
                CaseKind::Scaling => Optimization::Cores(*pct),
                _ => Optimization::DeltaUs(configured_work_us(case) * pct / 100.0),
            };
            let spec = WhatIfSpec {
                target: case.target.clone(),
                optimization,
                load: LoadConfig {
                    connections: opts.connections,
                    ..LoadConfig::default()
                },
                timing: Timing {
                    window_s: opts.window_s,
                    quantum_us: Some(setting.quantum_us),
                    mode: setting.mode,
                    synchronized: setting.synchronized,
                    sync_across_nodes: setting.across_nodes,
                    ..Timing::THOROUGH
                },
                repeat: Repeat {
                    repetitions: opts.repetitions,
                    precision_pct: opts.precision_pct,
                    budget_s: opts.budget_s,
                    ..Repeat::default()
                },
                safety: Safety::default(),
                truth: true,
                entry_service: None,
            };
            let label = format!(
                "[{n}/{total}] {} target {} Δ {} {}/{}",
                case.id,
                case.target,
                if case.kind == CaseKind::Scaling {
                    format!("{pct} threads")
                } else {
                    format!("{pct} %")
                },
                setting.name(),
                placement.name()
            );
            say(&format!("{label} ..."));
            let agents = match (on_cluster, cluster) {
                (true, Some(c)) => &c.agents[..],
                _ => agents,
            };
            let mut backends = Backends {
                agents: agents.to_vec(),
                app: Box::new(app.clone()),
                load: Arc::new(RealLoadStarter),
                lease: Lease::default(),
                kubernetes: std::sync::Arc::default(),
            };
            let point = match experiment::run_what_if(&spec, &mut backends, monitor) {
                Ok(r) => {
                    let p = point_from(case, setting, *placement, *pct, &r);
                    if let Err(e) = store.save(&StoredResult::WhatIf(r)) {
                        say(&format!(
                            "warning: the what-if result was not stored: {e:#}"
                        ));
                    }
                    p
                }
                Err(e) => Point {
                    error: Some(e.to_string()),
                    ..empty_point(case, setting, *placement, *pct)
                },
            };
            ran += 1;
            let eta = started.elapsed().as_secs_f64() / ran as f64 * (total - n) as f64;
            say(&format!(
                "{label}: {} ({:.0} s; about {:.0} min left)",
                outcome(&point),
                point.duration_s,
                eta / 60.0
            ));
            record(&opts.out_dir, &mut file, point)?;
            if monitor.is_cancelled() {
                break;
            }
        }
        unpin(app, placed);
        if monitor.is_cancelled() {
            say("cancelled: run again with --resume to continue");
            break;
        }
    }
    write_outputs(&opts.out_dir, &file)?;
    Ok(file)
}

/// One line on a measured point: `baseline B, predicted P, truth T, error E` (and why it
/// failed, if it did).
pub fn outcome(point: &Point) -> String {
    format!(
        "baseline {}, predicted {}, truth {}, error {}{}",
        fmt(point.baseline_rps),
        fmt(point.predicted_rps),
        fmt(point.truth_rps),
        point
            .error_pct
            .map_or_else(|| "–".into(), |e| format!("{e:+.1} %")),
        point
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(" FAILED: {e}"))
    )
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_name() {
        for s in [
            "pause-10ms",
            "pause-1ms",
            "sync-10ms",
            "nodesync-10ms",
            "spin",
            "pause-0.5ms",
        ] {
            let parsed: Setting = s.parse().unwrap();
            assert_eq!(parsed.name(), s);
        }
        let e = "pause-10".parse::<Setting>().unwrap_err();
        assert!(e.contains("pause-<ms>ms"), "{e}");
        let e = "pause-0ms".parse::<Setting>().unwrap_err();
        assert!(e.contains("0.001–1000 ms"), "{e}");
        assert!("wait-1ms".parse::<Setting>().is_err());
        assert_eq!(Setting::default().name(), "sync-10ms");
    }
}

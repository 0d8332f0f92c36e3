//! Which cases and points the evaluation runs (pure: no I/O).
//!
//! A case is one topology with one target; its points are optimizations of that target. Every
//! topology comes from the emulator's generators and is then *shaped* for this machine so the
//! target really limits throughput: on a node whose few cores every service shares, a service
//! limits the app only when its own work outweighs half of everything else's (docs/evaluation.md,
//! "How the suite is built"). Shaping gives the target one worker thread and scales its CPU work
//! to `TARGET_SHARE` of the CPU per end-to-end request; the other services keep the generator's
//! work, threads, calls and sizes. Beside each shaped case, the suites run the same topology
//! *unshaped* (the generator's own work and threads, no dominant service), where the node's
//! CPUs rather than one service tend to limit the app (docs/model.md, "Which limit binds").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slowpoke_emu::{Family, GenSpec, Mode, Topology};

/// What a case optimizes, and so what its ground truth really changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    /// Δ % of the target's CPU work per visit (`cpu_us` lowered live).
    Work,
    /// Δ % of the target's critical section (`lock_us` lowered live): a mutex-bound service.
    Lock,
    /// The target gets more worker threads (points are thread counts).
    Scaling,
}

/// Where the target sits in the call graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Makes no downstream calls.
    Leaf,
    /// Calls other services (the entry service included).
    Inner,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Inner => "inner",
        }
    }
}

/// One topology + target and the optimizations to evaluate.
#[derive(Debug, Clone)]
pub struct Case {
    /// Unique, file-name safe: `<family>-<mode>-<role>` (or the harder case's name).
    pub id: String,
    pub family: String,
    pub mode: String,
    pub target: String,
    pub role: Role,
    pub kind: CaseKind,
    /// Δ as % of the target's configured per-visit work (Work, Lock) or thread counts (Scaling).
    pub points: Vec<f64>,
    pub topology: Topology,
    /// The target's parallelism as a user would declare it to the agent (`cores` of its
    /// service spec) instead of the measured min(CPUs, serving threads).
    pub target_cores: Option<f64>,
    /// `shaped` (the target made the bottleneck), `unshaped` (the generator's topology as is)
    /// or `hand-built` (the harder cases).
    pub shape: &'static str,
}

/// Share of the app's CPU per end-to-end request that shaping gives the target. Above one half
/// the target limits throughput on a shared 2-core node; 0.7 leaves room for noise and for the
/// emulator's own per-visit overhead.
pub const TARGET_SHARE: f64 = 0.7;

/// CPU each visit costs beyond its configured work (HTTP, kernel, agent hooks), µs: the
/// emulator's measured overhead is 4–15 µs per visit (docs/emu.md).
pub const VISIT_OVERHEAD_US: f64 = 10.0;

/// The target's per-visit work is never shaped below this, µs, so a 10 % Δ stays well above
/// the emulator's CPU precision.
pub const MIN_TARGET_WORK_US: f64 = 300.0;

/// Which suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteName {
    Quick,
    Full,
    /// The quick suite's cases, meant to run both on one node (placement `shared`) and spread
    /// over the nodes of a cluster (placement `cluster`), interleaved (docs/evaluation.md).
    Cluster,
}

impl std::str::FromStr for SuiteName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "quick" => Ok(SuiteName::Quick),
            "full" => Ok(SuiteName::Full),
            "cluster" => Ok(SuiteName::Cluster),
            other => Err(format!(
                "unknown suite `{other}`: use quick, full, cluster or tail (the real-server suite runs from the workspace: cargo xtask eval --suite real)"
            )),
        }
    }
}

/// Seed of every generated topology (the suite is reproducible).
pub const SEED: u64 = 1;
/// Services per generated topology.
pub const SIZE: usize = 6;

/// The quick suite: 6 families, 3 points each (≤ 30 min on this machine).
pub const QUICK_FAMILIES: [(Family, Mode); 6] = [
    (Family::Chain, Mode::Sync),
    (Family::Fanout, Mode::Async),
    (Family::DagBalanced, Mode::Sync),
    (Family::DagCross, Mode::Async),
    (Family::DynamicOnce, Mode::Sync),
    (Family::DynamicCache, Mode::Sync),
];
pub const QUICK_POINTS: [f64; 3] = [25.0, 50.0, 75.0];
pub const FULL_POINTS: [f64; 5] = [10.0, 30.0, 50.0, 70.0, 90.0];

/// The cases of a suite. `families` (names) restricts it when not empty.
pub fn cases(suite: SuiteName, families: &[String]) -> Result<Vec<Case>, String> {
    for f in families {
        let known = f.parse::<Family>().is_ok() || HARDER.contains(&f.as_str());
        if !known {
            return Err(format!(
                "unknown family `{f}`: one of {}, {}",
                slowpoke_emu::generate::FAMILIES
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                HARDER.join(", ")
            ));
        }
    }
    let wanted = |name: &str| families.is_empty() || families.iter().any(|f| f == name);
    let mut out = Vec::new();
    match suite {
        SuiteName::Quick | SuiteName::Cluster => {
            for (family, mode) in QUICK_FAMILIES {
                if !wanted(family.name()) {
                    continue;
                }
                let topo = generated(family, mode)?;
                let (target, role) = pick_target(&topo, None)?;
                out.push(shaped_case(
                    topo.clone(),
                    family.name(),
                    mode,
                    &target,
                    role,
                    &QUICK_POINTS,
                )?);
                out.push(unshaped_case(topo, family.name(), mode, &QUICK_POINTS)?);
            }
        }
        SuiteName::Full => {
            for &family in slowpoke_emu::generate::FAMILIES {
                if !wanted(family.name()) {
                    continue;
                }
                for mode in [Mode::Sync, Mode::Async] {
                    let topo = generated(family, mode)?;
                    for role in [Role::Leaf, Role::Inner] {
                        let Ok((target, role)) = pick_target(&topo, Some(role)) else {
                            continue;
                        };
                        out.push(shaped_case(
                            topo.clone(),
                            family.name(),
                            mode,
                            &target,
                            role,
                            &FULL_POINTS,
                        )?);
                    }
                    out.push(unshaped_case(topo, family.name(), mode, &FULL_POINTS)?);
                }
            }
            out.extend(harder_cases().into_iter().filter(|c| wanted(&c.family)));
        }
    }
    if out.is_empty() {
        return Err("no case left to run (check --families)".into());
    }
    Ok(out)
}

fn generated(family: Family, mode: Mode) -> Result<Topology, String> {
    slowpoke_emu::generate(&GenSpec {
        family,
        size: SIZE.max(family.min_size()),
        seed: SEED,
        mode,
    })
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sync => "sync",
        Mode::Async => "async",
    }
}

/// Services that make downstream calls.
fn callers(topo: &Topology) -> Vec<String> {
    topo.services
        .iter()
        .filter(|(_, s)| s.endpoints.values().any(|e| !e.calls.is_empty()))
        .map(|(n, _)| n.clone())
        .collect()
}

/// The target of a case: the service with the largest configured CPU per end-to-end request
/// among those of the wanted role (any role when None); visited services only.
pub fn pick_target(topo: &Topology, role: Option<Role>) -> Result<(String, Role), String> {
    let ratios = slowpoke_emu::topology::expected_visit_ratios(topo);
    let inner = callers(topo);
    let demand = |name: &str| {
        let r = ratios.get(name).copied().unwrap_or(0.0);
        let w: f64 = topo.services[name]
            .endpoints
            .values()
            .map(|e| e.cpu_us)
            .sum::<f64>()
            / topo.services[name].endpoints.len().max(1) as f64;
        r * w
    };
    topo.services
        .keys()
        .filter(|n| ratios.get(n.as_str()).copied().unwrap_or(0.0) > 0.0)
        .map(|n| {
            let r = if inner.contains(n) {
                Role::Inner
            } else {
                Role::Leaf
            };
            (n.clone(), r)
        })
        .filter(|(_, r)| role.is_none_or(|want| *r == want))
        .max_by(|a, b| demand(&a.0).total_cmp(&demand(&b.0)))
        .ok_or_else(|| match role {
            Some(r) => format!("`{}` has no {} service", topo.name, r.name()),
            None => format!("`{}` has no visited service", topo.name),
        })
}

/// CPU per end-to-end request of every service but `target`, µs (configured work plus the
/// per-visit overhead), and the target's visit ratio.
fn others_work_us(topo: &Topology, target: &str) -> (f64, f64) {
    let eps = slowpoke_emu::topology::endpoint_visit_ratios(topo).unwrap_or_default();
    let mut others = 0.0;
    let mut r_t = 0.0;
    for (r, v) in &eps {
        let ep = &topo.services[&r.service].endpoints[&r.endpoint];
        if r.service == target {
            r_t += v;
            others += v * VISIT_OVERHEAD_US;
        } else {
            others += v * (ep.cpu_us + ep.lock_us + VISIT_OVERHEAD_US);
        }
    }
    (others, r_t)
}

/// Shapes `topo` so `target` limits throughput on a shared node: one worker thread, and CPU
/// work per visit such that `r_T·work = TARGET_SHARE/(1 − TARGET_SHARE)·others`.
pub fn shape(mut topo: Topology, target: &str) -> Result<Topology, String> {
    let (others, r_t) = others_work_us(&topo, target);
    if r_t <= 0.0 {
        return Err(format!("`{target}` is never visited in `{}`", topo.name));
    }
    let work = (TARGET_SHARE / (1.0 - TARGET_SHARE) * others / r_t)
        .max(MIN_TARGET_WORK_US)
        .round();
    let svc = topo
        .services
        .get_mut(target)
        .ok_or_else(|| format!("`{target}` is not in `{}`", topo.name))?;
    svc.threads = 1;
    for ep in svc.endpoints.values_mut() {
        ep.cpu_us = work;
    }
    Ok(slowpoke_emu::topology::with_expectations(topo))
}

fn shaped_case(
    topo: Topology,
    family: &str,
    mode: Mode,
    target: &str,
    role: Role,
    points: &[f64],
) -> Result<Case, String> {
    let mut topology = shape(topo, target)?;
    let id = format!("{family}-{}-{}", mode_name(mode), role.name());
    topology.name = format!("eval-{id}");
    Ok(Case {
        id,
        family: family.to_owned(),
        mode: mode_name(mode).to_owned(),
        target: target.to_owned(),
        role,
        kind: CaseKind::Work,
        points: points.to_vec(),
        topology,
        target_cores: None,
        shape: "shaped",
    })
}

/// The generator's topology as is: the target is the service with the largest configured CPU
/// per end-to-end request, with the generator's work and threads (no dominant service).
pub fn unshaped_case(
    topo: Topology,
    family: &str,
    mode: Mode,
    points: &[f64],
) -> Result<Case, String> {
    let (target, role) = pick_target(&topo, None)?;
    let id = format!("{family}-{}-unshaped", mode_name(mode));
    let mut topology = slowpoke_emu::topology::with_expectations(topo);
    topology.name = format!("eval-{id}");
    Ok(Case {
        id,
        family: family.to_owned(),
        mode: mode_name(mode).to_owned(),
        target,
        role,
        kind: CaseKind::Work,
        points: points.to_vec(),
        topology,
        target_cores: None,
        shape: "unshaped",
    })
}

/// Names of the harder cases (usable with `--families`).
pub const HARDER: [&str; 3] = ["mutex", "mutex-declared", "scaling"];

/// The paper's harder cases, each with ground truth: a mutex-bound service (its critical
/// section shrinks), measured as is and with its parallelism declared as 1 (its lock), and a
/// scaling what-if (the target gets a second worker thread).
pub fn harder_cases() -> Vec<Case> {
    let mut declared = mutex_case();
    declared.id = "mutex-declared".into();
    declared.family = "mutex-declared".into();
    declared.target_cores = Some(1.0);
    vec![mutex_case(), declared, scaling_case()]
}

fn service(threads: u32, cpu_us: f64, lock_us: f64, calls: &[&str]) -> slowpoke_emu::Service {
    let ep = slowpoke_emu::Endpoint {
        cpu_us,
        lock_us,
        response_bytes: 200,
        calls: calls
            .iter()
            .map(|c| slowpoke_emu::topology::Call {
                service: (*c).to_owned(),
                endpoint: "work".into(),
                probability: 1.0,
                request_bytes: 100,
            })
            .collect(),
        ..slowpoke_emu::Endpoint::default()
    };
    slowpoke_emu::Service {
        threads,
        max_threads: None,
        port: None,
        node: None,
        serving: slowpoke_emu::Serving::Async,
        endpoints: BTreeMap::from([("work".to_owned(), ep)]),
    }
}

fn three_tier(name: &str, middle: slowpoke_emu::Service) -> Topology {
    let topo = Topology {
        name: name.to_owned(),
        family: Some(name.to_owned()),
        allow_cycles: false,
        sampling: slowpoke_emu::topology::Sampling::default(),
        entry: slowpoke_emu::topology::EndpointRef {
            service: "front".into(),
            endpoint: "work".into(),
        },
        services: BTreeMap::from([
            ("front".to_owned(), service(2, 60.0, 0.0, &["middle"])),
            ("middle".to_owned(), middle),
            ("back".to_owned(), service(2, 80.0, 0.0, &[])),
        ]),
        expected: None,
    };
    slowpoke_emu::topology::with_expectations(topo)
}

/// front → middle → back; `middle` has 2 threads but 900 µs of its 1000 µs per visit under its
/// mutex, so the lock, not its cores, limits the app.
fn mutex_case() -> Case {
    let middle = service(2, 100.0, 900.0, &["back"]);
    Case {
        id: "mutex".into(),
        family: "mutex".into(),
        mode: "sync".into(),
        target: "middle".into(),
        role: Role::Inner,
        kind: CaseKind::Lock,
        points: vec![20.0, 40.0, 60.0],
        topology: three_tier("mutex", middle),
        target_cores: None,
        shape: "hand-built",
    }
}

/// front → middle → back; `middle` has one thread of 1200 µs per visit; the what-if gives it a
/// second thread (the emulator's `threads`, changed live up to `max_threads`).
fn scaling_case() -> Case {
    let mut middle = service(1, 1200.0, 0.0, &["back"]);
    middle.max_threads = Some(2);
    Case {
        id: "scaling".into(),
        family: "scaling".into(),
        mode: "sync".into(),
        target: "middle".into(),
        role: Role::Inner,
        kind: CaseKind::Scaling,
        points: vec![2.0],
        topology: three_tier("scaling", middle),
        // The emulator's runtime has max_threads workers and a live limit of `threads` on
        // them, which the agent cannot see (it counts serving threads): declare the one thread,
        // as the service's owner would.
        target_cores: Some(1.0),
        shape: "hand-built",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_suite_has_six_families_shaped_and_unshaped_and_three_points_each() {
        let cases = cases(SuiteName::Quick, &[]).unwrap();
        assert_eq!(cases.len(), 12);
        let families: std::collections::BTreeSet<_> = cases.iter().map(|c| &c.family).collect();
        assert_eq!(families.len(), 6);
        assert!(cases.iter().all(|c| c.points.len() == 3));
        for f in families {
            for shape in ["shaped", "unshaped"] {
                let n = cases
                    .iter()
                    .filter(|c| &c.family == f && c.shape == shape)
                    .count();
                assert_eq!(n, 1, "{f} {shape}");
            }
        }
        // Unshaped means the generator's own work: no service shaped to dominate.
        let unshaped = cases.iter().find(|c| c.shape == "unshaped").unwrap();
        let generated = generated(QUICK_FAMILIES[0].0, QUICK_FAMILIES[0].1).unwrap();
        for (name, svc) in &unshaped.topology.services {
            assert_eq!(svc.threads, generated.services[name].threads, "{name}");
        }
    }

    #[test]
    fn shaped_target_takes_its_share_of_the_cpu_and_limits_throughput() {
        for c in cases(SuiteName::Quick, &[]).unwrap() {
            if c.shape != "shaped" {
                continue;
            }
            let (others, r_t) = others_work_us(&c.topology, &c.target);
            let t = &c.topology.services[&c.target];
            assert_eq!(t.threads, 1, "{}", c.id);
            let work = t.endpoints.values().next().unwrap().cpu_us;
            let share = r_t * work / (r_t * work + others);
            assert!(share >= TARGET_SHARE - 0.01, "{}: share {share}", c.id);
            // The target's own limit (1 thread) is below the node's (2 cores, everyone).
            let own = 1e6 / (r_t * (work + VISIT_OVERHEAD_US));
            let node = 2.0 * 1e6 / (r_t * work + others);
            assert!(own < node, "{}: own {own} node {node}", c.id);
        }
    }

    #[test]
    fn full_suite_covers_every_family_both_modes_and_both_roles() {
        let cases = cases(SuiteName::Full, &[]).unwrap();
        for f in slowpoke_emu::generate::FAMILIES {
            for mode in ["sync", "async"] {
                // Every family and mode; a cycle has no leaf, so any role counts.
                assert!(
                    cases.iter().any(|c| c.family == f.name() && c.mode == mode),
                    "{f} {mode}"
                );
            }
        }
        assert!(cases.iter().any(|c| c.role == Role::Inner));
        assert!(cases.iter().any(|c| c.role == Role::Leaf));
        assert!(
            cases
                .iter()
                .all(|c| c.points == FULL_POINTS || c.kind != CaseKind::Work)
        );
        assert!(cases.iter().any(|c| c.kind == CaseKind::Lock));
        assert!(cases.iter().any(|c| c.kind == CaseKind::Scaling));
        let ids: std::collections::BTreeSet<_> = cases.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), cases.len(), "ids are unique");
    }

    #[test]
    fn families_filter_and_unknown_family() {
        let c = cases(SuiteName::Quick, &["chain".into()]).unwrap();
        assert_eq!(c.len(), 2);
        let e = cases(SuiteName::Quick, &["chian".into()]).unwrap_err();
        assert!(e.contains("unknown family `chian`"), "{e}");
        let e = cases(SuiteName::Quick, &["mutex".into()]).unwrap_err();
        assert!(e.contains("no case left"), "{e}");
    }
}

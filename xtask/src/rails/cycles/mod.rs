//! Rail 1: no import cycle between the modules of a crate.
//!
//! A module is a file (`src/a.rs` and `src/a/mod.rs` are `a`, `src/a/b.rs` is `a::b`); inline
//! `mod x { .. }` blocks belong to their file. Module `a` uses `b` when code outside
//! `#[cfg(test)]` names `crate::b..`, `super::..` or `self::..` (in a `use`, in a path in code, or
//! in a macro's tokens), resolved to the longest prefix that is a module. A child using its
//! ancestors' items is part of the same room, so an edge is lifted to the children of the two
//! modules' lowest common ancestor (`kernel::events → actuator` counts as `kernel → actuator`,
//! `kernel::events → kernel` not at all) and cycles are looked for among siblings at every level.
//! Why: a cycle means neither module can be understood, tested or moved without the other; one
//! way out is always to move what both need into a module of its own.

mod collect;
mod scc;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use syn::visit::Visit as _;

use self::{
    collect::Collector,
    scc::{covering_cycles, strongly_connected},
};
use super::{Finding, Rail, workspace::Workspace};

/// A module's path in its crate: `[]` is the crate root, `["kernel", "events"]` is `kernel::events`.
type ModPath = Vec<String>;

/// Where a module names another: the evidence printed for an edge of a cycle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub file: PathBuf,
    pub line: usize,
    /// The path as written, e.g. `crate::kernel::PauseRequest`.
    pub path: String,
}

/// The file modules of one crate and which names which.
#[derive(Debug, Default)]
pub struct CrateGraph {
    /// File modules and their files.
    pub files: BTreeMap<ModPath, PathBuf>,
    /// Every module, inline ones too: paths resolve to the longest prefix found here.
    known: BTreeSet<ModPath>,
    /// `(from, to, where)` between file modules.
    pub edges: Vec<(ModPath, ModPath, Reference)>,
}

/// An import cycle among the children of `level`: `modules[i]` uses `modules[i + 1]` (the last
/// uses the first), as shown by `evidence[i]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    pub level: ModPath,
    pub modules: Vec<ModPath>,
    pub evidence: Vec<Reference>,
}

pub fn check(ws: &Workspace) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for member in &ws.members {
        for (label, root) in &member.crates {
            let graph = CrateGraph::parse(root, &|p| std::fs::read_to_string(p))
                .with_context(|| format!("reading the modules of {label}"))?;
            for cycle in graph.cycles() {
                findings.push(finding(ws, label, &cycle));
            }
        }
    }
    Ok(findings)
}

fn finding(ws: &Workspace, label: &str, cycle: &Cycle) -> Finding {
    let mut names: Vec<String> = cycle.modules.iter().map(|m| name(m)).collect();
    names.push(names[0].clone());
    let message = std::iter::once(format!(
        "{} modules import each other in a circle (limit: no cycle); one use per edge:",
        cycle.modules.len()
    ))
    .chain(cycle.evidence.iter().enumerate().map(|(i, r)| {
        format!(
            "{} → {}: {}:{} `{}`",
            names[i],
            names[i + 1],
            ws.relative(&r.file),
            r.line,
            r.path
        )
    }))
    .collect::<Vec<_>>()
    .join("\n");
    let fix = "move what the modules share (a type, an OS helper) into a module of its own that \
               they both use, or into the lower one, so that uses point one way"
        .to_owned();
    Finding {
        rail: Rail::ImportCycle,
        subject: format!("{label}: {}", names.join(" → ")),
        count: cycle.modules.len() as u64,
        limit: 0,
        message,
        fix,
    }
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

impl CrateGraph {
    /// Reads the crate whose root file is `root` (following `mod` declarations outside
    /// `#[cfg(test)]`) through `read`, so tests can hand in a layout held in memory.
    pub fn parse(root: &Path, read: &dyn Fn(&Path) -> std::io::Result<String>) -> Result<Self> {
        let mut graph = CrateGraph::default();
        graph.known.insert(Vec::new());
        let mut pending = vec![(vec![root.to_path_buf()], Vec::new(), true)];
        let mut raw = Vec::new();
        while let Some((candidates, module, mod_rs)) = pending.pop() {
            let Some((file, text)) = candidates
                .iter()
                .find_map(|f| read(f).ok().map(|t| (f.clone(), t)))
            else {
                bail!(
                    "module `{}` has no file: none of {}",
                    name(&module),
                    candidates
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            let ast =
                syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
            let mod_rs = mod_rs || file.file_name().is_some_and(|n| n == "mod.rs");
            let mut collector = Collector::new(file.clone(), module.clone(), mod_rs);
            collector.visit_file(&ast);
            graph.files.insert(module, file);
            graph.known.extend(collector.known);
            raw.extend(collector.references);
            pending.extend(collector.children);
        }
        raw.sort_by(|a, b| a.2.cmp(&b.2)); // the first use in file order is the evidence
        for (from, segments, reference) in raw {
            let Some(target) = graph.resolve(&from, &segments) else {
                continue;
            };
            let (from, to) = (graph.file_module(&from), graph.file_module(&target));
            graph.edges.push((from, to, reference));
        }
        Ok(graph)
    }

    /// The module a path names: `segments` start with `crate`, `self` or `super`, seen from the
    /// (possibly inline) module `from`; the longest prefix that is a module wins.
    fn resolve(&self, from: &ModPath, segments: &[String]) -> Option<ModPath> {
        let (mut base, mut rest) = match segments.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &segments[1..]),
            Some("self") => (from.clone(), &segments[1..]),
            Some("super") => (from.clone(), segments),
            _ => return None,
        };
        while let Some((first, tail)) = rest.split_first()
            && first == "super"
        {
            base.pop()?;
            rest = tail;
        }
        for segment in rest {
            base.push(segment.clone());
            if !self.known.contains(&base) {
                base.pop();
                break;
            }
        }
        Some(base)
    }

    /// The file module holding (possibly inline) module `module`.
    fn file_module(&self, module: &[String]) -> ModPath {
        (0..=module.len())
            .rev()
            .map(|n| module[..n].to_vec())
            .find(|m| self.files.contains_key(m))
            .unwrap_or_default()
    }

    /// Every import cycle, at every level of the module tree.
    pub fn cycles(&self) -> Vec<Cycle> {
        // level -> (child, child) -> first evidence
        let mut levels: BTreeMap<ModPath, BTreeMap<(ModPath, ModPath), &Reference>> =
            BTreeMap::new();
        for (from, to, reference) in &self.edges {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // the same module, or one is the other's ancestor: one room
            }
            levels
                .entry(from[..common].to_vec())
                .or_default()
                .entry((from[..=common].to_vec(), to[..=common].to_vec()))
                .or_insert(reference);
        }
        let mut cycles = Vec::new();
        for (level, edges) in levels {
            for component in strongly_connected(&edges) {
                for modules in covering_cycles(&component, &edges) {
                    let evidence = (0..modules.len())
                        .map(|i| {
                            let pair =
                                (modules[i].clone(), modules[(i + 1) % modules.len()].clone());
                            edges[&pair].clone()
                        })
                        .collect();
                    cycles.push(Cycle {
                        level: level.clone(),
                        modules,
                        evidence,
                    });
                }
            }
        }
        cycles
    }
}

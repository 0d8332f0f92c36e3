//! `cargo xtask rails`: guard rails that keep the workspace's structure honest once it is right.
//! Each rail is a check that can fail, with a finding that names the file or module, the number
//! measured, the limit, and what to do (docs/rails.md explains each):
//!
//! 1. [`cycles`]: no import cycle between the modules of a crate;
//! 2. [`size`]: no product source file over [`size::MAX_LINES`] lines (an allow-list that only shrinks);
//! 3. [`lints`]: long functions are allowed only by a `#[expect(clippy::too_many_lines, reason = ..)]`;
//! 4. [`builds::release_agent_has_no_test_routes`]: the release agent carries no test routes;
//! 5. [`builds::client_needs_no_bpf_toolchain`]: a client of the agent builds without the eBPF toolchain.
//!
//! The first three read sources only (well under a second); the last two run cargo builds, which
//! are cheap on a warm cache and can be skipped with `--no-build` while iterating.

mod builds;
mod cycles;
mod lints;
mod size;
mod workspace;

use std::{
    fmt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde::Serialize;

pub use workspace::Workspace;

/// Which rail a finding comes from (the JSON `rail` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rail {
    ImportCycle,
    FileSize,
    TooManyLines,
    ReleaseTestRoutes,
    ClientToolchain,
}

impl fmt::Display for Rail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rail::ImportCycle => "import-cycle",
            Rail::FileSize => "file-size",
            Rail::TooManyLines => "too-many-lines",
            Rail::ReleaseTestRoutes => "release-test-routes",
            Rail::ClientToolchain => "client-toolchain",
        })
    }
}

/// One violation. `count` is what was measured and `limit` what the rail allows, in the unit the
/// rail states in `message` (lines, modules in a cycle, occurrences, ...).
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub rail: Rail,
    /// The file (workspace-relative) or module the finding is about.
    pub subject: String,
    pub count: u64,
    pub limit: u64,
    /// What is wrong, with the evidence (`file:line` of each offending use, a build's output, ...).
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[{}] {}", self.rail, self.subject)?;
        for line in self.message.lines() {
            writeln!(f, "    {line}")?;
        }
        write!(f, "    fix: {}", self.fix)
    }
}

/// What `cargo xtask rails` runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Also run the two build rails (release agent, client without the eBPF toolchain).
    pub builds: bool,
}

/// Runs every rail and returns all findings (a rail that cannot run at all is an error).
pub fn check(root: &Path, options: Options) -> Result<Vec<Finding>> {
    let ws = Workspace::load(root)?;
    let mut findings = Vec::new();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut timed = |name, f: &mut dyn FnMut() -> Result<Vec<Finding>>| -> Result<()> {
        let start = Instant::now();
        findings.extend(f()?);
        timings.push((name, start.elapsed()));
        Ok(())
    };
    timed("import cycles", &mut || cycles::check(&ws))?;
    timed("file size", &mut || size::check(&ws))?;
    timed("too_many_lines", &mut || lints::check(&ws))?;
    if options.builds {
        timed("release agent", &mut || {
            builds::release_agent_has_no_test_routes(&ws)
        })?;
        timed("client toolchain", &mut || {
            let scratch = crate::target_dir(root).join("rails-client");
            builds::client_needs_no_bpf_toolchain(&ws, &scratch)
        })?;
    }
    let shown: Vec<String> = timings
        .iter()
        .map(|(name, d)| format!("{name} {:.1} s", d.as_secs_f64()))
        .collect();
    eprintln!("xtask rails: {}", shown.join(", "));
    Ok(findings)
}

/// `cargo xtask rails [--json] [--no-build]`: prints the findings (human-readable on stderr, or
/// one JSON array on stdout) and fails when there is any.
pub fn run(root: &Path, json: bool, options: Options) -> Result<()> {
    let findings = check(root, options)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for finding in &findings {
            eprintln!("{finding}\n");
        }
    }
    if findings.is_empty() {
        eprintln!("xtask rails: all guard rails hold");
        return Ok(());
    }
    bail!(
        "{} guard-rail finding(s) above; docs/rails.md says what each rail checks and how to fix it",
        findings.len()
    )
}

//! `cargo xtask fuzz`: the cargo-fuzz targets of `fuzz/` (request parsing of both HTTP APIs, over
//! `slowpoke-api` only; docs/security/fuzz.md). Installs cargo-fuzz when missing, builds every
//! target with nightly and runs each for a while; a crash fails the task with its reproducer.
//!
//! The corpus a run grows is kept under `target/fuzz/corpus/` (not committed); the committed,
//! small seeds (`fuzz/seeds/<target>/`, taken from the docs' examples) are read beside it, so
//! a fresh clone starts from the documented requests and a long run on one machine resumes where
//! the last one stopped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{run, run_logged, setup, target_dir};

/// cargo-fuzz itself builds with the stable toolchain; 0.13.2 does here (rustc 1.95). The targets
/// build with nightly (libFuzzer's coverage instrumentation needs `-Z` flags).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The total time of the run `cargo xtask test` makes, shared by every target.
pub const SMOKE_SECONDS: u64 = 30;

/// Installs the pinned cargo-fuzz unless it is there already (idempotent, part of `setup`).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let bin = setup::cargo_home().join("bin/cargo-fuzz");
    if let Ok(version) = setup::output(Command::new(&bin).arg("--version"))
        && version.contains(CARGO_FUZZ_VERSION)
    {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute, once)");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

/// `cargo clippy -D warnings` over the fuzz crate, which the workspace's clippy does not reach
/// (its own target directory: the fuzz builds use other flags).
pub fn clippy(root: &Path) -> Result<()> {
    run(crate::cargo(root)
        .args([
            "clippy",
            "--manifest-path",
            "fuzz/Cargo.toml",
            "--all-targets",
        ])
        .arg("--target-dir")
        .arg(target_dir(root).join("fuzz-clippy"))
        .args(["--", "-D", "warnings"]))
}

/// Builds the targets (all, or `only`) and runs each for `seconds`.
pub fn fuzz(root: &Path, seconds: u64, only: Option<&str>) -> Result<()> {
    let targets = selected(root, only)?;
    run_targets(root, &targets, seconds, None)
}

/// The smoke run of `cargo xtask test`: every target, [`SMOKE_SECONDS`] in total, libFuzzer's
/// progress lines in `target/fuzz/logs/TARGET.log` rather than in the test run's output.
pub fn smoke(root: &Path) -> Result<()> {
    let targets = targets(root)?;
    let each = (SMOKE_SECONDS / targets.len() as u64).max(1);
    let logs = target_dir(root).join("fuzz/logs");
    run_targets(root, &targets, each, Some(&logs))
}

/// Builds and runs `targets`, each for `seconds`; with `logs`, each run's output goes to
/// `logs/TARGET.log`.
fn run_targets(root: &Path, targets: &[String], seconds: u64, logs: Option<&Path>) -> Result<()> {
    ensure_cargo_fuzz()?;
    let started = Instant::now();
    run(&mut cargo_fuzz(root, "build"))?;
    eprintln!(
        "xtask: fuzz targets built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut crashes = Vec::new();
    for target in targets {
        let log = logs.map(|dir| dir.join(format!("{target}.log")));
        if let Some(crash) = run_one(root, target, seconds, log.as_deref())? {
            crashes.push(crash);
        }
    }
    if !crashes.is_empty() {
        bail!(
            "fuzzing found {} crash(es):\n{}\nReproduce one with `cargo +nightly fuzz run -s none TARGET FILE` \
             (the panic message says which property failed); fix it, then add FILE to fuzz/seeds/TARGET/",
            crashes.len(),
            crashes.join("\n")
        );
    }
    eprintln!(
        "xtask: {} fuzz target(s), {seconds} s each: no crash ({:.1} s in all)",
        targets.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one target for `seconds`; on a crash, a line naming the target and its reproducer.
fn run_one(root: &Path, target: &str, seconds: u64, log: Option<&Path>) -> Result<Option<String>> {
    let corpus = target_dir(root).join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = root.join("fuzz/seeds").join(target);
    let dict = root.join("fuzz/seeds/json.dict");
    let since = SystemTime::now();
    let mut cmd = cargo_fuzz(root, "run");
    cmd.arg(target).arg(&corpus).arg(&seeds).args([
        "--",
        &format!("-max_total_time={seconds}"),
        // One input taking longer than this is a hang, reported like a crash.
        "-timeout=10",
        "-print_final_stats=1",
    ]);
    cmd.arg(format!("-dict={}", dict.display()));
    let status = if let Some(log) = log {
        run_logged(&mut cmd, log)?
    } else {
        let shown = format!("{cmd:?}");
        eprintln!("xtask: {shown}");
        cmd.status().with_context(|| format!("starting {shown}"))?
    };
    if status.success() {
        return Ok(None);
    }
    let artifacts = root.join("fuzz/artifacts").join(target);
    Ok(Some(match newest_since(&artifacts, since) {
        Some(file) => format!("  {target}: {}", file.display()),
        None => format!(
            "  {target}: failed ({status}) without a reproducer in {}; see its output",
            artifacts.display()
        ),
    }))
}

/// `rustup run nightly cargo fuzz SUB` for the fuzz crate, with the workspace's target directory
/// and no sanitizer: the code under test is safe Rust (no memory errors for the address sanitizer
/// to find), and without it the build is about twice as fast; debug assertions catch overflows.
fn cargo_fuzz(root: &Path, sub: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", "nightly", "cargo", "fuzz", sub])
        .args([
            "--fuzz-dir",
            "fuzz",
            "--sanitizer",
            "none",
            "--debug-assertions",
        ])
        .arg("--target-dir")
        .arg(target_dir(root).join("fuzz"))
        // `cargo xtask` runs under stable cargo; its variables would pin the nested build to it.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// The newest file in `dir` changed at or after `since`.
fn newest_since(dir: &Path, since: SystemTime) -> Option<PathBuf> {
    let since = since.checked_sub(Duration::from_secs(1)).unwrap_or(since);
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(t, _)| *t >= since)
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// The targets declared in fuzz/Cargo.toml (`[[bin]]` names), in order.
fn targets(root: &Path) -> Result<Vec<String>> {
    let path = root.join("fuzz/Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let names: Vec<String> = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("name")?.as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        bail!("{} declares no [[bin]] fuzz target", path.display());
    }
    Ok(names)
}

fn selected(root: &Path, only: Option<&str>) -> Result<Vec<String>> {
    let all = targets(root)?;
    match only {
        None => Ok(all),
        Some(t) if all.iter().any(|a| a == t) => Ok(vec![t.to_owned()]),
        Some(t) => bail!(
            "no fuzz target named `{t}`: use one of {} (fuzz/Cargo.toml)",
            all.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_targets_are_read_from_the_fuzz_manifest() {
        let root = crate::workspace_root();
        let all = targets(&root).expect("fuzz/Cargo.toml");
        assert!(all.contains(&"selector".to_owned()), "{all:?}");
        for t in &all {
            assert!(
                root.join("fuzz/fuzz_targets")
                    .join(format!("{t}.rs"))
                    .is_file(),
                "{t} has no source"
            );
            assert!(
                root.join("fuzz/seeds")
                    .join(t)
                    .read_dir()
                    .is_ok_and(|mut d| d.next().is_some()),
                "{t} has no committed seeds"
            );
        }
        let e = selected(&root, Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("no fuzz target named `nope`") && e.contains("selector"),
            "{e}"
        );
    }
}

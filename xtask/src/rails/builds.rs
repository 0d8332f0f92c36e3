//! Rails 4 and 5: what the builds contain.
//!
//! 4. The release agent carries no test routes: `cargo build --release -p slowpoke-agent` on its
//!    own (one cargo invocation for one package, so feature unification with the test crates
//!    cannot switch a test feature on) and the binary must not contain [`TEST_ROUTE`].
//! 5. A client of the agent does not need the eBPF toolchain: neither `slowpoke-api` nor
//!    `slowpoke-coordinator --no-default-features` has aya, aya-build, the agent or the kernel
//!    crate among its normal or build dependencies (`cargo tree -e normal,build`), and the
//!    coordinator type-checks (`cargo check`, which runs every build script) with bpf-linker
//!    hidden, in a target directory of its own (`target/rails-client`): there no build script
//!    has ever run with the linker present, so a cached output cannot hide a new need for it,
//!    and the main cache is left alone. (Sharing the main directory would save nothing: the
//!    coordinator alone unifies other features than the workspace, and hiding the linker from
//!    rustup means another `CARGO_HOME`, so every dependency is checked anew either way.)

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Message, TargetKind};

use super::{Finding, Rail, workspace::Workspace};

pub const AGENT: &str = "slowpoke-agent";
pub const API: &str = "slowpoke-api";
pub const CLIENT: &str = "slowpoke-coordinator";
/// The prefix of the agent's test-only routes (`POST /v1/debug/pause/{name}`).
pub const TEST_ROUTE: &[u8] = b"/v1/debug";
const BPF_LINKER: &str = "bpf-linker";

pub fn release_agent_has_no_test_routes(ws: &Workspace) -> Result<Vec<Finding>> {
    let start = Instant::now();
    let output = ws
        .cargo()
        .args(["build", "--release", "-p", AGENT])
        .arg("--message-format=json-render-diagnostics")
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo build --release -p slowpoke-agent")?;
    if !output.status.success() {
        bail!(
            "cargo build --release -p {AGENT} failed ({}): fix the build first",
            output.status
        );
    }
    eprintln!(
        "xtask rails: release agent built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let binaries: Vec<PathBuf> = Message::parse_stream(output.stdout.as_slice())
        .filter_map(|m| match m {
            Ok(Message::CompilerArtifact(a))
                if a.target.kind.contains(&TargetKind::Bin)
                    && ws
                        .member(AGENT)
                        .is_some_and(|m| a.manifest_path.starts_with(&m.dir)) =>
            {
                a.executable
                    .map(cargo_metadata::camino::Utf8PathBuf::into_std_path_buf)
            }
            _ => None,
        })
        .collect();
    if binaries.is_empty() {
        bail!(
            "cargo build --release -p {AGENT} reported no binary: has the agent's [[bin]] moved?"
        );
    }
    let mut findings = Vec::new();
    for binary in binaries {
        let bytes =
            std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
        let found = occurrences(&bytes, TEST_ROUTE);
        if found > 0 {
            findings.push(Finding {
                rail: Rail::ReleaseTestRoutes,
                subject: ws.relative(&binary),
                count: found as u64,
                limit: 0,
                message: format!(
                    "the release agent contains `{}` {found} time(s): a test route (or the help \
                     of a flag that enables it) is compiled into the product",
                    String::from_utf8_lossy(TEST_ROUTE)
                ),
                fix: format!(
                    "put test routes and flags behind {AGENT}'s `test-hooks` cargo feature (off \
                     by default) and let no normal [dependencies] entry enable it; the tests ask \
                     for it with --features"
                ),
            });
        }
    }
    Ok(findings)
}

/// How often `needle` occurs in `haystack` (non-overlapping).
pub fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    memchr::memmem::find_iter(haystack, needle).count()
}

/// Rail 5; `scratch` holds the client's own target directory and the mirrors that hide the
/// linker (`target/rails-client` for the workspace).
pub fn client_needs_no_bpf_toolchain(ws: &Workspace, scratch: &Path) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let finding = |subject: &str, count: usize, message: String, fix: &str| Finding {
        rail: Rail::ClientToolchain,
        subject: subject.to_owned(),
        count: count as u64,
        limit: 0,
        message,
        fix: fix.to_owned(),
    };
    if ws.member(API).is_none() {
        findings.push(finding(
            API,
            1,
            format!(
                "there is no {API} crate: a client gets the agent's wire types only from \
                 {AGENT}, whose build.rs compiles the kernel programs (nightly + bpf-linker)"
            ),
            "create slowpoke-api (serde-only wire types, no aya) and let clients depend on it",
        ));
    } else {
        let aya = aya_packages(&tree(ws, &["-p", API, "-e", "normal,build"])?);
        if !aya.is_empty() {
            findings.push(finding(
                API,
                aya.len(),
                format!("its normal dependencies include {}", aya.join(", ")),
                "`cargo tree -p slowpoke-api -e normal,build -i aya` shows who brings it; the API \
                 crate holds serde types only",
            ));
        }
    }
    if ws.member(CLIENT).is_none() {
        bail!(
            "no {CLIENT} in the workspace: point the client-toolchain rail at the agent's client"
        );
    }
    let client = ["-p", CLIENT, "--no-default-features"];
    let aya = aya_packages(&tree(ws, &[&client[..], &["-e", "normal,build"]].concat())?);
    let no_agent = "make the coordinator's dependency on slowpoke-agent (the in-process agent) \
                    optional behind a default feature and take the wire types from slowpoke-api";
    if !aya.is_empty() {
        findings.push(finding(
            &format!("{CLIENT} --no-default-features"),
            aya.len(),
            format!(
                "its normal or build dependencies include {} (see `cargo tree -p {CLIENT} \
                 --no-default-features -e normal,build -i aya`), so building it needs nightly \
                 and bpf-linker; the check with bpf-linker hidden was not attempted",
                aya.join(", ")
            ),
            no_agent,
        ));
        return Ok(findings);
    }
    let start = Instant::now();
    let mut cmd = ws.cargo();
    cmd.args(["check", "--quiet"]).args(client);
    hide_bpf_linker(&mut cmd, scratch)?;
    let output = cmd
        .env("CARGO_TARGET_DIR", scratch.join("target"))
        .stderr(Stdio::piped())
        .output()
        .context("starting cargo build for the client")?;
    eprintln!(
        "xtask rails: {CLIENT} --no-default-features checked without bpf-linker in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        findings.push(finding(
            &format!("{CLIENT} --no-default-features"),
            1,
            format!(
                "`cargo check -p {CLIENT} --no-default-features` fails with bpf-linker \
                 hidden:\n{}",
                tail.join("\n")
            ),
            no_agent,
        ));
    }
    Ok(findings)
}

/// `cargo tree ARGS --prefix none --format {p}`: one `name vX.Y.Z [(source)] [(*)]` a line.
fn tree(ws: &Workspace, args: &[&str]) -> Result<String> {
    let output = ws
        .cargo()
        .arg("tree")
        .args(args)
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .context("starting cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The packages in `cargo tree` output that need (or carry) the eBPF toolchain, each once:
/// aya's (`aya`, `aya-*`, among them aya-build) and the agent and kernel crates.
pub fn aya_packages(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, version) = (words.next()?, words.next().unwrap_or(""));
            (name == "aya"
                || name.starts_with("aya-")
                || name.starts_with("aya_")
                || name == AGENT
                || name == "slowpoke-ebpf")
                .then(|| format!("{name} {version}"))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Makes `cmd` run as on a machine without bpf-linker: every `PATH` directory holding it is
/// replaced by a mirror without it, and so is `$CARGO_HOME/bin`, because rustup puts that first
/// on `PATH` for every toolchain it runs (`rustup run nightly ...`, which aya-build uses), so
/// trimming `PATH` alone would not hide it. The mirrors are symbolic links under `scratch`;
/// cargo's registry stays shared.
fn hide_bpf_linker(cmd: &mut Command, scratch: &Path) -> Result<()> {
    let home = crate::setup::cargo_home();
    let shim_home = scratch.join("cargo-home");
    if shim_home.exists() {
        std::fs::remove_dir_all(&shim_home)
            .with_context(|| format!("removing {}", shim_home.display()))?;
    }
    mirror_without(&home, &shim_home, &["bin"])?;
    mirror_without(&home.join("bin"), &shim_home.join("bin"), &[BPF_LINKER])?;
    let mut dirs = vec![shim_home.join("bin")];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (i, dir) in std::env::split_paths(&path).enumerate() {
        if dir == home.join("bin") {
            continue;
        }
        if dir.join(BPF_LINKER).exists() {
            let mirror = scratch.join(format!("path-{i}"));
            if mirror.exists() {
                std::fs::remove_dir_all(&mirror)?;
            }
            mirror_without(&dir, &mirror, &[BPF_LINKER])?;
            dirs.push(mirror);
        } else {
            dirs.push(dir);
        }
    }
    let path: OsString = std::env::join_paths(dirs).context("joining PATH")?;
    cmd.env("PATH", path).env("CARGO_HOME", &shim_home);
    Ok(())
}

/// `to` gets a symbolic link to every entry of `from` but those named in `except`.
fn mirror_without(from: &Path, to: &Path, except: &[&str]) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if except.iter().any(|e| name == *e) {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), to.join(&name))
            .with_context(|| format!("linking {}", to.join(&name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

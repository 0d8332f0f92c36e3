//! The workspace as the rails see it: its members, where their sources are, and their crate roots,
//! from `cargo metadata` (so a new crate is checked without anyone listing it here).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};
use cargo_metadata::{MetadataCommand, TargetKind};

/// The test kit: a library, but test code (fixtures for the integration tests), so the product
/// rules on file size do not apply to it.
pub const TEST_KIT_PACKAGES: &[&str] = &["slowpoke-testkit"];

pub struct Workspace {
    pub root: PathBuf,
    pub members: Vec<Member>,
}

pub struct Member {
    pub name: String,
    /// The member's directory, absolute.
    pub dir: PathBuf,
    /// Library and binary crate roots: `(label, root file)`, e.g. `("slowpoke-agent", .../lib.rs)`
    /// and `("slowpoke-agent (bin slowpoke-agent)", .../main.rs)`.
    pub crates: Vec<(String, PathBuf)>,
    /// A default member: what `cargo clippy` at the root lints (not the kernel crate, which
    /// builds only for the BPF target through the agent's build script).
    pub linted: bool,
}

impl Workspace {
    pub fn load(root: &Path) -> Result<Self> {
        let metadata = MetadataCommand::new()
            .cargo_path(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .manifest_path(root.join("Cargo.toml"))
            .no_deps()
            .exec()
            .context("cargo metadata --no-deps (is the workspace's Cargo.toml valid?)")?;
        let defaults = &metadata.workspace_default_members;
        let mut members: Vec<Member> = metadata
            .workspace_packages()
            .into_iter()
            .map(|p| {
                let dir = p
                    .manifest_path
                    .parent()
                    .map_or_else(|| root.to_path_buf(), |d| d.as_std_path().to_path_buf());
                let crates = p
                    .targets
                    .iter()
                    .filter_map(|t| {
                        let label = if t.kind.contains(&TargetKind::Lib) {
                            p.name.to_string()
                        } else if t.kind.contains(&TargetKind::Bin) {
                            format!("{} (bin {})", p.name, t.name)
                        } else {
                            return None;
                        };
                        Some((label, t.src_path.as_std_path().to_path_buf()))
                    })
                    .collect();
                Member {
                    name: p.name.to_string(),
                    dir,
                    crates,
                    linted: defaults.is_missing() || defaults.contains(&p.id),
                }
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            root: root.to_path_buf(),
            members,
        })
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// `path` relative to the workspace root, for findings.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// A `cargo` command in the workspace (the cargo running xtask, as `cargo xtask` does).
    pub fn cargo(&self) -> Command {
        crate::cargo(&self.root)
    }
}

/// Every `*.rs` file under `dir` (sorted; `target/` and hidden directories skipped).
pub fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", d.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if entry.file_type()?.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    pending.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

//! Builds the kernel programs (`slowpoke-ebpf`, binary `slowpoke-kernel`) for the BPF target with
//! the nightly toolchain and leaves the object in `OUT_DIR/slowpoke-kernel`, where `src/lib.rs`
//! embeds it with `include_bytes_aligned!`.
//!
//! One BPF build for every profile and feature set: aya-build runs a nested cargo in
//! `OUT_DIR/aya-build/target/slowpoke-ebpf`, and `OUT_DIR` differs between debug and release and
//! between the agent with and without its `test-hooks` feature, so each would rebuild `core` and
//! the programs from scratch (about a minute each on two cores). That directory is made a link to
//! one shared `<target>/ebpf`, where the nested cargo's own fingerprints and lock keep the object
//! current and concurrent builds serialized. The object copied into `OUT_DIR` is the same.
use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let shared = metadata.target_directory.join("ebpf").into_std_path_buf();
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "slowpoke-ebpf")
        .ok_or_else(|| anyhow!("slowpoke-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("slowpoke-ebpf manifest has no parent"))?
        .to_string();
    let out_dir = std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?;
    share_nested_target(
        &Path::new(&out_dir)
            .join("aya-build/target")
            .join(ebpf.name.as_str()),
        &shared,
    )?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}

/// Makes `nested` (aya-build's per-`OUT_DIR` target directory) a symbolic link to `shared`.
fn share_nested_target(nested: &Path, shared: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(shared).with_context(|| format!("creating {}", shared.display()))?;
    if std::fs::read_link(nested).is_ok_and(|t| t == shared) {
        return Ok(());
    }
    match std::fs::symlink_metadata(nested) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(nested),
        Ok(_) => std::fs::remove_file(nested),
        Err(_) => Ok(()),
    }
    .with_context(|| format!("replacing {}", nested.display()))?;
    let parent = nested
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", nested.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    std::os::unix::fs::symlink(shared, nested)
        .with_context(|| format!("linking {} to {}", nested.display(), shared.display()))
}

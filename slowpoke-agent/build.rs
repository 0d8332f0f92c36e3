//! Builds the kernel programs (`slowpoke-ebpf`, binary `slowpoke-kernel`) for the BPF target with
//! the nightly toolchain and leaves the object in `OUT_DIR/slowpoke-kernel`, where `src/lib.rs`
//! embeds it with `include_bytes_aligned!`.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
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
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}

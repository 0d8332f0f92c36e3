//! `cargo xtask image`: the agent's and the coordinator's container images, `FROM scratch`
//! (deploy/images/*.Containerfile) with the release binary and exactly the shared libraries
//! `ldd` names for it. Dynamic linking against the build machine's glibc rather than a static
//! binary: only the gnu target exists here (no musl), and a static glibc build would be a
//! second full release build. The images are as old as the epoch (`--timestamp 0`), so the
//! same binaries give the same image id.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, setup, target_dir};

/// The workspace's version: the images' tag and the manifests' `image:` fields.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Agent,
    Coordinator,
}

impl Which {
    pub const ALL: [Which; 2] = [Which::Agent, Which::Coordinator];

    /// The short name: the Containerfile's and the build context's.
    pub fn name(self) -> &'static str {
        match self {
            Which::Agent => "agent",
            Which::Coordinator => "coordinator",
        }
    }

    /// The release binary the image runs.
    pub fn binary(self) -> &'static str {
        match self {
            Which::Agent => "slowpoke-agent",
            Which::Coordinator => "slowpoke",
        }
    }

    /// The cargo package that builds [`Which::binary`].
    fn package(self) -> &'static str {
        match self {
            Which::Agent => "slowpoke-agent",
            Which::Coordinator => "slowpoke-cli",
        }
    }

    /// The image name and tag, as the manifests name it.
    pub fn image(self) -> String {
        format!("localhost/slowpoke-{}:{VERSION}", self.name())
    }
}

/// A built image.
pub struct Built {
    pub image: String,
    /// The image's size as podman reports it (the uncompressed layer).
    pub bytes: u64,
    /// The shared libraries copied beside the binary.
    pub libraries: Vec<PathBuf>,
}

/// `cargo build --release` of the binaries of `which`, one invocation each: built together,
/// cargo would unify their dependencies' features and rebuild the agent the guard rails
/// already built alone.
pub fn build_binaries(root: &Path, which: &[Which]) -> Result<()> {
    for w in which {
        let mut cmd = cargo(root);
        cmd.args(["build", "--release", "-p", w.package(), "--bin", w.binary()]);
        if *w == Which::Coordinator {
            // A pure client of the agents: no emulator, no in-process agent (no kernel
            // programs in the coordinator's image), a smaller image and a shorter build.
            cmd.arg("--no-default-features");
        }
        run(&mut cmd)?;
    }
    Ok(())
}

/// Assembles the build context of `which` under `target/deploy/image/NAME` from the release
/// binary and builds the image with buildah.
pub fn build(root: &Path, which: Which) -> Result<Built> {
    let binary = target_dir(root).join("release").join(which.binary());
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p {})",
            binary.display(),
            which.package()
        );
    }
    let ctx = target_dir(root).join("deploy/image").join(which.name());
    let rootfs = ctx.join("rootfs");
    if ctx.exists() {
        std::fs::remove_dir_all(&ctx).with_context(|| format!("removing {}", ctx.display()))?;
    }
    let bin_dir = rootfs.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    // Debug info out, symbols kept: a panic's backtrace still names its functions.
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&binary)
        .arg(bin_dir.join(which.binary())))?;
    let libraries = shared_libraries(&binary)?;
    for lib in &libraries {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(lib));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // `copy` follows symlinks (ld-linux's /lib64 link): the image gets the file itself.
        std::fs::copy(lib, &dest)
            .with_context(|| format!("copying {} into the image", lib.display()))?;
    }
    let image = which.image();
    let previous = image_id(&image);
    let containerfile = root
        .join("deploy/images")
        .join(format!("{}.Containerfile", which.name()));
    run(Command::new("buildah")
        .args(["build", "--quiet", "--timestamp", "0", "--file"])
        .arg(&containerfile)
        .args(["--tag", &image])
        .arg(&ctx))?;
    // The tag moved to the new image: remove the one it leaves behind (untagged, it would pile
    // up with every rebuild). Refused while a container uses it, which is fine.
    if let Some(old) = previous
        && image_id(&image).as_ref() != Some(&old)
    {
        let _ = Command::new("podman").args(["rmi", &old]).output();
    }
    let size = setup::output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Size}}",
        &image,
    ]))?;
    let bytes = size
        .trim()
        .parse()
        .with_context(|| format!("podman's size of {image}: {size}"))?;
    Ok(Built {
        image,
        bytes,
        libraries,
    })
}

/// The id of the image `name` points to, if it exists.
fn image_id(name: &str) -> Option<String> {
    setup::output(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", name]))
        .ok()
        .map(|id| id.trim().to_owned())
}

/// The shared libraries `ldd` resolves for `binary`, the dynamic loader included (the vDSO is
/// the kernel's, not a file).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = setup::output(Command::new("ldd").arg(binary))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") | None => bail!("ldd {}: cannot resolve `{line}`", binary.display()),
            Some(_) => {} // linux-vdso.so.1
        }
    }
    if libs.is_empty() {
        bail!("ldd {} named no library: is it static?", binary.display());
    }
    Ok(libs)
}

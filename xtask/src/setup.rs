//! `cargo xtask setup`: installs, idempotently, what building and testing need on a fresh machine
//! of this project's kind (Debian 12, root, rustup with stable + nightly). Every step first checks
//! whether it is already done. Versions are pinned (see ../shared/toolchain.md for why these).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// bpf-linker built against the nightly's own LLVM (the only LLVM 22 on these machines).
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
/// Debian packages the tests and the demo use: real servers and a load tool for comparisons.
const DEBIAN_PACKAGES: &[&str] = &[
    "nginx-light",
    "memcached",
    "haproxy",
    // Request ages (issue #18): a server that serves each request on one thread (worker MPM) or
    // process (prefork) and calls a backend (mod_proxy). Not started by the package here
    // (policy-rc.d); the tests run their own instances on private ports.
    "apache2",
    // The tail suite's real app (`--suite tail-real`, testkit/src/php.rs): apache2 prefork with
    // mod_php, its front fanning out with PHP's curl.
    "libapache2-mod-php",
    "php-curl",
    "wrk",
    "python3",
    // The agent's socket tests call it as an unprivileged user (`curl --unix-socket`).
    "curl",
    // `cargo xtask schemathesis` installs schemathesis into a venv of Debian's Python.
    "python3-venv",
    // The web page test renders the coordinator's page in headless Chromium.
    "chromium",
    // `cargo xtask image` and `deploy check` (xtask/src/deploy/): images, a podman run of the
    // agent's, the manifests' lint, the units under systemd-nspawn. runc: podman's default crun 1.8 refuses this machine's
    // hybrid cgroup hierarchy. objcopy (binutils) strips the binaries' debug info.
    "buildah",
    "podman",
    "runc",
    "yamllint",
    "binutils",
    // systemd-nspawn: the units run under systemd (this machine's init is not systemd).
    "systemd-container",
];

/// What building, the demo and the benchmarks need.
pub fn ensure() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    mounts()?;
    Ok(())
}

/// Runs a command and returns its standard output; fails with its standard error.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("the nightly toolchain is needed for the kernel programs (rustup toolchain list)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `$CARGO_HOME` or `~/.cargo`: where `cargo install` puts bpf-linker.
pub(crate) fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    )
}

fn bpf_linker() -> Result<()> {
    let bin = cargo_home().join("bin/bpf-linker");
    if let Ok(version) = output(Command::new(&bin).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());
    let libdir = sysroot.join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // bpf-linker's build looks for `libLLVM.so` under $LLVM_PREFIX/lib.
    let prefix = std::env::temp_dir().join("slowpoke-rustllvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), llvm.display()))?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {} (a few minutes, once)",
        llvm.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            BPF_LINKER_LLVM_FEATURE,
        ])
        .env("LLVM_PREFIX", &prefix)
        // The rpath lets bpf-linker find the nightly's libLLVM outside `cargo +nightly`.
        .env(
            "RUSTFLAGS",
            format!("-C link-arg=-Wl,-rpath,{}", libdir.display()),
        ))
}

fn debian_packages() -> Result<()> {
    if !apt_install(DEBIAN_PACKAGES)? {
        return Ok(());
    }
    // Debian starts the packaged daemons where it can; the tests start their own instances on
    // private ports, so stop the packaged ones to keep the machine quiet.
    for daemon in ["nginx", "memcached", "haproxy"] {
        let _ = Command::new("pkill").args(["-x", daemon]).status();
    }
    Ok(())
}

/// Installs those of `packages` that are not installed yet; true if it installed any.
pub(crate) fn apt_install(packages: &[&str]) -> Result<bool> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(true)
}

fn mounts() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for (fstype, dir) in [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")] {
        if mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(dir))
        {
            continue;
        }
        run(Command::new("mount").args(["-t", fstype, fstype, dir]))?;
    }
    Ok(())
}

//! Deployment (deploy/, docs/deploy.md): `cargo xtask image` builds the container images;
//! `cargo xtask deploy check` (which `cargo xtask test` runs) lints and validates the
//! Kubernetes manifests offline against [`KUBERNETES_VERSION`], verifies the systemd units,
//! runs them under systemd in a `systemd-nspawn` container ([`unit_trial`]), builds both images,
//! parses every container argument and unit command line with the real binaries, and runs the
//! agent's image under podman as the `DaemonSet` asks ([`trial`]).

pub mod image;
pub mod podman;
mod trial;
mod unit_trial;
mod validate;

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, Result};

use image::Which;

/// The Kubernetes minor version the manifests are written and validated for. 1.35 is the
/// oldest minor still maintained upstream in December 2026 (three at a time, one every four
/// months: 1.35–1.37), so the manifests use nothing a maintained cluster lacks; k8s-openapi
/// 0.29 (the newest that builds with rustc 1.95; feature `v1_35`) and kubernetes-validate
/// 1.37 both cover it.
pub const KUBERNETES_VERSION: &str = "1.35.0";

/// `podman` (root, the default storage: the images are the user's to push).
pub(crate) fn podman_cmd() -> Command {
    Command::new("podman")
}

/// Flags every `podman run` here needs that are about this machine, not about the pod:
/// - `--runtime=runc`: podman's default crun 1.8 refuses a hybrid cgroup v1/v2 hierarchy
///   ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"), which this
///   machine has; runc runs it.
/// - `--ulimit nofile=…,nproc=…`: podman asks for limits above this machine's hard limits
///   (`setrlimit … operation not permitted`; root here lacks `CAP_SYS_RESOURCE`): the
///   container gets the current hard `nofile` limit and 4096 processes. Kubernetes sets no
///   limits of its own (the runtime's are inherited).
pub(crate) fn runtime_flags() -> Result<Vec<String>> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let nofile = lim.rlim_max;
    Ok(vec![
        "--runtime=runc".into(),
        format!("--ulimit=nofile={nofile}:{nofile}"),
        "--ulimit=nproc=4096:4096".into(),
    ])
}

/// Installs kubernetes-validate (the Debian packages are in `setup`'s list).
pub fn ensure_installed(root: &Path) -> Result<()> {
    validate::ensure_kubernetes_validate(root).map(drop)
}

/// `cargo xtask image`: release binaries, then the images of `which`.
pub fn image(root: &Path, which: &[Which]) -> Result<()> {
    crate::setup::ensure()?;
    image::build_binaries(root, which)?;
    for &w in which {
        let built = image::build(root, w)?;
        println!(
            "{}: {:.1} MB ({} libraries: {})",
            built.image,
            built.bytes as f64 / 1e6,
            built.libraries.len(),
            built
                .libraries
                .iter()
                .map(|l| l.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "push them with `podman push IMAGE REGISTRY/NAME:TAG` or load them on the nodes (docs/deploy.md)"
    );
    Ok(())
}

/// What `deploy check` runs.
pub struct CheckOptions {
    /// Build the release binaries first (off: they must exist).
    pub build: bool,
    /// Run the agent's image under podman (the what-if, stop and kill) and the units under
    /// systemd-nspawn.
    pub trial: bool,
}

/// `cargo xtask deploy check`: every check of deploy/, timed.
pub fn check(root: &Path, opts: &CheckOptions) -> Result<()> {
    let started = Instant::now();
    let timed = |what: &str, t: Instant| {
        eprintln!("xtask deploy: {what} in {:.1} s", t.elapsed().as_secs_f64());
    };
    let t = Instant::now();
    validate::manifests(root)?;
    validate::capabilities(root)?;
    timed(
        "manifests valid (yamllint, kubernetes-validate, the agent's capabilities)",
        t,
    );
    if opts.build {
        let t = Instant::now();
        image::build_binaries(root, &Which::ALL)?;
        timed("release binaries built", t);
    }
    let t = Instant::now();
    validate::units(root)?;
    timed("systemd units verified", t);
    if opts.trial {
        let t = Instant::now();
        let out = unit_trial::run(root).context("the systemd units under systemd-nspawn")?;
        eprintln!("xtask deploy: agent unit: features {}", out.features);
        eprintln!("xtask deploy: systemctl stop: {}", out.after_stop);
        eprintln!("xtask deploy: agent SIGKILLed: {}", out.after_kill);
        eprintln!("xtask deploy: coordinator unit: {}", out.coordinator);
        timed("systemd units run under systemd-nspawn", t);
    }
    for w in Which::ALL {
        let t = Instant::now();
        let built = image::build(root, w)?;
        timed(
            &format!("{} built ({:.1} MB)", built.image, built.bytes as f64 / 1e6),
            t,
        );
    }
    let t = Instant::now();
    validate::arguments(root)?;
    timed("container and unit arguments parse", t);
    if opts.trial {
        let t = Instant::now();
        let out = trial::run(root).with_context(|| {
            format!(
                "the agent's image under podman (files in {})",
                trial::dir(root).display()
            )
        })?;
        eprintln!(
            "xtask deploy: podman flags from the DaemonSet: {}",
            out.flags.join(" ")
        );
        eprintln!(
            "xtask deploy: what-if through the container: baseline {:.0} req/s, predicted {:.0} req/s",
            out.whatif["baseline_rps"].as_f64().unwrap_or_default(),
            out.whatif["predicted_rps"].as_f64().unwrap_or_default()
        );
        eprintln!("xtask deploy: podman stop: {}", out.after_stop);
        eprintln!("xtask deploy: podman kill: {}", out.after_kill);
        timed("agent image trial", t);
    }
    eprintln!(
        "xtask deploy: all checks passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask deploy podman-flags`: the flags the `DaemonSet` turns into (a trial's secret
/// directory and state directory in place of the node's).
pub fn print_podman_flags(root: &Path) -> Result<()> {
    let yaml = std::fs::read_to_string(root.join("deploy/kubernetes/agent-daemonset.yaml"))?;
    let host = podman::Host {
        secret_dirs: [(
            "slowpoke-agent-token".to_owned(),
            "SECRET_DIR/slowpoke-agent-token".into(),
        )]
        .into(),
        remap: std::collections::BTreeMap::new(),
    };
    let spec = podman::from_daemonset(&yaml, &host)?;
    println!("podman run {}", spec.args.join(" "));
    Ok(())
}

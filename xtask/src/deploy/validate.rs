//! Offline checks of deploy/: the manifests (yamllint strict, kubernetes-validate strict against
//! [`super::KUBERNETES_VERSION`]), the systemd units (`systemd-analyze verify` and `security`,
//! as systemd is not this machine's init), and every container argument and unit command line
//! parsed by the real binaries.
//!
//! How arguments are parsed: the binaries' `Cli` types live in their `main.rs`, out of a test's
//! reach, and a check-only flag would ship in every release binary. So each argument list is
//! given to the binary (in its image, for the manifests) with `--help` appended: clap parses
//! the arguments in order, refusing an unknown flag or a bad value (exit 2), and prints the help
//! only when it reaches `--help` (exit 0). Not covered: required arguments and conflicts (help
//! wins over them); the agent's arguments get a real start in the podman trial.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{KUBERNETES_VERSION, image::Which, podman_cmd, runtime_flags};
use crate::{run, setup, target_dir};

/// kubernetes-validate from `PyPI`, pinned; it carries the schemas of 1.33–1.37 (strict ones
/// too), so validation needs no network.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Highest `systemd-analyze security` exposure (×10) each unit may have: a new unsandboxed
/// setting fails the check. The agent's needs (root's signals, BPF, /proc) keep it at 4.0.
const UNIT_EXPOSURE: [(&str, u32); 2] = [
    ("slowpoke-agent.service", 40),
    ("slowpoke-coordinator.service", 20),
];

/// The agent's capabilities, measured (docs/security.md, docs/deploy.md): the `DaemonSet` and the
/// unit must grant exactly these. Without `KILL` the kernel programs still stop other users'
/// processes and nothing can resume them; without any of the others a feature is lost.
const AGENT_CAPABILITIES: [&str; 7] = [
    "BPF",
    "PERFMON",
    "KILL",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_NICE",
    "SYS_RESOURCE",
];

/// The `DaemonSet`'s `capabilities.add` and the unit's `CapabilityBoundingSet=` are the measured
/// set, no more and no less.
pub fn capabilities(root: &Path) -> Result<()> {
    let mut want: Vec<&str> = AGENT_CAPABILITIES.to_vec();
    want.sort_unstable();
    let path = root.join("deploy/kubernetes/agent-daemonset.yaml");
    let v: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let caps = &v["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"];
    let mut added: Vec<&str> = caps["add"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    added.sort_unstable();
    if added != want || caps["drop"] != serde_json::json!(["ALL"]) {
        bail!(
            "{}: capabilities drop {} add {added:?}; the agent needs drop [ALL] add {want:?}",
            path.display(),
            caps["drop"]
        );
    }
    let unit = root.join("deploy/systemd/slowpoke-agent.service");
    let text = std::fs::read_to_string(&unit)?;
    let mut bounding: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .unwrap_or_default()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_"))
        .collect();
    bounding.sort_unstable();
    if bounding != want {
        bail!(
            "{}: CapabilityBoundingSet {bounding:?}; the agent needs {want:?}",
            unit.display()
        );
    }
    Ok(())
}

/// The venv schemathesis lives in (xtask/src/schemathesis.rs) gets kubernetes-validate too.
fn venv(root: &Path) -> PathBuf {
    target_dir(root).join("schemathesis/venv")
}

/// Installs the pinned kubernetes-validate into the schemathesis venv (idempotent; after
/// schemathesis's install, which may recreate the venv).
pub fn ensure_kubernetes_validate(root: &Path) -> Result<PathBuf> {
    let bin = venv(root).join("bin/kubernetes-validate");
    if let Ok(v) = setup::output(Command::new(&bin).arg("--version"))
        && v.contains(KUBERNETES_VALIDATE_VERSION)
    {
        return Ok(bin);
    }
    run(Command::new(venv(root).join("bin/pip")).args([
        "install",
        "--quiet",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))?;
    Ok(bin)
}

/// The Kubernetes resources (every manifest but the kustomization).
fn manifest_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    Ok(files)
}

pub fn manifests(root: &Path) -> Result<()> {
    run(Command::new("yamllint")
        .args(["--strict", "--config-file"])
        .arg(root.join("deploy/.yamllint.yaml"))
        .arg(root.join("deploy")))?;
    let validator = ensure_kubernetes_validate(root)?;
    let files = manifest_files(root)?;
    run(Command::new(&validator)
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .args(&files))?;
    // The validator must be strict: a field no schema has is an error.
    let daemonset = root.join("deploy/kubernetes/agent-daemonset.yaml");
    let text = std::fs::read_to_string(&daemonset)?;
    let bad = target_dir(root).join("deploy/validate/unknown-field.yaml");
    std::fs::create_dir_all(bad.parent().expect("a parent"))?;
    std::fs::write(
        &bad,
        text.replacen("hostPID: true", "hostPID: true\n      hostPIDs: true", 1),
    )?;
    let out = Command::new(&validator)
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .arg(&bad)
        .output()
        .context("starting kubernetes-validate")?;
    if out.status.success() {
        bail!(
            "kubernetes-validate accepted an unknown field ({}): the validation is not strict",
            bad.display()
        );
    }
    Ok(())
}

/// `systemd-analyze verify` and `security --offline` against a scratch root holding systemd's
/// own units, `/bin/sh` and the release binaries where the units expect them.
pub fn units(root: &Path) -> Result<()> {
    let vroot = target_dir(root).join("deploy/units-root");
    if vroot.exists() {
        std::fs::remove_dir_all(&vroot)?;
    }
    let units = vroot.join("etc/systemd/system");
    let bin = vroot.join("usr/local/bin");
    for d in [
        &units,
        &bin,
        &vroot.join("usr/lib/systemd"),
        &vroot.join("bin"),
    ] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(vroot.join("usr/lib/systemd/")))?;
    std::fs::copy("/bin/sh", vroot.join("bin/sh")).context("copying /bin/sh")?;
    for w in Which::ALL {
        let release = target_dir(root).join("release").join(w.binary());
        std::fs::copy(&release, bin.join(w.binary()))
            .with_context(|| format!("copying {} (build it first)", release.display()))?;
    }
    for (unit, _) in UNIT_EXPOSURE {
        std::fs::copy(root.join("deploy/systemd").join(unit), units.join(unit))?;
    }
    let names: Vec<&str> = UNIT_EXPOSURE.iter().map(|(u, _)| *u).collect();
    let out = Command::new("systemd-analyze")
        .arg(format!("--root={}", vroot.display()))
        .arg("verify")
        .args(&names)
        .output()
        .context("starting systemd-analyze")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify {names:?}: {}", said.trim());
    }
    for (unit, limit) in UNIT_EXPOSURE {
        let out = Command::new("systemd-analyze")
            .arg(format!("--root={}", vroot.display()))
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={limit}"))
            .arg(unit)
            .output()
            .context("starting systemd-analyze security")?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let overall = text
                .lines()
                .find(|l| l.contains("Overall exposure"))
                .unwrap_or("no overall line");
            bail!(
                "{unit}: exposure above {:.1} ({overall}): a sandboxing setting was lost",
                f64::from(limit) / 10.0
            );
        }
    }
    Ok(())
}

/// Every container's `command`/`args` in the manifests (run in its image) and every unit's
/// `ExecStart=` (the release binary), parsed by the real binary.
pub fn arguments(root: &Path) -> Result<()> {
    let mut checked = 0;
    for file in manifest_files(root)? {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            let containers = v["spec"]["template"]["spec"]["containers"].as_array();
            for c in containers.into_iter().flatten() {
                check_container(&file, c)?;
                checked += 1;
            }
        }
    }
    if checked < 2 {
        bail!(
            "found {checked} containers in deploy/kubernetes, expected the agent's and the coordinator's"
        );
    }
    // `--help` must not hide an argument error.
    let bogus = in_image(
        Which::Agent.image().as_str(),
        None,
        &["--no-such-flag".into()],
    )?;
    if bogus.status.success() {
        bail!("the agent accepted --no-such-flag before --help: this check proves nothing");
    }
    for (unit, _) in UNIT_EXPOSURE {
        let path = root.join("deploy/systemd").join(unit);
        let text = std::fs::read_to_string(&path)?;
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .with_context(|| format!("{}: no ExecStart=", path.display()))?;
        let mut words = line.split_whitespace();
        let program = words.next().unwrap_or_default();
        let name = Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let out = Command::new(target_dir(root).join("release").join(name))
            .args(words)
            .arg("--help")
            .output()
            .with_context(|| format!("{unit}: running {program}"))?;
        if !out.status.success() {
            bail!(
                "{unit}: `{line}` does not parse: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

fn check_container(file: &Path, c: &serde_json::Value) -> Result<()> {
    let image = c["image"].as_str().unwrap_or_default();
    if !Which::ALL.iter().any(|w| w.image() == image) {
        bail!(
            "{}: image {image} is none of the images `cargo xtask image` builds ({})",
            file.display(),
            Which::ALL.map(Which::image).join(", ")
        );
    }
    let strings = |key: &str| -> Vec<String> {
        c[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let command = strings("command");
    let args = strings("args");
    let out = in_image(image, command.first().map(String::as_str), &args)?;
    if !out.status.success() {
        bail!(
            "{}: the arguments {args:?} do not parse in {image}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `image` with `args --help` (its entrypoint, or `entrypoint`).
fn in_image(
    image: &str,
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<std::process::Output> {
    let mut cmd = podman_cmd();
    cmd.args(["run", "--rm", "--network=none"])
        .args(runtime_flags()?);
    if let Some(e) = entrypoint {
        cmd.arg(format!("--entrypoint={e}"));
    }
    cmd.arg(image).args(args).arg("--help");
    cmd.output().with_context(|| format!("starting {cmd:?}"))
}

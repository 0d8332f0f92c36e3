//! The agent `DaemonSet`'s pod spec turned into `podman run` flags, so that the image runs under
//! podman with exactly what the `DaemonSet` asks for (host PID and network, mounts, capabilities,
//! user, arguments) and never with flags written by hand.
//!
//! The pod spec is read into types of our own rather than k8s-openapi's: every type refuses
//! unknown fields, so a field added to the manifest that this translation does not know stops
//! the generator instead of being dropped silently (k8s-openapi's types would accept it and leave
//! it unused). Fields without a podman meaning (scheduling, probes, requests) are accepted and
//! named where they are read; the probes are handed to the caller, which checks them itself.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DaemonSet {
    api_version: String,
    kind: String,
    #[serde(rename = "metadata")]
    _metadata: IgnoredAny,
    spec: DaemonSetSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DaemonSetSpec {
    /// Which pods are the `DaemonSet`'s and how they are replaced: nothing for one container.
    #[serde(rename = "selector")]
    _selector: IgnoredAny,
    #[serde(rename = "updateStrategy")]
    _update_strategy: Option<IgnoredAny>,
    template: PodTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodTemplate {
    /// Labels: for selectors, nothing for podman.
    #[serde(rename = "metadata")]
    _metadata: Option<IgnoredAny>,
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodSpec {
    #[serde(rename = "hostPID", default)]
    host_pid: bool,
    #[serde(default)]
    host_network: bool,
    /// With host networking both runtimes give the node's resolver configuration.
    dns_policy: Option<String>,
    /// Must be false: podman has no service account token to mount.
    automount_service_account_token: Option<bool>,
    termination_grace_period_seconds: Option<u32>,
    /// Scheduling only.
    #[serde(rename = "tolerations")]
    _tolerations: Option<IgnoredAny>,
    #[serde(rename = "nodeSelector")]
    _node_selector: Option<IgnoredAny>,
    #[serde(rename = "priorityClassName")]
    _priority_class_name: Option<IgnoredAny>,
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Container {
    /// The caller names the podman container (one per trial, not per pod).
    #[serde(rename = "name")]
    _name: String,
    image: String,
    /// Where the image comes from: podman runs the locally built one.
    #[serde(rename = "imagePullPolicy")]
    _image_pull_policy: Option<IgnoredAny>,
    command: Option<Vec<String>>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    /// With host networking a container port is the node's port: nothing to publish.
    #[serde(rename = "ports")]
    _ports: Option<IgnoredAny>,
    readiness_probe: Option<Probe>,
    liveness_probe: Option<Probe>,
    resources: Option<Resources>,
    security_context: Option<SecurityContext>,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Probe {
    http_get: HttpGet,
    /// Timing: the caller polls on its own schedule.
    #[serde(rename = "periodSeconds")]
    _period_seconds: Option<IgnoredAny>,
    #[serde(rename = "failureThreshold")]
    _failure_threshold: Option<IgnoredAny>,
    #[serde(rename = "initialDelaySeconds")]
    _initial_delay_seconds: Option<IgnoredAny>,
    #[serde(rename = "timeoutSeconds")]
    _timeout_seconds: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpGet {
    path: String,
    port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    /// What the scheduler reserves: no runtime effect.
    #[serde(rename = "requests")]
    _requests: Option<IgnoredAny>,
    #[serde(default)]
    limits: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecurityContext {
    run_as_user: Option<u32>,
    privileged: Option<bool>,
    allow_privilege_escalation: Option<bool>,
    read_only_root_filesystem: Option<bool>,
    seccomp_profile: Option<SeccompProfile>,
    capabilities: Option<Capabilities>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeccompProfile {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Capabilities {
    #[serde(default)]
    drop: Vec<String>,
    #[serde(default)]
    add: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeMount {
    name: String,
    mount_path: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Volume {
    name: String,
    secret: Option<SecretSource>,
    host_path: Option<HostPath>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretSource {
    secret_name: String,
    default_mode: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPath {
    path: String,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// What running the `DaemonSet`'s pod under podman takes.
#[derive(Debug, PartialEq, Eq)]
pub struct PodmanRun {
    /// `podman run` flags, the image and its arguments, in order.
    pub args: Vec<String>,
    /// The image (the container's `image`).
    pub image: String,
    /// Seconds `podman stop` waits after SIGTERM (`terminationGracePeriodSeconds`, default 30).
    pub stop_timeout: u32,
    /// The readiness and liveness probes' HTTP paths and ports (the caller checks them).
    pub probes: Vec<(String, u16)>,
    /// Secret volumes the caller must provide: the secret's name, its files' mode, and the host
    /// directory (from [`Host::secret_dirs`]) mounted in its place.
    pub secrets: Vec<SecretMount>,
    /// Host directories a `DirectoryOrCreate` volume asks to create when missing.
    pub create_dirs: Vec<PathBuf>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SecretMount {
    pub secret_name: String,
    pub mode: u32,
    pub host_dir: PathBuf,
}

/// What the node provides that the pod spec only names.
pub struct Host {
    /// A directory holding each Secret's files (the kubelet's job), by secret name.
    pub secret_dirs: BTreeMap<String, PathBuf>,
    /// Host paths replaced by others: only to keep a trial off paths this machine's other users
    /// of the agent rely on (the default `/run/slowpoke`).
    pub remap: BTreeMap<String, PathBuf>,
}

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_S: u32 = 30;
/// Kubernetes' default Secret file mode (0644).
const DEFAULT_SECRET_MODE: u32 = 0o644;

/// The podman flags for the `DaemonSet` in `yaml` (one container).
pub fn from_daemonset(yaml: &str, host: &Host) -> Result<PodmanRun> {
    let ds: DaemonSet = serde_yaml_ng::from_str(yaml)
        .context("reading the DaemonSet (a field this generator cannot translate is refused)")?;
    if ds.kind != "DaemonSet" || ds.api_version != "apps/v1" {
        bail!(
            "expected an apps/v1 DaemonSet, found {} {}",
            ds.api_version,
            ds.kind
        );
    }
    let pod = ds.spec.template.spec;
    let [container] = <[Container; 1]>::try_from(pod.containers)
        .map_err(|c| anyhow::anyhow!("expected one container, found {}", c.len()))?;
    if !pod.host_network {
        bail!("the agent's pod must use hostNetwork: pod networking has no podman equivalent here");
    }
    if pod.automount_service_account_token != Some(false) {
        bail!("automountServiceAccountToken must be false: podman has no token to mount");
    }
    if let Some(policy) = &pod.dns_policy
        && policy != "ClusterFirstWithHostNet"
        && policy != "Default"
    {
        bail!("dnsPolicy {policy}: only the node's resolver (host network) is translated");
    }
    let stop_timeout = pod
        .termination_grace_period_seconds
        .unwrap_or(DEFAULT_GRACE_S);
    let mut args: Vec<String> = Vec::new();
    if pod.host_pid {
        args.push("--pid=host".into());
    }
    args.push("--network=host".into());
    args.push(format!("--stop-timeout={stop_timeout}"));
    if let Some(sc) = &container.security_context {
        security_flags(sc, &mut args)?;
    }
    if let Some(res) = &container.resources {
        for (what, value) in &res.limits {
            match what.as_str() {
                "memory" => args.push(format!("--memory={}", memory_bytes(value)?)),
                "cpu" => args.push(format!("--cpus={}", cpus(value)?)),
                other => bail!("resource limit {other} has no podman flag here"),
            }
        }
    }
    for e in &container.env {
        args.push(format!("--env={}={}", e.name, e.value));
    }
    let (mounts, secrets, create_dirs) = mount_flags(&container.volume_mounts, &pod.volumes, host)?;
    args.extend(mounts);
    if let Some(cmd) = &container.command {
        let [entry] = cmd.as_slice() else {
            bail!("command with more than one element: put the rest in args");
        };
        args.push(format!("--entrypoint={entry}"));
    }
    args.push(container.image.clone());
    args.extend(container.args.iter().cloned());
    let probes = [&container.readiness_probe, &container.liveness_probe]
        .into_iter()
        .flatten()
        .map(|p| (p.http_get.path.clone(), p.http_get.port))
        .collect();
    Ok(PodmanRun {
        args,
        image: container.image,
        stop_timeout,
        probes,
        secrets,
        create_dirs,
    })
}

fn security_flags(sc: &SecurityContext, args: &mut Vec<String>) -> Result<()> {
    if let Some(uid) = sc.run_as_user {
        args.push(format!("--user={uid}"));
    }
    if sc.privileged == Some(true) {
        args.push("--privileged".into());
    }
    if sc.allow_privilege_escalation == Some(false) {
        args.push("--security-opt=no-new-privileges".into());
    }
    if sc.read_only_root_filesystem == Some(true) {
        // podman adds tmpfs on /run, /tmp and /var/tmp to a read-only root unless told not
        // to; Kubernetes does not.
        args.push("--read-only".into());
        args.push("--read-only-tmpfs=false".into());
    }
    match sc.seccomp_profile.as_ref().map(|p| p.kind.as_str()) {
        // podman's default profile is its RuntimeDefault (containers-common's seccomp.json).
        None | Some("RuntimeDefault") => {}
        Some("Unconfined") => args.push("--security-opt=seccomp=unconfined".into()),
        Some(other) => bail!("seccompProfile {other} is not translated"),
    }
    if let Some(caps) = &sc.capabilities {
        for c in &caps.drop {
            args.push(format!("--cap-drop={}", capability(c)));
        }
        for c in &caps.add {
            args.push(format!("--cap-add={}", capability(c)));
        }
    }
    Ok(())
}

/// Kubernetes names capabilities without the `CAP_` prefix; podman takes either.
fn capability(name: &str) -> String {
    if name == "ALL" || name.starts_with("CAP_") {
        name.to_owned()
    } else {
        format!("CAP_{name}")
    }
}

type Mounts = (Vec<String>, Vec<SecretMount>, Vec<PathBuf>);

fn mount_flags(mounts: &[VolumeMount], volumes: &[Volume], host: &Host) -> Result<Mounts> {
    let mut flags = Vec::new();
    let mut secrets = Vec::new();
    let mut create = Vec::new();
    for m in mounts {
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .with_context(|| format!("volumeMount {} names no volume", m.name))?;
        let source = match (&v.secret, &v.host_path) {
            (Some(s), None) => {
                let dir = host.secret_dirs.get(&s.secret_name).with_context(|| {
                    format!("no directory given for the Secret {}", s.secret_name)
                })?;
                secrets.push(SecretMount {
                    secret_name: s.secret_name.clone(),
                    mode: s.default_mode.unwrap_or(DEFAULT_SECRET_MODE),
                    host_dir: dir.clone(),
                });
                // The kubelet mounts Secrets read-only whatever the mount says.
                flags.push(format!("--volume={}:{}:ro", dir.display(), m.mount_path));
                continue;
            }
            (None, Some(h)) => {
                let path = host
                    .remap
                    .get(&h.path)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(&h.path));
                match h.kind.as_deref() {
                    Some("DirectoryOrCreate") => create.push(path.clone()),
                    None | Some("" | "Directory") => {}
                    Some(other) => bail!("hostPath type {other} is not translated"),
                }
                path
            }
            _ => bail!(
                "volume {}: only secret and hostPath volumes are translated",
                v.name
            ),
        };
        let ro = if m.read_only { ":ro" } else { "" };
        flags.push(format!(
            "--volume={}:{}{ro}",
            source.display(),
            m.mount_path
        ));
    }
    Ok((flags, secrets, create))
}

/// A Kubernetes memory quantity (`256Mi`, `1Gi`, `512M`, bytes) in bytes.
fn memory_bytes(q: &str) -> Result<u64> {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: u64 = n.parse().with_context(|| format!("memory quantity {q}"))?;
            return Ok(n * factor);
        }
    }
    q.parse().with_context(|| format!("memory quantity {q}"))
}

/// A Kubernetes CPU quantity (`500m`, `2`) in cores, as podman's `--cpus` takes them.
fn cpus(q: &str) -> Result<String> {
    if let Some(m) = q.strip_suffix('m') {
        let milli: u32 = m.parse().with_context(|| format!("cpu quantity {q}"))?;
        return Ok(format!("{}.{:03}", milli / 1000, milli % 1000));
    }
    let _: f64 = q.parse().with_context(|| format!("cpu quantity {q}"))?;
    Ok(q.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            secret_dirs: [("tok".to_owned(), PathBuf::from("/s/tok"))].into(),
            remap: [("/run/x".to_owned(), PathBuf::from("/tmp/x"))].into(),
        }
    }

    const POD: &str = r"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: a}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      hostPID: true
      hostNetwork: true
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 12
      containers:
        - name: agent
          image: img:1
          args: [--listen=0.0.0.0:1]
          readinessProbe: {httpGet: {path: /h, port: 1}}
          resources: {limits: {memory: 64Mi, cpu: 250m}}
          securityContext:
            runAsUser: 0
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL], add: [BPF, KILL]}
          volumeMounts:
            - {name: t, mountPath: /etc/t, readOnly: true}
            - {name: s, mountPath: /run/x}
      volumes:
        - {name: t, secret: {secretName: tok, defaultMode: 256}}
        - {name: s, hostPath: {path: /run/x, type: DirectoryOrCreate}}
";

    #[test]
    fn a_pod_spec_becomes_these_flags() {
        let run = from_daemonset(POD, &host()).expect("translates");
        assert_eq!(
            run.args,
            [
                "--pid=host",
                "--network=host",
                "--stop-timeout=12",
                "--user=0",
                "--security-opt=no-new-privileges",
                "--read-only",
                "--read-only-tmpfs=false",
                "--cap-drop=ALL",
                "--cap-add=CAP_BPF",
                "--cap-add=CAP_KILL",
                "--cpus=0.250",
                "--memory=67108864",
                "--volume=/s/tok:/etc/t:ro",
                "--volume=/tmp/x:/run/x",
                "img:1",
                "--listen=0.0.0.0:1",
            ]
        );
        assert_eq!(run.probes, [("/h".to_owned(), 1)]);
        assert_eq!(run.secrets[0].mode, 0o400);
        assert_eq!(run.create_dirs, [PathBuf::from("/tmp/x")]);
    }

    #[test]
    fn a_field_the_generator_does_not_know_is_refused() {
        let pod = POD.replace("hostPID: true", "hostPID: true\n      hostIPC: true");
        let e = from_daemonset(&pod, &host()).expect_err("hostIPC is not translated");
        assert!(format!("{e:#}").contains("hostIPC"), "{e:#}");
        let pod = POD.replace("runAsUser: 0", "runAsUser: 0\n            runAsGroup: 0");
        assert!(from_daemonset(&pod, &host()).is_err());
    }

    #[test]
    fn pod_networking_and_a_missing_secret_are_refused_with_the_reason() {
        let pod = POD.replace("hostNetwork: true", "hostNetwork: false");
        let e = from_daemonset(&pod, &host()).expect_err("no host network");
        assert!(e.to_string().contains("hostNetwork"), "{e}");
        let bare = Host {
            secret_dirs: BTreeMap::new(),
            remap: BTreeMap::new(),
        };
        let e = from_daemonset(POD, &bare).expect_err("no secret dir");
        assert!(e.to_string().contains("Secret tok"), "{e}");
    }
}

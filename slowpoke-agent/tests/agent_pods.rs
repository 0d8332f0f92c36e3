//! `pods` selectors on real cgroup hierarchies laid out exactly as the kubelet lays them out —
//! systemd driver (containerd and CRI-O scopes, a Burstable pod) and cgroupfs driver (a
//! Guaranteed pod) on cgroup v2, and the cgroupfs driver on a cgroup v1 `pids` hierarchy —
//! with real processes inside, registered through the agent's HTTP API. No kubelet runs here:
//! the directories are made by the test under scratch roots, which the agent is told about the
//! way an operator would (`--pod-cgroup-root`).
//!
//! Also the port inside a pod: a server in its own network namespace (as a pod's) is found by
//! `"ports"` given with `"pods"`, while the same port given alone (the host's) matches nothing.

mod agent_util;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use agent_util::{
    Proc, TOKEN, TempDir, call, free_port, json, serve, sleeper, test_config, wait_for,
};
use slowpoke_agent::{Agent, sys::procfs};
use slowpoke_testkit::cgroup::ScratchCgroup;

const UID_BURSTABLE: &str = "3b0c6f0e-8d55-4c1a-9e7e-5d2b1a000001";
const UID_GUARANTEED: &str = "3b0c6f0e-8d55-4c1a-9e7e-5d2b1a000002";
const UID_NETNS: &str = "3b0c6f0e-8d55-4c1a-9e7e-5d2b1a000003";
const UID_V1: &str = "3b0c6f0e-8d55-4c1a-9e7e-5d2b1a000004";
const APP: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const SANDBOX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const CRIO: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";

fn systemd(uid: &str) -> String {
    uid.replace('-', "_")
}

/// A scratch directory tree on a cgroup v1 hierarchy (the `pids` controller's), removed on drop
/// with its processes moved back to that hierarchy's root.
struct ScratchV1 {
    root: PathBuf,
    dirs: Vec<PathBuf>,
}

impl ScratchV1 {
    fn new(mount: &Path, tag: &str) -> ScratchV1 {
        let dir = mount.join(format!("slowpoke-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        ScratchV1 {
            root: mount.to_path_buf(),
            dirs: vec![dir],
        }
    }

    fn mkdirs(&mut self, rel: &str) -> PathBuf {
        let mut d = self.dirs[0].clone();
        for part in rel.split('/') {
            d = d.join(part);
            std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            self.dirs.push(d.clone());
        }
        d
    }
}

impl Drop for ScratchV1 {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Creates the missing directories of `rel` below `cg` (each one a child of the scratch
/// cgroup, removed with it).
fn mkdirs(cg: &mut ScratchCgroup, rel: &str) -> PathBuf {
    let mut acc = String::new();
    for part in rel.split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        if !cg.path().join(&acc).exists() {
            cg.child(&acc);
        }
    }
    cg.path().join(rel)
}

fn move_into(dir: &Path, pid: u32) {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
}

/// The v1 `pids` hierarchy's mount point, if this machine has one.
fn v1_pids_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "pids"))
            .then(|| PathBuf::from(f[1]))
    })
}

/// `python3 -m http.server` in a fresh network namespace (`unshare --net`, as a pod's own), on
/// `port` there; waits until it listens in that namespace.
fn server_in_own_netns(port: u16) -> Proc {
    let child = Command::new("unshare")
        .args(["--net", "python3", "-m", "http.server", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare --net python3");
    let pid = child.id();
    wait_for(
        Duration::from_secs(10),
        "the server in its netns to listen",
        || {
            procfs::listening_ports_by_pid(&[pid])
                .contains(&(pid, port))
                .then_some(())
        },
    );
    Proc {
        child,
        port,
        dir: None,
    }
}

/// This test's node: the kubelet-style hierarchies and the processes in them (killed on drop,
/// before the scratch cgroups go).
struct Node {
    procs: Vec<Proc>,
    app: u32,
    pause: u32,
    crio: u32,
    server: u32,
    v1_app: Option<u32>,
    port: u16,
    app_dir: PathBuf,
    roots: Vec<PathBuf>,
    _v2: ScratchCgroup,
    _v1: Option<ScratchV1>,
}

impl Node {
    fn lay_out() -> Node {
        let mut v2 = ScratchCgroup::new("kubepods");
        // systemd driver, Burstable pod: an app container (containerd) and its sandbox.
        let pod1 = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            systemd(UID_BURSTABLE)
        );
        let app_dir = mkdirs(&mut v2, &format!("{pod1}/cri-containerd-{APP}.scope"));
        let sandbox_dir = mkdirs(&mut v2, &format!("{pod1}/cri-containerd-{SANDBOX}.scope"));
        // cgroupfs driver, Guaranteed pod (no QoS level), CRI-O.
        let crio_dir = mkdirs(&mut v2, &format!("kubepods/pod{UID_GUARANTEED}/{CRIO}"));
        // systemd driver, Guaranteed pod, CRI-O scope: the pod with its own network namespace.
        let pod3 = format!("kubepods.slice/kubepods-pod{}.slice", systemd(UID_NETNS));
        let netns_dir = mkdirs(&mut v2, &format!("{pod3}/crio-{CRIO}.scope"));

        let (app, pause, crio) = (sleeper(), sleeper(), sleeper());
        move_into(&app_dir, app.pid());
        move_into(&sandbox_dir, pause.pid());
        move_into(&crio_dir, crio.pid());
        let port = free_port();
        let server = server_in_own_netns(port);
        let sidecar = sleeper();
        move_into(&netns_dir, server.pid());
        move_into(&netns_dir, sidecar.pid());
        let mut roots = vec![v2.path().to_path_buf()];

        // cgroup v1 (this machine mounts the v1 controllers next to cgroup2): cgroupfs
        // driver, BestEffort pod in the `pids` hierarchy.
        let mut v1 = v1_pids_mount().map(|m| ScratchV1::new(&m, "kubepods"));
        let mut v1_app = None;
        if let Some(v1) = &mut v1 {
            let d = v1.mkdirs(&format!("kubepods/besteffort/pod{UID_V1}/{APP}"));
            let p = sleeper();
            move_into(&d, p.pid());
            v1_app = Some(p);
            roots.push(v1.dirs[0].clone());
        } else {
            eprintln!("no cgroup v1 pids hierarchy mounted here: the v1 case is skipped");
        }
        Node {
            app: app.pid(),
            pause: pause.pid(),
            crio: crio.pid(),
            server: server.pid(),
            v1_app: v1_app.as_ref().map(Proc::pid),
            port,
            app_dir,
            roots,
            procs: [app, pause, crio, server, sidecar]
                .into_iter()
                .chain(v1_app)
                .collect(),
            _v2: v2,
            _v1: v1,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL first: a plain drop of a `Proc` waits for a `sleep` that never exits.
        for p in &self.procs {
            agent_util::kill(p.pid(), libc::SIGKILL);
        }
    }
}

fn put(url: &str, name: &str, body: &str) -> (u16, String) {
    call(
        "PUT",
        &format!("{url}/v1/services/{name}"),
        Some(body),
        Some(TOKEN),
    )
}

fn pods(list: &[(&str, &str, &[&str])]) -> serde_json::Value {
    list.iter()
        .map(|(uid, name, containers)| {
            serde_json::json!({"uid": uid, "name": name, "containers": containers})
        })
        .collect()
}

fn sorted(mut pids: Vec<u32>) -> serde_json::Value {
    pids.sort_unstable();
    serde_json::json!(pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_in_kubelet_layouts_resolve_to_their_processes() {
    let node = Node::lay_out();
    let state = TempDir::new("pods");
    let mut cfg = test_config(&state);
    cfg.pod_cgroup_roots.clone_from(&node.roots);
    let agent = Agent::start(cfg).await.expect("agent");
    let url = serve(&agent).await;
    let node = tokio::task::spawn_blocking(move || {
        members(&url, &node);
        port_inside_the_pod(&url, &node);
        errors(&url);
        newcomers_join(&url, &node);
        node
    })
    .await
    .expect("checks");
    agent.shutdown().await;
    drop(node);
}

fn members(url: &str, n: &Node) {
    let containerd = format!("containerd://{APP}");
    // The listed container only: the sandbox's process is not a member.
    let body = serde_json::json!({"pods": pods(&[(UID_BURSTABLE, "shop/cart-0", &[&containerd])])});
    let (c, b) = put(url, "cart", &body.to_string());
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["pids"], sorted(vec![n.app]), "{b}");
    // No containers listed: every process of the pod.
    let body = serde_json::json!({"pods": pods(&[(UID_BURSTABLE, "shop/cart-0", &[])])});
    let (c, b) = put(url, "cart-all", &body.to_string());
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["pids"], sorted(vec![n.app, n.pause]), "{b}");
    // cgroupfs driver, Guaranteed, a CRI-O id with its prefix; two pods summed.
    let crio = format!("cri-o://{CRIO}");
    let body = serde_json::json!({"pods": pods(&[
        (UID_GUARANTEED, "shop/db-0", &[&crio]),
        (UID_BURSTABLE, "shop/cart-0", &[APP]),
    ])});
    let (c, b) = put(url, "two", &body.to_string());
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["pids"], sorted(vec![n.app, n.crio]), "{b}");
    if let Some(v1_app) = n.v1_app {
        let body = serde_json::json!({"pods": pods(&[(UID_V1, "shop/old-0", &[APP])])});
        let (c, b) = put(url, "v1", &body.to_string());
        assert_eq!(c, 200, "{b}");
        assert_eq!(json(&b)["pids"], sorted(vec![v1_app]), "{b}");
    }
}

/// The port inside the pod's network namespace: only the listening process, the port as the
/// visit port. The same port on the host matches nothing.
fn port_inside_the_pod(url: &str, n: &Node) {
    let web = pods(&[(UID_NETNS, "shop/web-0", &[])]);
    let body = serde_json::json!({"pods": web, "ports": [n.port]});
    let (c, b) = put(url, "web", &body.to_string());
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["pids"], sorted(vec![n.server]), "{b}");
    assert_eq!(json(&b)["listen_ports"], serde_json::json!([n.port]), "{b}");
    let (c, b) = put(url, "host-port", &format!("{{\"ports\":[{}]}}", n.port));
    assert_eq!(c, 400, "a bare port is the host's: {b}");
    let other = if n.port == u16::MAX { 1 } else { n.port + 1 };
    let body = serde_json::json!({"pods": web, "ports": [other]});
    let (c, b) = put(url, "web-bad-port", &body.to_string());
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("in its network namespace"), "{b}");
}

/// A pod not on this node, a container that is gone, ids that could walk out of the kubelet's
/// directories, a selector only the coordinator resolves: each a 400 that says so.
fn errors(url: &str) {
    let ghost = "3b0c6f0e-8d55-4c1a-9e7e-5d2b1a0000ff";
    let cases: [(serde_json::Value, &str); 4] = [
        (
            serde_json::json!({"pods": pods(&[(ghost, "shop/ghost-0", &[])])}),
            "no cgroup on this node for pod shop/ghost-0 (uid 3b0c6f0e-8d55-4c1a-9e7e-5d2b1a0000ff)",
        ),
        (
            serde_json::json!({"pods": pods(&[(UID_BURSTABLE, "shop/cart-0", &["dddd"])])}),
            "container dddd of pod shop/cart-0",
        ),
        (
            serde_json::json!({"pods": pods(&[("../../x", "shop/x", &[])])}),
            "not a Kubernetes UID",
        ),
        (
            serde_json::json!({"kubernetes": {"namespace": "shop", "labels": {"app": "cart"}}}),
            "the coordinator resolves it",
        ),
    ];
    for (body, want) in cases {
        let (c, b) = put(url, "bad", &body.to_string());
        assert_eq!(c, 400, "{body}: {b}");
        assert!(b.contains(want), "{body}: {b}");
    }
}

/// A process that joins a container later is a member at the next resolution.
fn newcomers_join(url: &str, n: &Node) {
    let late = sleeper();
    move_into(&n.app_dir, late.pid());
    let want = sorted(vec![n.app, late.pid()]);
    wait_for(
        Duration::from_secs(5),
        "the new process to join cart",
        || {
            let (_, b) = call("GET", &format!("{url}/v1/services/cart"), None, Some(TOKEN));
            (json(&b)["pids"] == want).then_some(())
        },
    );
    agent_util::kill(late.pid(), libc::SIGKILL);
}

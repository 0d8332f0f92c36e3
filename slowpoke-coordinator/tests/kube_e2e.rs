//! End to end with label selectors: a what-if whose services are `label:shop/app=web` and
//! `label:shop/app=cache`, resolved by the coordinator through a Kubernetes API, placed on the
//! in-process agent (this host's node), which finds the pods' processes in kubelet-style cgroups.
//!
//! **No Kubernetes cluster can run on these machines** (no container runtime, no kubelet): the
//! API server is the local stand-in of `kube_util` (TLS, token, k8s-openapi bodies), its pods
//! name this host as their node, and their cgroups are laid out by this test exactly as the
//! kubelet lays them out (systemd driver for `web`, cgroupfs driver for `cache`) with the real
//! servers moved inside: nginx (1 worker, gzip, the bottleneck) in front of memcached. Needs
//! root and the kernel programs.

mod kube_util;

use std::{path::Path, sync::Arc};

use kube_util::{ApiServer, pod};
use slowpoke_api::selector::parse_service_arg;
use slowpoke_coordinator::{
    agents::SharedAgent,
    experiment::{
        AttachedApp, Backends, LoadConfig, Monitor, Repeat, Safety, Timing, WhatIfSpec, new_id,
        run_what_if,
    },
    kubernetes::KubeAccess,
    lease::{DEFAULT_LEASE, Lease},
    model::Optimization,
    real::{InProcessAgent, RealLoadStarter},
};
use slowpoke_testkit::{NginxMemcached, TempDir, cgroup::ScratchCgroup, is_stopped};

const WEB_ID: &str = "1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e";
const CACHE_ID: &str = "2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c";

fn move_into(dir: &Path, pid: u32) {
    std::fs::write(dir.join("cgroup.procs"), pid.to_string())
        .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
}

/// Creates the missing directories of `rel` below the scratch cgroup.
fn mkdirs(cg: &mut ScratchCgroup, rel: &str) -> std::path::PathBuf {
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

#[test]
fn a_what_if_by_label_runs_on_pods_found_in_kubelet_cgroups() {
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned();
    let api = ApiServer::start();
    let web = pod("shop", "web-0", &node, &[("app", "web")], &[WEB_ID]);
    let cache = pod("shop", "cache-0", &node, &[("app", "cache")], &[CACHE_ID]);
    let (web_uid, cache_uid) = (
        web.metadata.uid.clone().expect("uid"),
        cache.metadata.uid.clone().expect("uid"),
    );
    api.put(web);
    api.put(cache);

    let app = NginxMemcached::start(1);
    let mut cg = ScratchCgroup::new("kube-e2e");
    let web_dir = mkdirs(
        &mut cg,
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{WEB_ID}.scope",
            web_uid.replace('-', "_")
        ),
    );
    let cache_dir = mkdirs(
        &mut cg,
        &format!("kubepods/besteffort/pod{cache_uid}/{CACHE_ID}"),
    );
    for pid in app.nginx.pids() {
        move_into(&web_dir, pid);
    }
    move_into(&cache_dir, app.memcached.pid());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let state = TempDir::new("kube-e2e-agent");
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: state.path().to_path_buf(),
        pod_cgroup_roots: vec![cg.path().to_path_buf()],
        ..slowpoke_agent::AgentConfig::default()
    };
    let agent = rt
        .block_on(InProcessAgent::start(cfg))
        .expect("start the in-process agent (root and the kernel programs are needed)");
    let inner = agent.agent().clone();
    let services = ["web=label:shop/app=web", "cache=label:shop/app=cache"]
        .iter()
        .map(|s| parse_service_arg(s).expect("selector"))
        .collect();
    let mut backends = Backends {
        agents: vec![Arc::new(agent) as SharedAgent],
        app: Box::new(AttachedApp {
            services,
            entry: app.url.clone(),
            entry_service: None,
        }),
        load: Arc::new(RealLoadStarter),
        lease: Lease::new(&new_id("e2e", "kube"), DEFAULT_LEASE),
        kubernetes: Arc::new(KubeAccess::new(Some(api.kubeconfig.clone()))),
    };
    let spec = WhatIfSpec {
        target: "web".into(),
        optimization: Optimization::Percent(30.0),
        load: LoadConfig {
            headers: vec![("Accept-Encoding".into(), "gzip".into())],
            ..LoadConfig::default()
        },
        timing: Timing {
            warmup_s: 1.0,
            window_s: 1.0,
            settle_s: 0.5,
            ..Timing::default()
        },
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: false,
        entry_service: None,
    };
    let r = run_what_if(&spec, &mut backends, &Monitor::new());
    drop(backends);
    rt.block_on(inner.shutdown());
    let r = r.expect("the what-if runs");
    eprintln!("{}", slowpoke_coordinator::report::what_if_table(&r));

    // Whether the gain shows on 2 shared cores is testkit's real_app test's business; here:
    // the app measured through its pods, a prediction made.
    assert!(r.baseline_rps > 0.0, "{r:?}");
    assert!(
        r.predicted_rps.is_finite() && r.predicted_rps > 0.0,
        "{r:?}"
    );
    let row = |name: &str| {
        r.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in the result"))
    };
    assert!(
        row("web").is_entry,
        "the entry port is nginx's, found in the pod"
    );
    assert_eq!(row("cache").agents, ["in-process"]);
    assert!(
        row("cache").d_us.is_some_and(|d| d > 0.0),
        "cache was paused"
    );
    assert!(
        (row("cache").r - 1.0).abs() < 0.2,
        "each request visits memcached once: r = {}",
        row("cache").r
    );
    let log = api.requests();
    assert!(
        log.iter()
            .any(|l| l == "list pods/shop?labelSelector=app=web"),
        "{log:?}"
    );
    let mut pids = app.nginx.pids();
    pids.push(app.memcached.pid());
    for pid in pids {
        assert!(!is_stopped(pid), "process {pid} left stopped");
    }
}

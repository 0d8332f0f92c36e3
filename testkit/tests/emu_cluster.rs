//! The emulator across nodes (root; real namespaces): chain3 spread over a 2-node
//! `testkit::cluster` through `slowpoke_emu::client` (one `slowpoke-emu run --cluster F --node N`
//! per node). Requests from the root namespace reach the entry over the bridge; every service runs
//! in its node's network namespace and cgroup; the call from node 2 to node 1 crosses the bridge;
//! a live change through a control port takes effect; stopping leaves nothing behind.
//!
//! Uses the `slowpoke-emu` binary `slowpoke_emu::find_binary` picks: `$SLOWPOKE_EMU_BIN` (the
//! release build under `cargo xtask test`), else the one next to this test's directory
//! (`cargo build -p slowpoke-emu --bin slowpoke-emu` first).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use slowpoke_api::cluster::ClusterFile;
use slowpoke_emu::{
    ClusterStart, PlaceArg, RunningApp, Scope, Setting, StartOptions, placement, topology,
};
use slowpoke_testkit::{
    TempDir,
    cgroup::cgroup2_mount,
    cluster::{Cluster, Place},
    proc_state,
};

const REQUESTS: u64 = 40;

fn chain3() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/chain3.json")
}

fn emu_binary() -> PathBuf {
    let bin = slowpoke_emu::find_binary();
    assert!(
        bin.is_file(),
        "no slowpoke-emu binary at {}: run `cargo build -p slowpoke-emu --bin slowpoke-emu` or set \
         SLOWPOKE_EMU_BIN",
        bin.display()
    );
    bin
}

/// Writes the description of `cluster`'s nodes (agents are named but not needed here).
fn describe(cluster: &Cluster, dir: &Path) -> PathBuf {
    let file = ClusterFile {
        nodes: cluster
            .nodes()
            .iter()
            .map(|n| n.describe(&format!("http://{}:7171", n.addr), None))
            .collect(),
    };
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    path
}

/// `REQUESTS` GETs at `url`, each of which must answer 200.
fn drive(url: &str) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    for i in 0..REQUESTS {
        let r = agent
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("request {i} to {url}: {e}"));
        assert_eq!(r.status(), 200);
        let _ = r.into_string();
    }
}

/// The peers (remote IPv4 addresses) of TCP sockets on local port `port` in the network
/// namespace `pid` is in (its `/proc/PID/net/tcp`), in any state but LISTEN.
fn tcp_peers(pid: u32, port: u16) -> Vec<Ipv4Addr> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let hex_addr = |s: &str| -> (Ipv4Addr, u16) {
        let (a, p) = s.split_once(':').unwrap();
        let a = u32::from_str_radix(a, 16).unwrap();
        (
            Ipv4Addr::from(a.to_le_bytes()),
            u16::from_str_radix(p, 16).unwrap(),
        )
    };
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, remote, state) = (hex_addr(f[1]), hex_addr(f[2]), f[3]);
            (local.1 == port && state != "0A").then_some(remote.0)
        })
        .collect()
}

fn netns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn chain3_spread_over_two_nodes_runs_in_the_nodes_and_calls_across_the_bridge() {
    let bin = emu_binary();
    let cluster = Cluster::up(2);
    let dir = TempDir::new("emu-cluster");
    let description = describe(&cluster, dir.path());
    let topo = topology::load(chain3()).unwrap();
    let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    // Name order back, front, middle → back on node 1, front on node 2, middle on node 1: the
    // entry is on node 2 and its call to middle crosses the bridge.
    let placement = placement::spread(&topo, &names, None);
    assert_eq!(placement["front"], names[1]);
    assert_eq!(placement["middle"], names[0]);
    let mut opts = StartOptions::new(chain3());
    opts.binary = Some(bin);
    opts.cluster = Some(ClusterStart {
        file: description,
        place: PlaceArg::all(&placement),
    });
    let app = RunningApp::start_with(&opts).unwrap();

    let (n1, n2) = (cluster.node(1), cluster.node(2));
    assert_eq!(
        app.entry,
        format!("http://{}:{}/req", n2.addr, app.services["front"].port)
    );
    let cgroup_root = cgroup2_mount().unwrap();
    for (name, info) in &app.services {
        let node = if placement[name] == n1.name { n1 } else { n2 };
        assert_eq!(info.node.as_deref(), Some(node.name.as_str()), "{name}");
        assert_eq!(info.host, Some(node.addr.to_string()), "{name}");
        let pid = info.pids[0];
        let want = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/run/netns/{}", node.name)).unwrap(),
        );
        assert_eq!(netns_of(pid), format!("net:[{want}]"), "{name}'s namespace");
        let rel = node.cgroup.strip_prefix(&cgroup_root).unwrap();
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroups
                .lines()
                .any(|l| l == format!("0::/{}", rel.display())),
            "{name} (pid {pid}) is not in {}: {cgroups}",
            node.cgroup.display()
        );
    }

    // From the root namespace, over the bridge.
    drive(&app.entry);
    for (name, s) in app.all_stats().unwrap() {
        assert_eq!(s.total_visits(), REQUESTS, "{name}: {s:?}");
        assert_eq!(s.errors.values().sum::<u64>(), 0, "{name}: {s:?}");
    }
    // front (node 2) → middle (node 1): middle's connections come from node 2's address;
    // middle → back stays inside node 1.
    let middle = &app.services["middle"];
    let peers = tcp_peers(middle.pids[0], middle.port);
    assert!(
        peers.contains(&n2.addr),
        "no connection from node 2 ({}) to middle's port {}: {peers:?}",
        n2.addr,
        middle.port
    );
    let back = &app.services["back"];
    let peers = tcp_peers(back.pids[0], back.port);
    assert!(peers.contains(&n1.addr), "back's peers: {peers:?}");

    // Ground truth across nodes: middle's cpu_us lowered live through its control port (at node
    // 1's address) takes effect: its CPU time per request drops.
    let cpu = || app.stats("middle").unwrap().cpu_ns;
    let before = cpu();
    drive(&app.entry);
    let with_1000 = cpu() - before;
    let control = app.control("middle").unwrap();
    assert!(
        control.url().contains(&n1.addr.to_string()),
        "{}",
        control.url()
    );
    control
        .set(Scope::Endpoint("req"), Setting::CpuUs(10.0))
        .unwrap();
    let now = app.stats("middle").unwrap().endpoints["req"].cpu_us;
    assert!(
        (now - 10.0).abs() < 1e-9,
        "middle.req.cpu_us is {now} after the change"
    );
    let before = cpu();
    drive(&app.entry);
    let with_10 = cpu() - before;
    assert!(
        with_10 * 2 < with_1000,
        "middle's CPU for {REQUESTS} requests: {with_1000} ns at 1000 µs/visit, {with_10} ns at 10"
    );

    let pids = app.pids();
    let runner = app.runner_pid();
    app.stop().unwrap();
    for pid in pids.into_iter().chain([runner]) {
        assert!(proc_state(pid).is_none(), "pid {pid} outlived stop");
    }
    assert_eq!(Cluster::leftover_pids(Place::Work), Vec::<u32>::new());
    cluster.down().unwrap();
}

#[test]
fn an_unplaced_service_or_an_unknown_node_is_refused_with_the_nodes_there_are() {
    let bin = emu_binary();
    let dir = TempDir::new("emu-cluster-errors");
    // No namespaces needed: the runner refuses before it enters a node.
    let description = dir.path().join("cluster.json");
    std::fs::write(
        &description,
        r#"{"nodes":[{"name":"spk-n1","address":"10.77.0.11","agent":"http://10.77.0.11:7171","netns":"spk-n1"},
                     {"name":"spk-n2","address":"10.77.0.12","agent":"http://10.77.0.12:7171","netns":"spk-n2"}]}"#,
    )
    .unwrap();
    let mut opts = StartOptions::new(chain3());
    opts.binary = Some(bin.clone());
    opts.cluster = Some(ClusterStart {
        file: description.clone(),
        place: vec!["front=spk-n1".parse().unwrap()],
    });
    let e = format!("{:#}", RunningApp::start_with(&opts).unwrap_err());
    assert!(
        e.contains("back, middle are on no node") && e.contains("spk-n1, spk-n2"),
        "{e}"
    );

    let out = Command::new(&bin)
        .arg("run")
        .arg(chain3())
        .arg("--cluster")
        .arg(&description)
        .args(["--node", "spk-n9"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("node spk-n9 is not in the cluster description")
            && err.contains("spk-n1, spk-n2"),
        "{err}"
    );
}

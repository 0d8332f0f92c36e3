//! `testkit::cluster` against the real kernel (root): nodes talk over the bridge, a process
//! spawned in a node is in its cgroup and cpuset, a cluster whose owner was killed (SIGKILL) is
//! removed by the next `clean_leftovers`, and an agent in a node answers over the bridge and
//! selects only its node's processes (needs the debug `slowpoke-agent`: `cargo build --bins`).
//!
//! Every cluster uses the same names (`spk-*`), so the tests take turns ([`LOCK`]).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use slowpoke_testkit::{
    TempDir,
    cgroup::cgroup2_mount,
    cluster::{BRIDGE, BRIDGE_ADDR, Cluster},
    cluster_agent::{NodeAgent, write_description},
    proc_state, wait_for, workspace_bin,
};

static LOCK: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A one-line TCP server: answers every connection with the address it came from.
const PEER_ECHO: &str = "import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080)); s.listen(16)
while True:
    c,a=s.accept(); c.sendall((a[0]+'\\n').encode()); c.close()";

fn read_line(mut stream: impl std::io::Read) -> String {
    let mut s = String::new();
    stream.read_to_string(&mut s).expect("reading the answer");
    s.trim().to_owned()
}

#[test]
fn a_server_in_node_1_is_reached_from_node_2_and_the_root_namespace_over_the_bridge() {
    let _turn = turn();
    let cluster = Cluster::up(2);
    let (n1, n2) = (cluster.node(1).addr, cluster.node(2).addr);
    let _server = cluster.spawn(
        1,
        Command::new("python3")
            .args(["-c", PEER_ECHO, &n1.to_string()])
            .stdin(Stdio::null()),
    );
    let server = SocketAddr::from((n1, 8080));
    // From the root namespace: through the bridge, so the server sees the bridge's address.
    let from_root = wait_for(Duration::from_secs(10), "the server in node 1", || {
        TcpStream::connect_timeout(&server, Duration::from_millis(200)).ok()
    });
    assert_eq!(read_line(from_root), BRIDGE_ADDR.to_string());

    // From node 2: a client process inside it; the server sees node 2's own address.
    let client = cluster.spawn(
        2,
        Command::new("python3")
            .args([
                "-c",
                "import socket,sys; s=socket.create_connection((sys.argv[1],8080),5); \
                 print(s.recv(100).decode().strip())",
                &n1.to_string(),
            ])
            .stdout(Stdio::piped()),
    );
    let mut child = client;
    let out = read_line(child.child.stdout.take().expect("piped"));
    assert!(
        child.child.wait().expect("client").success(),
        "client failed"
    );
    assert_eq!(out, n2.to_string());

    // Not loopback: node 2 has no route to the server's port on its own 127.0.0.1.
    let probe = cluster.spawn(
        2,
        Command::new("python3")
            .args([
                "-c",
                "import socket; socket.create_connection(('127.0.0.1',8080),2)",
            ])
            .stderr(Stdio::null()),
    );
    let mut probe = probe;
    assert!(
        !probe.child.wait().expect("probe").success(),
        "node 2 reached port 8080 on its own loopback: the nodes share a network"
    );
}

#[test]
fn a_process_spawned_in_a_node_is_in_its_cgroup_namespace_and_cpuset() {
    let _turn = turn();
    let cluster = Cluster::up(2);
    for i in 1..=2 {
        let node = cluster.node(i);
        let sleeper = cluster.spawn(i, Command::new("sleep").arg("30"));
        let pid = sleeper.pid();
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let rel = node.cgroup.strip_prefix(cgroup2_mount().unwrap()).unwrap();
        assert!(
            cgroups
                .lines()
                .any(|l| l == format!("0::/{}", rel.display())),
            "pid {pid} not in {}: {cgroups}",
            node.cgroup.display()
        );
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        assert_eq!(allowed, node.cpus, "node {i}'s cpuset");
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let own = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(
            ns, own,
            "node {i}'s process is in the root network namespace"
        );
        let want = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(format!("/run/netns/{}", node.name)).unwrap(),
        );
        assert_eq!(ns.to_string_lossy(), format!("net:[{want}]"));
    }
    // Two nodes on two CPUs get one each.
    if std::thread::available_parallelism().map_or(1, usize::from) >= 2 {
        assert_ne!(cluster.node(1).cpus, cluster.node(2).cpus);
    }
}

/// Not a test on its own: the child of the SIGKILL test runs it (`CLUSTER_CHILD=1`). It
/// brings up a cluster, starts a `sleep` in node 1, says so, and waits to be killed.
#[test]
#[ignore = "run by a_sigkilled_cluster_is_removed_by_the_next_clean_leftovers"]
fn child_builds_a_cluster_and_waits_to_be_killed() {
    if std::env::var_os("CLUSTER_CHILD").is_none() {
        return;
    }
    let cluster = Cluster::up(2);
    let sleeper = cluster.spawn(1, Command::new("sleep").arg("600"));
    let mut out = std::io::stdout();
    writeln!(out, "CLUSTER-UP {}", sleeper.pid()).unwrap();
    out.flush().unwrap();
    std::mem::forget(sleeper);
    loop {
        std::thread::park();
    }
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links() -> String {
    let out = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sigkilled_cluster_is_removed_by_the_next_clean_leftovers() {
    let _turn = turn();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_builds_a_cluster_and_waits_to_be_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("CLUSTER_CHILD", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let sleeper: u32 = loop {
        let line = lines
            .next()
            .expect("the child exited before its cluster was up")
            .unwrap();
        if let Some(pid) = line.strip_prefix("CLUSTER-UP ") {
            break pid.parse().unwrap();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let cgroup = cgroup2_mount().unwrap().join("spk-cluster");
    assert!(netns_list().contains("spk-n1"), "{}", netns_list());
    assert!(links().contains(BRIDGE) && links().contains("spk-n2h"));
    assert!(cgroup.join("spk-n1").is_dir());
    assert!(proc_state(sleeper).is_some(), "the sleep in node 1 died");

    let removed = Cluster::clean_leftovers().expect("cleaning up");
    assert!(
        removed.iter().any(|r| r.contains("spk-n2")),
        "reported: {removed:?}"
    );
    assert!(!netns_list().contains("spk-"), "{}", netns_list());
    assert!(!links().contains("spk-"), "{}", links());
    assert!(!cgroup.exists(), "{} left", cgroup.display());
    // The sleep was reparented when its owner died: gone or a zombie its new parent reaps.
    wait_for(Duration::from_secs(5), "the sleep to die", || {
        matches!(proc_state(sleeper), None | Some('Z')).then_some(())
    });
    // And a new cluster comes up where the old one was.
    Cluster::up(1).down().expect("down");
    assert!(!netns_list().contains("spk-"));
}

/// Nothing of a cluster survives its drop.
#[test]
fn drop_removes_everything() {
    let _turn = turn();
    let cluster = Cluster::up(1);
    // Forgotten: only the cluster's drop can end it.
    let orphan = cluster.spawn(1, Command::new("sleep").arg("30"));
    let pid = orphan.pid();
    std::mem::forget(orphan);
    drop(cluster);
    assert!(!netns_list().contains("spk-"), "{}", netns_list());
    assert!(!links().contains("spk-"), "{}", links());
    assert!(!cgroup2_mount().unwrap().join("spk-cluster").exists());
    assert!(
        matches!(proc_state(pid), None | Some('Z')),
        "sleep {pid} survived"
    );
}

/// `PUT`/`GET` on an agent over TCP; status and body.
fn call(method: &str, url: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let req = ureq::request(method, url)
        .timeout(Duration::from_secs(10))
        .set("Authorization", &format!("Bearer {token}"));
    let answer = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    match answer {
        Ok(r) | Err(ureq::Error::Status(_, r)) => (r.status(), r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

/// The agents of `cargo xtask cluster up`, as it starts them (`cluster_agent`): in each node's
/// daemon cgroup, on the node's address, confined to the node's cgroup and CPUs, each with its
/// own token. `slowpoke agents --cluster` reaches both across the bridge, each with its token.
/// Node 1's agent takes only node 1's process of a name that runs in both nodes.
#[test]
fn an_agent_in_a_node_is_reached_over_the_bridge_and_selects_only_its_node() {
    let _turn = turn();
    let cluster = Cluster::up(2);
    let dir = TempDir::new("cluster-agent");
    // A name no other process on the machine has.
    let probe = dir.path().join("spkprobe");
    std::fs::copy("/bin/sleep", &probe).unwrap();
    let mine = cluster.spawn(1, Command::new(&probe).arg("60"));
    let theirs = cluster.spawn(2, Command::new(&probe).arg("60"));
    let agents: Vec<NodeAgent> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let token = format!("{}-s3cret", n.name);
            NodeAgent::start(
                n,
                &workspace_bin("slowpoke-agent"),
                &dir.path().join(&n.name),
                &token,
                &["--log-level", "warn"],
            )
            .unwrap()
        })
        .collect();
    for a in &agents {
        a.wait_ready(Duration::from_secs(30)).unwrap();
    }
    let (base, token) = (agents[0].url.clone(), agents[0].token.clone());
    let token = token.as_str();
    assert_eq!(
        call("GET", &format!("{base}/v1/health"), token, None).0,
        200
    );
    assert_eq!(
        call("GET", &format!("{base}/v1/services"), "wrong", None).0,
        401
    );
    // Node 2's token does not open node 1's agent.
    assert_eq!(
        call(
            "GET",
            &format!("{base}/v1/services"),
            &agents[1].token,
            None
        )
        .0,
        401
    );
    // Its node stats count the node's one CPU (--node-cpus), not the machine's.
    let (_, stats) = call("GET", &format!("{base}/v1/stats"), token, None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["node"]["cpus"], 1, "{stats}");
    assert!(
        stats["instance"].as_str().is_some_and(|i| i.len() == 16),
        "{stats}"
    );
    // `slowpoke agents --cluster` from the root namespace: both nodes by name, healthy, each
    // reached with its own token, and each clock offset estimate holds the true one — the nodes
    // share this machine's clock, so 0.
    let description = dir.path().join("cluster.json");
    write_description(cluster.nodes(), &agents, &description).unwrap();
    let out = Command::new(workspace_bin("slowpoke"))
        .args(["agents", "--json", "--cluster"])
        .arg(&description)
        .env_remove("SLOWPOKE_AGENT_TOKEN")
        .output()
        .expect("running slowpoke agents");
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, a) in agents.iter().enumerate() {
        let row = &rows[i];
        assert_eq!(row["agent"], a.node.as_str(), "{rows}");
        assert_eq!(row["url"], a.url.as_str(), "{rows}");
        assert_eq!(row["healthy"], true, "{rows}");
        let clock = &row["clock"];
        let (offset, within) = (
            clock["offset_ns"].as_i64().expect("an offset"),
            clock["uncertainty_ns"].as_i64().expect("its uncertainty"),
        );
        assert!(offset.abs() <= within, "{clock}");
    }

    let (code, body) = call(
        "PUT",
        &format!("{base}/v1/services/probe"),
        token,
        Some(r#"{"comm":"spkprobe"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["pids"], serde_json::json!([mine.pid()]), "{body}");
    let excluded = info["excluded"].as_array().unwrap();
    assert!(
        excluded.iter().any(|e| e["pid"] == theirs.pid()
            && e["reason"].as_str().unwrap().contains("--allow-cgroup")),
        "{body}"
    );
    // Node 2's process alone: refused, as for any process the agent never stops.
    let (code, body) = call(
        "PUT",
        &format!("{base}/v1/services/other"),
        token,
        Some(&format!(r#"{{"pids":[{}]}}"#, theirs.pid())),
    );
    assert_eq!(code, 403, "{body}");
    // ... unless the service may be absent from this node (the coordinator's registration with
    // several agents): node 2's process is not refused then, just not a member here.
    let (code, body) = call(
        "PUT",
        &format!("{base}/v1/services/other"),
        token,
        Some(&format!(
            r#"{{"pids":[{}],"may_be_absent":true}}"#,
            theirs.pid()
        )),
    );
    assert_eq!(code, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["pids"], serde_json::json!([]), "{body}");
}

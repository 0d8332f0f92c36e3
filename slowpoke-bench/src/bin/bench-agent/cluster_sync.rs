//! Part 6, `sync-cluster`: how close synchronized pauses are BETWEEN nodes (issue #16, item 4).
//! On the cluster test bed (`slowpoke_testkit::cluster`: network namespaces on a bridge, one
//! cpuset each), node 1 and node 2 each run a real `slowpoke-agent` process (the release
//! binary next to this one) and an echo server child (this binary, `--server IP:PORT`). A's
//! plan (node 1) gives it 2 ms per visit (a quantum pause at every visit), B's (node 2) 0.4 ms
//! (below the 1 ms quantum); one client in the root namespace visits A then B. Each round runs
//! both plans synchronized with `sync_peers` naming each other and without (the order
//! alternates); from the agents' pause records (`GET /v1/stats?recent_pauses=512`, one
//! machine so one `CLOCK_MONOTONIC`): the share of A's quantum pauses at which B paid (a
//! synchronized pause: only a datagram from node 1 makes one), the start skew of each such B
//! pause after A's stop (median, p90, max; also pooled over all rounds), the share of B's
//! stopped time that overlapped A's, and B's pause time over its debt during the run (the rest
//! is paid when the plan is removed).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};
use slowpoke_stats::{median, nearest_rank};
use slowpoke_testkit::{Proc, TempDir, cluster::Cluster, cluster_agent, workspace_bin};

use crate::{Options, echo::MESSAGE, summary};

const TOKEN: &str = "bench-sync-cluster";
/// A's and B's delay per visit (ns), as in the one-node `sync` part.
const DELAYS_NS: [(&str, u64); 2] = [("a", 2_000_000), ("b", 400_000)];
const PORT: u16 = 8080;
/// The plans' key (a benchmark's; an experiment's is random, drawn by the coordinator).
const KEY: &str = "0b30557a9bc0e70b2f46d83a1c5e7f90a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0";

/// One node's agent: its base URL and its sync address.
struct NodeAgent {
    base: String,
    sync_addr: String,
    _agent: cluster_agent::NodeAgent,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let req = ureq::request(method, url)
        .timeout(Duration::from_secs(10))
        .set("Authorization", &format!("Bearer {TOKEN}"));
    let answer = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match answer {
        Ok(r) => r.into_json().unwrap_or(Value::Null),
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn start_agent(cluster: &Cluster, i: usize, dir: &Path) -> NodeAgent {
    let agent = cluster_agent::NodeAgent::start(
        cluster.node(i),
        &workspace_bin("slowpoke-agent"),
        &dir.join(format!("n{i}")),
        TOKEN,
        // A is stopped most of the time by design: no cap.
        &["--max-stopped-share", "1", "--log-level", "warn"],
    )
    .unwrap();
    agent.wait_ready(Duration::from_secs(30)).unwrap();
    let base = agent.url.clone();
    let sync_addr = call("GET", &format!("{base}/v1/health"), None)["sync_addr"]
        .as_str()
        .expect("the agent reports its sync_addr")
        .to_owned();
    NodeAgent {
        base,
        sync_addr,
        _agent: agent,
    }
}

/// The echo server child in node `i`, on its address; returns once it listens.
fn start_server(cluster: &Cluster, i: usize) -> (Proc, SocketAddr) {
    let addr = SocketAddr::from((cluster.node(i).addr, PORT));
    let mut p = cluster.spawn(
        i,
        Command::new(std::env::current_exe().unwrap())
            .args(["--server", &addr.to_string()])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "echo server in node {i}");
    (p, addr)
}

/// Pause records of `service` that started in `[t0, t1]`: (kind, start, end).
fn pauses(base: &str, service: &str, t0: u64, t1: u64) -> Vec<(String, u64, u64)> {
    let stats = call("GET", &format!("{base}/v1/stats?recent_pauses=512"), None);
    stats["services"][service]["recent_pauses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["start_ns"].as_u64().unwrap(),
                p["end_ns"].as_u64().unwrap(),
            )
        })
        .filter(|p| (t0..=t1).contains(&p.1))
        .collect()
}

/// The agent's clock, and `service`'s debt owed and pause time so far (ns).
fn snapshot(base: &str, service: &str) -> (u64, u64, u64) {
    let stats = call("GET", &format!("{base}/v1/stats"), None);
    let get = |v: &Value| v.as_u64().unwrap_or(0);
    let svc = &stats["services"][service];
    (
        get(&stats["timestamp_ns"]),
        get(&svc["owed_ns"]),
        get(&svc["pause_ns"]),
    )
}

/// What one run saw (shares in %, skews in µs).
#[derive(Default)]
struct Run {
    a_quantum_pauses: usize,
    b_joined_pct: f64,
    skew_us: Vec<f64>,
    overlap_pct: f64,
    datagrams_accepted: u64,
    /// B's pause time over B's debt during the run (before the plan's removal pays the rest).
    b_paid_of_owed_pct: f64,
}

fn run(agents: &[NodeAgent; 2], conns: &mut [TcpStream; 2], peers: bool, visits: usize) -> Run {
    let accepted = |a: &NodeAgent| {
        call("GET", &format!("{}/v1/stats", a.base), None)["peer_sync"]["accepted"]
            .as_u64()
            .unwrap_or(0)
    };
    let accepted0 = accepted(&agents[1]);
    let (t0, _, _) = snapshot(&agents[0].base, "a");
    let (_, owed0, paid0) = snapshot(&agents[1].base, "b");
    for (k, (agent, (svc, delay))) in agents.iter().zip(DELAYS_NS).enumerate() {
        let other = &agents[1 - k];
        let mut plan = json!({"mode": "pause", "synchronized": true, "owner": "bench",
            "services": {svc: {"delay_per_visit_ns": delay}}});
        if peers {
            plan["sync_peers"] = json!({"key": KEY, "peers": [other.sync_addr]});
        }
        call("PUT", &format!("{}/v1/slowdown", agent.base), Some(plan));
    }
    let mut buf = [7u8; MESSAGE];
    for _ in 0..visits {
        for c in conns.iter_mut() {
            c.write_all(&buf).unwrap();
            c.read_exact(&mut buf).unwrap();
        }
    }
    let (t1, _, _) = snapshot(&agents[0].base, "a");
    let (_, owed1, paid1) = snapshot(&agents[1].base, "b");
    for agent in agents {
        call(
            "DELETE",
            &format!("{}/v1/slowdown?owner=bench", agent.base),
            None,
        );
    }
    let a = pauses(&agents[0].base, "a", t0, t1);
    let b = pauses(&agents[1].base, "b", t0, t1);
    let a_quantum: Vec<_> = a.iter().filter(|p| p.0 == "kernel").collect();
    let b_sync: Vec<_> = b.iter().filter(|p| p.0 == "synchronized").collect();
    let skew_us = b_sync
        .iter()
        .filter_map(|p| {
            a_quantum
                .iter()
                .filter(|x| x.1 <= p.1)
                .max_by_key(|x| x.1)
                .map(|x| (p.1 - x.1) as f64 / 1e3)
        })
        .collect();
    let (mut stopped, mut overlap) = (0u64, 0u64);
    for p in &b {
        stopped += p.2.saturating_sub(p.1);
        overlap += a
            .iter()
            .map(|x| p.2.min(x.2).saturating_sub(p.1.max(x.1)))
            .sum::<u64>();
    }
    Run {
        a_quantum_pauses: a_quantum.len(),
        b_joined_pct: 100.0 * b_sync.len() as f64 / a_quantum.len().max(1) as f64,
        skew_us,
        overlap_pct: 100.0 * overlap as f64 / stopped.max(1) as f64,
        datagrams_accepted: accepted(&agents[1]) - accepted0,
        b_paid_of_owed_pct: 100.0 * (paid1 - paid0) as f64 / (owed1 - owed0).max(1) as f64,
    }
}

pub(crate) fn sync_cluster(o: &Options) -> Value {
    let cluster = Cluster::up(2);
    let dir = TempDir::new("bench-sync-cluster");
    let servers = [start_server(&cluster, 1), start_server(&cluster, 2)];
    let agents = [
        start_agent(&cluster, 1, dir.path()),
        start_agent(&cluster, 2, dir.path()),
    ];
    for (agent, (svc, _)) in agents.iter().zip(DELAYS_NS) {
        let info = call(
            "PUT",
            &format!("{}/v1/services/{svc}", agent.base),
            Some(json!({"ports": [PORT]})),
        );
        assert_eq!(
            info["pids"].as_array().map(Vec::len),
            Some(1),
            "{svc}: {info}"
        );
    }
    let mut conns = servers.each_ref().map(|(_, addr)| {
        let c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        c
    });
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for peers in [round % 2 == 0, round % 2 == 1] {
            let r = run(&agents, &mut conns, peers, o.sync_visits);
            if peers { &mut on } else { &mut off }.push(r);
        }
    }
    drop(conns);
    drop(agents);
    drop(servers);
    cluster.down().expect("removing the cluster");
    let per_run = |runs: &[Run]| {
        let q = |f: fn(&[f64]) -> Option<f64>| -> Vec<f64> {
            runs.iter()
                .map(|r| f(&r.skew_us).unwrap_or(f64::NAN))
                .collect()
        };
        let pooled: Vec<f64> = runs
            .iter()
            .flat_map(|r| r.skew_us.iter().copied())
            .collect();
        json!({
            "a_quantum_pauses": summary(&runs.iter().map(|r| r.a_quantum_pauses as f64).collect::<Vec<_>>()),
            "b_joined_pct": summary(&runs.iter().map(|r| r.b_joined_pct).collect::<Vec<_>>()),
            "skew_us_median": summary(&q(median)),
            "skew_us_p90": summary(&q(|d| nearest_rank(d, 0.9))),
            "skew_us_max": summary(&q(|d| nearest_rank(d, 1.0))),
            "skew_us_pooled": {
                "n": pooled.len(),
                "median": median(&pooled),
                "p90": nearest_rank(&pooled, 0.9),
                "p99": nearest_rank(&pooled, 0.99),
                "max": nearest_rank(&pooled, 1.0),
            },
            "b_stopped_overlapping_a_pct": summary(&runs.iter().map(|r| r.overlap_pct).collect::<Vec<_>>()),
            "b_paid_of_owed_pct": summary(&runs.iter().map(|r| r.b_paid_of_owed_pct).collect::<Vec<_>>()),
            "datagrams_accepted_by_b": summary(&runs.iter().map(|r| r.datagrams_accepted as f64).collect::<Vec<_>>()),
        })
    };
    let gain: Vec<f64> = on
        .iter()
        .zip(&off)
        .map(|(s, u)| s.overlap_pct - u.overlap_pct)
        .collect();
    json!({
        "visits_per_run": o.sync_visits,
        "delays_ns": DELAYS_NS.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "with_sync_peers": per_run(&on),
        "without_sync_peers": per_run(&off),
        "overlap_gain_pct_points": summary(&gain),
    })
}

//! Part 5, `sync`: how close synchronized pauses are. Two echo server children A and B are
//! services of the bench's library agent; a plan gives A 2 ms per visit (a quantum pause at every
//! visit) and B 0.4 ms (below the 1 ms quantum); one client visits A then B. Each round runs the
//! plan synchronized and not (the order alternates) and reads the agent's pause records: how
//! often B paid at A's pauses, how soon after A's stop, and how much of B's stopped time
//! overlapped A's.

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use serde_json::json;
use slowpoke_agent::{
    Agent,
    actuator::PauseKind,
    api::{Mode, ServiceDelay, ServiceSpec, SlowdownPlan},
    sys::clock::monotonic_ns,
};
use slowpoke_stats::{median, nearest_rank};

use crate::{
    Options,
    echo::{MESSAGE, start_server},
    harness::BenchAgent,
    summary,
};

/// The sync measurement's plan: A's and B's delay per visit (ns).
const SYNC_DELAYS_NS: [(&str, u64); 2] = [("a", 2_000_000), ("b", 400_000)];

/// What one run of the sync measurement saw (shares in %, delays in µs).
#[derive(Default)]
struct SyncRun {
    a_quantum_pauses: usize,
    /// B's synchronized pauses per A quantum pause.
    b_paid_at_a_pct: f64,
    delay_us: Vec<f64>,
    /// B's synchronized pauses that started while A was stopped.
    inside_pct: f64,
    /// B's stopped time that overlapped A's.
    overlap_pct: f64,
}

fn sync_run(
    agent: &Agent,
    conns: &mut [TcpStream; 2],
    synchronized: bool,
    visits: usize,
) -> SyncRun {
    let services = SYNC_DELAYS_NS
        .into_iter()
        .map(|(n, d)| {
            let delay = ServiceDelay {
                delay_per_visit_ns: d,
            };
            (n.to_string(), delay)
        })
        .collect();
    let t0 = monotonic_ns();
    agent
        .set_slowdown(SlowdownPlan {
            mode: Mode::Pause,
            quantum_ns: None,
            synchronized,
            services,
            ..SlowdownPlan::default()
        })
        .unwrap();
    let mut buf = [7u8; MESSAGE];
    for _ in 0..visits {
        for c in conns.iter_mut() {
            c.write_all(&buf).unwrap();
            c.read_exact(&mut buf).unwrap();
        }
    }
    agent.clear_slowdown().unwrap();
    let recent = |n: &str| -> Vec<_> {
        let mut v = agent.recent_pauses(n).unwrap();
        v.retain(|p| p.start_ns >= t0);
        v
    };
    let (a, b) = (recent("a"), recent("b"));
    let a_quantum: Vec<_> = a.iter().filter(|p| p.kind == PauseKind::Kernel).collect();
    let mut run = SyncRun {
        a_quantum_pauses: a_quantum.len(),
        ..SyncRun::default()
    };
    let mut inside = 0;
    let b_sync: Vec<_> = b
        .iter()
        .filter(|p| p.kind == PauseKind::Synchronized)
        .collect();
    for p in &b_sync {
        if let Some(x) = a_quantum
            .iter()
            .filter(|x| x.start_ns <= p.start_ns)
            .max_by_key(|x| x.start_ns)
        {
            run.delay_us.push((p.start_ns - x.start_ns) as f64 / 1e3);
            inside += usize::from(p.start_ns < x.end_ns);
        }
    }
    let pct = |x: usize, of: usize| 100.0 * x as f64 / of.max(1) as f64;
    run.b_paid_at_a_pct = pct(b_sync.len(), a_quantum.len());
    run.inside_pct = pct(inside, b_sync.len());
    let (mut stopped, mut overlap) = (0u64, 0u64);
    for p in &b {
        stopped += p.end_ns.saturating_sub(p.start_ns);
        overlap += a
            .iter()
            .map(|x| {
                p.end_ns
                    .min(x.end_ns)
                    .saturating_sub(p.start_ns.max(x.start_ns))
            })
            .sum::<u64>();
    }
    run.overlap_pct = 100.0 * overlap as f64 / stopped.max(1) as f64;
    run
}

pub(crate) fn sync_closeness(o: &Options) -> serde_json::Value {
    // A is stopped most of the time by design: no cap.
    let bench = BenchAgent::start("sync", Some(1.0));
    let agent = &bench.agent;
    let servers = [start_server(), start_server()];
    for ((name, _), s) in SYNC_DELAYS_NS.into_iter().zip(&servers) {
        let info = agent
            .put_service(
                name,
                ServiceSpec {
                    ports: Some(vec![s.1]),
                    ..ServiceSpec::default()
                },
            )
            .unwrap();
        assert_eq!(info.pids, vec![s.0.id()], "service {name} is its server");
    }
    let mut conns = servers.each_ref().map(|s| {
        let c = TcpStream::connect(("127.0.0.1", s.1)).unwrap();
        c.set_nodelay(true).unwrap();
        c
    });
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        for synchronized in [round % 2 == 0, round % 2 == 1] {
            let r = sync_run(agent, &mut conns, synchronized, o.sync_visits);
            if synchronized { &mut on } else { &mut off }.push(r);
        }
    }
    drop(conns);
    for (name, _) in SYNC_DELAYS_NS {
        agent.delete_service(name).unwrap();
    }
    bench.shutdown();
    let per_run = |runs: &[SyncRun]| {
        let q = |f: fn(&[f64]) -> Option<f64>| -> Vec<f64> {
            runs.iter()
                .map(|r| f(&r.delay_us).unwrap_or(f64::NAN))
                .collect()
        };
        json!({
            "a_quantum_pauses": summary(&runs.iter().map(|r| r.a_quantum_pauses as f64).collect::<Vec<_>>()),
            "b_paid_at_a_pct": summary(&runs.iter().map(|r| r.b_paid_at_a_pct).collect::<Vec<_>>()),
            "delay_us_median": summary(&q(median)),
            "delay_us_p90": summary(&q(|d| nearest_rank(d, 0.9))),
            "delay_us_max": summary(&q(|d| nearest_rank(d, 1.0))),
            "inside_a_pct": summary(&runs.iter().map(|r| r.inside_pct).collect::<Vec<_>>()),
            "b_stopped_overlapping_a_pct": summary(&runs.iter().map(|r| r.overlap_pct).collect::<Vec<_>>()),
        })
    };
    let gain: Vec<f64> = on
        .iter()
        .zip(&off)
        .map(|(s, u)| s.overlap_pct - u.overlap_pct)
        .collect();
    json!({
        "visits_per_run": o.sync_visits,
        "delays_ns": SYNC_DELAYS_NS.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "synchronized": per_run(&on),
        "unsynchronized": per_run(&off),
        "overlap_gain_pct_points": summary(&gain),
    })
}

//! End to end across two nodes of the one-machine cluster (issue #16's "done when"): chain3's
//! bottleneck `middle` alone on node 1 (one CPU), `front` and `back` on node 2 (the other CPU),
//! one agent per node reached over the bridge with its own token (the cluster description), the
//! load generator and the coordinator in the root namespace. The what-if pauses the services of
//! node 2 to predict `middle` 400 µs faster; the ground truth lowers middle's work live through
//! its control port on node 1. The prediction must be within the single-node chain3 bound
//! (10 %), and the baseline taken as the prediction must miss by more than that.
//!
//! Needs root, the debug `slowpoke-agent` (`cargo build --bins`) and the release emulator
//! (`SLOWPOKE_EMU_BIN`, as `cargo xtask test` sets it).

use std::{path::Path, time::Duration};

use slowpoke_coordinator::agents::{SharedAgent, cluster_agents};
use slowpoke_coordinator::experiment::{
    Backends, LoadConfig, Monitor, Repeat, Safety, Timing, WhatIfSpec, new_id, run_what_if,
};
use slowpoke_coordinator::lease::{DEFAULT_LEASE, Lease};
use slowpoke_coordinator::model::Optimization;
use slowpoke_coordinator::real::RealLoadStarter;
use slowpoke_emu::{ClusterStart, PlaceArg};
use slowpoke_eval::EmuApp;
use slowpoke_testkit::{
    TempDir,
    cluster::Cluster,
    cluster_agent::{NodeAgent, random_token, write_description},
    workspace_bin,
};

#[test]
fn a_what_if_across_two_nodes_matches_the_ground_truth() {
    let cluster = Cluster::up(2);
    let dir = TempDir::new("cluster-e2e");
    let agents: Vec<NodeAgent> = cluster
        .nodes()
        .iter()
        .map(|n| {
            NodeAgent::start(
                n,
                &workspace_bin("slowpoke-agent"),
                &dir.path().join(&n.name),
                &random_token().unwrap(),
                &["--log-level", "warn"],
            )
            .unwrap()
        })
        .collect();
    for a in &agents {
        a.wait_ready(Duration::from_secs(30)).unwrap();
    }
    let description = dir.path().join("cluster.json");
    write_description(cluster.nodes(), &agents, &description).unwrap();

    let (n1, n2) = (&cluster.node(1).name, &cluster.node(2).name);
    let place = |service: &str, node: &str| PlaceArg {
        service: service.into(),
        node: node.into(),
    };
    let chain3 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies/chain3.json");
    let app = EmuApp::start_on(
        &chain3,
        &[],
        &ClusterStart {
            file: description.clone(),
            place: vec![place("middle", n1), place("front", n2), place("back", n2)],
        },
    )
    .expect("start chain3 across the nodes (is slowpoke-emu built?)");
    let clients: Vec<SharedAgent> = cluster_agents(&description, None)
        .unwrap()
        .into_iter()
        .map(|a| std::sync::Arc::new(a) as SharedAgent)
        .collect();
    let mut backends = Backends {
        agents: clients,
        app: Box::new(app),
        load: std::sync::Arc::new(RealLoadStarter),
        lease: Lease::new(&new_id("e2e", "cluster"), DEFAULT_LEASE),
        kubernetes: std::sync::Arc::default(),
    };
    let spec = WhatIfSpec {
        target: "middle".into(),
        optimization: Optimization::DeltaUs(400.0),
        load: LoadConfig::default(),
        timing: Timing {
            warmup_s: 2.0,
            window_s: 2.0,
            settle_s: 0.5,
            ..Timing::default()
        },
        repeat: Repeat::fixed(5),
        safety: Safety::default(),
        truth: true,
        entry_service: None,
    };
    let r = run_what_if(&spec, &mut backends, &Monitor::new()).expect("the experiment runs");
    drop(backends);
    eprintln!("{}", slowpoke_coordinator::report::what_if_table(&r));
    // The whole result, for docs/results/ (docs/multi-node.md quotes it).
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-e2e-result.json");
    std::fs::write(&out, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    eprintln!("result: {}", out.display());

    // Each service was found on its own node only, and the paused ones are node 2's.
    let row = |name: &str| {
        r.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no row for {name}: {:?}", r.services))
    };
    assert_eq!(row("middle").agents, vec![n1.clone()], "{:?}", r.services);
    for s in ["front", "back"] {
        assert_eq!(row(s).agents, vec![n2.clone()], "{:?}", r.services);
        assert!(
            row(s).d_us.is_some_and(|d| d > 0.0),
            "{s} is not delayed: {:?}",
            row(s)
        );
    }
    assert!(
        row("middle").d_us.is_none_or(|d| d == 0.0),
        "the target is delayed"
    );

    let truth = r.truth_rps.expect("truth");
    let gain = (truth - r.baseline_rps) / r.baseline_rps * 100.0;
    assert!(
        gain >= 20.0,
        "the optimization only gains {gain:.1} %: {r:?}"
    );
    let err = r.error_pct.expect("error");
    assert!(err.abs() <= 10.0, "prediction error {err:+.1} %: {r:?}");
    let base_err = r.baseline_error_pct.expect("baseline error");
    assert!(
        base_err.abs() > 10.0,
        "the baseline misses by only {base_err:+.1} %"
    );
}

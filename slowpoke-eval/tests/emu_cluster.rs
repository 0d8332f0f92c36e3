//! `EmuApps::on_cluster` (root; a 2-node `testkit::cluster`): the `slowpoke` binary's emulator
//! for `--topology F --cluster C.json` starts chain3 spread over the nodes, describes each
//! service by its pid and service port, and applies and restores ground truth live at the
//! service's node address. Needs the `slowpoke-emu` binary (`cargo build -p slowpoke-emu --bin
//! slowpoke-emu`, or `$SLOWPOKE_EMU_BIN`).

use std::path::Path;

use slowpoke_api::cluster::ClusterFile;
use slowpoke_coordinator::experiment::TruthChange;
use slowpoke_coordinator::spec_builder::Emulator as _;
use slowpoke_eval::{EmuApp, EmuApps};
use slowpoke_testkit::{TempDir, cluster::Cluster};

#[test]
fn on_cluster_spreads_a_topology_without_nodes_and_applies_truth_across_nodes() {
    assert!(
        slowpoke_emu::find_binary().is_file(),
        "build slowpoke-emu first (cargo build -p slowpoke-emu --bin slowpoke-emu)"
    );
    let cluster = Cluster::up(2);
    let dir = TempDir::new("eval-emu-cluster");
    let description = dir.path().join("cluster.json");
    let file = ClusterFile {
        nodes: cluster
            .nodes()
            .iter()
            .map(|n| n.describe(&format!("http://{}:7171", n.addr), None))
            .collect(),
    };
    std::fs::write(&description, serde_json::to_string(&file).unwrap()).unwrap();
    let chain3 = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testkit/topologies/chain3.json");

    let mut app = EmuApps::on_cluster(&description)
        .start(&chain3, &[])
        .unwrap();
    // Round robin in name order: back and middle on node 1, front (the entry) on node 2.
    let entry = app.entry_url();
    assert!(
        entry.starts_with(&format!("http://{}:", cluster.node(2).addr)),
        "{entry}"
    );
    let services = app.services();
    assert_eq!(services.len(), 3);
    for (name, spec) in &services {
        assert_eq!(spec.pids.as_ref().map(Vec::len), Some(1), "{name}");
        assert_eq!(spec.listen_ports.as_ref().map(Vec::len), Some(1), "{name}");
    }

    // Ports are fixed across nodes: service i of 3 (name order back, front, middle) on 7300 + i,
    // its control port on 7303 + i.
    assert_eq!(services["middle"].listen_ports, Some(vec![7302]));
    let control =
        slowpoke_emu::ServiceControl::connect(&format!("http://{}:7305", cluster.node(1).addr))
            .unwrap();
    let cpu_us = || control.stats().unwrap().endpoints["req"].cpu_us;
    // The truth lowers middle's cpu_us (1000 µs) by 400 µs through its control port on node 1.
    app.apply_truth(
        "middle",
        TruthChange {
            delta_ns: 400_000.0,
            cores: None,
        },
    )
    .unwrap();
    assert!((cpu_us() - 600.0).abs() < 1e-6, "{}", cpu_us());
    app.restore_truth().unwrap();
    assert!((cpu_us() - 1000.0).abs() < 1e-6, "{}", cpu_us());
    drop(app);

    // Started directly, the same app reports where each service runs.
    let start = slowpoke_emu::ClusterStart {
        file: description.clone(),
        place: vec![
            "front=spk-n1".parse().unwrap(),
            "middle=spk-n2".parse().unwrap(),
            "back=spk-n2".parse().unwrap(),
        ],
    };
    let direct = EmuApp::start_on(&chain3, &[], &start).unwrap();
    let running = direct.running();
    assert_eq!(running.services["middle"].node.as_deref(), Some("spk-n2"));
    assert_eq!(running.services["front"].node.as_deref(), Some("spk-n1"));
    let url = running.service_url("back").unwrap();
    assert_eq!(
        url,
        format!(
            "http://{}:{}",
            cluster.node(2).addr,
            running.services["back"].port
        )
    );
    drop(direct);
    cluster.down().unwrap();
}

//! A what-if whose services are label selectors, on the fake world (an agent on node
//! `fake-node`), while the pods change: a container restarts in the middle of the experiment.
//! The new pod is registered on the agent and the experiment still predicts exactly (the fake
//! world obeys the model); a window the change fell into is discarded with a warning.
//!
//! **No Kubernetes cluster can run on these machines**: the API server is the local stand-in
//! of `kube_util` (TLS, token, k8s-openapi bodies, a watch stream).

mod kube_util;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube_util::{ApiServer, pod};
use slowpoke_api::{agent::ServiceSpec, selector::parse_selector};
use slowpoke_coordinator::{
    experiment::{
        App, LoadConfig, Monitor, Repeat, Safety, Timing, TruthChange, WhatIfSpec, run_what_if,
    },
    fake::{FakeApp, FakeWorld},
    kubernetes::KubeAccess,
    model::Optimization,
};
use slowpoke_testkit::wait_for;

/// The fake app with `label:shop/app=<service>` selectors instead of ports.
struct LabelApp(FakeApp);

impl App for LabelApp {
    fn services(&self) -> BTreeMap<String, ServiceSpec> {
        self.0
            .services()
            .into_keys()
            .map(|n| {
                let spec = parse_selector(&format!("label:shop/app={n}")).expect("selector");
                (n, spec)
            })
            .collect()
    }
    fn entry_url(&self) -> String {
        self.0.entry_url()
    }
    fn entry_service(&self) -> Option<String> {
        Some("front".into())
    }
    fn supports_truth(&self) -> bool {
        true
    }
    fn apply_truth(&mut self, service: &str, change: TruthChange) -> Result<(), String> {
        self.0.apply_truth(service, change)
    }
    fn restore_truth(&mut self) -> Result<(), String> {
        self.0.restore_truth()
    }
}

fn containers(world: &FakeWorld, service: &str) -> Vec<String> {
    world
        .spec_of(service)
        .and_then(|s| s.pods)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|p| p.containers)
        .collect()
}

#[test]
fn pods_that_restart_during_a_what_if_are_registered_again() {
    let api = ApiServer::start();
    for name in ["front", "cart", "db"] {
        api.put(pod(
            "shop",
            &format!("{name}-0"),
            "fake-node",
            &[("app", name)],
            &[&format!("{name}1")],
        ));
    }
    let world = FakeWorld::chain();
    let mut b = world.backends();
    b.app = Box::new(LabelApp(FakeApp(world.clone())));
    b.kubernetes = Arc::new(KubeAccess::new(Some(api.kubeconfig.clone())));
    let spec = WhatIfSpec {
        target: "cart".into(),
        optimization: Optimization::DeltaUs(200.0),
        load: LoadConfig::default(),
        timing: Timing {
            warmup_s: 0.0,
            window_s: 0.3,
            settle_s: 0.0,
            quantum_us: None,
            ..Timing::default()
        },
        repeat: Repeat::fixed(3),
        safety: Safety::default(),
        truth: true,
        entry_service: None,
    };
    let restarter = {
        let world = world.clone();
        let api = Arc::new(api);
        let a = api.clone();
        let t = std::thread::spawn(move || {
            // After the first slowed-down window, `db`'s container restarts.
            wait_for(Duration::from_secs(30), "a slowed-down window", || {
                world.log().iter().any(|l| l == "window:slow").then_some(())
            });
            a.put(pod("shop", "db-0", "fake-node", &[("app", "db")], &["db2"]));
        });
        (t, api)
    };
    assert_eq!(containers(&world, "db"), Vec::<String>::new());
    let r = run_what_if(&spec, &mut b, &Monitor::new()).expect("the what-if runs");
    restarter.0.join().expect("restarter");
    assert_eq!(
        containers(&world, "db"),
        ["db2"],
        "the restarted pod was registered again"
    );
    assert_eq!(containers(&world, "front"), ["front1"]);
    // The fake world obeys the model exactly: the change of members costs no accuracy.
    assert!(r.error_pct.expect("truth").abs() < 0.5, "{r:?}");
    let discarded = r
        .warnings
        .iter()
        .filter(|w| w.contains("pods changed during a"))
        .count();
    assert!(discarded <= 1, "{:?}", r.warnings);
    eprintln!(
        "windows discarded for the pod change: {discarded}; warnings {:?}",
        r.warnings
    );
    let log = restarter.1.requests();
    assert!(
        log.iter()
            .any(|l| l.starts_with("watch pods/shop?") && l.contains("labelSelector=app=db")),
        "{log:?}"
    );
}

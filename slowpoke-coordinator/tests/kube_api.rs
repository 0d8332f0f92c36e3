//! Pod and label selectors through the Kubernetes API. **No Kubernetes cluster can run on
//! these machines** (no container runtime, no kubelet): the API server is a local stand-in
//! (`kube_util`) that answers like a real one — TLS with its own CA, a bearer token from a
//! kubeconfig file, bodies serialized from k8s-openapi's types, `Status` objects for 401, 403,
//! 404 and 410, `resourceVersion`s and a watch stream — and the coordinator's real client
//! (`kube` 5, `k8s-openapi` 0.29 for Kubernetes 1.33) talks to it over the network.

mod kube_util;

use std::{sync::Arc, time::Duration};

use kube_util::{ApiServer, pod};
use slowpoke_api::{agent::KubeSelector, selector::parse_selector};
use slowpoke_coordinator::{
    agents::{HttpAgent, SharedAgent},
    kubernetes::{Cluster, KubeAccess, PodWatch, place},
};
use slowpoke_testkit::wait_for;

fn sel(s: &str) -> KubeSelector {
    parse_selector(s)
        .expect("selector")
        .kubernetes
        .expect("a pod or label selector")
}

/// The shop: two cart replicas on two nodes, one pending, a web pod.
fn shop() -> ApiServer {
    let api = ApiServer::start();
    api.put(pod(
        "shop",
        "cart-0",
        "node-a",
        &[("app", "cart")],
        &["aaa1", "aaa2"],
    ));
    api.put(pod(
        "shop",
        "cart-1",
        "node-b",
        &[("app", "cart")],
        &["bbb1"],
    ));
    let mut pending = pod("shop", "cart-2", "node-b", &[("app", "cart")], &[]);
    if let Some(s) = pending.status.as_mut() {
        s.phase = Some("Pending".into());
    }
    api.put(pending);
    api.put(pod("shop", "web-0", "node-a", &[("app", "web")], &["ccc1"]));
    api
}

#[test]
fn selectors_resolve_to_running_pods_their_nodes_and_containers() {
    let api = shop();
    let cluster = Cluster::connect(Some(&api.kubeconfig)).expect("connects with the kubeconfig");

    let set = cluster
        .pods(&sel("label:shop/app=cart"))
        .expect("label selector");
    let got: Vec<(String, String, Vec<String>)> = set
        .pods
        .iter()
        .map(|p| {
            (
                p.member.name.clone(),
                p.node.clone(),
                p.member.containers.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "shop/cart-0".into(),
                "node-a".into(),
                vec!["aaa1".into(), "aaa2".into()]
            ),
            ("shop/cart-1".into(), "node-b".into(), vec!["bbb1".into()]),
        ],
        "running pods only, container ids without the runtime prefix"
    );
    assert_eq!(set.not_running, vec!["shop/cart-2 (Pending)".to_owned()]);
    assert!(!set.resource_version.is_empty());
    assert!(set.pods[0].member.uid.starts_with("0a0b0c0d-"));

    let one = cluster.pods(&sel("pod:shop/web-0")).expect("pod by name");
    assert_eq!(one.pods.len(), 1);
    assert_eq!(one.pods[0].node, "node-a");
    let log = api.requests();
    assert!(
        log.iter()
            .any(|r| r == "list pods/shop?labelSelector=app=cart"),
        "{log:?}"
    );
    assert!(log.iter().any(|r| r == "GET pods/shop/web-0"), "{log:?}");
}

#[test]
fn refusals_say_what_to_do() {
    let api = shop();
    api.forbid("payments");
    let cluster = Cluster::connect(Some(&api.kubeconfig)).expect("connects");

    let e = cluster
        .pods(&sel("pod:shop/ghost"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pod shop/ghost does not exist (the Kubernetes API answered 404)"),
        "{e}"
    );
    let e = cluster
        .pods(&sel("label:shop/app=nothing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("matches no running pod"), "{e}");
    let e = cluster
        .pods(&sel("label:shop/app=cart,tier=none"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`label:shop/app=cart,tier=none` matches no running pod"),
        "{e}"
    );

    let e = cluster
        .pods(&sel("label:payments/app=ledger"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused to list pods in namespace payments")
            && e.contains("403 Forbidden")
            && e.contains("cannot list resource \"pods\"")
            && e.contains(
                "`apiGroups: [\"\"], resources: [\"pods\"], verbs: [\"get\", \"list\", \"watch\"]`"
            ),
        "{e}"
    );

    let wrong = Cluster::connect(Some(&api.kubeconfig_with_token("stolen"))).expect("connects");
    let e = wrong
        .pods(&sel("label:shop/app=cart"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("answered 401"), "{e}");

    let missing = api.dir.path().join("nope.yaml");
    let Err(e) = Cluster::connect(Some(&missing)) else {
        panic!("a kubeconfig that is not there was accepted");
    };
    assert!(e.to_string().contains("cannot read --kubeconfig"), "{e}");
}

/// Agents are matched to nodes by name; a pod on a node without an agent names both. Nothing
/// is asked of the agents here (their URLs lead nowhere).
#[test]
fn pods_are_placed_on_their_nodes_agents() {
    let api = shop();
    let access = KubeAccess::new(Some(api.kubeconfig.clone()));
    let agents: Vec<SharedAgent> = vec![
        Arc::new(HttpAgent::new("http://127.0.0.1:9", None).on_node("node-a")),
        Arc::new(HttpAgent::new("http://127.0.0.1:9", None).on_node("node-b")),
    ];
    let services = [
        (
            "cart".to_owned(),
            parse_selector("label:shop/app=cart+port:8080").unwrap(),
        ),
        ("web".to_owned(), parse_selector("pod:shop/web-0").unwrap()),
        ("db".to_owned(), parse_selector("port:5432").unwrap()),
    ]
    .into_iter()
    .collect();
    let p = place(&access, &agents, &services).expect("placed");
    let a = p.spec_for("cart", &services["cart"], 0);
    let b = p.spec_for("cart", &services["cart"], 1);
    let names = |s: &slowpoke_api::agent::ServiceSpec| -> Vec<String> {
        s.pods.iter().flatten().map(|m| m.name.clone()).collect()
    };
    assert_eq!(names(&a), ["shop/cart-0"]);
    assert_eq!(names(&b), ["shop/cart-1"]);
    assert_eq!(a.ports, Some(vec![8080]));
    assert!(a.kubernetes.is_none());
    let web_b = p.spec_for("web", &services["web"], 1);
    assert_eq!(web_b.pods, Some(vec![]), "no web pod on node-b");
    assert!(web_b.may_be_absent);
    assert_eq!(p.spec_for("db", &services["db"], 1), services["db"]);

    let only_a: Vec<SharedAgent> = vec![agents[0].clone()];
    let e = place(&access, &only_a, &services).unwrap_err().to_string();
    assert!(
        e.contains("pod shop/cart-1 of service `cart` runs on node node-b, which has no agent (agents: node node-a)"),
        "{e}"
    );
}

/// A pod that restarts behind a compaction (the watch's version is gone: `410`, re-list), a
/// replica added (a live event), one deleted: each changes the members once.
#[test]
fn the_watch_follows_restarts_scaling_and_a_410() {
    let api = shop();
    let cluster = Arc::new(Cluster::connect(Some(&api.kubeconfig)).expect("connects"));
    let s = sel("label:shop/app=cart");
    let set = cluster.pods(&s).expect("pods");
    let watch = PodWatch::start(
        cluster.clone(),
        [("cart".to_owned(), (s, set))].into_iter().collect(),
    );
    assert_eq!(watch.generation(), 0);
    let limit = Duration::from_secs(10);
    wait_for(limit, "the watch to be open", || {
        api.requests()
            .iter()
            .any(|r| r.starts_with("watch pods/shop?"))
            .then_some(())
    });

    // cart-0's container restarted (new id) while the watch was away; its version is gone.
    api.change_behind_compaction(pod(
        "shop",
        "cart-0",
        "node-a",
        &[("app", "cart")],
        &["aaa9"],
    ));
    wait_for(limit, "the 410 and the re-list", || {
        (watch.generation() == 1).then_some(())
    });
    assert_eq!(
        api.gone_served(),
        1,
        "the watch resumed from a compacted version"
    );
    let containers = |w: &PodWatch| -> Vec<Vec<String>> {
        w.sets()["cart"]
            .pods
            .iter()
            .map(|p| p.member.containers.clone())
            .collect()
    };
    assert_eq!(
        containers(&watch),
        vec![vec!["aaa9".to_owned()], vec!["bbb1".to_owned()]]
    );

    // Scaled up: a live ADDED event on the resumed watch.
    api.put(pod(
        "shop",
        "cart-3",
        "node-a",
        &[("app", "cart")],
        &["ddd1"],
    ));
    wait_for(limit, "the new replica", || {
        (watch.generation() == 2).then_some(())
    });
    assert_eq!(watch.sets()["cart"].pods.len(), 3);
    // An unrelated pod changes nothing.
    api.put(pod("shop", "web-1", "node-b", &[("app", "web")], &["eee1"]));
    // Scaled down.
    api.delete("shop", "cart-1");
    wait_for(limit, "the replica to leave", || {
        (watch.generation() == 3).then_some(())
    });
    let names: Vec<String> = watch.sets()["cart"]
        .pods
        .iter()
        .map(|p| p.member.name.clone())
        .collect();
    assert_eq!(names, ["shop/cart-0", "shop/cart-3"]);
    assert_eq!(
        watch.generation(),
        3,
        "web-1 did not count as a change of cart"
    );
    assert!(watch.take_errors().is_empty());
}

/// `slowpoke serve` runs experiments on tokio's blocking pool (`spawn_what_if`): the
/// connection, its calls and its drop must work from there too, not only from a plain thread.
#[test]
fn the_client_works_from_tokios_blocking_pool() {
    let api = shop();
    let kubeconfig = api.kubeconfig.clone();
    let outer = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let n = outer
        .block_on(outer.spawn_blocking(move || {
            let access = KubeAccess::new(Some(kubeconfig));
            let n = access
                .cluster()
                .and_then(|c| c.pods(&sel("label:shop/app=cart")))
                .map(|s| s.pods.len());
            drop(access);
            n
        }))
        .expect("joined");
    assert_eq!(n.expect("resolved"), 2);
}

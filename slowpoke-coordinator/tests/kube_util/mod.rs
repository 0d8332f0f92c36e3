//! A local stand-in for a Kubernetes API server, because no cluster can run on these machines
//! (no container runtime, no kubelet, no etcd): HTTPS with a certificate made on the spot by a
//! CA of its own, a bearer token, and the few pod endpoints the coordinator calls, answering as
//! the real server does — bodies serialized from k8s-openapi's own types (`Pod`, `List<Pod>`,
//! `WatchEvent<Pod>`, `Status` for 401/403/404/410), `resourceVersion`s on lists and objects,
//! label and field selectors, and watches that stream events after a version, end when told
//! (as a real server's watch times out), and answer a compacted version with `410 Gone`.
//!
//! What it does not do: other resources or verbs, selectors beyond `k=v` equality and
//! `metadata.name=`, bookmarks, chunked lists (`limit`/`continue`), protobuf, API discovery,
//! client certificates, exec/OIDC credential plugins, in-cluster service-account files.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use k8s_openapi::{
    List,
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodSpec, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta, Status, WatchEvent},
};
use slowpoke_testkit::TempDir;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

pub const TOKEN: &str = "kube-test-token";

/// A pod as the test wants it: where it runs, its containers' ids, its labels.
pub fn pod(ns: &str, name: &str, node: &str, labels: &[(&str, &str)], ids: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            uid: Some(format!("0a0b0c0d-0000-4000-8000-{:012x}", fnv(name))),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(
                ids.iter()
                    .enumerate()
                    .map(|(i, id)| ContainerStatus {
                        name: format!("c{i}"),
                        container_id: Some(format!("containerd://{id}")),
                        state: Some(ContainerState {
                            running: Some(ContainerStateRunning::default()),
                            ..ContainerState::default()
                        }),
                        ready: true,
                        ..ContainerStatus::default()
                    })
                    .collect(),
            ),
            ..PodStatus::default()
        }),
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3) & 0xffff_ffff_ffff
    })
}

#[derive(Clone)]
enum Live {
    Event(u64, &'static str, Box<Pod>),
    /// Ends every open watch (as the server does when a watch times out or it restarts).
    Close,
}

#[derive(Default)]
struct WorldState {
    pods: BTreeMap<(String, String), Pod>,
    rv: u64,
    /// Versions below this are compacted away: a watch from one gets `410 Gone`.
    compacted_below: u64,
    history: Vec<(u64, &'static str, Pod)>,
    /// Namespaces the coordinator's identity may not read (403).
    forbidden: Vec<String>,
    /// Requests seen, `METHOD path?query`.
    log: Vec<String>,
    gone_served: usize,
}

struct World {
    state: Mutex<WorldState>,
    live: tokio::sync::broadcast::Sender<Live>,
}

impl World {
    fn lock(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The server, its CA and a kubeconfig pointing at it; stopped on drop.
pub struct ApiServer {
    pub url: String,
    pub kubeconfig: PathBuf,
    pub dir: TempDir,
    world: Arc<World>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let dir = TempDir::new("kube-api");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "slowpoke test cluster CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca_cert.pem()).expect("writing ca.crt");

        // ring is the only crypto provider built in (as for the coordinator's client).
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let world = Arc::new(World {
            state: Mutex::new(WorldState {
                rv: 100,
                ..WorldState::default()
            }),
            live: tokio::sync::broadcast::channel(64).0,
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/pods", get(list_or_watch))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
            .fallback(|| async {
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
            .with_state(world.clone());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
                });
            }
        });
        let url = format!("https://{addr}");
        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, &ca_path, TOKEN);
        ApiServer {
            url,
            kubeconfig,
            dir,
            world,
            rt: Some(rt),
        }
    }

    /// A kubeconfig for this server with another token (a wrong one gets 401).
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{}", fnv(token)));
        write_kubeconfig(&path, &self.url, &self.dir.path().join("ca.crt"), token);
        path
    }

    /// Creates or replaces a pod (ADDED or MODIFIED), at a new version.
    pub fn put(&self, pod: Pod) -> u64 {
        let key = key_of(&pod);
        let mut w = self.world.lock();
        w.rv += 1;
        let rv = w.rv;
        let mut pod = pod;
        pod.metadata.resource_version = Some(rv.to_string());
        let kind = if w.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        w.pods.insert(key, pod.clone());
        w.history.push((rv, kind, pod.clone()));
        let _ = self.world.live.send(Live::Event(rv, kind, Box::new(pod)));
        rv
    }

    /// Deletes a pod (DELETED).
    pub fn delete(&self, ns: &str, name: &str) {
        let mut w = self.world.lock();
        let Some(mut pod) = w.pods.remove(&(ns.to_owned(), name.to_owned())) else {
            return;
        };
        w.rv += 1;
        let rv = w.rv;
        pod.metadata.resource_version = Some(rv.to_string());
        w.history.push((rv, "DELETED", pod.clone()));
        let _ = self
            .world
            .live
            .send(Live::Event(rv, "DELETED", Box::new(pod)));
    }

    /// Replaces a pod without telling any open watch, forgets every version before it and
    /// ends the open watches: the next watch, from an older version, gets `410 Gone`.
    pub fn change_behind_compaction(&self, pod: Pod) {
        let key = key_of(&pod);
        let mut w = self.world.lock();
        w.rv += 1;
        let rv = w.rv;
        let mut pod = pod;
        pod.metadata.resource_version = Some(rv.to_string());
        w.pods.insert(key, pod);
        w.history.clear();
        w.compacted_below = rv;
        let _ = self.world.live.send(Live::Close);
    }

    /// Requests in `namespace` get 403.
    pub fn forbid(&self, namespace: &str) {
        self.world.lock().forbidden.push(namespace.to_owned());
    }

    /// How many `410 Gone` answers were served.
    pub fn gone_served(&self) -> usize {
        self.world.lock().gone_served
    }

    pub fn requests(&self) -> Vec<String> {
        self.world.lock().log.clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn key_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

fn write_kubeconfig(path: &std::path::Path, url: &str, ca: &std::path::Path, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority: {}\nusers:\n- name: coordinator\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context:\n    cluster: test\n    user: coordinator\n\
         current-context: test\n",
        ca.display()
    );
    std::fs::write(path, text).expect("writing the kubeconfig");
}

/// A `Status` answer, as the API server sends for every failure.
fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = Status {
        code: Some(i32::from(code)),
        message: Some(message.to_owned()),
        reason: Some(reason.to_owned()),
        status: Some("Failure".into()),
        ..Status::default()
    };
    (
        StatusCode::from_u16(code).expect("status code"),
        [("content-type", "application/json")],
        serde_json::to_string(&body).expect("Status serializes"),
    )
        .into_response()
}

/// The bearer token and RBAC of every request; `None` when it may go on.
fn admit(w: &World, headers: &HeaderMap, ns: &str, verb: &str, what: String) -> Option<Response> {
    let mut s = w.lock();
    s.log.push(what);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {TOKEN}") {
        return Some(status(401, "Unauthorized", "Unauthorized"));
    }
    if s.forbidden.iter().any(|f| f == ns) {
        return Some(status(
            403,
            "Forbidden",
            &format!(
                "pods is forbidden: User \"system:serviceaccount:slowpoke:coordinator\" cannot \
                 {verb} resource \"pods\" in API group \"\" in the namespace \"{ns}\""
            ),
        ));
    }
    None
}

fn json(body: String) -> Response {
    ([("content-type", "application/json")], body).into_response()
}

/// The `k=v,k2=v2` label selector and `metadata.name=x` field selector of a list or watch.
fn matches(pod: &Pod, ns: &str, q: &HashMap<String, String>) -> bool {
    if pod.metadata.namespace.as_deref() != Some(ns) {
        return false;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let label_ok = q.get("labelSelector").is_none_or(|sel| {
        sel.split(',')
            .filter(|s| !s.is_empty())
            .all(|kv| match kv.split_once('=') {
                Some((k, v)) => labels.get(k).map(String::as_str) == Some(v),
                None => false,
            })
    });
    let field_ok = q.get("fieldSelector").is_none_or(|sel| {
        sel.strip_prefix("metadata.name=")
            .is_some_and(|n| pod.metadata.name.as_deref() == Some(n))
    });
    label_ok && field_ok
}

async fn get_pod(
    State(w): State<Arc<World>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = admit(&w, &headers, &ns, "get", format!("GET pods/{ns}/{name}")) {
        return r;
    }
    let found = w.lock().pods.get(&(ns.clone(), name.clone())).cloned();
    match found {
        Some(pod) => json(serde_json::to_string(&pod).expect("Pod serializes")),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn list_or_watch(
    State(w): State<Arc<World>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let watching = q.get("watch").is_some_and(|v| v == "true" || v == "1");
    let verb = if watching { "watch" } else { "list" };
    let mut query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    query.sort();
    if let Some(r) = admit(
        &w,
        &headers,
        &ns,
        verb,
        format!("{verb} pods/{ns}?{}", query.join("&")),
    ) {
        return r;
    }
    if watching {
        return watch(&w, &ns, &q);
    }
    let s = w.lock();
    let list = List::<Pod> {
        items: s
            .pods
            .values()
            .filter(|p| matches(p, &ns, &q))
            .cloned()
            .collect(),
        metadata: ListMeta {
            resource_version: Some(s.rv.to_string()),
            ..ListMeta::default()
        },
    };
    json(serde_json::to_string(&list).expect("PodList serializes"))
}

/// A watch: `410 Gone` for a compacted version, else the events after it, then live ones until
/// the server closes its watches or the client goes.
fn watch(w: &Arc<World>, ns: &str, q: &HashMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let line = |ev: &WatchEvent<Pod>| serde_json::to_string(ev).expect("event serializes") + "\n";
    {
        let mut s = w.lock();
        if from != 0 && from < s.compacted_below {
            s.gone_served += 1;
            let gone = WatchEvent::<Pod>::ErrorStatus(Status {
                code: Some(410),
                reason: Some("Expired".into()),
                message: Some(format!(
                    "too old resource version: {from} ({})",
                    s.compacted_below
                )),
                status: Some("Failure".into()),
                ..Status::default()
            });
            let _ = tx.send(line(&gone));
            drop(tx);
            return stream_body(rx);
        }
        for (rv, kind, pod) in &s.history {
            if *rv > from && matches(pod, ns, q) {
                let _ = tx.send(line(&event(kind, pod.clone())));
            }
        }
    }
    let mut live = w.live.subscribe();
    let (ns, q) = (ns.to_owned(), q.clone());
    tokio::spawn(async move {
        while let Ok(msg) = live.recv().await {
            match msg {
                Live::Close => break,
                Live::Event(rv, kind, pod) if rv > from && matches(&pod, &ns, &q) => {
                    if tx.send(line(&event(kind, *pod))).is_err() {
                        break;
                    }
                }
                Live::Event(..) => {}
            }
        }
    });
    stream_body(rx)
}

fn event(kind: &str, pod: Pod) -> WatchEvent<Pod> {
    match kind {
        "ADDED" => WatchEvent::Added(pod),
        "MODIFIED" => WatchEvent::Modified(pod),
        _ => WatchEvent::Deleted(pod),
    }
}

fn stream_body(rx: tokio::sync::mpsc::UnboundedReceiver<String>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(line), rx))
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

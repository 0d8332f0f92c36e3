//! One emulated service: the process behind the hidden `slowpoke-emu serve` subcommand.
//!
//! The runner binds the service and control sockets itself (so a port in use is reported before anything
//! starts, and ephemeral ports are known before any peer needs them) and hands them over as file descriptors
//! 3 and 4; the rest of the description arrives as one JSON [`ServeSpec`] on stdin. The process answers
//! `ready` on stdout once both listeners are being served.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::busy;
use crate::topology::{Endpoint, LIVE_SERVICE_KEYS, Mode, Sampling, Serving};

/// File descriptor of the service listener in a `serve` process.
pub const SERVICE_FD: i32 = 3;
/// File descriptor of the control listener in a `serve` process.
pub const CONTROL_FD: i32 = 4;

/// Everything a `serve` process needs besides its two listening sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeSpec {
    pub name: String,
    /// How many visits may do their per-visit work at once (the service's `threads`; changeable live).
    pub threads: u32,
    /// Worker threads of the runtime (the topology's `max_threads`, default `threads`); 0 = `threads`.
    #[serde(default)]
    pub max_threads: u32,
    pub sampling: Sampling,
    /// `async` or `thread-per-request` (the topology's `serving`).
    #[serde(default)]
    pub serving: Serving,
    pub endpoints: BTreeMap<String, Endpoint>,
    /// `host:port` of every service this one calls.
    pub peers: BTreeMap<String, String>,
}

/// Answer of `GET /stats` on a control port (monotonic counters since the process started).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStats {
    pub service: String,
    pub pid: u32,
    /// Current CPU parallelism (worker threads the visits' work may occupy at once; live changes included).
    pub threads: u32,
    /// Worker threads of the runtime: the most `threads` can be raised to live.
    #[serde(default)]
    pub max_threads: u32,
    /// CPU time of the whole process (ns, `CLOCK_PROCESS_CPUTIME_ID`).
    pub cpu_ns: u64,
    /// Visits per endpoint (counted when a request arrives).
    pub visits: BTreeMap<String, u64>,
    /// Visits that answered an error because a downstream call failed.
    pub errors: BTreeMap<String, u64>,
    /// Current settings per endpoint (live changes included).
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl ServiceStats {
    /// Visits summed over all endpoints.
    pub fn total_visits(&self) -> u64 {
        self.visits.values().sum()
    }
}

/// Body of `PUT /set` on a control port: `{"endpoint":"get","cpu_us":750}` (any of the endpoint keys,
/// several at once allowed) or `{"endpoint":"get","key":"cpu_us","value":750}`; a service setting leaves
/// `"endpoint"` out (or gives `"*"`): `{"threads":2}` or `{"key":"threads","value":2}`.
pub type SetRequest = serde_json::Map<String, serde_json::Value>;

/// Answer of a service-setting `PUT /set` (`{"threads":2}`): the service's settings after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSettings {
    pub service: String,
    pub threads: u32,
    pub max_threads: u32,
}

/// The service's live CPU parallelism: a visit holds a permit while it does its thread-occupying work
/// (`cpu_us`, `lock_us`, `sleep_us`), so at most `limit` visits do it at once, on a runtime of `max` worker
/// threads. The permit is taken and released within one poll of the visit's task (no await in between), so
/// with `limit == max` it is always free (one compare-and-swap, never a wait) and the service behaves as a
/// runtime of exactly `limit` workers.
///
/// Lowering the limit forgets free permits at once and records the rest as owed: the next visits to finish
/// forget their permit instead of returning it. Raising it first cancels debts, then adds permits. The
/// semaphore is fair (FIFO), so waiting visits are served in arrival order.
struct Gate {
    sem: Semaphore,
    /// Current limit; the lock also serialises changes.
    limit: Mutex<u32>,
    /// Permits still to be forgotten on release after a decrease.
    owed: AtomicU32,
    max: u32,
}

/// A visit's right to occupy a worker thread; returned (or forgotten, if owed) on drop.
struct Occupancy<'a> {
    permit: Option<SemaphorePermit<'a>>,
    owed: &'a AtomicU32,
}

impl Drop for Occupancy<'_> {
    fn drop(&mut self) {
        let Some(p) = self.permit.take() else { return };
        if self.owed.load(Relaxed) > 0
            && self
                .owed
                .fetch_update(Relaxed, Relaxed, |o| o.checked_sub(1))
                .is_ok()
        {
            p.forget();
        }
    }
}

impl Gate {
    fn new(limit: u32, max: u32) -> Gate {
        Gate {
            sem: Semaphore::new(limit as usize),
            limit: Mutex::new(limit),
            owed: AtomicU32::new(0),
            max,
        }
    }

    fn limit(&self) -> u32 {
        *self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a free worker-thread slot (immediate while fewer than `limit` visits work).
    async fn enter(&self) -> Occupancy<'_> {
        let permit = match self.sem.try_acquire() {
            Ok(p) => p,
            Err(_) => self.sem.acquire().await.expect("the gate is never closed"),
        };
        Occupancy {
            permit: Some(permit),
            owed: &self.owed,
        }
    }

    /// Sets the limit to `n` (1..=max); effective for the next visits to enter.
    fn set_limit(&self, n: u32) {
        let mut cur = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if n > *cur {
            let want = n - *cur;
            let mut cancelled = 0;
            let _ = self.owed.fetch_update(Relaxed, Relaxed, |o| {
                cancelled = o.min(want);
                Some(o - cancelled)
            });
            self.sem.add_permits((want - cancelled) as usize);
        } else if n < *cur {
            let k = (*cur - n) as usize;
            let gone = self.sem.forget_permits(k);
            self.owed.fetch_add((k - gone) as u32, Relaxed);
        }
        *cur = n;
    }
}

pub(crate) use crate::downstream::Body;

struct EndpointState {
    config: RwLock<Arc<Endpoint>>,
    visits: AtomicU64,
    errors: AtomicU64,
    /// Per call: target URI and the error-diffusion accumulator (32.32 fixed point).
    calls: Vec<(Uri, AtomicU64)>,
}

pub(crate) struct State {
    name: String,
    gate: Gate,
    sampling: Sampling,
    by_name: HashMap<String, usize>,
    names: Vec<String>,
    endpoints: Vec<EndpointState>,
    lock: Mutex<()>,
    /// The shared client of an `async` service (None: each worker thread has its own, see [`State::client`]).
    client: Option<Client<HttpConnector, Body>>,
    filler: Bytes,
}

thread_local! {
    /// A `thread-per-request` worker's own client: its pooled connections are driven by its own
    /// current-thread runtime, so a downstream call is sent from the thread that serves the request (a
    /// connection owned by another worker's runtime would only make progress while that worker runs).
    static WORKER_CLIENT: Client<HttpConnector, Body> = new_worker_client();
}

/// A worker's client drops a pooled connection idle this long itself, half of a
/// thread-per-request callee's idle close (`workers::IDLE_CLOSE`, which asserts it): reusing one
/// the callee is closing at that moment fails the call (`SendRequest`), and under an open loop a
/// worker's connection to a callee is often idle that long (41 % of requests failed at 150/s on
/// tail-small.json before).
pub(crate) const WORKER_POOL_IDLE: std::time::Duration = std::time::Duration::from_millis(25);

fn new_worker_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(WORKER_POOL_IDLE)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

fn new_client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

impl State {
    /// The client downstream calls go through: the service's, or this worker thread's own.
    fn client(&self) -> Client<HttpConnector, Body> {
        match &self.client {
            Some(c) => c.clone(),
            None => WORKER_CLIENT.with(Client::clone),
        }
    }

    fn body(&self, n: u64) -> Bytes {
        let n = n as usize;
        if n <= self.filler.len() {
            self.filler.slice(..n)
        } else {
            Bytes::from(vec![b'x'; n])
        }
    }

    /// Whether this visit makes call `call` of endpoint `ep` (probability `p`).
    fn decide(&self, ep: usize, call: usize, p: f64) -> bool {
        if p >= 1.0 {
            return true;
        }
        if p <= 0.0 {
            return false;
        }
        match self.sampling {
            Sampling::Random => rand::thread_rng().r#gen::<f64>() < p,
            Sampling::Dither => {
                let step = (p * 4_294_967_296.0) as u64;
                let prev = self.endpoints[ep].calls[call].1.fetch_add(step, Relaxed);
                (prev.wrapping_add(step) >> 32) != (prev >> 32)
            }
        }
    }
}

fn us_to_ns(us: f64) -> u64 {
    (us * 1000.0).round() as u64
}

/// The `async` model: serves `spec` on the two listeners with a runtime of `spec.max_threads` worker threads
/// (default `spec.threads`), of which at most `spec.threads` do visits' work at once. Never returns Ok.
pub(crate) fn serve_async(
    spec: &ServeSpec,
    service: StdListener,
    control: StdListener,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_threads(spec) as usize)
        .thread_name(format!("{}-worker", spec.name))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let state = Arc::new(build_state(spec)?);
    service.set_nonblocking(true)?;
    control.set_nonblocking(true)?;
    rt.block_on(async move {
        let svc = tokio::net::TcpListener::from_std(service)?;
        let ctl = tokio::net::TcpListener::from_std(control)?;
        let st = state.clone();
        let label = format!("service {}", spec.name);
        tokio::spawn(accept_loop(svc, label, move |req| {
            handle_visit(st.clone(), req)
        }));
        let st = state.clone();
        let label = format!("control port of service {}", spec.name);
        tokio::spawn(accept_loop(ctl, label, move |req| {
            handle_control(st.clone(), req)
        }));
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "ready")?;
            out.flush()?;
        }
        std::future::pending::<Result<()>>().await
    })
}

pub(crate) fn runtime_threads(spec: &ServeSpec) -> u32 {
    if spec.max_threads == 0 {
        spec.threads
    } else {
        spec.max_threads
    }
}

pub(crate) fn build_state(spec: &ServeSpec) -> Result<State> {
    let max = runtime_threads(spec);
    anyhow::ensure!(
        (1..=max).contains(&spec.threads),
        "service {}: threads = {} must be 1..={max} (max_threads)",
        spec.name,
        spec.threads
    );
    let client = spec.serving.is_async().then(new_client);
    let mut by_name = HashMap::new();
    let mut names = Vec::new();
    let mut endpoints = Vec::new();
    let mut max_body = 0u64;
    for (i, (name, ep)) in spec.endpoints.iter().enumerate() {
        by_name.insert(name.clone(), i);
        names.push(name.clone());
        max_body = max_body.max(ep.response_bytes);
        let mut calls = Vec::new();
        for c in &ep.calls {
            max_body = max_body.max(c.request_bytes);
            let addr = spec
                .peers
                .get(&c.service)
                .with_context(|| format!("no address for peer {}", c.service))?;
            let uri: Uri = format!("http://{addr}/{}", c.endpoint).parse()?;
            calls.push((uri, AtomicU64::new(1 << 31)));
        }
        endpoints.push(EndpointState {
            config: RwLock::new(Arc::new(ep.clone())),
            visits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            calls,
        });
    }
    Ok(State {
        name: spec.name.clone(),
        gate: Gate::new(spec.threads, max),
        sampling: spec.sampling,
        by_name,
        names,
        endpoints,
        lock: Mutex::new(()),
        client,
        filler: Bytes::from(vec![b'x'; max_body.max(65_536) as usize]),
    })
}

pub(crate) async fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    label: String,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("{label}: accept: {e}; retrying in 10 ms");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(h);
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[allow(clippy::unnecessary_wraps)] // the shape hyper's service_fn wants
fn reply(status: StatusCode, body: Bytes) -> Result<Response<Body>, Infallible> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    Ok(resp)
}

#[allow(clippy::unnecessary_wraps)] // the shape hyper's service_fn wants
fn json_reply<T: Serialize>(status: StatusCode, v: &T) -> Result<Response<Body>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

pub(crate) async fn handle_visit(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let name = req.uri().path().trim_start_matches('/');
    let Some(&idx) = st.by_name.get(name) else {
        return reply(
            StatusCode::NOT_FOUND,
            Bytes::from(format!("{}: no endpoint /{name}\n", st.name)),
        );
    };
    // Read the whole request before working, like a real handler.
    if req.into_body().collect().await.is_err() {
        return reply(StatusCode::BAD_REQUEST, Bytes::new());
    }
    let ep = &st.endpoints[idx];
    ep.visits.fetch_add(1, Relaxed);
    let cfg = ep.config.read().expect("config lock").clone();
    {
        // The work that occupies a worker thread, at most `threads` visits at once. No await until the end of
        // this block: the permit never outlives one poll, nor is it held over waits and downstream calls.
        let _slot = st.gate.enter().await;
        busy::burn(us_to_ns(
            cfg.cpu_us * cfg.cpu_dist.factor(&mut rand::thread_rng()),
        ));
        if cfg.lock_us > 0.0 {
            let _guard = st
                .lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            busy::burn(us_to_ns(cfg.lock_us));
        }
        if cfg.sleep_us > 0.0 {
            std::thread::sleep(Duration::from_nanos(us_to_ns(cfg.sleep_us)));
        }
    }
    if cfg.wait_us > 0.0 {
        tokio::time::sleep(Duration::from_nanos(us_to_ns(cfg.wait_us))).await;
    }
    let mut ok = true;
    match cfg.mode {
        Mode::Sync => {
            for (i, call) in cfg.calls.iter().enumerate() {
                if st.decide(idx, i, call.probability) {
                    ok &= call_downstream(&st, &ep.calls[i].0, call.request_bytes).await;
                }
            }
        }
        Mode::Async => {
            let mut set = tokio::task::JoinSet::new();
            for (i, call) in cfg.calls.iter().enumerate() {
                if st.decide(idx, i, call.probability) {
                    let st2 = st.clone();
                    let uri = ep.calls[i].0.clone();
                    let n = call.request_bytes;
                    set.spawn(async move { call_downstream(&st2, &uri, n).await });
                }
            }
            while let Some(r) = set.join_next().await {
                ok &= r.unwrap_or(false);
            }
        }
    }
    if ok {
        reply(StatusCode::OK, st.body(cfg.response_bytes))
    } else {
        ep.errors.fetch_add(1, Relaxed);
        reply(
            StatusCode::BAD_GATEWAY,
            Bytes::from_static(b"downstream call failed\n"),
        )
    }
}

async fn call_downstream(st: &State, uri: &Uri, request_bytes: u64) -> bool {
    crate::downstream::call(&st.client(), uri, &st.body(request_bytes), &st.name).await
}

fn stats(st: &State) -> ServiceStats {
    let mut visits = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for (name, ep) in st.names.iter().zip(&st.endpoints) {
        visits.insert(name.clone(), ep.visits.load(Relaxed));
        errors.insert(name.clone(), ep.errors.load(Relaxed));
        endpoints.insert(
            name.clone(),
            (**ep.config.read().expect("config lock")).clone(),
        );
    }
    ServiceStats {
        service: st.name.clone(),
        pid: std::process::id(),
        threads: st.gate.limit(),
        max_threads: st.gate.max,
        cpu_ns: busy::process_cpu_ns() as u64,
        visits,
        errors,
        endpoints,
    }
}

/// What a `PUT /set` changed.
enum Applied {
    Endpoint(Endpoint),
    Service(ServiceSettings),
}

fn apply_set(st: &State, body: &[u8]) -> Result<Applied, String> {
    let req: SetRequest =
        serde_json::from_slice(body).map_err(|e| format!("body is not a JSON object: {e}"))?;
    let endpoint = match req.get("endpoint") {
        None => "*",
        Some(v) => v
            .as_str()
            .ok_or("\"endpoint\" must be a string (\"*\" or absent for a service setting)")?,
    };
    let mut changes = Vec::new();
    if let Some(key) = req.get("key") {
        let key = key.as_str().ok_or("\"key\" must be a string")?;
        let value = req
            .get("value")
            .and_then(serde_json::Value::as_f64)
            .ok_or("\"value\" must be a number")?;
        changes.push((key.to_owned(), value));
    }
    for (k, v) in &req {
        if matches!(k.as_str(), "endpoint" | "key" | "value") {
            continue;
        }
        let value = v
            .as_f64()
            .ok_or_else(|| format!("{k} must be a number, not {v}"))?;
        changes.push((k.clone(), value));
    }
    if changes.is_empty() {
        return Err(
            "nothing to change: give e.g. {\"endpoint\":\"get\",\"cpu_us\":750} or {\"threads\":2}"
                .into(),
        );
    }
    if endpoint == "*" {
        return apply_service_set(st, &changes).map(Applied::Service);
    }
    let &idx = st
        .by_name
        .get(endpoint)
        .ok_or_else(|| format!("service {} has no endpoint {endpoint:?}", st.name))?;
    if let Some((k, _)) = changes
        .iter()
        .find(|(k, _)| LIVE_SERVICE_KEYS.contains(&k.as_str()))
    {
        return Err(format!(
            "{k} is a setting of service {}, not of endpoint {endpoint}: leave \"endpoint\" out (or give \"*\")",
            st.name
        ));
    }
    let ep = &st.endpoints[idx];
    let mut guard = ep.config.write().expect("config lock");
    let mut next = (**guard).clone();
    for (k, v) in changes {
        next.set(&k, v)?;
    }
    *guard = Arc::new(next.clone());
    Ok(Applied::Endpoint(next))
}

/// Service settings (`threads`): every change is checked before any is applied.
fn apply_service_set(st: &State, changes: &[(String, f64)]) -> Result<ServiceSettings, String> {
    let max = st.gate.max;
    let mut threads = None;
    for (k, v) in changes {
        match k.as_str() {
            "threads" => {
                if !(v.fract() == 0.0 && *v >= 1.0 && *v <= f64::from(max)) {
                    return Err(format!(
                        "service {}: threads = {v}: must be an integer in 1..={max} (max_threads = {max}; \
                         a larger max_threads needs a restart: run --set {}.max_threads=N)",
                        st.name, st.name
                    ));
                }
                threads = Some(*v as u32);
            }
            "max_threads" => {
                return Err(format!(
                    "service {}: max_threads = {v}: the runtime's worker count is fixed at start; \
                     restart with run --set {}.max_threads=N",
                    st.name, st.name
                ));
            }
            other => {
                return Err(format!(
                    "service {}: unknown service setting {other:?} (live service settings: {}; endpoint \
                     settings need \"endpoint\")",
                    st.name,
                    LIVE_SERVICE_KEYS.join(", ")
                ));
            }
        }
    }
    if let Some(n) = threads {
        st.gate.set_limit(n);
    }
    Ok(ServiceSettings {
        service: st.name.clone(),
        threads: st.gate.limit(),
        max_threads: max,
    })
}

pub(crate) async fn handle_control(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, Bytes::new()),
    };
    match (method, path.as_str()) {
        (Method::GET, "/stats") => json_reply(StatusCode::OK, &stats(&st)),
        (Method::GET, "/health") => reply(StatusCode::OK, Bytes::from_static(b"ok\n")),
        (Method::PUT | Method::POST, "/set") => match apply_set(&st, &body) {
            Ok(Applied::Endpoint(ep)) => json_reply(StatusCode::OK, &ep),
            Ok(Applied::Service(s)) => json_reply(StatusCode::OK, &s),
            Err(e) => json_reply(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
        },
        (_, p) => reply(
            StatusCode::NOT_FOUND,
            Bytes::from(format!("no control route {p}; try GET /stats, PUT /set\n")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gate_limit_changes_keep_the_permit_count_exact() {
        let gate = Gate::new(2, 4);
        let first = gate.enter().await;
        let second = gate.enter().await;
        assert!(gate.sem.try_acquire().is_err(), "2 permits only");
        // Lowered while both are in use: one is owed and forgotten when its visit ends.
        gate.set_limit(1);
        assert_eq!(gate.owed.load(Relaxed), 1);
        drop(first);
        assert_eq!(gate.sem.available_permits(), 0);
        drop(second);
        assert_eq!(gate.sem.available_permits(), 1);
        assert_eq!(gate.limit(), 1);
        // Raised: permits added.
        gate.set_limit(3);
        assert_eq!(gate.sem.available_permits(), 3);
        // Lowered with free permits: forgotten at once.
        let third = gate.enter().await;
        gate.set_limit(1);
        assert_eq!(
            (gate.sem.available_permits(), gate.owed.load(Relaxed)),
            (0, 0)
        );
        drop(third);
        assert_eq!(gate.sem.available_permits(), 1);
        // A raise cancels debts before adding permits.
        gate.set_limit(3);
        let (v1, v2, v3) = (gate.enter().await, gate.enter().await, gate.enter().await);
        gate.set_limit(1);
        assert_eq!(gate.owed.load(Relaxed), 2);
        gate.set_limit(2);
        assert_eq!(
            (gate.sem.available_permits(), gate.owed.load(Relaxed)),
            (0, 1)
        );
        drop((v1, v2, v3));
        assert_eq!(
            (gate.sem.available_permits(), gate.owed.load(Relaxed)),
            (2, 0)
        );
        assert_eq!(gate.limit(), 2);
    }

    #[tokio::test]
    async fn a_waiting_visit_enters_when_a_permit_returns_or_the_limit_rises() {
        let g = Arc::new(Gate::new(1, 2));
        let held = g.enter().await;
        let g2 = g.clone();
        let waiter = tokio::spawn(async move {
            let _slot = g2.enter().await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "entered past the limit");
        g.set_limit(2);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("raising the limit lets the waiter in")
            .expect("task");
        drop(held);
        assert_eq!(g.sem.available_permits(), 2);
    }
}

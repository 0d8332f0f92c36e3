//! The topology file: which services exist, what each endpoint costs and whom it calls.
//!
//! Times are in microseconds (`f64`, fractional allowed, never negative), sizes in bytes. Every field
//! except `entry`, `services` and a service's `endpoints` has a default, so a minimal file stays short.
//! Loading reports problems with the file name, the JSON path of the field and the offending value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A whole emulated application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Free-form name (shown in logs).
    #[serde(default)]
    pub name: String,
    /// Generator family that produced the file (informational; `dynamic-cycle` also allows cycles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Whether calls may form a cycle (they must then be probabilistic so the expected visits stay finite).
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_cycles: bool,
    /// How probabilistic calls are decided.
    #[serde(default)]
    pub sampling: Sampling,
    /// The endpoint end-to-end requests enter through.
    pub entry: EndpointRef,
    /// Services by name (`[A-Za-z0-9_-]+`).
    pub services: BTreeMap<String, Service>,
    /// What the generator expects (informational; recomputed by [`expected_visit_ratios`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Expected>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde hands a reference
fn is_false(b: &bool) -> bool {
    !*b
}

/// Decision rule for calls whose `probability` is below 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampling {
    /// Error diffusion per call site: over any n visits the call happens `round(n·p)` times (±1). Which requests
    /// make the call still varies, but measured visit ratios carry no sampling noise.
    #[default]
    Dither,
    /// An independent random draw per visit (binomial noise in the visit ratios).
    Random,
}

/// One service: an OS process with its own port and its own tokio runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Worker threads = the service's CPU parallelism: at most this many visits do their per-visit work
    /// (`cpu_us`, `lock_us`, `sleep_us`) at once. Changeable live, within 1..=[`Service::runtime_threads`].
    #[serde(default = "one")]
    pub threads: u32,
    /// Worker threads of the service's tokio runtime (the most `threads` can be raised to live); absent =
    /// `threads`, which makes the runtime exactly `threads` wide as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_threads: Option<u32>,
    /// Fixed service port (optional; otherwise `--base-port` + index or an ephemeral port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Endpoints by name; endpoint `x` is served at path `/x`.
    pub endpoints: BTreeMap<String, Endpoint>,
}

fn one() -> u32 {
    1
}

impl Service {
    /// Worker threads of the runtime: `max_threads`, or `threads` when it is absent.
    pub fn runtime_threads(&self) -> u32 {
        self.max_threads.unwrap_or(self.threads)
    }
}

/// The work one visit to an endpoint does, in this order: `cpu_us`, `lock_us` (under the process-wide mutex),
/// `sleep_us` (blocking the worker thread), `wait_us` (non-blocking), then the downstream calls, then the reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// CPU time burnt per visit (µs of the worker thread's CPU clock).
    #[serde(default)]
    pub cpu_us: f64,
    /// CPU time burnt per visit while holding the process-wide mutex (µs; lock contention).
    #[serde(default)]
    pub lock_us: f64,
    /// Blocking sleep of the worker thread per visit (µs; synchronous I/O wait: the thread is occupied).
    #[serde(default)]
    pub sleep_us: f64,
    /// Non-blocking wait per visit (µs; asynchronous I/O wait: the thread serves other requests meanwhile).
    #[serde(default)]
    pub wait_us: f64,
    /// Size of the response body (bytes).
    #[serde(default)]
    pub response_bytes: u64,
    /// `sync`: downstream calls one after the other; `async`: all at once, then wait for all.
    #[serde(default)]
    pub mode: Mode,
    /// Downstream calls made per visit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Call>,
}

/// Sequential or parallel fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Sync,
    Async,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(format!("mode must be sync or async, not {other:?}")),
        }
    }
}

/// One downstream call of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub service: String,
    pub endpoint: String,
    /// Probability that a visit makes this call (0..=1).
    #[serde(default = "one_f64")]
    pub probability: f64,
    /// Size of the request body sent (bytes).
    #[serde(default)]
    pub request_bytes: u64,
}

fn one_f64() -> f64 {
    1.0
}

/// `{"service": "...", "endpoint": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointRef {
    pub service: String,
    pub endpoint: String,
}

/// What the generator predicts; informational only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    /// The service with the largest CPU demand per end-to-end request relative to its threads.
    pub bottleneck: String,
    /// Visits per end-to-end request, per service.
    pub visit_ratios: BTreeMap<String, f64>,
    /// Per service: busiest-resource demand per end-to-end request (µs), see [`service_demands_us`].
    #[serde(default)]
    pub demand_us: BTreeMap<String, f64>,
}

/// A problem with a topology, naming the file, the field (JSON path) and the value.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: field `{field}`: {message}")]
    Parse {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: field `{field}` = {value}: {reason}")]
    Invalid {
        file: String,
        field: String,
        value: String,
        reason: String,
    },
}

/// Reads, parses and validates a topology file.
pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
        file: file.clone(),
        source,
    })?;
    let topo = parse(&text, &file)?;
    topo.validate_named(&file)?;
    Ok(topo)
}

/// Parses topology JSON (no validation); `file` only labels errors.
pub fn parse(text: &str, file: &str) -> Result<Topology, TopologyError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        TopologyError::Parse {
            file: file.to_owned(),
            field,
            message: e.into_inner().to_string(),
        }
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Topology {
    /// Checks names, references, numbers and cycles; see [`Topology::validate_named`].
    pub fn validate(&self) -> Result<(), TopologyError> {
        self.validate_named("<topology>")
    }

    /// [`Topology::validate`] with errors labelled by `file`.
    #[expect(
        clippy::too_many_lines,
        reason = "one check per field of the file, in the file's order, each with its error"
    )]
    pub fn validate_named(&self, file: &str) -> Result<(), TopologyError> {
        let bad = |field: String, value: String, reason: &str| TopologyError::Invalid {
            file: file.to_owned(),
            field,
            value,
            reason: reason.to_owned(),
        };
        if self.services.is_empty() {
            return Err(bad(
                "services".into(),
                "{}".into(),
                "at least one service is required",
            ));
        }
        let mut ports = BTreeMap::new();
        for (sname, svc) in &self.services {
            let sfield = format!("services.{sname}");
            if !valid_name(sname) {
                return Err(bad(
                    sfield,
                    format!("{sname:?}"),
                    "service names may only use A-Z a-z 0-9 _ -",
                ));
            }
            if let Some(m) = svc.max_threads
                && (m == 0 || m > 256)
            {
                return Err(bad(
                    format!("{sfield}.max_threads"),
                    m.to_string(),
                    "must be 1..=256",
                ));
            }
            if svc.threads == 0 || svc.threads > svc.runtime_threads().min(256) {
                return Err(bad(
                    format!("{sfield}.threads"),
                    svc.threads.to_string(),
                    &match svc.max_threads {
                        Some(m) => format!("must be 1..={m} (max_threads)"),
                        None => "must be 1..=256".to_owned(),
                    },
                ));
            }
            if let Some(p) = svc.port {
                if p == 0 {
                    return Err(bad(
                        format!("{sfield}.port"),
                        "0".into(),
                        "must be 1..=65535 (omit it for an ephemeral port)",
                    ));
                }
                if let Some(other) = ports.insert(p, sname.clone()) {
                    return Err(bad(
                        format!("{sfield}.port"),
                        p.to_string(),
                        &format!("already used by service {other}"),
                    ));
                }
            }
            if svc.endpoints.is_empty() {
                return Err(bad(
                    format!("{sfield}.endpoints"),
                    "{}".into(),
                    "at least one endpoint is required",
                ));
            }
            for (ename, ep) in &svc.endpoints {
                let efield = format!("{sfield}.endpoints.{ename}");
                if !valid_name(ename) {
                    return Err(bad(
                        efield,
                        format!("{ename:?}"),
                        "endpoint names may only use A-Z a-z 0-9 _ -",
                    ));
                }
                for (key, v) in [
                    ("cpu_us", ep.cpu_us),
                    ("lock_us", ep.lock_us),
                    ("sleep_us", ep.sleep_us),
                    ("wait_us", ep.wait_us),
                ] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(bad(
                            format!("{efield}.{key}"),
                            v.to_string(),
                            "must be a finite number >= 0 (µs)",
                        ));
                    }
                    if v > 60e6 {
                        return Err(bad(
                            format!("{efield}.{key}"),
                            v.to_string(),
                            "more than a minute per visit",
                        ));
                    }
                }
                for (i, call) in ep.calls.iter().enumerate() {
                    let cfield = format!("{efield}.calls[{i}]");
                    let Some(target) = self.services.get(&call.service) else {
                        return Err(bad(
                            format!("{cfield}.service"),
                            format!("{:?}", call.service),
                            "unknown service",
                        ));
                    };
                    if !target.endpoints.contains_key(&call.endpoint) {
                        return Err(bad(
                            format!("{cfield}.endpoint"),
                            format!("{:?}", call.endpoint),
                            &format!("service {} has no such endpoint", call.service),
                        ));
                    }
                    if !(0.0..=1.0).contains(&call.probability) {
                        return Err(bad(
                            format!("{cfield}.probability"),
                            call.probability.to_string(),
                            "must be within 0..=1",
                        ));
                    }
                }
            }
        }
        let Some(entry_svc) = self.services.get(&self.entry.service) else {
            return Err(bad(
                "entry.service".into(),
                format!("{:?}", self.entry.service),
                "unknown service",
            ));
        };
        if !entry_svc.endpoints.contains_key(&self.entry.endpoint) {
            return Err(bad(
                "entry.endpoint".into(),
                format!("{:?}", self.entry.endpoint),
                "unknown endpoint of the entry service",
            ));
        }
        let allow_cycles = self.allow_cycles || self.family.as_deref() == Some("dynamic-cycle");
        if let Some(cycle) = self.find_cycle() {
            let path = cycle
                .iter()
                .map(|r| format!("{}.{}", r.service, r.endpoint))
                .collect::<Vec<_>>()
                .join(" -> ");
            if !allow_cycles {
                return Err(bad(
                    "services.*.endpoints.*.calls".into(),
                    path,
                    "calls form a cycle; set \"allow_cycles\": true (with probabilities < 1) if that is intended",
                ));
            }
        }
        if let Err(reason) = endpoint_visit_ratios(self) {
            return Err(bad(
                "services.*.endpoints.*.calls".into(),
                "(call graph)".into(),
                &reason,
            ));
        }
        Ok(())
    }

    /// A cycle of endpoint calls (probability > 0), if any, as the list of endpoints on it.
    pub fn find_cycle(&self) -> Option<Vec<EndpointRef>> {
        // Iterative DFS with colours over endpoints.
        let nodes: Vec<EndpointRef> = self.endpoint_refs();
        let index: BTreeMap<&EndpointRef, usize> =
            nodes.iter().enumerate().map(|(i, r)| (r, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|r| {
                self.services[&r.service].endpoints[&r.endpoint]
                    .calls
                    .iter()
                    .filter(|c| c.probability > 0.0)
                    .filter_map(|c| {
                        index
                            .get(&EndpointRef {
                                service: c.service.clone(),
                                endpoint: c.endpoint.clone(),
                            })
                            .copied()
                    })
                    .collect()
            })
            .collect();
        let mut colour = vec![0u8; nodes.len()];
        for start in 0..nodes.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                if *next < succ[n].len() {
                    let m = succ[n][*next];
                    *next += 1;
                    match colour[m] {
                        0 => {
                            colour[m] = 1;
                            stack.push((m, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|&(k, _)| k == m).unwrap_or(0);
                            return Some(
                                stack[pos..]
                                    .iter()
                                    .map(|&(k, _)| nodes[k].clone())
                                    .chain([nodes[m].clone()])
                                    .collect(),
                            );
                        }
                        _ => {}
                    }
                } else {
                    colour[n] = 2;
                    stack.pop();
                }
            }
        }
        None
    }

    /// Every endpoint, in (service, endpoint) order.
    pub fn endpoint_refs(&self) -> Vec<EndpointRef> {
        self.services
            .iter()
            .flat_map(|(s, svc)| {
                svc.endpoints.keys().map(move |e| EndpointRef {
                    service: s.clone(),
                    endpoint: e.clone(),
                })
            })
            .collect()
    }

    /// Applies one `--set` change (see [`Set`]); the topology is re-validated by the caller.
    pub fn apply(&mut self, set: &Set) -> Result<(), String> {
        let svc = self
            .services
            .get_mut(&set.service)
            .ok_or_else(|| format!("--set {set}: unknown service {:?}", set.service))?;
        match &set.endpoint {
            None => {
                if !SERVICE_KEYS.contains(&set.key.as_str()) {
                    return Err(format!(
                        "--set {set}: unknown service setting {:?} (service settings: {})",
                        set.key,
                        SERVICE_KEYS.join(", ")
                    ));
                }
                if set.value < 1.0 || set.value.fract() != 0.0 || set.value > 256.0 {
                    return Err(format!(
                        "--set {set}: {} must be an integer 1..=256",
                        set.key
                    ));
                }
                let n = set.value as u32;
                if set.key == "threads" {
                    svc.threads = n;
                } else {
                    svc.max_threads = Some(n);
                }
                Ok(())
            }
            Some(ename) => {
                let ep = svc.endpoints.get_mut(ename).ok_or_else(|| {
                    format!(
                        "--set {set}: service {} has no endpoint {ename:?}",
                        set.service
                    )
                })?;
                ep.set(&set.key, set.value)
                    .map_err(|e| format!("--set {set}: {e}"))
            }
        }
    }
}

/// Service settings that `--set` changes before the start (`threads` also changes live, see
/// [`LIVE_SERVICE_KEYS`]).
pub const SERVICE_KEYS: &[&str] = &["threads", "max_threads"];

/// Service settings that change live through the control port (`threads` within 1..=`max_threads`).
pub const LIVE_SERVICE_KEYS: &[&str] = &["threads"];

/// Endpoint settings that can be changed by `--set` and live through the control port.
pub const ENDPOINT_KEYS: &[&str] = &["cpu_us", "lock_us", "sleep_us", "wait_us", "response_bytes"];

impl Endpoint {
    /// Changes one numeric setting (one of [`ENDPOINT_KEYS`]).
    pub fn set(&mut self, key: &str, value: f64) -> Result<(), String> {
        if !value.is_finite() || value < 0.0 {
            return Err(format!("{key} must be a finite number >= 0, not {value}"));
        }
        match key {
            "cpu_us" => self.cpu_us = value,
            "lock_us" => self.lock_us = value,
            "sleep_us" => self.sleep_us = value,
            "wait_us" => self.wait_us = value,
            "response_bytes" => self.response_bytes = value as u64,
            other => {
                return Err(format!(
                    "unknown endpoint setting {other:?} (one of {})",
                    ENDPOINT_KEYS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// One change: `service.endpoint.key=value` (endpoint setting) or `service.key=value` (service setting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Set {
    pub service: String,
    pub endpoint: Option<String>,
    pub key: String,
    pub value: f64,
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Some(e) => write!(f, "{}.{}.{}={}", self.service, e, self.key, self.value),
            None => write!(f, "{}.{}={}", self.service, self.key, self.value),
        }
    }
}

impl FromStr for Set {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (lhs, rhs) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected service[.endpoint].key=value"))?;
        let value: f64 = rhs
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: value {rhs:?} is not a number"))?;
        let parts: Vec<&str> = lhs.trim().split('.').collect();
        let (service, endpoint, key) = match parts.as_slice() {
            [svc, key] => ((*svc).to_owned(), None, (*key).to_owned()),
            [svc, ep, key] => ((*svc).to_owned(), Some((*ep).to_owned()), (*key).to_owned()),
            _ => {
                return Err(format!(
                    "{s:?}: expected service.endpoint.key=value or service.key=value"
                ));
            }
        };
        Ok(Set {
            service,
            endpoint,
            key,
            value,
        })
    }
}

/// Expected visits per end-to-end request of every endpoint (entry endpoint = 1 + calls back into it).
/// Errors when the calls form a cycle whose expected visits diverge.
pub fn endpoint_visit_ratios(topo: &Topology) -> Result<BTreeMap<EndpointRef, f64>, String> {
    let nodes = topo.endpoint_refs();
    let index: BTreeMap<&EndpointRef, usize> =
        nodes.iter().enumerate().map(|(i, r)| (r, i)).collect();
    // Edges (from, to, expected calls per visit).
    let mut edges = Vec::new();
    for (i, r) in nodes.iter().enumerate() {
        for c in &topo.services[&r.service].endpoints[&r.endpoint].calls {
            let to = EndpointRef {
                service: c.service.clone(),
                endpoint: c.endpoint.clone(),
            };
            if let Some(&j) = index.get(&to) {
                edges.push((i, j, c.probability));
            }
        }
    }
    let mut base = vec![0.0; nodes.len()];
    if let Some(&e) = index.get(&topo.entry) {
        base[e] = 1.0;
    }
    // Fixed-point iteration v = base + Mᵀv: exact after `depth` rounds for DAGs, geometric convergence for cycles
    // with probabilities < 1, divergence otherwise.
    let mut v = base.clone();
    for _ in 0..1_000_000 {
        let mut next = base.clone();
        for &(i, j, p) in &edges {
            next[j] += p * v[i];
        }
        let diff = next
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let big = next.iter().copied().fold(0.0, f64::max);
        v = next;
        if diff <= 4.0 * f64::EPSILON * big.max(1.0) {
            return Ok(nodes.into_iter().zip(v).collect());
        }
        if big > 1e9 {
            break;
        }
    }
    Err(
        "the expected number of visits per request diverges (a cycle whose calls are too likely)"
            .into(),
    )
}

/// Expected visits per end-to-end request of every service (`r_s`; 0 for unreachable services).
/// Panics only on a topology that failed [`Topology::validate`].
pub fn expected_visit_ratios(topo: &Topology) -> BTreeMap<String, f64> {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    let mut out: BTreeMap<String, f64> = topo.services.keys().map(|s| (s.clone(), 0.0)).collect();
    for (r, v) in eps {
        *out.get_mut(&r.service).expect("known service") += v;
    }
    out
}

/// Per service: the demand on its busiest resource per end-to-end request, in µs — the larger of
/// (CPU + lock + blocking sleep)·visits / threads (worker threads busy) and lock·visits (the mutex is one).
/// By the bottleneck law the service with the largest demand limits throughput to 1/demand (if the machine has
/// enough cores for everyone).
pub fn service_demands_us(topo: &Topology) -> BTreeMap<String, f64> {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    let mut busy: BTreeMap<String, f64> = BTreeMap::new();
    let mut lock: BTreeMap<String, f64> = BTreeMap::new();
    for (r, v) in &eps {
        let ep = &topo.services[&r.service].endpoints[&r.endpoint];
        *busy.entry(r.service.clone()).or_default() += v * (ep.cpu_us + ep.lock_us + ep.sleep_us);
        *lock.entry(r.service.clone()).or_default() += v * ep.lock_us;
    }
    topo.services
        .iter()
        .map(|(s, svc)| {
            let b = busy.get(s).copied().unwrap_or(0.0) / f64::from(svc.threads);
            (s.clone(), b.max(lock.get(s).copied().unwrap_or(0.0)))
        })
        .collect()
}

/// The service expected to limit throughput (largest [`service_demands_us`]) and its demand in µs.
pub fn expected_bottleneck(topo: &Topology) -> Option<(String, f64)> {
    service_demands_us(topo)
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// CPU time per end-to-end request summed over all services (µs; configured work only, no emulator overhead).
pub fn total_cpu_us_per_request(topo: &Topology) -> f64 {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    eps.iter()
        .map(|(r, v)| {
            let ep = &topo.services[&r.service].endpoints[&r.endpoint];
            v * (ep.cpu_us + ep.lock_us)
        })
        .sum()
}

/// Fills `expected` from the topology itself.
pub fn with_expectations(mut topo: Topology) -> Topology {
    let visit_ratios = expected_visit_ratios(&topo);
    let demand_us = service_demands_us(&topo);
    let bottleneck = expected_bottleneck(&topo).map(|b| b.0).unwrap_or_default();
    topo.expected = Some(Expected {
        bottleneck,
        visit_ratios,
        demand_us,
    });
    topo
}

/// Writes a topology as pretty JSON.
pub fn save(topo: &Topology, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut text = serde_json::to_string_pretty(topo)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Resolves a topology argument: a path to load, or an already-built topology.
#[derive(Debug, Clone)]
pub enum TopologySource {
    File(PathBuf),
    Inline(Topology),
}

impl From<&Path> for TopologySource {
    fn from(p: &Path) -> Self {
        TopologySource::File(p.to_owned())
    }
}
impl From<PathBuf> for TopologySource {
    fn from(p: PathBuf) -> Self {
        TopologySource::File(p)
    }
}
impl From<&str> for TopologySource {
    fn from(p: &str) -> Self {
        TopologySource::File(PathBuf::from(p))
    }
}
impl From<Topology> for TopologySource {
    fn from(t: Topology) -> Self {
        TopologySource::Inline(t)
    }
}
impl From<&Topology> for TopologySource {
    fn from(t: &Topology) -> Self {
        TopologySource::Inline(t.clone())
    }
}

/// The set of services reachable from the entry (others never see a request).
pub fn reachable_services(topo: &Topology) -> BTreeSet<String> {
    expected_visit_ratios(topo)
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(s, _)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Topology {
        parse(
            r#"{"entry":{"service":"a","endpoint":"x"},"services":{
              "a":{"threads":2,"endpoints":{"x":{"cpu_us":10,"calls":[{"service":"b","endpoint":"y"},{"service":"b","endpoint":"y","probability":0.5}]}}},
              "b":{"endpoints":{"y":{"cpu_us":100}}}}}"#,
            "t.json",
        )
        .unwrap()
    }

    #[test]
    fn ratios_and_bottleneck() {
        let t = chain();
        t.validate().unwrap();
        let r = expected_visit_ratios(&t);
        assert!((r["a"] - 1.0).abs() < 1e-12);
        assert!((r["b"] - 1.5).abs() < 1e-12);
        let (b, d) = expected_bottleneck(&t).unwrap();
        assert_eq!(b, "b");
        assert!((d - 150.0).abs() < 1e-9);
    }

    #[test]
    fn cycle_rules() {
        let mut t = chain();
        t.services
            .get_mut("b")
            .unwrap()
            .endpoints
            .get_mut("y")
            .unwrap()
            .calls
            .push(Call {
                service: "a".into(),
                endpoint: "x".into(),
                probability: 0.5,
                request_bytes: 0,
            });
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        t.allow_cycles = true;
        // a = 1 + 0.5 b ; b = 1.5 a  => a = 1/(1-0.75) = 4
        t.validate().unwrap();
        let r = expected_visit_ratios(&t);
        assert!((r["a"] - 4.0).abs() < 1e-9, "{r:?}");
        t.services
            .get_mut("b")
            .unwrap()
            .endpoints
            .get_mut("y")
            .unwrap()
            .calls[0]
            .probability = 1.0;
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("diverges"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"cpu_us":"lots"}}}}}"#, "f.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.json") && e.contains("services.a.endpoints.x.cpu_us"),
            "{e}"
        );
        let t = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"cpu_us":-3}}}}}"#, "f.json").unwrap();
        let e = t.validate_named("f.json").unwrap_err().to_string();
        assert!(
            e.contains("f.json") && e.contains("services.a.endpoints.x.cpu_us") && e.contains("-3"),
            "{e}"
        );
        let t = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"calls":[{"service":"zz","endpoint":"q"}]}}}}}"#, "f.json").unwrap();
        let e = t.validate_named("f.json").unwrap_err().to_string();
        assert!(e.contains("calls[0].service") && e.contains("zz"), "{e}");
    }

    #[test]
    fn set_parsing() {
        let s: Set = "cart.get.cpu_us=750".parse().unwrap();
        assert_eq!(
            s,
            Set {
                service: "cart".into(),
                endpoint: Some("get".into()),
                key: "cpu_us".into(),
                value: 750.0
            }
        );
        let s: Set = "cart.threads=2".parse().unwrap();
        assert_eq!(s.endpoint, None);
        assert!("cart=1".parse::<Set>().is_err());
        assert!("cart.get.cpu_us=abc".parse::<Set>().is_err());
        let mut t = chain();
        t.apply(&"b.y.cpu_us=7".parse().unwrap()).unwrap();
        assert!((t.services["b"].endpoints["y"].cpu_us - 7.0).abs() < 1e-12);
        assert!(t.apply(&"b.y.bogus=7".parse().unwrap()).is_err());
        assert!(t.apply(&"b.threads=0".parse().unwrap()).is_err());
    }

    #[test]
    fn max_threads_sizes_the_runtime_and_bounds_threads() {
        let mut t = chain();
        assert_eq!(t.services["a"].runtime_threads(), 2);
        t.apply(&"a.max_threads=4".parse().unwrap()).unwrap();
        assert_eq!(
            (t.services["a"].threads, t.services["a"].runtime_threads()),
            (2, 4)
        );
        t.validate().unwrap();
        t.apply(&"a.threads=4".parse().unwrap()).unwrap();
        t.validate().unwrap();
        t.apply(&"a.threads=5".parse().unwrap()).unwrap();
        let e = t.validate_named("f.json").unwrap_err().to_string();
        assert!(
            e.contains("f.json") && e.contains("services.a.threads") && e.contains("= 5"),
            "{e}"
        );
        assert!(e.contains("1..=4 (max_threads)"), "{e}");
        let e = t.apply(&"a.max_threads=1.5".parse().unwrap()).unwrap_err();
        assert!(e.contains("max_threads") && e.contains("integer"), "{e}");
        // Without max_threads, `threads` alone sizes the runtime, as before.
        let mut t = chain();
        t.apply(&"b.threads=3".parse().unwrap()).unwrap();
        t.validate().unwrap();
        assert_eq!(t.services["b"].runtime_threads(), 3);
        // Absent max_threads is not written back; present, it round-trips.
        assert!(!serde_json::to_string(&t).unwrap().contains("max_threads"));
        t.apply(&"b.max_threads=3".parse().unwrap()).unwrap();
        let back: Topology = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back.services["b"].max_threads, Some(3));
    }
}

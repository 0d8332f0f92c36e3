//! What to send: request templates, the load shape, and their validation into ready-to-send targets.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Uri};
use serde::Deserialize;

use crate::LoadError;
use crate::arrivals::Arrivals;

/// One kind of request the generator sends. Among several templates, each request picks one at random with
/// probability `weight / sum(weights)` (a weight of 0 is never picked, but may still serve as the probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTemplate {
    pub method: Method,
    /// `http://host[:port]/path?query`; only plain `http` is supported.
    pub url: String,
    /// Extra headers; a `Host` header here overrides the one derived from the URL.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub weight: u32,
}

impl RequestTemplate {
    /// A `GET` of `url` with weight 1, no extra headers and no body.
    pub fn get(url: impl Into<String>) -> Self {
        RequestTemplate {
            method: Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            weight: 1,
        }
    }
}

/// The shape of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    pub requests: Vec<RequestTemplate>,
    /// Keep-alive connections, each with at most one request in flight (in an open loop: the most requests in
    /// flight at once).
    pub connections: usize,
    /// Per-request limit (connect + send + whole response); a request over it counts as a timeout and its
    /// connection is replaced.
    pub timeout: Duration,
    /// Used by [`crate::run`] only: load before the measurement starts. [`crate::LoadGenerator::start`] does not wait.
    pub warmup: Duration,
    /// A closed loop (the default: the throughput model's load) or an open loop on a schedule.
    pub arrivals: Arrivals,
}

impl Default for LoadSpec {
    /// No requests yet, 64 connections, 10 s timeout, 1 s warm-up, a closed loop.
    fn default() -> Self {
        LoadSpec {
            requests: Vec::new(),
            connections: 64,
            timeout: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            arrivals: Arrivals::Closed,
        }
    }
}

impl LoadSpec {
    /// A spec with the given templates and the defaults of [`LoadSpec::default`].
    pub fn new(requests: Vec<RequestTemplate>) -> Self {
        LoadSpec {
            requests,
            ..LoadSpec::default()
        }
    }
}

impl LoadSpec {
    /// Checks the spec without sending anything (URL syntax, host resolution, headers, weights, counts): what
    /// [`crate::LoadGenerator::start`] checks before its probe.
    pub fn check(&self) -> Result<(), LoadError> {
        validate(self).map(|_| ())
    }
}

/// A validated template: everything parsed once so that sending a request only clones.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: String,
    /// Index into the list of distinct socket addresses (one connection per address per load connection).
    pub addr: usize,
    pub method: Method,
    /// Origin-form request target (`/path?query`).
    pub path: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub weight: u32,
}

impl Target {
    pub fn request(&self) -> hyper::Request<http_body_util::Full<Bytes>> {
        let mut req = hyper::Request::new(http_body_util::Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Targets plus the distinct addresses they connect to.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub targets: Vec<Target>,
    pub addrs: Vec<SocketAddr>,
}

pub(crate) fn validate(spec: &LoadSpec) -> Result<Plan, LoadError> {
    if spec.requests.is_empty() {
        return Err(LoadError::Invalid(
            "no request templates: give at least one URL".into(),
        ));
    }
    if spec.connections == 0 {
        return Err(LoadError::Invalid("connections must be at least 1".into()));
    }
    if spec.timeout.is_zero() {
        return Err(LoadError::Invalid(
            "timeout must be greater than zero".into(),
        ));
    }
    if spec.requests.iter().all(|t| t.weight == 0) {
        return Err(LoadError::Invalid(
            "every request template has weight 0: give at least one a positive weight".into(),
        ));
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut targets = Vec::with_capacity(spec.requests.len());
    for t in &spec.requests {
        let (addr, authority, path) = parse_url(&t.url)?;
        let addr_idx = if let Some(i) = addrs.iter().position(|a| *a == addr) {
            i
        } else {
            addrs.push(addr);
            addrs.len() - 1
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            HOST,
            HeaderValue::from_str(&authority).map_err(|e| LoadError::BadUrl {
                url: t.url.clone(),
                reason: format!("host is not a valid header value: {e}"),
            })?,
        );
        for (k, v) in &t.headers {
            let name =
                HeaderName::from_bytes(k.trim().as_bytes()).map_err(|e| LoadError::BadHeader {
                    header: format!("{k}: {v}"),
                    reason: format!("invalid header name: {e}"),
                })?;
            let value = HeaderValue::from_str(v.trim()).map_err(|e| LoadError::BadHeader {
                header: format!("{k}: {v}"),
                reason: format!("invalid header value: {e}"),
            })?;
            if name == HOST {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        targets.push(Target {
            url: t.url.clone(),
            addr: addr_idx,
            method: t.method.clone(),
            path,
            headers,
            body: t.body.clone(),
            weight: t.weight,
        });
    }
    Ok(Plan { targets, addrs })
}

/// `http://host[:port]/path?q` → (resolved address, `host[:port]` for the Host header, `/path?q`).
fn parse_url(url: &str) -> Result<(SocketAddr, String, Uri), LoadError> {
    let bad = |reason: String| LoadError::BadUrl {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| bad(format!("{e} (expected e.g. http://127.0.0.1:8080/path)")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(bad(format!(
                "scheme {other:?} is not supported, only http://"
            )));
        }
        None => {
            return Err(bad(
                "missing scheme: write it as http://HOST:PORT/PATH".into()
            ));
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("missing host: write it as http://HOST:PORT/PATH".into()))?;
    if authority.as_str().contains('@') {
        return Err(bad("user info in URLs is not supported".into()));
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let host_for_resolve = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host_for_resolve, port)
        .to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve host {host:?}: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("host {host:?} resolves to no address")))?;
    let path: Uri = uri
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .parse()
        .map_err(|e| bad(format!("bad path: {e}")))?;
    Ok((addr, authority.as_str().to_string(), path))
}

/// One entry of a `--mix` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MixEntry {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_method() -> String {
    "GET".into()
}

fn default_weight() -> u32 {
    1
}

/// Parses a request mix: a JSON list of
/// `{"method": "POST", "url": "http://…", "headers": {"K": "V"}, "body": "…", "weight": 3}`
/// (`method` defaults to GET, `weight` to 1, `headers` and `body` to empty).
pub fn parse_mix(json: &str) -> Result<Vec<RequestTemplate>, LoadError> {
    let entries: Vec<MixEntry> =
        serde_json::from_str(json).map_err(|e| LoadError::BadMix(e.to_string()))?;
    if entries.is_empty() {
        return Err(LoadError::BadMix("the list is empty".into()));
    }
    entries
        .into_iter()
        .map(|e| {
            Ok(RequestTemplate {
                method: parse_method(&e.method)?,
                url: e.url,
                headers: e.headers.into_iter().collect(),
                body: Bytes::from(e.body),
                weight: e.weight,
            })
        })
        .collect()
}

/// `GET`, `post`, … → [`Method`] (upper-cased; extension methods are allowed).
pub fn parse_method(s: &str) -> Result<Method, LoadError> {
    Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| LoadError::Invalid(format!("invalid HTTP method {s:?}")))
}

/// `K: V` → `(K, V)`, as curl/wrk take `-H`.
pub fn parse_header(s: &str) -> Result<(String, String), LoadError> {
    let bad = |reason: &str| LoadError::BadHeader {
        header: s.to_string(),
        reason: reason.to_string(),
    };
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| bad("expected 'Name: value'"))?;
    let k = k.trim();
    if k.is_empty() {
        return Err(bad("empty header name, expected 'Name: value'"));
    }
    HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("invalid header name"))?;
    HeaderValue::from_str(v.trim()).map_err(|_| bad("invalid header value"))?;
    Ok((k.to_string(), v.trim().to_string()))
}

/// `10s`, `500ms`, `250us`, `2m`, `1h`, `1.5s`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, LoadError> {
    let bad = || {
        LoadError::Invalid(format!(
            "invalid duration {s:?}: use e.g. 10s, 500ms, 2m or a number of seconds"
        ))
    };
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_mins(2));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("Content-Type: application/json").unwrap(),
            ("Content-Type".into(), "application/json".into())
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header(": x").is_err());
    }

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8080/a/b?x=1").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(host, "127.0.0.1:8080");
        assert_eq!(path.to_string(), "/a/b?x=1");
        let (addr, _, path) = parse_url("http://127.0.0.1").unwrap();
        assert_eq!(addr.port(), 80);
        assert_eq!(path.to_string(), "/");
        assert!(matches!(
            parse_url("https://127.0.0.1/"),
            Err(LoadError::BadUrl { .. })
        ));
        assert!(matches!(
            parse_url("127.0.0.1:80/x"),
            Err(LoadError::BadUrl { .. })
        ));
        assert!(matches!(
            parse_url("not a url"),
            Err(LoadError::BadUrl { .. })
        ));
    }

    #[test]
    fn mix() {
        let m = parse_mix(
            r#"[{"url":"http://127.0.0.1:1/a","weight":3},
                {"method":"post","url":"http://127.0.0.1:1/b","headers":{"K":"V"},"body":"hi"}]"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].weight, 3);
        assert_eq!(m[1].method, Method::POST);
        assert_eq!(m[1].weight, 1);
        assert_eq!(m[1].headers, vec![("K".to_string(), "V".to_string())]);
        assert_eq!(&m[1].body[..], b"hi");
        assert!(parse_mix("[]").is_err());
        assert!(parse_mix(r#"[{"uri":"x"}]"#).is_err());
    }
}

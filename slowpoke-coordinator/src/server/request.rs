//! The body of `POST /v1/experiments` and how it becomes a [`WhatIfSpec`] or a [`ProfileSpec`].
//!
//! Field names follow the CLI's flags (`--delta-us` is `delta_us`, `--service cart=port:8080` is
//! `"services": {"cart": "port:8080"}`), so a command line translates field by field. Unknown
//! fields are refused rather than ignored: a misspelt `precison` must not silently run with the
//! default precision.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use slowpoke_agent::api::ServiceSpec;

use crate::agents::parse_selector;
use crate::experiment::{LoadConfig, ProfileSpec, Repeat, Safety, Timing, WhatIfSpec};
use crate::model::Optimization;

/// What to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// One what-if (the default).
    #[default]
    #[serde(rename = "what-if", alias = "what_if", alias = "whatif")]
    WhatIf,
    /// A causal profile: a sweep of optimizations of every service.
    #[serde(rename = "profile")]
    Profile,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WhatIf => "what-if",
            Kind::Profile => "profile",
        }
    }
}

/// `2`, `2.5` or `"2x"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Factor {
    Number(f64),
    Text(String),
}

/// `20000` (T's new capacity, req/s), `"10000:20000"` (as the CLI's `--capacity OLD:NEW`) or
/// `{"old_rps": 10000, "new_rps": 20000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Capacity {
    New(f64),
    Text(String),
    Range(CapacityRange),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityRange {
    #[serde(default)]
    pub old_rps: Option<f64>,
    pub new_rps: f64,
}

/// The JSON body of `POST /v1/experiments` (docs/coordinator-api.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRequest {
    #[serde(default)]
    pub kind: Kind,

    // The app: a topology file (an emulated app the server starts) or running services.
    #[serde(default)]
    pub topology: Option<String>,
    /// name → selector (`port:8080`, `pid:123`, `comm:nginx`, `cgroup:/path`).
    #[serde(default)]
    pub services: BTreeMap<String, String>,
    /// The URL the load hits (required with `services`; overrides the topology's own).
    #[serde(default)]
    pub entry: Option<String>,
    /// The service owning the entry port, when the agents cannot tell.
    #[serde(default)]
    pub entry_service: Option<String>,
    /// Changes to the topology before it starts, `svc.endpoint.key=value` (`--set`).
    #[serde(default)]
    pub set: Vec<String>,

    // Requests of the load.
    #[serde(default)]
    pub method: Option<String>,
    /// `"K: V"` lines.
    #[serde(default, alias = "header")]
    pub headers: Vec<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// Per-request timeout, seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub connections: Option<i64>,

    // What-if.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub speedup: Option<Factor>,
    #[serde(default)]
    pub delta_us: Option<f64>,
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub cores: Option<f64>,
    #[serde(default)]
    pub capacity: Option<Capacity>,
    #[serde(default)]
    pub truth: bool,

    // Profile.
    /// Optimizations to sweep, % of each service's per-visit time.
    #[serde(default)]
    pub percents: Option<Vec<f64>>,
    /// Services to sweep (default: every visited service); the CLI's `--only`.
    #[serde(default, alias = "targets")]
    pub only: Option<Vec<String>>,

    // Measurement.
    /// One measurement window, seconds (the CLI's `--duration`).
    #[serde(default, alias = "duration")]
    pub window: Option<f64>,
    #[serde(default)]
    pub warmup: Option<f64>,
    #[serde(default)]
    pub settle: Option<f64>,
    /// Pause quantum, µs (the CLI's `--quantum-us`).
    #[serde(default)]
    pub quantum_us: Option<f64>,
    /// `synchronized` (default), `per-service` or `spin` (the CLI's `--actuator`).
    #[serde(default)]
    pub actuator: Option<String>,
    #[serde(default)]
    pub repetitions: Option<i64>,
    /// Target 95 % CI half-width of the prediction, %; 0 turns repeating for precision off.
    #[serde(default)]
    pub precision: Option<f64>,
    /// Time budget for repeating towards the precision, seconds.
    #[serde(default)]
    pub budget: Option<f64>,
    #[serde(default)]
    pub max_repetitions: Option<i64>,
    /// Abort when the load sees more errors than this % in a window (default 1).
    #[serde(default)]
    pub max_errors: Option<f64>,

    /// Agent URLs (default: the server's own agents).
    #[serde(default)]
    pub agents: Vec<String>,
}

/// The app an experiment runs against, as the request describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppRequest {
    /// An emulated app to start (`slowpoke what-if --topology FILE`).
    pub topology: Option<PathBuf>,
    /// Services of a running app, name → selector.
    pub services: BTreeMap<String, ServiceSpec>,
    /// The entry URL (always set for a running app; an override for a topology).
    pub entry: Option<String>,
    /// `--set svc.endpoint.key=value` changes of the topology.
    pub set: Vec<slowpoke_emu::Set>,
}

/// The experiment itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    WhatIf(WhatIfSpec),
    Profile(ProfileSpec),
}

/// A checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub app: AppRequest,
    /// Agent URLs named in the request (empty: the server's agents).
    pub agents: Vec<String>,
    pub spec: Spec,
}

impl Checked {
    pub fn kind(&self) -> Kind {
        match self.spec {
            Spec::WhatIf(_) => Kind::WhatIf,
            Spec::Profile(_) => Kind::Profile,
        }
    }
}

fn non_negative(what: &str, v: Option<f64>) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => {
            Err(format!("`{what}` must be a non-negative number (got {x})"))
        }
        other => Ok(other),
    }
}

fn positive(what: &str, v: Option<f64>) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !x.is_finite() || x <= 0.0 => {
            Err(format!("`{what}` must be a positive number (got {x})"))
        }
        other => Ok(other),
    }
}

fn count(what: &str, v: Option<i64>) -> Result<Option<usize>, String> {
    match v {
        Some(n) if n < 1 => Err(format!("`{what}` must be at least 1 (got {n})")),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| format!("`{what}` is too large ({n})")),
        None => Ok(None),
    }
}

fn parse_factor(f: &Factor) -> Result<f64, String> {
    let k = match f {
        Factor::Number(k) => *k,
        Factor::Text(t) => {
            let t = t.trim();
            let digits = t.strip_suffix(['x', 'X']).unwrap_or(t).trim();
            digits.parse::<f64>().map_err(|_| {
                format!("`speedup` must be a factor such as 2 or \"2x\" (got \"{t}\")")
            })?
        }
    };
    if !k.is_finite() || k <= 1.0 {
        return Err(format!(
            "`speedup` must be more than 1 (2 means twice as fast; got {k})"
        ));
    }
    Ok(k)
}

/// `"NEW"` or `"OLD:NEW"`, req/s.
fn parse_capacity(t: &str) -> Result<(Option<f64>, f64), String> {
    let bad = || {
        format!(
            "`capacity` must be NEW or \"OLD:NEW\" in req/s, e.g. \"10000:20000\" (got \"{t}\")"
        )
    };
    let num = |s: &str| s.trim().parse::<f64>().map_err(|_| bad());
    match t.split_once(':') {
        Some((old, new)) => Ok((Some(num(old)?), num(new)?)),
        None => Ok((None, num(t)?)),
    }
}

fn parse_header(h: &str) -> Result<(String, String), String> {
    let (k, v) = h
        .split_once(':')
        .ok_or_else(|| format!("header `{h}`: write \"Name: value\""))?;
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(format!("header `{h}`: the name must be one word"));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}

const OPTIMIZATIONS: &str = "speedup, delta_us, percent, cores or capacity";

impl ExperimentRequest {
    /// The optimization: exactly one of the five ways to state it.
    fn optimization(&self) -> Result<Optimization, String> {
        let mut given: Vec<(&str, Optimization)> = Vec::new();
        if let Some(f) = &self.speedup {
            given.push(("speedup", Optimization::Speedup(parse_factor(f)?)));
        }
        if let Some(d) = self.delta_us {
            given.push(("delta_us", Optimization::DeltaUs(d)));
        }
        if let Some(p) = self.percent {
            given.push(("percent", Optimization::Percent(p)));
        }
        if let Some(n) = self.cores {
            given.push(("cores", Optimization::Cores(n)));
        }
        if let Some(c) = &self.capacity {
            let (old_rps, new_rps) = match c {
                Capacity::New(n) => (None, *n),
                Capacity::Text(t) => parse_capacity(t)?,
                Capacity::Range(r) => (r.old_rps, r.new_rps),
            };
            given.push(("capacity", Optimization::Capacity { old_rps, new_rps }));
        }
        match given.as_slice() {
            [] => Err(format!(
                "no optimization given: add one of {OPTIMIZATIONS}, e.g. \"speedup\": \"2x\""
            )),
            [(_, o)] => {
                o.validate().map_err(|e| e.to_string())?;
                Ok(*o)
            }
            more => Err(format!(
                "give exactly one optimization, not {} ({})",
                more.len(),
                more.iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
        }
    }

    fn app(&self) -> Result<AppRequest, String> {
        let entry = match &self.entry {
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                return Err(format!(
                    "`entry` must be an http:// URL such as http://127.0.0.1:8080/ (got `{e}`)"
                ));
            }
            e => e.clone(),
        };
        match (&self.topology, self.services.is_empty()) {
            (Some(_), false) => Err(
                "give either `topology` (an emulated app) or `services` (a running app), not both"
                    .into(),
            ),
            (None, true) => Err(
                "no app given: add `services` ({\"cart\": \"port:8080\", ...}) with `entry`, or `topology`"
                    .into(),
            ),
            (Some(t), true) => {
                if t.trim().is_empty() {
                    return Err("`topology` is empty: give the path of a topology file".into());
                }
                let set = self
                    .set
                    .iter()
                    .map(|s| s.parse().map_err(|e| format!("`set`: {e}")))
                    .collect::<Result<_, String>>()?;
                Ok(AppRequest {
                    topology: Some(PathBuf::from(t)),
                    services: BTreeMap::new(),
                    entry,
                    set,
                })
            }
            (None, false) => {
                let Some(entry) = entry else {
                    return Err(
                        "`services` needs `entry`: the URL the load hits, e.g. http://127.0.0.1:8080/"
                            .into(),
                    );
                };
                let mut services = BTreeMap::new();
                for (name, sel) in &self.services {
                    if name.trim().is_empty() || name.contains('/') {
                        return Err(format!(
                            "service name `{name}` must be non-empty and have no `/`"
                        ));
                    }
                    let spec = parse_selector(sel).map_err(|e| format!("service `{name}`: {e}"))?;
                    services.insert(name.clone(), spec);
                }
                if !self.set.is_empty() {
                    return Err(
                        "`set` changes a topology: it does not apply to `services`".into(),
                    );
                }
                Ok(AppRequest {
                    topology: None,
                    services,
                    entry: Some(entry),
                    set: Vec::new(),
                })
            }
        }
    }

    fn load(&self) -> Result<LoadConfig, String> {
        let mut load = LoadConfig::default();
        if let Some(m) = &self.method {
            let m = m.trim().to_ascii_uppercase();
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!(
                    "`method` must be an HTTP method such as GET (got `{m}`)"
                ));
            }
            load.method = m;
        }
        load.headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<_, _>>()?;
        load.body.clone_from(&self.body);
        if let Some(t) = positive("timeout", self.timeout)? {
            load.timeout_s = t;
        }
        if let Some(c) = count("connections", self.connections)? {
            load.connections = c;
        }
        if let Some(e) = &self.entry {
            load.url.clone_from(e);
        }
        Ok(load)
    }

    fn timing(&self, mut t: Timing) -> Result<Timing, String> {
        if let Some(w) = positive("window", self.window)? {
            t.window_s = w;
        }
        if let Some(w) = non_negative("warmup", self.warmup)? {
            t.warmup_s = w;
        }
        if let Some(s) = non_negative("settle", self.settle)? {
            t.settle_s = s;
        }
        if let Some(q) = positive("quantum_us", self.quantum_us)? {
            t.quantum_us = Some(q);
        }
        if let Some(a) = &self.actuator {
            t.set_actuator(a)?;
        }
        Ok(t)
    }

    fn safety(&self) -> Result<Safety, String> {
        let mut s = Safety::default();
        if let Some(pct) = non_negative("max_errors", self.max_errors)? {
            if pct > 100.0 {
                return Err(format!(
                    "`max_errors` is a percentage between 0 and 100 (got {pct})"
                ));
            }
            s.max_error_ratio = pct / 100.0;
        }
        Ok(s)
    }

    fn refuse(kind: Kind, fields: &[(&str, bool)]) -> Result<(), String> {
        let used: Vec<&str> = fields.iter().filter(|(_, u)| *u).map(|(n, _)| *n).collect();
        if used.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} do(es) not apply to a {} experiment: remove {}",
                used.join(", "),
                kind.as_str(),
                used.iter()
                    .map(|u| format!("`{u}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Checks everything that can be checked without measuring; the message says what to fix.
    pub fn check(&self) -> Result<Checked, String> {
        let app = self.app()?;
        for a in &self.agents {
            if !(a.starts_with("http://") || a.starts_with("https://")) {
                return Err(format!(
                    "agent `{a}` must be a URL such as http://10.0.0.2:7171"
                ));
            }
        }
        let load = self.load()?;
        let safety = self.safety()?;
        let entry_service = self.entry_service.clone().filter(|s| !s.is_empty());
        let spec = match self.kind {
            Kind::WhatIf => {
                Self::refuse(
                    Kind::WhatIf,
                    &[
                        ("percents", self.percents.is_some()),
                        ("only", self.only.is_some()),
                    ],
                )?;
                let target = self.target.clone().filter(|t| !t.trim().is_empty()).ok_or(
                    "no `target`: name the service to optimize, e.g. \"target\": \"cart\"",
                )?;
                if !app.services.is_empty() && !app.services.contains_key(&target) {
                    return Err(format!(
                        "`target` `{target}` is not one of `services` ({})",
                        app.services.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
                let optimization = self.optimization()?;
                let mut repeat = Repeat::default();
                if let Some(n) = count("repetitions", self.repetitions)? {
                    repeat.repetitions = n;
                }
                if let Some(p) = non_negative("precision", self.precision)? {
                    repeat.precision_pct = (p > 0.0).then_some(p);
                }
                if let Some(b) = non_negative("budget", self.budget)? {
                    repeat.budget_s = b;
                }
                if let Some(m) = count("max_repetitions", self.max_repetitions)? {
                    repeat.max_repetitions = m;
                }
                Spec::WhatIf(WhatIfSpec {
                    target,
                    optimization,
                    load,
                    timing: self.timing(Timing::default())?,
                    repeat,
                    safety,
                    truth: self.truth,
                    entry_service,
                })
            }
            Kind::Profile => {
                Self::refuse(
                    Kind::Profile,
                    &[
                        ("target", self.target.is_some()),
                        ("speedup", self.speedup.is_some()),
                        ("delta_us", self.delta_us.is_some()),
                        ("percent", self.percent.is_some()),
                        ("cores", self.cores.is_some()),
                        ("capacity", self.capacity.is_some()),
                        ("truth", self.truth),
                        ("max_repetitions", self.max_repetitions.is_some()),
                    ],
                )?;
                let defaults = ProfileSpec::default();
                let percents = self.percents.clone().unwrap_or(defaults.percents);
                if percents.is_empty() {
                    return Err("`percents` is empty: give at least one percentage".into());
                }
                for &p in &percents {
                    Optimization::Percent(p)
                        .validate()
                        .map_err(|e| format!("`percents`: {e}"))?;
                }
                if let Some(t) = &self.only
                    && !app.services.is_empty()
                    && let Some(bad) = t.iter().find(|t| !app.services.contains_key(*t))
                {
                    return Err(format!("`only`: `{bad}` is not one of `services`"));
                }
                Spec::Profile(ProfileSpec {
                    percents,
                    services: self.only.clone(),
                    load,
                    timing: self.timing(defaults.timing)?,
                    repetitions: count("repetitions", self.repetitions)?
                        .unwrap_or(defaults.repetitions),
                    precision_pct: non_negative("precision", self.precision)?.filter(|p| *p > 0.0),
                    budget_s: non_negative("budget", self.budget)?.unwrap_or(defaults.budget_s),
                    safety,
                    entry_service,
                })
            }
        };
        Ok(Checked {
            app,
            agents: self.agents.clone(),
            spec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Checked, String> {
        serde_json::from_str::<ExperimentRequest>(json)
            .map_err(|e| e.to_string())?
            .check()
    }

    const APP: &str = r#""services": {"cart": "port:8081", "front": "port:8080"}, "entry": "http://127.0.0.1:8080/""#;

    #[test]
    fn a_what_if_translates_field_by_field() {
        let c = req(&format!(
            r#"{{{APP}, "target": "cart", "speedup": "2x", "connections": 8, "window": 0.5,
               "repetitions": 3, "precision": 0, "headers": ["Host: shop"]}}"#
        ))
        .unwrap();
        let Spec::WhatIf(w) = c.spec else { panic!() };
        assert_eq!(w.optimization, Optimization::Speedup(2.0));
        assert_eq!(w.load.connections, 8);
        assert_eq!(w.load.url, "http://127.0.0.1:8080/");
        assert_eq!(w.load.headers, vec![("Host".into(), "shop".into())]);
        assert!((w.timing.window_s - 0.5).abs() < 1e-12);
        assert_eq!(w.repeat.repetitions, 3);
        assert_eq!(w.repeat.precision_pct, None);
        assert_eq!(c.app.services["cart"].ports, Some(vec![8081]));
    }

    #[test]
    fn capacity_and_speedup_forms() {
        for (field, want) in [
            (r#""speedup": 3"#, Optimization::Speedup(3.0)),
            (
                r#""capacity": 20000"#,
                Optimization::Capacity {
                    old_rps: None,
                    new_rps: 20000.0,
                },
            ),
            (
                r#""capacity": "10000:20000""#,
                Optimization::Capacity {
                    old_rps: Some(10000.0),
                    new_rps: 20000.0,
                },
            ),
            (
                r#""capacity": {"old_rps": 10000, "new_rps": 20000}"#,
                Optimization::Capacity {
                    old_rps: Some(10000.0),
                    new_rps: 20000.0,
                },
            ),
        ] {
            let c = req(&format!(r#"{{{APP}, "target": "cart", {field}}}"#)).unwrap();
            let Spec::WhatIf(w) = c.spec else { panic!() };
            assert_eq!(w.optimization, want);
        }
    }

    #[test]
    fn bad_requests_say_what_to_fix() {
        for (body, expect) in [
            (format!(r#"{{{APP}, "target": "cart"}}"#), "no optimization"),
            (
                format!(r#"{{{APP}, "target": "cart", "speedup": 2, "percent": 10}}"#),
                "exactly one optimization",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "delta_us": -5}}"#),
                "positive",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "speedup": "fast"}}"#),
                "factor",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "percent": 10, "connections": -1}}"#),
                "at least 1",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "percent": 10, "window": 0}}"#),
                "`window` must be a positive",
            ),
            (format!(r#"{{{APP}, "percent": 10}}"#), "no `target`"),
            (
                format!(r#"{{{APP}, "target": "nope", "percent": 10}}"#),
                "not one of `services`",
            ),
            (
                r#"{"target": "cart", "percent": 10}"#.to_owned(),
                "no app given",
            ),
            (
                r#"{"services": {"a": "port:1"}, "target": "a", "percent": 10}"#.to_owned(),
                "needs `entry`",
            ),
            (
                r#"{"services": {"a": "nginx"}, "entry": "http://x/", "target": "a", "percent": 10}"#
                    .to_owned(),
                "no kind",
            ),
            (
                format!(r#"{{{APP}, "kind": "profile", "target": "cart"}}"#),
                "remove `target`",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "percent": 10, "precison": 1}}"#),
                "unknown field `precison`",
            ),
        ] {
            let e = req(&body).unwrap_err();
            assert!(e.contains(expect), "{body}: {e}");
        }
    }

    #[test]
    fn a_profile_takes_its_defaults() {
        let c = req(&format!(
            r#"{{{APP}, "kind": "profile", "repetitions": 2}}"#
        ))
        .unwrap();
        let Spec::Profile(p) = c.spec else { panic!() };
        assert_eq!(p.repetitions, 2);
        assert_eq!(p.percents, ProfileSpec::default().percents);
    }
}

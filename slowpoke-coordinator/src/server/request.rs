//! How the body of `POST /v1/experiments` ([`ExperimentRequest`], a wire type of the
//! `slowpoke-api` crate) becomes a [`WhatIfSpec`] or a [`ProfileSpec`]: [`check`]. The rules it
//! shares with the CLI (the optimization, the app, headers) are [`crate::spec_builder`]'s.
//!
//! Every error says which field to fix: the request is the CLI's flags as fields, and the
//! messages name those fields. Numbers and lists are bounded ([`limits`]): anyone who can reach
//! the server can send a request, and without bounds one could ask for 10^9 connections (the
//! load generator allocates per connection: the process aborts) or an experiment running for a
//! week.

use std::path::PathBuf;

use slowpoke_api::selector::parse_selector;

pub use crate::spec_builder::AppRequest;
pub use slowpoke_api::coordinator::{Capacity, CapacityRange, ExperimentRequest, Factor, Kind};

use crate::experiment::tail::{LoadPriority, Sweep, TailSpec};
use crate::experiment::{LoadConfig, ProfileSpec, Repeat, Safety, Timing, WhatIfSpec};
use crate::model::{Optimization, OptimizationModel as _};
use crate::spec_builder::{self, AppFields, OptimizationFields};
use slowpoke_api::coordinator::TailSchedule;

/// The experiment itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    WhatIf(WhatIfSpec),
    Profile(ProfileSpec),
    Tail(TailSpec),
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
            Spec::Tail(_) => Kind::Tail,
        }
    }
}

/// The largest values a request may ask for. Generous for real use (the defaults are far
/// below), small enough that no request can exhaust the server's memory or hold the agents for
/// hours. docs/coordinator-api.md lists them.
pub mod limits {
    /// `connections`: closed-loop connections (each holds a socket and a task).
    pub const CONNECTIONS: usize = 4096;
    /// `window`, `warmup`, `settle`, `timeout`: seconds each.
    pub const SECONDS: f64 = 600.0;
    /// `budget`: seconds of repeating towards `precision`.
    pub const BUDGET_S: f64 = 3600.0;
    /// `repetitions`, `max_repetitions`.
    pub const REPETITIONS: usize = 1000;
    /// `quantum_us`: one pause quantum, µs (1 s).
    pub const QUANTUM_US: f64 = 1_000_000.0;
    /// `precision`, %.
    pub const PRECISION_PCT: f64 = 100.0;
    /// Entries of `services`, `only`, `set`.
    pub const SERVICES: usize = 256;
    /// Entries of `percents` (a profile's points per service).
    pub const POINTS: usize = 100;
    /// Entries of `headers`.
    pub const HEADERS: usize = 64;
}

fn non_negative(what: &str, v: Option<f64>, max: f64) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !x.is_finite() || x < 0.0 => Err(format!(
            "`{what}` must be a non-negative number (got {x}; allowed: 0 to {max})"
        )),
        Some(x) if x > max => Err(format!(
            "`{what}` must be at most {max} (got {x}; allowed: 0 to {max})"
        )),
        other => Ok(other),
    }
}

fn positive(what: &str, v: Option<f64>, max: f64) -> Result<Option<f64>, String> {
    match v {
        Some(x) if !x.is_finite() || x <= 0.0 => Err(format!(
            "`{what}` must be a positive number (got {x}; allowed: above 0 up to {max})"
        )),
        Some(x) if x > max => Err(format!(
            "`{what}` must be at most {max} (got {x}; allowed: above 0 up to {max})"
        )),
        other => Ok(other),
    }
}

fn count(what: &str, v: Option<i64>, max: usize) -> Result<Option<usize>, String> {
    match v {
        Some(n) if n < 1 => Err(format!(
            "`{what}` must be at least 1 (got {n}; allowed: 1 to {max})"
        )),
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or_else(|| {
                format!("`{what}` must be at most {max} (got {n}; allowed: 1 to {max})")
            }),
        None => Ok(None),
    }
}

/// A list field with at most `max` entries (it has `len`).
fn at_most(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        return Err(format!(
            "`{what}` has {len} entries; at most {max} are allowed"
        ));
    }
    Ok(())
}

/// The optimization: exactly one of the five ways to state it.
fn optimization(req: &ExperimentRequest) -> Result<Optimization, String> {
    spec_builder::optimization(&OptimizationFields {
        speedup: req.speedup.clone(),
        delta_us: req.delta_us,
        percent: req.percent,
        cores: req.cores,
        capacity: req.capacity.clone(),
    })
    .map_err(|e| e.to_string())
}

fn app(req: &ExperimentRequest) -> Result<AppRequest, String> {
    if req.topology.as_ref().is_some_and(|t| t.trim().is_empty()) {
        return Err("`topology` is empty: give the path of a topology file".into());
    }
    let services = req
        .services
        .iter()
        .map(|(name, sel)| {
            parse_selector(sel)
                .map(|spec| (name.clone(), spec))
                .map_err(|e| format!("service `{name}`: {e}"))
        })
        .collect::<Result<_, String>>()?;
    spec_builder::app(AppFields {
        topology: req.topology.as_ref().map(PathBuf::from),
        set: req.set.clone(),
        services,
        entry: req.entry.clone(),
        // The server hands `entry_service` to the runner in the spec.
        entry_service: None,
    })
    .map_err(|e| e.to_string())
}

fn load(req: &ExperimentRequest) -> Result<LoadConfig, String> {
    let mut load = LoadConfig::default();
    if let Some(m) = &req.method {
        let m = m.trim().to_ascii_uppercase();
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "`method` must be an HTTP method such as GET (got `{m}`)"
            ));
        }
        load.method = m;
    }
    at_most("headers", req.headers.len(), limits::HEADERS)?;
    load.headers = req
        .headers
        .iter()
        .map(|h| slowpoke_load::parse_header(h).map_err(|e| format!("`headers`: {e}")))
        .collect::<Result<_, _>>()?;
    load.body.clone_from(&req.body);
    if let Some(t) = positive("timeout", req.timeout, limits::SECONDS)? {
        load.timeout_s = t;
    }
    if let Some(c) = count("connections", req.connections, limits::CONNECTIONS)? {
        load.connections = c;
    }
    if let Some(e) = &req.entry {
        load.url.clone_from(e);
    }
    Ok(load)
}

fn timing(req: &ExperimentRequest, mut t: Timing) -> Result<Timing, String> {
    if let Some(w) = positive("window", req.window, limits::SECONDS)? {
        t.window_s = w;
    }
    if let Some(w) = non_negative("warmup", req.warmup, limits::SECONDS)? {
        t.warmup_s = w;
    }
    if let Some(s) = non_negative("settle", req.settle, limits::SECONDS)? {
        t.settle_s = s;
    }
    if let Some(q) = positive("quantum_us", req.quantum_us, limits::QUANTUM_US)? {
        t.quantum_us = Some(q);
    }
    if let Some(a) = &req.actuator {
        t.set_actuator(a)?;
    }
    Ok(t)
}

fn safety(req: &ExperimentRequest) -> Result<Safety, String> {
    let mut s = Safety::default();
    if let Some(pct) = non_negative("max_errors", req.max_errors, 100.0)? {
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
pub fn check(req: &ExperimentRequest) -> Result<Checked, String> {
    at_most("services", req.services.len(), limits::SERVICES)?;
    at_most("set", req.set.len(), limits::SERVICES)?;
    let app = app(req)?;
    for a in &req.agents {
        if !(a.starts_with("http://") || a.starts_with("https://")) {
            return Err(format!(
                "agent `{a}` must be a URL such as http://10.0.0.2:7171"
            ));
        }
    }
    let load = load(req)?;
    let safety = safety(req)?;
    let entry_service = req.entry_service.clone().filter(|s| !s.is_empty());
    let spec = match req.kind {
        Kind::WhatIf => {
            refuse(
                Kind::WhatIf,
                &[
                    ("percents", req.percents.is_some()),
                    ("only", req.only.is_some()),
                    ("rate", tail_fields(req)),
                ],
            )?;
            let target =
                req.target.clone().filter(|t| !t.trim().is_empty()).ok_or(
                    "no `target`: name the service to optimize, e.g. \"target\": \"cart\"",
                )?;
            if !app.services.is_empty() && !app.services.contains_key(&target) {
                return Err(format!(
                    "`target` `{target}` is not one of `services` ({})",
                    app.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            let optimization = optimization(req)?;
            let mut repeat = Repeat::default();
            if let Some(n) = count("repetitions", req.repetitions, limits::REPETITIONS)? {
                repeat.repetitions = n;
            }
            if let Some(p) = non_negative("precision", req.precision, limits::PRECISION_PCT)? {
                repeat.precision_pct = (p > 0.0).then_some(p);
            }
            if let Some(b) = non_negative("budget", req.budget, limits::BUDGET_S)? {
                repeat.budget_s = b;
            }
            if let Some(m) = count("max_repetitions", req.max_repetitions, limits::REPETITIONS)? {
                repeat.max_repetitions = m;
            }
            Spec::WhatIf(WhatIfSpec {
                target,
                optimization,
                load,
                timing: timing(req, Timing::default())?,
                repeat,
                safety,
                truth: req.truth,
                entry_service,
            })
        }
        Kind::Profile => {
            refuse(
                Kind::Profile,
                &[
                    ("target", req.target.is_some()),
                    ("speedup", req.speedup.is_some()),
                    ("delta_us", req.delta_us.is_some()),
                    ("percent", req.percent.is_some()),
                    ("cores", req.cores.is_some()),
                    ("capacity", req.capacity.is_some()),
                    ("truth", req.truth),
                    ("max_repetitions", req.max_repetitions.is_some()),
                    ("rate", tail_fields(req)),
                ],
            )?;
            let defaults = ProfileSpec::default();
            let percents = req.percents.clone().unwrap_or(defaults.percents);
            if percents.is_empty() {
                return Err("`percents` is empty: give at least one percentage".into());
            }
            at_most("percents", percents.len(), limits::POINTS)?;
            at_most(
                "only",
                req.only.as_ref().map_or(0, Vec::len),
                limits::SERVICES,
            )?;
            for &p in &percents {
                Optimization::Percent(p)
                    .validate()
                    .map_err(|e| format!("`percents`: {e}"))?;
            }
            if let Some(t) = &req.only
                && !app.services.is_empty()
                && let Some(bad) = t.iter().find(|t| !app.services.contains_key(*t))
            {
                return Err(format!("`only`: `{bad}` is not one of `services`"));
            }
            Spec::Profile(ProfileSpec {
                percents,
                services: req.only.clone(),
                load,
                timing: timing(req, defaults.timing)?,
                repetitions: count("repetitions", req.repetitions, limits::REPETITIONS)?
                    .unwrap_or(defaults.repetitions),
                precision_pct: non_negative("precision", req.precision, limits::PRECISION_PCT)?
                    .filter(|p| *p > 0.0),
                budget_s: non_negative("budget", req.budget, limits::BUDGET_S)?
                    .unwrap_or(defaults.budget_s),
                safety,
                entry_service,
            })
        }
        Kind::Tail => Spec::Tail(tail(req, &app, load, safety)?),
    };
    Ok(Checked {
        app,
        agents: req.agents.clone(),
        spec,
    })
}

/// Any of the tail comparison's own fields is given (refused for other kinds, named by the
/// first: `rate`, whichever it is, since a tail request needs it anyway).
fn tail_fields(req: &ExperimentRequest) -> bool {
    req.rate.is_some()
        || req.arms.is_some()
        || req.k.is_some()
        || req.priority.is_some()
        || req.age_cap_ms.is_some()
        || req.max_share.is_some()
        || req.sweep.is_some()
        || req.p99_target_us.is_some()
        || req.load_priority.is_some()
}

/// An integer field within `lo..=hi`, converted.
fn bounded<T: TryFrom<i64>>(
    what: &str,
    v: Option<i64>,
    lo: i64,
    hi: i64,
) -> Result<Option<T>, String> {
    match v {
        None => Ok(None),
        Some(n) if (lo..=hi).contains(&n) => Ok(T::try_from(n).ok()),
        Some(n) => Err(format!("`{what}` must be {lo} to {hi} (got {n})")),
    }
}

/// The tail comparison of a `kind: tail` request.
fn tail(
    req: &ExperimentRequest,
    app: &AppRequest,
    load: LoadConfig,
    safety: Safety,
) -> Result<TailSpec, String> {
    refuse(
        Kind::Tail,
        &[
            ("target", req.target.is_some()),
            ("speedup", req.speedup.is_some()),
            ("delta_us", req.delta_us.is_some()),
            ("percent", req.percent.is_some()),
            ("cores", req.cores.is_some()),
            ("capacity", req.capacity.is_some()),
            ("truth", req.truth),
            ("percents", req.percents.is_some()),
            ("settle", req.settle.is_some()),
            ("quantum_us", req.quantum_us.is_some()),
            ("actuator", req.actuator.is_some()),
            ("precision", req.precision.is_some()),
            ("budget", req.budget.is_some()),
            ("max_repetitions", req.max_repetitions.is_some()),
        ],
    )?;
    let defaults = TailSpec::default();
    let rate = positive("rate", req.rate, 1e6)?
        .ok_or("no `rate`: give the open loop's rate in requests/s, e.g. \"rate\": 400")?;
    let arms = req.arms.clone().unwrap_or(defaults.arms);
    if arms.is_empty() {
        return Err(
            "`arms` is empty: give at least one of default, oldest-first, per-service-fifo".into(),
        );
    }
    let schedule = TailSchedule {
        k: bounded("k", req.k, 1, 64)?,
        priority: bounded("priority", req.priority, 1, 19)?,
        age_cap_ms: bounded("age_cap_ms", req.age_cap_ms, 1, 60_000)?,
        max_share: match req.max_share {
            Some(m) if !(m.is_finite() && m > 0.0 && m <= 0.9) => {
                return Err(format!(
                    "`max_share` must be above 0 and at most 0.9 (got {m})"
                ));
            }
            m => m,
        },
    };
    at_most(
        "only",
        req.only.as_ref().map_or(0, Vec::len),
        limits::SERVICES,
    )?;
    if let Some(t) = &req.only
        && !app.services.is_empty()
        && let Some(bad) = t.iter().find(|t| !app.services.contains_key(*t))
    {
        return Err(format!("`only`: `{bad}` is not one of `services`"));
    }
    let sweep = match (&req.sweep, req.p99_target_us) {
        (None, None) => None,
        (Some(rates), Some(target)) => {
            at_most("sweep", rates.len(), 50)?;
            if rates.is_empty() {
                return Err(
                    "`sweep` is empty: give the rates to measure, e.g. [200, 400, 600]".into(),
                );
            }
            for &r in rates {
                positive("sweep", Some(r), 1e6)?;
            }
            Some(Sweep {
                rates_rps: rates.clone(),
                p99_target_us: positive("p99_target_us", Some(target), 3.6e9)?.unwrap_or(target),
            })
        }
        (Some(_), None) => {
            return Err(
                "`sweep` needs `p99_target_us`: the p99 each rate must keep under, µs".into(),
            );
        }
        (None, Some(_)) => {
            return Err("`p99_target_us` goes with `sweep`: the rates to measure".into());
        }
    };
    let mut load = load;
    if req.connections.is_none() {
        load.connections = defaults.load.connections;
    }
    let spec = TailSpec {
        arms,
        rate_rps: rate,
        window_s: positive("window", req.window, limits::SECONDS)?.unwrap_or(defaults.window_s),
        warmup_s: non_negative("warmup", req.warmup, limits::SECONDS)?.unwrap_or(defaults.warmup_s),
        repetitions: count("repetitions", req.repetitions, limits::REPETITIONS)?
            .unwrap_or(defaults.repetitions),
        schedule,
        services: req.only.clone(),
        load,
        max_error_ratio: if req.max_errors.is_some() {
            safety.max_error_ratio
        } else {
            defaults.max_error_ratio
        },
        sweep,
        load_priority: LoadPriority::from_setting(bounded::<u8>(
            "load_priority",
            req.load_priority,
            0,
            99,
        )?),
    };
    spec.check()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<Checked, String> {
        check(&serde_json::from_str::<ExperimentRequest>(json).map_err(|e| e.to_string())?)
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
                "services needs entry",
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
    fn a_tail_comparison_takes_its_fields_and_refuses_the_others() {
        let c = req(&format!(
            r#"{{{APP}, "kind": "tail", "rate": 400, "arms": ["oldest-first"], "k": 2,
               "age_cap_ms": 500, "sweep": [200, 600], "p99_target_us": 20000, "only": ["cart"]}}"#
        ))
        .unwrap();
        let Spec::Tail(t) = c.spec else { panic!() };
        assert_eq!(t.arms_in_order().len(), 2);
        assert_eq!((t.schedule.k, t.schedule.age_cap_ms), (Some(2), Some(500)));
        assert_eq!(
            t.load.connections,
            crate::experiment::tail::DEFAULT_IN_FLIGHT
        );
        assert_eq!(t.services, Some(vec!["cart".to_owned()]));
        assert_eq!(t.sweep.unwrap().rates_rps, vec![200.0, 600.0]);
        assert_eq!(t.load_priority, LoadPriority::Auto);
        for (given, want) in [(0, LoadPriority::Normal), (45, LoadPriority::Fifo(45))] {
            let c = req(&format!(
                r#"{{{APP}, "kind": "tail", "rate": 10, "load_priority": {given}}}"#
            ))
            .unwrap();
            let Spec::Tail(t) = c.spec else { panic!() };
            assert_eq!(t.load_priority, want);
        }
        for (body, expect) in [
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "load_priority": 100}}"#),
                "`load_priority` must be 0 to 99",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "speedup": 2, "load_priority": 30}}"#),
                "remove `rate`",
            ),
            (format!(r#"{{{APP}, "kind": "tail"}}"#), "no `rate`"),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": -3}}"#),
                "`rate` must be a positive",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "k": 65}}"#),
                "`k` must be 1 to 64",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "priority": 20}}"#),
                "`priority` must be 1 to 19",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "max_share": 1}}"#),
                "`max_share`",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "arms": ["fastest"]}}"#),
                "unknown variant",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "sweep": [100]}}"#),
                "needs `p99_target_us`",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "speedup": 2}}"#),
                "remove `speedup`",
            ),
            (
                format!(r#"{{{APP}, "kind": "tail", "rate": 10, "only": ["nope"]}}"#),
                "`nope` is not one of",
            ),
            (
                format!(r#"{{{APP}, "target": "cart", "percent": 10, "rate": 10}}"#),
                "remove `rate`",
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

//! The rules a request for an experiment obeys, whoever sends it: `slowpoke what-if` (flags) and
//! `POST /v1/experiments` (JSON fields) both come here, so that a speedup, a capacity, "exactly
//! one optimization" and "either a topology or services with an entry" mean the same on both.
//!
//! - [`optimization`]: the five ways to state an optimization ([`OptimizationFields`]) → one
//!   [`Optimization`], validated by the model.
//! - [`app`]: where the app is ([`AppFields`]) → an [`AppRequest`], which [`AppRequest::start`]s
//!   the app: a running one ([`AttachedApp`]) or an emulated one through an [`Emulator`].
//!
//! Errors ([`BuildError`]) name the request's [`Field`]s; their `Display` speaks in the API's
//! field names, and [`BuildError::render`] lets the CLI name its flags instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use slowpoke_api::agent::ServiceSpec;
pub use slowpoke_api::coordinator::{Capacity, CapacityRange, Factor};

use crate::experiment::{App, AttachedApp, url_port};
use crate::model::{ModelError, Optimization, OptimizationModel as _};

/// A field of an experiment request (the CLI has a flag for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Speedup,
    DeltaUs,
    Percent,
    Cores,
    Capacity,
    Topology,
    Set,
    Services,
    Entry,
}

impl Field {
    /// The five ways to state an optimization, in the order the messages list them.
    pub const OPTIMIZATIONS: [Field; 5] = [
        Field::Speedup,
        Field::DeltaUs,
        Field::Percent,
        Field::Cores,
        Field::Capacity,
    ];

    /// The field's name in `POST /v1/experiments`.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Speedup => "speedup",
            Field::DeltaUs => "delta_us",
            Field::Percent => "percent",
            Field::Cores => "cores",
            Field::Capacity => "capacity",
            Field::Topology => "topology",
            Field::Set => "set",
            Field::Services => "services",
            Field::Entry => "entry",
        }
    }
}

/// Why a request cannot become an experiment; each says what to change.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildError {
    /// None of the five optimizations.
    NoOptimization,
    /// More than one optimization (the fields given).
    SeveralOptimizations(Vec<Field>),
    /// A field's value is malformed: the field, what was given, what to write.
    Malformed {
        field: Field,
        given: String,
        write: &'static str,
    },
    /// `speedup` at most 1.
    SpeedupNotAbove1(f64),
    /// The model refuses the optimization (not positive, 100 % or more, capacity not raised).
    Model(ModelError),
    /// Both `topology` and `services`.
    TwoApps,
    /// Neither `topology` nor `services`.
    NoApp,
    /// `services` without `entry`.
    NoEntry,
    /// `entry` is not an http(s) URL.
    BadEntry(String),
    /// `set` without `topology`.
    SetWithoutTopology,
    /// A service name twice, empty or with a `/`.
    BadServiceName(String),
}

impl BuildError {
    /// The message, naming each field with `name` (the API's field names, or the CLI's flags).
    pub fn render(&self, name: impl Fn(Field) -> String) -> String {
        match self {
            BuildError::NoOptimization => {
                let names: Vec<String> = Field::OPTIMIZATIONS.iter().map(|f| name(*f)).collect();
                format!(
                    "no optimization given: say what the optimization is with one of {} or {} (e.g. {} 2x)",
                    names[..4].join(", "),
                    names[4],
                    names[0]
                )
            }
            BuildError::SeveralOptimizations(given) => format!(
                "give exactly one optimization, not {} ({}): only one of {}",
                given.len(),
                given
                    .iter()
                    .map(|f| name(*f))
                    .collect::<Vec<_>>()
                    .join(" and "),
                Field::OPTIMIZATIONS
                    .iter()
                    .map(|f| name(*f))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            BuildError::Malformed {
                field,
                given,
                write,
            } => format!("{} `{given}`: write {write}", name(*field)),
            BuildError::SpeedupNotAbove1(k) => format!(
                "{} must be more than 1x (2x means twice as fast; got {k})",
                name(Field::Speedup)
            ),
            BuildError::Model(e) => e.to_string(),
            BuildError::TwoApps => format!(
                "give either {} (an emulated app) or {} (a running app), not both",
                name(Field::Topology),
                name(Field::Services)
            ),
            BuildError::NoApp => format!(
                "no app given: say which app with {} (an emulated app) or {} with {} (a running one)",
                name(Field::Topology),
                name(Field::Services),
                name(Field::Entry)
            ),
            BuildError::NoEntry => format!(
                "{} needs {}: the URL end-to-end requests enter through, e.g. http://127.0.0.1:8080/",
                name(Field::Services),
                name(Field::Entry)
            ),
            BuildError::BadEntry(e) => format!(
                "{} `{e}` is not an http://host:port/path URL (e.g. http://127.0.0.1:8080/)",
                name(Field::Entry)
            ),
            BuildError::SetWithoutTopology => format!(
                "{} changes an emulated app ({}): it does not apply to {}",
                name(Field::Set),
                name(Field::Topology),
                name(Field::Services)
            ),
            BuildError::BadServiceName(n) => format!(
                "{}: the service name `{n}` is given twice, empty or has a `/`",
                name(Field::Services)
            ),
        }
    }
}

impl std::fmt::Display for BuildError {
    /// In the API's field names (`speedup`, `delta_us`, ...).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(|field| field.as_str().to_owned()))
    }
}

impl std::error::Error for BuildError {}

/// The five ways to state an optimization, as given; at most one may be set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimizationFields {
    /// `2`, `"2x"`: T becomes K times as fast.
    pub speedup: Option<Factor>,
    /// Δ in µs per visit of T.
    pub delta_us: Option<f64>,
    /// Δ as a percentage of T's measured per-visit time.
    pub percent: Option<f64>,
    /// T's new absolute core count.
    pub cores: Option<f64>,
    /// T's capacity, `NEW` or `OLD:NEW` req/s.
    pub capacity: Option<Capacity>,
}

/// `2`, `"2x"`, `"1.5X"` → K.
fn speedup(f: &Factor) -> Result<f64, BuildError> {
    let k = match f {
        Factor::Number(k) => *k,
        Factor::Text(t) => {
            let t = t.trim();
            t.strip_suffix(['x', 'X'])
                .unwrap_or(t)
                .trim()
                .parse::<f64>()
                .map_err(|_| BuildError::Malformed {
                    field: Field::Speedup,
                    given: t.to_owned(),
                    write: "a factor like 2x or 1.5x",
                })?
        }
    };
    if !k.is_finite() || k <= 1.0 {
        return Err(BuildError::SpeedupNotAbove1(k));
    }
    Ok(k)
}

/// `NEW` or `OLD:NEW` (req/s) → (old, new).
fn capacity(c: &Capacity) -> Result<(Option<f64>, f64), BuildError> {
    let text = match c {
        Capacity::New(n) => return Ok((None, *n)),
        Capacity::Range(r) => return Ok((r.old_rps, r.new_rps)),
        Capacity::Text(t) => t,
    };
    let num = |s: &str| {
        s.trim().parse::<f64>().map_err(|_| BuildError::Malformed {
            field: Field::Capacity,
            given: text.clone(),
            write: "NEW or OLD:NEW in req/s, e.g. 10000:20000",
        })
    };
    match text.split_once(':') {
        Some((old, new)) => Ok((Some(num(old)?), num(new)?)),
        None => Ok((None, num(text)?)),
    }
}

/// The optimization: exactly one of the five ways to state it, parsed and validated.
pub fn optimization(f: &OptimizationFields) -> Result<Optimization, BuildError> {
    let mut given: Vec<(Field, Optimization)> = Vec::new();
    if let Some(k) = &f.speedup {
        given.push((Field::Speedup, Optimization::Speedup(speedup(k)?)));
    }
    if let Some(d) = f.delta_us {
        given.push((Field::DeltaUs, Optimization::DeltaUs(d)));
    }
    if let Some(p) = f.percent {
        given.push((Field::Percent, Optimization::Percent(p)));
    }
    if let Some(n) = f.cores {
        given.push((Field::Cores, Optimization::Cores(n)));
    }
    if let Some(c) = &f.capacity {
        let (old_rps, new_rps) = capacity(c)?;
        given.push((Field::Capacity, Optimization::Capacity { old_rps, new_rps }));
    }
    match given.as_slice() {
        [] => Err(BuildError::NoOptimization),
        [(_, o)] => {
            o.validate().map_err(BuildError::Model)?;
            Ok(*o)
        }
        more => Err(BuildError::SeveralOptimizations(
            more.iter().map(|(f, _)| *f).collect(),
        )),
    }
}

/// Where the app is, as given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppFields {
    /// An emulated app's topology file.
    pub topology: Option<PathBuf>,
    /// Changes of the topology (`svc.endpoint.key=value`), parsed by the [`Emulator`].
    pub set: Vec<String>,
    /// A running app's services, name and selector, in the order given.
    pub services: Vec<(String, ServiceSpec)>,
    /// The URL end-to-end requests enter through (needed with `services`).
    pub entry: Option<String>,
    /// The service owning the entry port, when the agents cannot tell.
    pub entry_service: Option<String>,
}

/// The app an experiment runs against: an emulated app to start, or a running one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppRequest {
    /// An emulated app to start (`topology`).
    pub topology: Option<PathBuf>,
    /// Services of a running app, name → selector.
    pub services: BTreeMap<String, ServiceSpec>,
    /// The entry URL (always set for a running app; for a topology, where the load goes).
    pub entry: Option<String>,
    /// `svc.endpoint.key=value` changes of the topology.
    pub set: Vec<String>,
    /// The service owning the entry port of a running app, when the agents cannot tell.
    pub entry_service: Option<String>,
}

/// Checks where the app is: either a topology or services with an entry.
pub fn app(f: AppFields) -> Result<AppRequest, BuildError> {
    if let Some(e) = &f.entry
        && !((e.starts_with("http://") || e.starts_with("https://")) && url_port(e).is_some())
    {
        return Err(BuildError::BadEntry(e.clone()));
    }
    match (&f.topology, f.services.is_empty()) {
        (Some(_), false) => Err(BuildError::TwoApps),
        (None, true) => Err(BuildError::NoApp),
        (Some(_), true) => Ok(AppRequest {
            topology: f.topology,
            services: BTreeMap::new(),
            entry: f.entry,
            set: f.set,
            entry_service: f.entry_service,
        }),
        (None, false) => {
            if !f.set.is_empty() {
                return Err(BuildError::SetWithoutTopology);
            }
            let Some(entry) = f.entry else {
                return Err(BuildError::NoEntry);
            };
            let mut services = BTreeMap::new();
            for (name, spec) in f.services {
                if name.trim().is_empty() || name.contains('/') || services.contains_key(&name) {
                    return Err(BuildError::BadServiceName(name));
                }
                services.insert(name, spec);
            }
            Ok(AppRequest {
                topology: None,
                services,
                entry: Some(entry),
                set: Vec::new(),
                entry_service: f.entry_service,
            })
        }
    }
}

/// Starts emulated apps from topology files. The emulator is the test bed: this library does not
/// depend on it; the `slowpoke` binary passes one in (`slowpoke_eval::EmuApps`).
pub trait Emulator: Send + Sync {
    /// The services of the topology at `path` with `set` applied, checked without starting it.
    fn service_names(&self, path: &Path, set: &[String]) -> Result<Vec<String>, String>;
    /// Checks the `set` overrides' syntax (`SERVICE.FIELD=VALUE`), before anything starts.
    fn check_sets(&self, set: &[String]) -> Result<(), String>;
    /// Starts the app (on this node, services on loopback); it stops when dropped.
    fn start(&self, path: &Path, set: &[String]) -> Result<Box<dyn App>, String>;
}

/// Said when a request names a topology and no emulator was built in.
const NO_EMULATOR: &str = "this slowpoke was built without the emulator (cargo feature `emu`), so it cannot start a topology: describe a running app with its services and entry";

impl AppRequest {
    /// The app's service names (a topology's are read from its file).
    pub fn service_names(&self, emulator: Option<&dyn Emulator>) -> Result<Vec<String>, String> {
        match &self.topology {
            Some(path) => emulator.ok_or(NO_EMULATOR)?.service_names(path, &self.set),
            None => Ok(self.services.keys().cloned().collect()),
        }
    }

    /// What can be checked before anything starts: a topology needs an emulator, and its `set`
    /// overrides must parse.
    pub fn check(&self, emulator: Option<&dyn Emulator>) -> Result<(), String> {
        if self.topology.is_some() {
            emulator.ok_or(NO_EMULATOR)?.check_sets(&self.set)?;
        }
        Ok(())
    }

    /// Starts an emulated app, or describes the running one to the runner.
    pub fn start(&self, emulator: Option<&dyn Emulator>) -> Result<Box<dyn App>, String> {
        match &self.topology {
            Some(path) => emulator.ok_or(NO_EMULATOR)?.start(path, &self.set),
            None => Ok(Box::new(AttachedApp {
                services: self.services.clone(),
                entry: self.entry.clone().unwrap_or_default(),
                entry_service: self.entry_service.clone(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_optimization_in_any_of_its_forms() {
        let text = |s: &str| Some(Factor::Text(s.into()));
        assert_eq!(
            optimization(&OptimizationFields {
                speedup: text(" 1.5X "),
                ..Default::default()
            }),
            Ok(Optimization::Speedup(1.5))
        );
        assert_eq!(
            optimization(&OptimizationFields {
                capacity: Some(Capacity::Text("10000:20000".into())),
                ..Default::default()
            }),
            Ok(Optimization::Capacity {
                old_rps: Some(10000.0),
                new_rps: 20000.0
            })
        );
        assert_eq!(
            optimization(&OptimizationFields::default()),
            Err(BuildError::NoOptimization)
        );
        assert_eq!(
            optimization(&OptimizationFields {
                speedup: Some(Factor::Number(2.0)),
                cores: Some(4.0),
                ..Default::default()
            }),
            Err(BuildError::SeveralOptimizations(vec![
                Field::Speedup,
                Field::Cores
            ]))
        );
        assert_eq!(
            optimization(&OptimizationFields {
                speedup: text("1x"),
                ..Default::default()
            }),
            Err(BuildError::SpeedupNotAbove1(1.0))
        );
    }

    #[test]
    fn errors_name_fields_or_flags() {
        let e = BuildError::SeveralOptimizations(vec![Field::Speedup, Field::DeltaUs]);
        assert!(
            e.to_string()
                .contains("exactly one optimization, not 2 (speedup and delta_us)"),
            "{e}"
        );
        let flags = e.render(|f| format!("--{}", f.as_str().replace('_', "-")));
        assert!(flags.contains("(--speedup and --delta-us)"), "{flags}");
        let e = optimization(&OptimizationFields {
            speedup: Some(Factor::Text("fast".into())),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "speedup `fast`: write a factor like 2x or 1.5x"
        );
    }

    #[test]
    fn an_app_is_a_topology_or_services_with_an_entry() {
        let svc = || vec![("cart".to_owned(), ServiceSpec::default())];
        let entry = || Some("http://127.0.0.1:8080/".to_owned());
        assert_eq!(app(AppFields::default()), Err(BuildError::NoApp));
        assert_eq!(
            app(AppFields {
                topology: Some("t.json".into()),
                services: svc(),
                ..Default::default()
            }),
            Err(BuildError::TwoApps)
        );
        assert_eq!(
            app(AppFields {
                services: svc(),
                ..Default::default()
            }),
            Err(BuildError::NoEntry)
        );
        assert_eq!(
            app(AppFields {
                services: svc(),
                entry: Some("ftp://x/".into()),
                ..Default::default()
            }),
            Err(BuildError::BadEntry("ftp://x/".into()))
        );
        assert_eq!(
            app(AppFields {
                services: [svc(), svc()].concat(),
                entry: entry(),
                ..Default::default()
            }),
            Err(BuildError::BadServiceName("cart".into()))
        );
        let a = app(AppFields {
            services: svc(),
            entry: entry(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(a.service_names(None).unwrap(), vec!["cart".to_owned()]);
        let t = app(AppFields {
            topology: Some("t.json".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(t.start(None).is_err_and(|e| e.contains("feature `emu`")));
    }
}

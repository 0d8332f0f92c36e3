//! Live control of a running app's services: one [`ServiceControl`] handle per service, typed [`Setting`]s
//! and an explicit [`Scope`] (the service as a whole, or one named endpoint).
//!
//! The handle speaks the control port's wire protocol (`GET /stats`, `PUT /set`, docs/emu.md), which stays
//! the one `curl` users and `slowpoke-emu set` see: a service setting leaves `"endpoint"` out, an endpoint
//! setting names its endpoint. The types only make the caller say which of the two it means, so a wrong
//! key or a setting sent to the wrong level is refused before anything is sent.

use std::fmt;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use crate::client::RunningApp;
use crate::runner::{AppInfo, ServiceInfo};
use crate::service::ServiceStats;
use crate::topology::{ENDPOINT_KEYS, LIVE_SERVICE_KEYS};

/// One live change, typed by the control port's key (`PUT /set`). Endpoint settings take effect from the
/// endpoint's next visit; `Threads` from the service's next visits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    /// Endpoint: CPU burnt per visit (µs, `cpu_us`).
    CpuUs(f64),
    /// Endpoint: CPU burnt per visit under the process-wide mutex (µs, `lock_us`).
    LockUs(f64),
    /// Endpoint: blocking sleep of the worker thread per visit (µs, `sleep_us`).
    SleepUs(f64),
    /// Endpoint: non-blocking wait per visit (µs, `wait_us`).
    WaitUs(f64),
    /// Endpoint: response body size (bytes, `response_bytes`).
    ResponseBytes(u64),
    /// Service: CPU parallelism, 1..=`max_threads` (`threads`). `max_threads` itself is fixed at start.
    Threads(u32),
}

impl Setting {
    /// The control port's (and `--set`'s) name of this setting.
    pub fn key(self) -> &'static str {
        match self {
            Setting::CpuUs(_) => "cpu_us",
            Setting::LockUs(_) => "lock_us",
            Setting::SleepUs(_) => "sleep_us",
            Setting::WaitUs(_) => "wait_us",
            Setting::ResponseBytes(_) => "response_bytes",
            Setting::Threads(_) => "threads",
        }
    }

    /// Whether the setting belongs to the service as a whole ([`Scope::Service`]) rather than to an endpoint.
    pub fn is_service_setting(self) -> bool {
        matches!(self, Setting::Threads(_))
    }

    /// The setting named `key` with `value`, as `slowpoke-emu set svc[.endpoint].key=value` writes it.
    /// Only the shape is checked here (a known live key, a whole number where one is needed); ranges are
    /// the service's to check, so its refusal names the service and its limits.
    pub fn from_key(key: &str, value: f64) -> Result<Setting, String> {
        let whole = |what: &str| {
            if value.fract() == 0.0 && value >= 0.0 && value <= f64::from(u32::MAX) {
                Ok(value)
            } else {
                Err(format!("{key} = {value}: must be a whole number of {what}"))
            }
        };
        Ok(match key {
            "cpu_us" => Setting::CpuUs(value),
            "lock_us" => Setting::LockUs(value),
            "sleep_us" => Setting::SleepUs(value),
            "wait_us" => Setting::WaitUs(value),
            "response_bytes" => Setting::ResponseBytes(whole("bytes")? as u64),
            "threads" => Setting::Threads(whole("worker threads (1..=max_threads)")? as u32),
            "max_threads" => {
                return Err(
                    "max_threads is the runtime's worker count, fixed at start: restart the app with \
                     run --set SERVICE.max_threads=N"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "unknown setting {other:?} (endpoint settings: {}; service settings: {})",
                    ENDPOINT_KEYS.join(", "),
                    LIVE_SERVICE_KEYS.join(", ")
                ));
            }
        })
    }

    fn value(self) -> serde_json::Value {
        match self {
            Setting::CpuUs(v) | Setting::LockUs(v) | Setting::SleepUs(v) | Setting::WaitUs(v) => {
                v.into()
            }
            Setting::ResponseBytes(n) => n.into(),
            Setting::Threads(n) => n.into(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key();
        match *self {
            Setting::CpuUs(v) | Setting::LockUs(v) | Setting::SleepUs(v) | Setting::WaitUs(v) => {
                write!(f, "{key}={v}")
            }
            Setting::ResponseBytes(n) => write!(f, "{key}={n}"),
            Setting::Threads(n) => write!(f, "{key}={n}"),
        }
    }
}

/// What a [`Setting`] applies to: the service as a whole (`threads`) or one of its endpoints (the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Service,
    Endpoint(&'a str),
}

/// The control port of one running service: read its stats, change its settings live.
/// Get one from [`RunningApp::control`], [`AppInfo::control`] or [`ServiceControl::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceControl {
    service: String,
    /// `http://host:control_port`.
    url: String,
}

impl ServiceControl {
    /// The service behind a control address (`http://127.0.0.1:PORT` or `127.0.0.1:PORT`): asks it its name.
    pub fn connect(control: &str) -> Result<ServiceControl> {
        let c = control.trim_end_matches('/');
        let url = if c.starts_with("http://") {
            c.to_owned()
        } else {
            format!("http://{c}")
        };
        let service = get_stats(&url)?.service;
        Ok(ServiceControl { service, url })
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// `http://host:control_port` of the service.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET /stats`: the service's counters and current settings.
    pub fn stats(&self) -> Result<ServiceStats> {
        get_stats(&self.url)
    }

    /// Changes `setting` of the service ([`Scope::Service`], for `Threads`) or of one of its endpoints
    /// ([`Scope::Endpoint`], for the rest). A value the service refuses (negative time, `threads` outside
    /// 1..=`max_threads`, unknown endpoint) is an error naming it, and nothing changes.
    pub fn set(&self, scope: Scope<'_>, setting: Setting) -> Result<()> {
        let svc = &self.service;
        let key = setting.key();
        let body = match (scope, setting.is_service_setting()) {
            (Scope::Service, true) => serde_json::json!({ "key": key, "value": setting.value() }),
            (Scope::Endpoint(ep), false) => {
                serde_json::json!({ "endpoint": ep, "key": key, "value": setting.value() })
            }
            (Scope::Endpoint(ep), true) => bail!(
                "service {svc}: {key} is a setting of the service, not of endpoint {ep} \
                 (write {svc}.{key}=N, or pass Scope::Service)"
            ),
            (Scope::Service, false) => bail!(
                "service {svc}: {key} is an endpoint setting: name the endpoint \
                 ({svc}.ENDPOINT.{key}=V, or pass Scope::Endpoint)"
            ),
        };
        let what = match scope {
            Scope::Service => format!("{svc}.{setting}"),
            Scope::Endpoint(ep) => format!("{svc}.{ep}.{setting}"),
        };
        let url = format!("{}/set", self.url);
        match agent().put(&url).send_json(&body) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let text = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or(text);
                bail!("PUT {url} {what}: HTTP {code}: {text}")
            }
            Err(e) => Err(anyhow!(e)).with_context(|| format!("PUT {url} {what}")),
        }
    }
}

impl RunningApp {
    /// The control handle of one of the app's services.
    pub fn control(&self, service: &str) -> Result<ServiceControl> {
        self.info.control(service)
    }
}

impl AppInfo {
    /// Reads the line a runner printed (or wrote with `--info-file`).
    pub fn read(path: impl AsRef<Path>) -> Result<AppInfo> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let line = text.lines().find(|l| !l.trim().is_empty()).ok_or_else(|| {
            anyhow!(
                "{}: empty; give the file `run --info-file` wrote",
                path.display()
            )
        })?;
        serde_json::from_str(line)
            .with_context(|| format!("{}: not a slowpoke-emu run line", path.display()))
    }

    /// Host part of `s`'s URLs: its own (a cluster run: its node's address), else the app's.
    pub fn host_of<'a>(&'a self, s: &'a ServiceInfo) -> &'a str {
        match (&s.host, self.host.as_str()) {
            (Some(h), _) => h,
            (None, "") => "127.0.0.1",
            (None, h) => h,
        }
    }

    /// The control handle of one of the app's services.
    pub fn control(&self, service: &str) -> Result<ServiceControl> {
        let s = self.services.get(service).ok_or_else(|| {
            anyhow!(
                "no service {service:?} in this app (services: {})",
                self.services.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let host = self.host_of(s);
        Ok(ServiceControl {
            service: service.to_owned(),
            url: format!("http://{host}:{}", s.control_port),
        })
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

fn get_stats(base: &str) -> Result<ServiceStats> {
    let url = format!("{base}/stats");
    let resp = agent()
        .get(&url)
        .call()
        .with_context(|| format!("GET {url} (is the app still running?)"))?;
    let mut body = String::new();
    resp.into_reader().read_to_string(&mut body)?;
    serde_json::from_str(&body).with_context(|| format!("parsing {url}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_live_key_has_one_setting_and_back() {
        for &key in ENDPOINT_KEYS.iter().chain(LIVE_SERVICE_KEYS) {
            let s = Setting::from_key(key, 3.0).expect(key);
            assert_eq!(s.key(), key);
            assert_eq!(s.is_service_setting(), LIVE_SERVICE_KEYS.contains(&key));
        }
        assert_eq!(
            Setting::from_key("cpu_us", 750.0),
            Ok(Setting::CpuUs(750.0))
        );
        assert_eq!(Setting::from_key("threads", 2.0), Ok(Setting::Threads(2)));
        assert_eq!(Setting::Threads(2).to_string(), "threads=2");
        assert_eq!(Setting::CpuUs(7.5).to_string(), "cpu_us=7.5");
        assert_eq!(Setting::CpuUs(750.0).to_string(), "cpu_us=750");
    }

    #[test]
    fn keys_that_cannot_change_live_are_refused_with_what_to_do() {
        let e = Setting::from_key("max_threads", 4.0).unwrap_err();
        assert!(e.contains("restart") && e.contains("max_threads=N"), "{e}");
        let e = Setting::from_key("cores", 2.0).unwrap_err();
        assert!(
            e.contains("cores") && e.contains("threads") && e.contains("cpu_us"),
            "{e}"
        );
        for v in [1.5, -1.0, 1e12] {
            let e = Setting::from_key("threads", v).unwrap_err();
            assert!(e.contains(&format!("threads = {v}")), "{e}");
        }
        assert!(Setting::from_key("response_bytes", 0.5).is_err());
    }

    #[test]
    fn a_setting_sent_to_the_wrong_scope_is_refused_before_sending() {
        // Port 9 (discard) is never asked: the scope check comes first.
        let c = ServiceControl {
            service: "w".into(),
            url: "http://127.0.0.1:9".into(),
        };
        let e = c
            .set(Scope::Endpoint("work"), Setting::Threads(2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("service w") && e.contains("w.threads=N"), "{e}");
        let e = c
            .set(Scope::Service, Setting::CpuUs(1.0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("endpoint setting") && e.contains("w.ENDPOINT.cpu_us"),
            "{e}"
        );
    }
}

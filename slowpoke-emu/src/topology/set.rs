//! Setting changes: `--set service[.endpoint].key=value` before a start, and the keys each level accepts
//! (the control port's `PUT /set` takes the same endpoint keys live, and `threads` of the service settings).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Endpoint, Topology};

impl Topology {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_chain;

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
        let mut t = test_chain();
        t.apply(&"b.y.cpu_us=7".parse().unwrap()).unwrap();
        assert!((t.services["b"].endpoints["y"].cpu_us - 7.0).abs() < 1e-12);
        assert!(t.apply(&"b.y.bogus=7".parse().unwrap()).is_err());
        assert!(t.apply(&"b.threads=0".parse().unwrap()).is_err());
    }

    #[test]
    fn max_threads_sizes_the_runtime_and_bounds_threads() {
        let mut t = test_chain();
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
        let mut t = test_chain();
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

//! The audit log: one line (tracing target `audit`) for every call that may change the agent —
//! who called (uid and pid on the socket, address over TCP), method, path, what it asked to
//! change, and the answer's status — and one for every refused call. An operator can answer
//! "who slowed this service down?" from the log alone.
//!
//! What changed is re-serialised from the typed request (a selector, a plan), never the raw
//! body: the line cannot carry a caller's control characters or unknown fields.

use axum::http::{Method, StatusCode};
use serde::Serialize;

use super::access::Caller;
use crate::api::{SchedulingPlan, ServiceSpec, SlowdownPlan};

/// Longest description of a change kept in the log (a plan of 64 services fits).
const MAX_CHANGE_CHARS: usize = 4096;

/// What a mutating call asks to change, from its path and (already size-limited) body.
pub(super) fn change(method: &Method, path: &str, body: &[u8]) -> String {
    let typed = |what: &str, parsed: Option<String>| match parsed {
        Some(json) => format!("{what} {json}"),
        None => format!("{what}: invalid body ({} bytes)", body.len()),
    };
    let service = path.strip_prefix("/v1/services/");
    let text = match (method.as_str(), path, service) {
        ("PUT", _, Some(name)) => typed(
            &format!("register service {name:?} with selector"),
            compact::<ServiceSpec>(body),
        ),
        ("DELETE", _, Some(name)) => format!("forget service {name:?}"),
        ("PUT", "/v1/slowdown", _) => typed("install plan", compact::<SlowdownPlan>(body)),
        ("DELETE", "/v1/slowdown", _) => "remove the plan".to_owned(),
        ("PUT", "/v1/scheduling", _) => typed("install schedule", compact::<SchedulingPlan>(body)),
        ("DELETE", "/v1/scheduling", _) => "end the schedule".to_owned(),
        ("POST", "/v1/scheduling/renew", _) => "renew the schedule's lease".to_owned(),
        // The test hook's route exists only in test builds (the rails look for it in release).
        #[cfg(feature = "test-hooks")]
        (_, p, _) if p.starts_with("/v1/debug/pause/") => "manual pause (test hook)".to_owned(),
        #[cfg(feature = "test-hooks")]
        (_, p, _) if p.starts_with("/v1/debug/request-event/") => {
            "request event (test hook)".to_owned()
        }
        _ => format!("{} bytes to an unknown endpoint", body.len()),
    };
    truncate(text)
}

fn compact<T: serde::de::DeserializeOwned + Serialize>(body: &[u8]) -> Option<String> {
    let v: T = serde_json::from_slice(body).ok()?;
    serde_json::to_string(&v).ok()
}

fn truncate(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_CHANGE_CHARS) {
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Logs one call: calls that change something at info, calls the agent refused (any method,
/// before any handler ran) at warn.
pub(super) fn record(
    caller: &Caller,
    method: &Method,
    uri: &str,
    change: Option<&str>,
    status: StatusCode,
    refused: bool,
) {
    let change = change.unwrap_or("-");
    let status = status.as_u16();
    if refused {
        tracing::warn!(target: "audit", caller = %caller, method = %method, path = uri, change, status, "refused");
    } else {
        tracing::info!(target: "audit", caller = %caller, method = %method, path = uri, change, status, "call");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_service_selector_and_plan() {
        let put = Method::PUT;
        assert_eq!(
            change(&put, "/v1/services/web", br#"{ "ports" : [8080] }"#),
            r#"register service "web" with selector {"ports":[8080]}"#
        );
        assert_eq!(
            change(&put, "/v1/services/web", b"\x1b[2Jjunk\n"),
            r#"register service "web" with selector: invalid body (9 bytes)"#
        );
        let plan = change(
            &put,
            "/v1/slowdown",
            br#"{"services":{"cart":{"delay_per_visit_ns":200000}}}"#,
        );
        assert!(
            plan.starts_with("install plan {")
                && plan.contains(r#""cart":{"delay_per_visit_ns":200000}"#),
            "{plan}"
        );
        assert_eq!(
            change(&Method::DELETE, "/v1/services/web", b""),
            r#"forget service "web""#
        );
        assert_eq!(
            change(&Method::DELETE, "/v1/slowdown", b""),
            "remove the plan"
        );
        let long = truncate("x".repeat(MAX_CHANGE_CHARS + 10));
        assert_eq!(long.len(), MAX_CHANGE_CHARS + 3);
    }
}

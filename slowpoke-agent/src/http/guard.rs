//! The middlewares of the agent's API. [`guard`], which every request passes: admission
//! ([`super::access`]), then routing, then the audit line ([`super::audit`]). [`body_rules`], on
//! the routes only (so a method a path does not have gets `405`, not a body complaint): the body
//! rules of calls that change something.
//!
//! Body rules of mutating calls:
//! - **`Content-Type: application/json`** on every PUT and on any other mutating call that
//!   carries a body (415 otherwise). A browser sends a cross-site request without asking the
//!   server first only with a "simple" content type (`text/plain`, forms); JSON is not one, so
//!   a foreign page cannot smuggle a plan in.
//! - **At most [`MAX_BODY_BYTES`]** (413 otherwise), checked on `Content-Length` before
//!   reading and again while reading (chunked bodies): the largest legal request (a plan for 64
//!   services) is a few KiB.

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};

use super::{
    access::{Auth, Caller, Refusal},
    audit,
};

/// Largest request body the agent reads (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Whether a method may change the agent (every method but GET, HEAD, OPTIONS).
fn mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub(super) async fn guard(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let caller = req
        .extensions()
        .get::<ConnectInfo<Caller>>()
        .map_or(Caller::Unknown, |c| c.0.clone());
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let (response, refused) = match admit(&auth, &caller, req) {
        Ok(req) => (next.run(req).await, false),
        Err(refusal) => (refusal.into_response(), true),
    };
    let outcome = response.extensions().get::<BodyOutcome>();
    let refused = refused || outcome.is_some_and(|o| o.refused);
    if refused || mutating(&method) {
        audit::record(
            &caller,
            &method,
            &uri,
            outcome.and_then(|o| o.change.as_deref()),
            response.status(),
            refused,
        );
    }
    response
}

/// What [`body_rules`] found, handed back to [`guard`] (which writes the audit line) on the
/// response.
#[derive(Clone)]
struct BodyOutcome {
    /// What the call asks to change, for the audit line.
    change: Option<String>,
    /// The body broke a rule (413, 415).
    refused: bool,
}

/// Admits the caller (socket credentials, token, `Host`).
fn admit(auth: &Auth, caller: &Caller, mut req: Request) -> Result<Request, Refusal> {
    let disclosure = auth.admit(caller, req.method(), req.uri().path(), req.headers())?;
    req.extensions_mut().insert(disclosure);
    Ok(req)
}

/// The body rules of a mutating call, run only on a route that exists for the method (a
/// `route_layer`): a method the path does not have gets the router's `405`, whatever it carries.
pub(super) async fn body_rules(req: Request, next: Next) -> Response {
    if !mutating(req.method()) {
        return next.run(req).await;
    }
    match checked_body(req).await {
        Ok((req, change)) => {
            let mut response = next.run(req).await;
            response.extensions_mut().insert(BodyOutcome {
                change: Some(change),
                refused: false,
            });
            response
        }
        Err(refusal) => {
            let mut response = refusal.into_response();
            response.extensions_mut().insert(BodyOutcome {
                change: None,
                refused: true,
            });
            response
        }
    }
}

/// Buffers and checks the body of a mutating call. Returns the request to run and what it asks
/// to change.
async fn checked_body(req: Request) -> Result<(Request, String), Refusal> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    if (parts.method == Method::PUT || !bytes.is_empty()) && !is_json(&parts.headers) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "calls that change the agent take a JSON body: send `Content-Type: application/json`",
        ));
    }
    let change = audit::change(&parts.method, parts.uri.path(), &bytes);
    Ok((Request::from_parts(parts, Body::from(bytes)), change))
}

fn too_large() -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {} KiB, more than any valid call needs",
            MAX_BODY_BYTES / 1024
        ),
    )
}

/// `application/json`, any parameters (`; charset=utf-8`), any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().expect("value"));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!with("application/jsonp"));
        assert!(!is_json(&HeaderMap::new()));
    }
}

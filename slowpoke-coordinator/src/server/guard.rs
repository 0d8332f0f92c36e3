//! The checks every request passes before it is routed (and before the token is looked at):
//! who it is addressed to, which page sent it, what it carries.
//!
//! A browser is the server's most dangerous client: it runs other sites' scripts on a machine
//! that can reach the server (DNS rebinding, cross-site requests: [`slowpoke_api::auth::host`]).
//! In order, each with the status a client can act on:
//!
//! 1. `Host` must be one of the server's names ([`HostAllowList`]) → else `403`;
//! 2. a mutating call (not GET/HEAD/OPTIONS) must come from no page or a same-origin one
//!    (`Origin`) → else `403`;
//! 3. a declared body (`Content-Length`) must fit [`MAX_BODY`] → else `413` (a body without a
//!    length is cut at the same size by the handler that reads it);
//! 4. a call with a body (POST, PUT, PATCH) to a route that takes that method (a method the
//!    path lacks gets `405`) must say `Content-Type: application/json` → else `415`: HTML forms cannot send JSON, and a cross-site `fetch` that does is preflighted
//!    (which this server never approves: it sends no CORS headers).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use slowpoke_api::auth::{HostAllowList, origin_allowed};

use super::ApiError;

/// The largest request body the server reads: an experiment request is a few hundred bytes; 64
/// KiB leaves room for many services and a load body while keeping a flood of large requests
/// cheap to refuse.
pub const MAX_BODY: usize = 64 * 1024;

/// Runs checks 1–3 before routing; `hosts` is the server's [`HostAllowList`].
pub(super) async fn check_request(
    State(hosts): State<Arc<HostAllowList>>,
    req: Request,
    next: Next,
) -> Response {
    match refusal(&hosts, &req) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

fn refusal(hosts: &HostAllowList, req: &Request) -> Option<ApiError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    // HTTP/2 carries the name in the request's authority instead of a `Host` header.
    let host = header(header::HOST).or_else(|| {
        req.uri()
            .authority()
            .map(axum::http::uri::Authority::as_str)
    });
    if !hosts.allows(host) {
        return Some(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "this server answers only requests addressed to {hosts} (the Host header was `{}`), so that a web page of another site cannot reach it through DNS rebinding; to serve another name, start it with --allowed-host NAME (which needs --token-file)",
                host.unwrap_or("")
            ),
        ));
    }
    let method = req.method();
    let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && !origin_allowed(header(header::ORIGIN), host) {
        return Some(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "cross-site request refused: a page of `{}` may not change this server (only its own page, or a program sending no Origin header, may)",
                header(header::ORIGIN).unwrap_or("")
            ),
        ));
    }
    let declared = header(header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Some(too_large());
    }
    None
}

/// Check 4, on the routes only (a `route_layer`), so that a method a path does not have gets
/// `405` whatever it carries.
pub(super) async fn check_json(req: Request, next: Next) -> Response {
    match not_json(&req) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

fn not_json(req: &Request) -> Option<ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let has_body = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    (has_body && !is_json(content_type)).then(|| {
        ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the body as JSON with `Content-Type: application/json` (curl: -H 'Content-Type: application/json'); got `{}`",
                content_type.unwrap_or("no Content-Type")
            ),
        )
    })
}

/// The `413` of a body over [`MAX_BODY`].
pub(super) fn too_large() -> ApiError {
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than {} KiB, the most this server reads; an experiment request needs far less (see docs/coordinator-api.md)",
            MAX_BODY / 1024
        ),
    )
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    })
}

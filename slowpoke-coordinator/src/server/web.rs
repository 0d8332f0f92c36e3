//! The web page at `/`: plain HTML + JavaScript + CSS embedded in the binary
//! (`slowpoke-coordinator/web/`), a thin view over the `/v1` API.
//!
//! The files carry no data, so they are served without a token (a browser cannot attach one to
//! a navigation); the page asks for the token once and keeps it for the tab (sessionStorage).
//! Every answer forbids framing: the page has a Cancel button, and another site showing it in an
//! invisible frame could trick a user into clicking it (clickjacking).

use axum::{http::header, response::IntoResponse};

const INDEX_HTML: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");

/// No framing by other sites, no content-type guessing.
const HARDENING: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
];

pub(super) async fn index() -> impl IntoResponse {
    (
        HARDENING,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

pub(super) async fn app_js() -> impl IntoResponse {
    (
        HARDENING,
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

pub(super) async fn style_css() -> impl IntoResponse {
    (
        HARDENING,
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

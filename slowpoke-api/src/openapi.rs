//! The OpenAPI documents of both HTTP APIs, generated from this crate's types (feature
//! `openapi`). Each server serves its own at `GET /v1/openapi.json`, and each server's tests check
//! that the document and the router agree route for route and that real answers match the
//! schemas — so the document cannot drift from the code the way a hand-written one did.
//!
//! The operations are declared here, on bodiless functions, rather than on the servers'
//! handlers: the documents then build without the servers (a client or a tool only needs this
//! crate), and a handler's signature is free to change as long as its answer keeps its type.

mod agent;
mod coordinator;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

pub use agent::document as agent;
pub use coordinator::document as coordinator;

/// Adds the `bearer` security scheme both APIs use (`Authorization: Bearer <token>`).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

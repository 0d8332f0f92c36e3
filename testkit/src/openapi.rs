//! Checks that an HTTP server and its OpenAPI document agree: the routes it really serves against
//! the operations the document lists, and real answers against the document's schemas. Used by
//! the agent's and the coordinator's API tests.

// "OpenAPI", "HEAD" and the like are names, not code.
#![allow(clippy::doc_markdown)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

/// An operation: upper-case method and path template, e.g. `("PUT", "/v1/services/{name}")`.
pub type Route = (String, String);

/// Every operation of an OpenAPI document (HEAD, OPTIONS and TRACE are left out: servers answer
/// them for every GET route without documenting them).
pub fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let paths = doc["paths"].as_object().expect("the document has `paths`");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The path templates an axum router holds, read from its `Debug` output (axum has no public
/// route listing; its debug output names every path, including those of fallbacks, which
/// [`served_routes`] then tells apart by probing). Panics when it finds none, so a change of
/// axum's output fails loudly rather than passing vacuously.
pub fn router_paths(router_debug: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    // `RouteId(3): "/v1/health"` in a map of paths; `RouteId(3): MethodRouter {...}` elsewhere.
    for chunk in router_debug.split("RouteId(").skip(1) {
        let after_id = chunk.trim_start_matches(|c: char| c.is_ascii_digit());
        let Some(rest) = after_id.strip_prefix("): \"") else {
            continue;
        };
        let Some(end) = rest.find('"') else { continue };
        let path = &rest[..end];
        if !path.contains("__private__") {
            out.insert(path.to_owned());
        }
    }
    assert!(
        !out.is_empty(),
        "no route paths found in the router's debug output (did axum change its format?)"
    );
    out
}

/// The operations a running server really serves at these path templates (parameters filled in
/// with `x`): each path is called with a method no route uses, and the `Allow` header of the
/// `405` names the methods the router has for it. A path without `Allow` (a fallback, a
/// catch-all that answers every method) is no operation. `token` is sent as a bearer token.
pub fn served_routes(
    base_url: &str,
    paths: &BTreeSet<String>,
    token: Option<&str>,
) -> BTreeSet<Route> {
    let mut out = BTreeSet::new();
    for path in paths {
        let concrete = fill_parameters(path);
        let mut req = ureq::request("PROBE", &format!("{base_url}{concrete}"))
            .timeout(Duration::from_secs(10));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = match req.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("probing {path}: {e}"),
        };
        let Some(allow) = resp.header("allow") else {
            continue;
        };
        for method in allow.split(',').map(str::trim) {
            if !matches!(method, "HEAD" | "OPTIONS" | "TRACE" | "") {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

/// `/v1/services/{name}` → `/v1/services/x`.
fn fill_parameters(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push('x');
            }
            '}' => inside = false,
            c if !inside => out.push(c),
            _ => {}
        }
    }
    out
}

/// Asserts that `body` is what the document promises for the answer `status` to `method path`
/// (`path` as the document writes it): the operation and status are documented with a JSON
/// schema, and the body validates against it (with every `$ref` resolved in the document).
pub fn assert_answer_matches(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: no JSON schema documented for status {status}"
    );
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    let validator = jsonschema::draft202012::new(&root)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: the schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} answered {status} with a body the document does not allow:\n{}\nbody: {body}",
        errors.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_axum_debug_output() {
        let debug = r#"Router { path_router: PathRouter { routes: {RouteId(1): MethodRouter { get: Route(..) }}, node: Node { paths: {RouteId(1): "/v1/health", RouteId(2): "/v1/services/{name}"} } }, fallback_router: PathRouter { routes: {}, node: Node { paths: {RouteId(3): "/", RouteId(4): "/{*__private__axum_fallback}"} } } }"#;
        let got = router_paths(debug);
        let want: BTreeSet<String> = ["/", "/v1/health", "/v1/services/{name}"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            fill_parameters("/v1/experiments/{id}/plot.svg"),
            "/v1/experiments/x/plot.svg"
        );
    }

    #[test]
    fn answers_are_checked_against_the_documented_schema() {
        let doc = serde_json::json!({
            "paths": {"/v1/x": {"get": {"responses": {"200": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/X"}}}}}}}},
            "components": {"schemas": {"X": {"type": "object", "required": ["n"],
                "properties": {"n": {"type": "integer"}}}}}
        });
        assert_eq!(
            documented_routes(&doc),
            BTreeSet::from([("GET".to_owned(), "/v1/x".to_owned())])
        );
        assert_answer_matches(&doc, "GET", "/v1/x", 200, &serde_json::json!({"n": 1}));
        let bad = std::panic::catch_unwind(|| {
            assert_answer_matches(&doc, "GET", "/v1/x", 200, &serde_json::json!({"n": "one"}));
        });
        assert!(bad.is_err(), "a body of the wrong type must fail");
        let undocumented = std::panic::catch_unwind(|| {
            assert_answer_matches(&doc, "GET", "/v1/x", 404, &serde_json::json!({}));
        });
        assert!(undocumented.is_err(), "an undocumented status must fail");
    }
}

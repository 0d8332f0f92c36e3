//! `POST /v1/experiments`: the coordinator parses the body as an `ExperimentRequest`, then checks
//! it (slowpoke-coordinator's `server::request::check`). Here: the parse and the parts of the
//! check that live in slowpoke-api. Whatever parses survives a trip through JSON unchanged (the
//! web page and the CLI build the same body), `kind` serializes as its documented name, and every
//! `services` selector that parses is sane.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpoke_api::coordinator::ExperimentRequest;
use slowpoke_api::selector::parse_selector;
use slowpoke_fuzz::{assert_round_trip, assert_selector_sane};

fuzz_target!(|body: &[u8]| {
    let Ok(req) = serde_json::from_slice::<ExperimentRequest>(body) else {
        return;
    };
    assert_round_trip(&req);
    assert_eq!(
        serde_json::to_value(req.kind).expect("a kind serializes"),
        req.kind.as_str(),
        "kind serializes differently from its documented name"
    );
    for selector in req.services.values() {
        if let Ok(spec) = parse_selector(selector) {
            assert_selector_sane(selector, &spec);
        }
    }
});

//! The CLI's selectors (`--service cart=port:8080`), also the values of a coordinator request's
//! `services`. A selector that parses is one non-empty selector without port or pid 0, reads the
//! same when written back, and `NAME=SELECTOR` yields a usable agent service name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpoke_api::selector::{parse_selector, parse_service_arg};
use slowpoke_fuzz::assert_selector_sane;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = parse_selector(input) {
        assert_selector_sane(input, &spec);
    }
    if let Ok((name, spec)) = parse_service_arg(input) {
        assert!(
            !name.is_empty() && name.trim() == name && !name.contains('/'),
            "`{input}` gave the name {name:?}"
        );
        let (_, selector) = input.split_once('=').expect("NAME=SELECTOR has a `=`");
        assert_eq!(
            parse_selector(selector).as_ref(),
            Ok(&spec),
            "`{input}`: the selector part alone parses differently"
        );
        assert_selector_sane(selector, &spec);
    }
});

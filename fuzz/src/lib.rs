//! The properties the fuzz targets (`fuzz_targets/*.rs`) assert, shared so that a selector means
//! the same whether it comes from the CLI (`selector`) or from a coordinator request
//! (`coordinator_request`).
//!
//! A target that only checks "no panic" finds crashes; these also find answers that are wrong:
//! a body that parses but does not survive a trip through JSON (the coordinator forwards agent
//! types and stores results as JSON, so a lossy trip changes what was asked), a selector that
//! parses into something the agent must refuse.

use std::fmt::Debug;

use serde::{Serialize, de::DeserializeOwned};
use slowpoke_api::agent::ServiceSpec;
use slowpoke_api::selector::parse_selector;

/// `value` serializes, and the text parses back to an equal value.
pub fn assert_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let text = serde_json::to_string(value)
        .unwrap_or_else(|e| panic!("{value:?} does not serialize: {e}"));
    let again: T = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`{text}` (serialized from {value:?}) does not parse: {e}"));
    assert_eq!(&again, value, "`{text}` parses back to another value");
}

/// What every selector that `parse_selector` accepted must be: exactly one non-empty selector
/// (no port 0, no pid 0, a trimmed name or path), nothing else set, and the same spec when
/// written back as `kind:value` and parsed again.
pub fn assert_selector_sane(input: &str, spec: &ServiceSpec) {
    let given = [
        // `+port:` after a pod or label selector is part of it, not a second selector.
        spec.ports.is_some() && spec.kubernetes.is_none(),
        spec.pids.is_some(),
        spec.cgroup.is_some(),
        spec.comm.is_some(),
        spec.kubernetes.is_some(),
        spec.pods.is_some(),
    ];
    assert_eq!(
        given.iter().filter(|g| **g).count(),
        1,
        "`{input}` gave not exactly one selector: {spec:?}"
    );
    assert!(
        spec.cores.is_none() && spec.listen_ports.is_none(),
        "`{input}` set more than a selector: {spec:?}"
    );
    let written = if let Some(k) = &spec.kubernetes {
        match &spec.ports {
            Some(ports) => format!("{}+port:{}", k.display(), join(ports)),
            None => k.display(),
        }
    } else if let Some(ports) = &spec.ports {
        assert!(
            !ports.is_empty() && !ports.contains(&0),
            "`{input}`: {ports:?}"
        );
        format!("port:{}", join(ports))
    } else if let Some(pids) = &spec.pids {
        assert!(
            !pids.is_empty() && !pids.contains(&0),
            "`{input}`: {pids:?}"
        );
        format!("pid:{}", join(pids))
    } else {
        let (kind, value) = match (&spec.comm, &spec.cgroup) {
            (Some(comm), _) => ("comm", comm),
            (None, Some(cgroup)) => ("cgroup", cgroup),
            (None, None) => unreachable!("one selector is set"),
        };
        assert!(
            !value.is_empty() && value.trim() == value,
            "`{input}`: {kind} {value:?} is empty or untrimmed"
        );
        format!("{kind}:{value}")
    };
    assert_eq!(
        parse_selector(&written).as_ref(),
        Ok(spec),
        "`{input}` parsed, but its written form `{written}` does not parse the same"
    );
    assert_round_trip(spec);
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

//! `PUT /v1/services/{name}`: the agent parses the body as a `ServiceSpec`. Whatever parses must
//! survive a trip through JSON unchanged (the coordinator forwards specs it parsed to agents), and
//! what serializes must name only known fields (the type refuses unknown ones).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpoke_api::agent::ServiceSpec;
use slowpoke_fuzz::assert_round_trip;

const FIELDS: [&str; 9] = [
    "ports",
    "pids",
    "cgroup",
    "comm",
    "cores",
    "listen_ports",
    "may_be_absent",
    "pods",
    "kubernetes",
];

fuzz_target!(|body: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<ServiceSpec>(body) else {
        return;
    };
    assert_round_trip(&spec);
    let value = serde_json::to_value(&spec).expect("a spec serializes");
    let object = value.as_object().expect("a spec is a JSON object");
    assert!(
        object.keys().all(|k| FIELDS.contains(&k.as_str())),
        "unexpected field in {value}"
    );
    if let Some(cores) = spec.cores {
        assert!(cores.is_finite(), "JSON has no non-finite numbers: {cores}");
    }
});

//! `PUT /v1/slowdown`: the agent parses the body as a `SlowdownPlan`. Whatever parses must
//! survive a trip through JSON unchanged (the agent answers with the plan in force, the
//! coordinator re-reads it), and the answer always shows `mode` and `synchronized` (docs/api.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpoke_api::agent::SlowdownPlan;
use slowpoke_fuzz::assert_round_trip;

fuzz_target!(|body: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<SlowdownPlan>(body) else {
        return;
    };
    assert_round_trip(&plan);
    let value = serde_json::to_value(&plan).expect("a plan serializes");
    assert!(
        matches!(value["mode"].as_str(), Some("pause" | "spin")),
        "mode missing or unknown in {value}"
    );
    assert!(
        value["synchronized"].is_boolean(),
        "synchronized missing in {value}"
    );
    for (name, delay) in &plan.services {
        assert_eq!(
            value["services"][name]["delay_per_visit_ns"].as_u64(),
            Some(delay.delay_per_visit_ns),
            "the delay of {name:?} changed in {value}"
        );
    }
});

//! `PUT /v1/scheduling`: the agent parses the body as a `SchedulingPlan`. Whatever parses must
//! survive a trip through JSON unchanged (the agent answers with the schedule in force, the
//! coordinator's `slowpoke tail` re-reads it), the answer always shows `policy` with its
//! documented name, and the services keep their order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slowpoke_api::agent::SchedulingPlan;
use slowpoke_fuzz::assert_round_trip;

fuzz_target!(|body: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<SchedulingPlan>(body) else {
        return;
    };
    assert_round_trip(&plan);
    let value = serde_json::to_value(&plan).expect("a schedule serializes");
    assert!(
        matches!(
            value["policy"].as_str(),
            Some("oldest-first" | "per-service-fifo")
        ),
        "policy missing or unknown in {value}"
    );
    let services: Vec<&str> = value["services"]
        .as_array()
        .expect("services always shown")
        .iter()
        .map(|s| s.as_str().expect("a service name"))
        .collect();
    assert_eq!(services, plan.services, "the services changed in {value}");
});

//! `slowpoke-agent --check-kernel` on this machine's kernel (6.18, run as root): everything the
//! kernel programs need is present, in the text and the JSON report, with exit code 0. The
//! other side (a kernel that lacks the sock tracepoints: exit code 3 and one message) was
//! checked for real on Debian 12's 6.1 under qemu (`cargo xtask old-kernel`,
//! docs/results/old-kernel-*); the message itself is unit-tested with a fake feature set
//! (`kernel::support`).

use std::process::Command;

use slowpoke_agent::kernel::support::REQUIREMENTS;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_slowpoke-agent"))
}

#[test]
fn kernel_check_finds_everything_on_this_kernel() {
    let out = agent()
        .arg("--check-kernel")
        .output()
        .expect("running slowpoke-agent --check-kernel");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "--check-kernel failed (run the tests as root):\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("all {} present", REQUIREMENTS.len())),
        "{text}"
    );
    assert!(
        !text.contains("MISSING") && !text.contains("UNKNOWN"),
        "{text}"
    );
    for req in REQUIREMENTS {
        assert!(
            text.contains(req.name),
            "{} not reported:\n{text}",
            req.name
        );
    }
}

#[test]
fn kernel_check_json_says_supported() {
    let out = agent()
        .args(["--check-kernel", "--json"])
        .output()
        .expect("running slowpoke-agent --check-kernel --json");
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert_eq!(report["supported"], true, "{report:#}");
    assert_eq!(report["attach"], "tracepoints", "{report:#}");
    assert_eq!(
        report["fallback"],
        serde_json::json!([]),
        "probed only without tracepoints"
    );
    assert_eq!(report["message"], serde_json::Value::Null);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel_release"], release.trim());
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), REQUIREMENTS.len());
    for check in checks {
        assert_eq!(check["status"], "present", "{check}");
    }
}

#[test]
fn json_without_check_kernel_is_a_usage_error() {
    let out = agent()
        .arg("--json")
        .output()
        .expect("running slowpoke-agent");
    assert_eq!(out.status.code(), Some(2), "clap's usage-error exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--check-kernel"));
}

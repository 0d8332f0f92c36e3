//! The agent's own capabilities, from `/proc/self/status` (`CapEff`): what it can do to other
//! users' processes.

use std::sync::OnceLock;

/// `CAP_KILL`: signal processes of other users (linux/capability.h).
const CAP_KILL: u32 = 5;

/// Whether this process may signal any process (`CAP_KILL` effective), read once: capabilities
/// do not change under the agent. Without it the kernel programs must not stop a process
/// themselves — a stop the agent could not undo with SIGCONT would outlive it (the guardian has
/// the same capabilities).
pub fn can_signal_any() -> bool {
    static CAN: OnceLock<bool> = OnceLock::new();
    *CAN.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| effective(&s))
            .is_some_and(|eff| eff & (1 << CAP_KILL) != 0)
    })
}

/// The `CapEff` mask of a `/proc/PID/status` text.
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_mask_is_read() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000020\n";
        assert_eq!(effective(status), Some(0x20));
        assert_eq!(
            effective(status).map(|e| e & (1 << CAP_KILL) != 0),
            Some(true)
        );
        assert_eq!(effective("Name:\tx\n"), None);
    }
}

//! The agent's heartbeat to the kernel: the kernel programs stop nothing unless the agent beat
//! in the last 250 ms (`kernel/safety.rs`), so an agent that is stopped, hung or dead cannot
//! leave the kernel stopping processes nobody will resume.
//!
//! A beater thread beats every [`BEAT_PERIOD`], but only while the agent's [`Progress`]
//! (resolver and dispatcher stamps, `safety/watchdog.rs`) is younger than [`STALL_LIMIT`]. The
//! guardian's watchdog follows the same progress with a longer limit
//! (`AgentConfig::progress_limit`), so a stuck agent's kernel stops nothing well before the
//! guardian starts resuming: the two never fight over a process.
//!
//! A stopped agent stops its beater with it (SIGSTOP stops every thread). [`STALL_LIMIT`] is
//! far above a normal pass (a few ms, tens under load) and a plan change holding `state` while
//! it flushes (at most 3 s: then the kernel merely stops nothing for a while, which is safe).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    error::AgentError,
    kernel::{Beater, Kernel},
    safety::watchdog::Progress,
};

/// How often the beater thread beats (five beats within the kernel's 250 ms maximum age).
pub const BEAT_PERIOD: Duration = Duration::from_millis(50);
/// Progress older than this stops the beats: the agent counts as hung.
pub const STALL_LIMIT: Duration = Duration::from_secs(1);

/// Starts beating the kernel's heartbeat while `progress` is fresh (and says so in `features`).
pub(super) fn start(
    kernel: &Kernel,
    progress: &Arc<Progress>,
    features: &mut BTreeMap<String, String>,
) -> Result<Beater, AgentError> {
    let p = progress.clone();
    let beater = kernel
        .heartbeat()
        .beat_every(BEAT_PERIOD, move || p.within(STALL_LIMIT))
        .map_err(|e| AgentError::Unavailable(format!("the kernel heartbeat: {e}")))?;
    features.insert(
        "kernel_heartbeat".into(),
        format!(
            "on (every {} ms while the agent makes progress)",
            BEAT_PERIOD.as_millis()
        ),
    );
    Ok(beater)
}

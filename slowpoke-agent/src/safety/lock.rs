//! The single-agent lock: `STATE_DIR/agent.lock` is held with `flock(LOCK_EX)` for the agent's
//! lifetime, so two agents sharing a state directory (normally: one node) refuse to run at once.
//! Two agents would each believe the state file is theirs and overwrite each other's list of
//! processes that may be stopped.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
};

use crate::error::AgentError;

/// Lock file name inside the state directory.
pub const LOCK_FILE: &str = "agent.lock";

/// `STATE_DIR/agent.lock`, held (flock) while the agent runs.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

impl AgentLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(state_dir: &Path) -> Result<AgentLock, AgentError> {
        let path = state_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                AgentError::Internal(format!("cannot open the lock file {}: {e}", path.display()))
            })?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(AgentError::Conflict(format!(
                "another slowpoke agent is already running with state directory {} (pid {}); stop it, \
                 or give this one its own --state-dir",
                state_dir.display(),
                if holder.is_empty() { "unknown" } else { holder }
            )));
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(AgentLock { _file: file })
    }
}

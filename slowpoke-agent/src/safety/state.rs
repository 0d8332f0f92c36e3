//! The state file (`STATE_DIR/stopped.json`): every process the agent might leave stopped.
//!
//! It lists, as one flat array of pids, the processes of every service that has a delay (the
//! kernel may SIGSTOP them on its own) and every process the agent is about to stop. It is
//! rewritten (write + atomic rename) *before* a process can be stopped, so whoever reads it after
//! the agent died (the guardian, or the next agent at start) can resume everything.
//!
//! Format: `{"pids":[123,456]}`. Every number in the file is a pid: the guardian parses it without
//! allocating (it runs in a forked child, see `guardian.rs`), by taking every run of digits.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use crate::sys::signal::resume_pid;

/// File name inside the state directory.
pub const STATE_FILE: &str = "stopped.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    pids: Vec<u32>,
}

/// The set of processes that may be stopped, grouped by owner (e.g. `delayed:cart`,
/// `stopped:cart`); the file holds their union.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    owners: BTreeMap<String, BTreeSet<u32>>,
    written: Option<BTreeSet<u32>>,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> StateFile {
        StateFile {
            path: state_dir.join(STATE_FILE),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the pids of `owner` (an empty slice forgets it) and rewrites the file when the
    /// union changed. Returns once the file on disk lists at least the new set.
    pub fn set(&self, owner: &str, pids: &[u32]) -> io::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pids.is_empty() {
            inner.owners.remove(owner);
        } else {
            inner
                .owners
                .insert(owner.to_string(), pids.iter().copied().collect());
        }
        let union: BTreeSet<u32> = inner.owners.values().flatten().copied().collect();
        if inner.written.as_ref() == Some(&union) {
            return Ok(());
        }
        write_pids(&self.path, &union)?;
        inner.written = Some(union);
        Ok(())
    }

    /// Every pid currently listed.
    pub fn listed(&self) -> BTreeSet<u32> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.owners.values().flatten().copied().collect()
    }
}

fn write_pids(path: &Path, pids: &BTreeSet<u32>) -> io::Result<()> {
    let body = serde_json::to_vec(&OnDisk {
        pids: pids.iter().copied().collect(),
    })
    .map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, body)?;
    fs::rename(&tmp, path)
}

/// Reads the pids listed in a state file (missing file: none).
pub fn read_listed(state_dir: &Path) -> io::Result<Vec<u32>> {
    match fs::read_to_string(state_dir.join(STATE_FILE)) {
        Ok(text) => Ok(parse_pids(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every run of ASCII digits in `text` is a pid (the same rule the guardian applies).
pub fn parse_pids(text: &str) -> Vec<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok())
        .filter(|&p| p > 1)
        .collect()
}

/// Start-up repair: resumes (SIGCONT) every process a previous agent left listed, then empties
/// the file. Returns the pids signalled.
pub fn resume_leftovers(state_dir: &Path) -> io::Result<Vec<u32>> {
    let pids = read_listed(state_dir)?;
    for &pid in &pids {
        resume_pid(pid);
    }
    write_pids(&state_dir.join(STATE_FILE), &BTreeSet::new())?;
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_pids() {
        assert_eq!(parse_pids("{\"pids\":[12,345, 0, 1,7]}"), vec![12, 345, 7]);
    }

    #[test]
    fn union_of_owners_written_only_on_change() {
        let dir = std::env::temp_dir().join(format!("slowpoke-state-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let s = StateFile::new(&dir);
        s.set("delayed:a", &[10, 11]).expect("write");
        s.set("stopped:a", &[11]).expect("write");
        assert_eq!(read_listed(&dir).expect("read"), vec![10, 11]);
        s.set("delayed:a", &[]).expect("write");
        assert_eq!(read_listed(&dir).expect("read"), vec![11]);
        s.set("stopped:a", &[]).expect("write");
        assert_eq!(read_listed(&dir).expect("read"), Vec::<u32>::new());
        fs::remove_dir_all(&dir).ok();
    }
}

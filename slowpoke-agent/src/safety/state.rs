//! The state file (`STATE_DIR/resume.list`): every process the agent might leave stopped.
//!
//! It lists every member of every registered service (the kernel programs may stop any of them
//! on their own as soon as a delay is set, and a SIGCONT to a running process is harmless), the
//! cgroup directories of cgroup services (processes that join them before the next resolution
//! are covered too), and every process a pause is about to stop. Each owner (`members:cart`,
//! `cgroups:cart`, `stopped:cart`) holds a set; the file holds their union and is rewritten
//! (write + atomic rename) *before* the kernel or an actuator can stop anything it adds, and
//! only when the union changed, so a pause of already-listed members costs no write.
//!
//! Processes are written with their start time (see `listing.rs` for the format and why), read
//! once when a pid joins the union. Whoever reads the file after the agent died (the guardian,
//! or the next agent at start, [`resume_leftovers`]) resumes what it names.
//!
//! Agents before this format wrote `STATE_DIR/stopped.json` (`{"pids":[...]}`, bare pids). The
//! start-up repair still reads it once, resumes those pids without the start-time check (it has
//! nothing to check against), says so in a warning and removes it.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use super::listing::{self, Entry, Outcome};
use crate::sys::{rawfs::start_ticks, signal::resume_pid};

/// File name inside the state directory.
pub const STATE_FILE: &str = "resume.list";
/// What agents before the start-time format wrote (bare pids); read once at start.
pub const LEGACY_STATE_FILE: &str = "stopped.json";

/// The processes and cgroups that may be stopped, grouped by owner; the file holds their union.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pids: BTreeMap<String, BTreeSet<u32>>,
    cgroups: BTreeMap<String, BTreeSet<PathBuf>>,
    /// What the file holds: pid -> start time (`None`: it was gone when it joined, so it is not
    /// written), and the cgroup directories.
    written: Option<Written>,
}

/// pid -> start time, and cgroup directories.
type Written = (BTreeMap<u32, Option<u64>>, BTreeSet<PathBuf>);

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
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if pids.is_empty() {
            inner.pids.remove(owner);
        } else {
            inner
                .pids
                .insert(owner.to_string(), pids.iter().copied().collect());
        }
        self.write_if_changed(&mut inner)
    }

    /// Replaces the cgroup directories of `owner` (empty forgets it); as [`StateFile::set`].
    pub fn set_cgroups(&self, owner: &str, dirs: &[PathBuf]) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if dirs.is_empty() {
            inner.cgroups.remove(owner);
        } else {
            inner
                .cgroups
                .insert(owner.to_string(), dirs.iter().cloned().collect());
        }
        self.write_if_changed(&mut inner)
    }

    /// Forgets every owner and empties the file (clean shutdown, once everything is resumed).
    pub fn clear(&self) -> io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.pids.clear();
        inner.cgroups.clear();
        self.write_if_changed(&mut inner)
    }

    /// Resumes everything the file lists now, as the guardian would (same pass, same checks).
    /// Returns how many processes were signalled.
    pub fn resume_listed(&self) -> usize {
        let _held = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Ok(path) = CString::new(self.path.as_os_str().as_bytes()) else {
            return 0;
        };
        let mut n = 0;
        listing::resume_listed(&path, &mut |o| {
            if matches!(o, Outcome::Resumed(_) | Outcome::InCgroup(_)) {
                n += 1;
            }
        });
        n
    }

    /// Every pid currently listed.
    pub fn listed(&self) -> BTreeSet<u32> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.pids.values().flatten().copied().collect()
    }

    fn write_if_changed(&self, inner: &mut Inner) -> io::Result<()> {
        let pids: BTreeSet<u32> = inner.pids.values().flatten().copied().collect();
        let cgroups: BTreeSet<PathBuf> = inner.cgroups.values().flatten().cloned().collect();
        if let Some((procs, dirs)) = &inner.written
            && procs.keys().eq(pids.iter())
            && *dirs == cgroups
        {
            return Ok(());
        }
        let before = inner.written.take().unwrap_or_default();
        // A pid keeps the start time read when it joined: reading it again could only pick up
        // a newcomer that reused the pid, which is not the process that was listed.
        let procs: BTreeMap<u32, Option<u64>> = pids
            .iter()
            .map(|&p| {
                (
                    p,
                    before.0.get(&p).copied().unwrap_or_else(|| start_ticks(p)),
                )
            })
            .collect();
        let mut body = listing::HEADER.as_bytes().to_vec();
        for (&pid, start) in &procs {
            if let Some(start) = start {
                listing::write_process(&mut body, pid, *start);
            }
        }
        for dir in &cgroups {
            if !listing::write_cgroup(&mut body, dir) {
                tracing::warn!(
                    cgroup = %dir.display(),
                    "cgroup path not listed for the guardian (newline or too long); its \
                     processes are listed one by one"
                );
            }
        }
        let result = write_atomically(&self.path, &body);
        // After an error the file may hold less than before: `None` makes the next call write.
        inner.written = result.is_ok().then_some((procs, cgroups));
        result
    }
}

fn write_atomically(path: &Path, body: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("list.tmp");
    fs::write(&tmp, body)?;
    fs::rename(&tmp, path)
}

/// The pids a state directory lists (the current file's processes, then any legacy file's),
/// in file order. A missing file lists nothing.
pub fn read_listed(state_dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids = match fs::read(state_dir.join(STATE_FILE)) {
        Ok(text) => text
            .split(|&b| b == b'\n')
            .filter_map(listing::parse_line)
            .filter_map(|e| match e {
                Entry::Process { pid, .. } => Some(pid),
                Entry::Cgroup(_) => None,
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    pids.extend(read_legacy(state_dir)?);
    Ok(pids)
}

/// The cgroup directories a state directory lists.
pub fn read_listed_cgroups(state_dir: &Path) -> io::Result<Vec<PathBuf>> {
    match fs::read(state_dir.join(STATE_FILE)) {
        Ok(text) => Ok(text
            .split(|&b| b == b'\n')
            .filter_map(listing::parse_line)
            .filter_map(|e| match e {
                Entry::Cgroup(dir) => Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir))),
                Entry::Process { .. } => None,
            })
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn read_legacy(state_dir: &Path) -> io::Result<Vec<u32>> {
    match fs::read_to_string(state_dir.join(LEGACY_STATE_FILE)) {
        Ok(text) => Ok(parse_pids(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Every run of ASCII digits in `text` is a pid (the legacy `stopped.json` format).
pub fn parse_pids(text: &str) -> Vec<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok())
        .filter(|&p| p > 1)
        .collect()
}

/// What the start-up repair did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repair {
    /// Listed processes resumed (still the same process).
    pub resumed: Vec<u32>,
    /// Processes found in listed cgroups and resumed.
    pub in_cgroups: Vec<u32>,
    /// Listed pids that now name another process: left alone.
    pub reused: Vec<u32>,
    /// Bare pids of a legacy `stopped.json`, resumed without a start-time check.
    pub legacy: Vec<u32>,
}

impl Repair {
    pub fn is_empty(&self) -> bool {
        self.resumed.is_empty()
            && self.in_cgroups.is_empty()
            && self.reused.is_empty()
            && self.legacy.is_empty()
    }
}

/// Start-up repair: resumes (SIGCONT) what a previous agent left listed — with the same
/// allocation-free pass as the guardian, so a reused pid is left alone here too — and a legacy
/// `stopped.json`'s bare pids; then empties the list and removes the legacy file.
pub fn resume_leftovers(state_dir: &Path) -> io::Result<Repair> {
    let mut repair = Repair::default();
    let path = state_dir.join(STATE_FILE);
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "state dir has a NUL byte"))?;
    listing::resume_listed(&c_path, &mut |o| match o {
        Outcome::Resumed(p) => repair.resumed.push(p),
        Outcome::InCgroup(p) => repair.in_cgroups.push(p),
        Outcome::Reused(p) => repair.reused.push(p),
        Outcome::Gone(_) => {}
    });
    repair.legacy = read_legacy(state_dir)?;
    for &pid in &repair.legacy {
        resume_pid(pid);
    }
    write_atomically(&path, listing::HEADER.as_bytes())?;
    match fs::remove_file(state_dir.join(LEGACY_STATE_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(repair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_pids_in_the_legacy_format() {
        assert_eq!(parse_pids("{\"pids\":[12,345, 0, 1,7]}"), vec![12, 345, 7]);
    }

    #[test]
    fn union_of_owners_written_only_on_change_with_start_times() {
        let dir = std::env::temp_dir().join(format!("slowpoke-state-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let me = std::process::id();
        let s = StateFile::new(&dir);
        s.set("members:a", &[me]).expect("write");
        let text = fs::read_to_string(dir.join(STATE_FILE)).expect("read");
        let start = start_ticks(me).expect("own start time");
        assert!(text.contains(&format!("\np {me} {start}\n")), "{text}");
        s.set("stopped:a", &[me]).expect("write");
        s.set_cgroups("cgroups:a", &[PathBuf::from("/sys/fs/cgroup/x")])
            .expect("write");
        assert_eq!(read_listed(&dir).expect("read"), vec![me]);
        assert_eq!(
            read_listed_cgroups(&dir).expect("read"),
            vec![PathBuf::from("/sys/fs/cgroup/x")]
        );
        s.set("members:a", &[]).expect("write");
        assert_eq!(read_listed(&dir).expect("read"), vec![me]);
        s.clear().expect("clear");
        assert_eq!(read_listed(&dir).expect("read"), Vec::<u32>::new());
        assert!(read_listed_cgroups(&dir).expect("read").is_empty());
        // A pid that is gone when it joins is not written (nothing to resume).
        s.set("members:b", &[u32::MAX - 1]).expect("write");
        assert_eq!(read_listed(&dir).expect("read"), Vec::<u32>::new());
        fs::remove_dir_all(&dir).ok();
    }
}

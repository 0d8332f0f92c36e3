//! Safety: **no process stays stopped after the agent exits in any way** (clean shutdown, error,
//! panic, SIGTERM, SIGKILL, OOM kill) **or while it is stopped or hung**.
//!
//! The pieces, each enforcing its part by construction rather than by remembering to clean up:
//! - [`state`]: the state file lists every member of every registered service (and the cgroups
//!   of cgroup services), each process with its start time, rewritten *before* the kernel or an
//!   actuator can stop anything it adds; [`listing`] is its format and the allocation-free pass
//!   that resumes what it names;
//! - [`guardian`]: a forked child that reads EOF on a pipe when the agent process ends, however
//!   it ends, and resumes everything the state file lists; it closes every inherited descriptor
//!   (with fallbacks), leaves reused pids alone and asks the OOM killer to spare it;
//! - [`watchdog`]: a page shared with the guardian, stamped while the agent makes progress; the
//!   guardian resumes what is listed while the stamp is stale;
//! - [`promoted`]: the threads the tail scheduler promoted to a real-time policy, with the
//!   policy each had before, in the page shared with the guardian, which restores them;
//! - [`lock`]: one agent per state directory, so the file it keeps is the complete list;
//! - [`protect`]: the processes the agent never stops (pid 1, kernel threads, itself, its
//!   cgroup, a deny list of names; optionally only some uids or cgroups), checked at every
//!   resolution and, through the deny maps the agent fills, in the kernel;
//! - [`lease`]: every plan has an owner and a lease; a plan whose lease lapsed is removed and
//!   its members resumed, so a client that died cannot leave services slowed down;
//! - the next agent start resumes whatever the file still lists ([`state::resume_leftovers`]),
//!   which covers the one case the guardian cannot: agent and guardian killed together.
//!
//! Nothing here depends on the rest of the agent except the OS helpers (`sys`) and the error
//! type: the actuator and the agent use these pieces, never the other way round.

pub mod guardian;
pub mod lease;
pub mod listing;
pub mod lock;
pub mod promoted;
pub mod protect;
pub mod state;
pub mod watchdog;

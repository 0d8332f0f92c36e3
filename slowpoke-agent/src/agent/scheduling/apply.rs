//! The applier: the core's promote/demote actions made real with `sched_setattr` by thread id.
//!
//! - Before the first change of a thread it saves the thread's own policy, priority, nice and
//!   reset-on-fork flag, and restores exactly that when it demotes it.
//! - A thread that already runs a real-time or deadline policy is never touched (it outranks
//!   normal work anyway, and its owner chose that policy): it counts as promoted, and its
//!   "demotion" changes nothing.
//! - Only members of a scheduled service are touched (the registry leaves protected processes
//!   out of every service, `safety::protect`).
//! - Every changed thread is listed in the guardian's table **before** its policy changes and
//!   unlisted only after it was restored (`safety::promoted`).
//! - A refused change (the thread exited, a permission) is a lost promotion, not an error: the
//!   caller counts it and forgets the thread.
//! - Every thread it promotes is marked for the share cap's meter before its policy changes
//!   (`meter`), and unmarked when it is demoted.
//! - Rank r (0: the oldest request) runs at the schedule's priority minus r, down to 1
//!   ([`rank_priority`]): the ranked requests run in their order.

use std::{collections::HashMap, sync::Arc};

use super::meter::Meter;
use crate::{
    safety::{promoted::Promoted, watchdog::SharedPage},
    sys::{
        clock::monotonic_ns,
        procfs::ns_per_tick,
        rawfs::thread_start_ticks,
        sched::{ThreadPolicy, get_policy, set_policy},
    },
};

/// What the applier did to a thread it manages.
#[derive(Clone, Copy, Debug)]
enum Managed {
    /// Promoted: its own policy, and its slot in the guardian's table.
    Changed { original: ThreadPolicy, slot: usize },
    /// Already real-time or deadline: left alone.
    Untouched,
}

pub struct Applier {
    page: Arc<SharedPage>,
    priority: u32,
    threads: HashMap<u32, (u32, Managed)>,
    meter: Meter,
}

impl Applier {
    pub fn new(page: Arc<SharedPage>, meter: Meter) -> Applier {
        Applier {
            page,
            priority: 10,
            threads: HashMap::new(),
            meter,
        }
    }

    /// The real-time priority of rank 0 from now on (threads promoted keep theirs until
    /// re-ranked).
    pub fn set_priority(&mut self, priority: u32) {
        self.priority = priority;
    }

    /// Runs thread `tid` of `tgid` first, at `rank`'s priority; `started_ns`: its creation time
    /// as the kernel reported it with its request (0: read from `/proc`). False: the change was
    /// refused (counted by the caller).
    pub fn promote(&mut self, tid: u32, tgid: u32, started_ns: u64, rank: u32) -> bool {
        if self.threads.contains_key(&tid) {
            return true;
        }
        let Ok(original) = get_policy(tid) else {
            return false;
        };
        if original.is_realtime() {
            self.threads.insert(tid, (tgid, Managed::Untouched));
            return true;
        }
        // The guardian's identity of the thread. From the kernel's report when there is one
        // (no `/proc` read: ~14 µs here, per promotion); the tid cannot have been reused in the
        // microseconds since, short of the pid space wrapping.
        let start_ticks = match started_ns {
            0 => thread_start_ticks(tgid, tid),
            ns => Some(ns / ns_per_tick()),
        };
        let Some(start_ticks) = start_ticks else {
            return false; // gone, or not a thread of that process
        };
        let listed = Promoted {
            tid,
            tgid,
            start_ticks,
            original,
        };
        let table = self.page.promoted();
        let Some(slot) = table.arm(&listed) else {
            tracing::warn!(
                "{} threads promoted at once: the guardian's table is full; not promoting more",
                crate::safety::promoted::MAX_PROMOTED
            );
            return false;
        };
        let now = monotonic_ns();
        if !self.meter.mark(tid, now) {
            table.disarm(slot);
            return false;
        }
        let errno = set_policy(tid, self.ranked_policy(rank));
        if errno != 0 {
            self.meter.unmark(tid, now);
            table.disarm(slot);
            tracing::debug!(tid, tgid, errno, "promotion refused");
            return false;
        }
        self.threads
            .insert(tid, (tgid, Managed::Changed { original, slot }));
        true
    }

    /// Moves promoted thread `tid` to `rank`'s priority. False: the kernel refused (the thread
    /// is most likely gone): the caller demotes it.
    pub fn rerank(&mut self, tid: u32, rank: u32) -> bool {
        match self.threads.get(&tid) {
            Some((_, Managed::Changed { .. })) => set_policy(tid, self.ranked_policy(rank)) == 0,
            Some((_, Managed::Untouched)) => true,
            None => false,
        }
    }

    fn ranked_policy(&self, rank: u32) -> ThreadPolicy {
        ThreadPolicy::fifo(rank_priority(self.priority, rank))
    }

    /// Gives thread `tid` its own policy back. False: the kernel refused (the thread is most
    /// likely gone; its slot is freed either way).
    pub fn demote(&mut self, tid: u32) -> bool {
        let Some((_, managed)) = self.threads.remove(&tid) else {
            return true;
        };
        match managed {
            Managed::Untouched => true,
            Managed::Changed { original, slot } => {
                let errno = set_policy(tid, original);
                self.meter.unmark(tid, monotonic_ns());
                self.page.promoted().disarm(slot);
                errno == 0 || errno == libc::ESRCH
            }
        }
    }

    /// Per CPU: the promoted threads' time so far at `now_ns` (`meter`), `None` when not
    /// measured.
    pub fn promoted_cpu_ns(&mut self, now_ns: u64) -> Option<&[u64]> {
        self.meter.read(now_ns)
    }

    /// Restores every thread still managed (the schedule ended).
    pub fn restore_all(&mut self) {
        let tids: Vec<u32> = self.threads.keys().copied().collect();
        for tid in tids {
            self.demote(tid);
        }
    }
}

/// The real-time priority of `rank` (0: the oldest request) under a schedule at `priority`:
/// one level lower per rank, never below 1 (ranks past `priority - 1` share level 1).
pub fn rank_priority(priority: u32, rank: u32) -> u32 {
    priority.saturating_sub(rank).max(1)
}

impl Drop for Applier {
    fn drop(&mut self) {
        self.restore_all();
    }
}

#[cfg(test)]
mod tests {
    use super::rank_priority;

    #[test]
    fn each_rank_one_level_lower_down_to_one() {
        assert_eq!(rank_priority(10, 0), 10);
        assert_eq!(rank_priority(10, 1), 9);
        assert_eq!(rank_priority(10, 9), 1);
        assert_eq!(
            rank_priority(10, 40),
            1,
            "ranks past the range share level 1"
        );
        assert_eq!(rank_priority(1, 0), 1);
    }
}

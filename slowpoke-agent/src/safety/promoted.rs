//! Promoted threads: **after the agent dies, however it dies, every thread the tail scheduler
//! promoted runs its own scheduling policy again.**
//!
//! The tail scheduler (`agent/scheduling/`) turns the threads serving the oldest requests into
//! `SCHED_FIFO` threads and back, thousands of times a second. A promoted thread left behind
//! by an agent killed with SIGKILL would keep its real-time policy with nobody capping its share (the
//! kernel's own throttle stalls normal work for ~1 s, `docs/tail.md`). So every promoted thread
//! has a slot in the page the agent shares with its guardian ([`super::watchdog::SharedPage`]):
//! the thread's id, its process, its start time and the policy it had before. The agent fills
//! the slot **before** it changes the policy and frees it only after restoring it; the guardian
//! restores every filled slot when the agent process ends and while the agent is stuck (the
//! watchdog), with the same allocation-free code the agent could use.
//!
//! A file would survive a kill of agent and guardian together; slots in shared memory cost no
//! write per promotion, which at thousands of promotions a second is what makes this affordable.
//! The price: when both are killed at once, promoted threads keep their real-time policy (with
//! the kernel's throttle as the only bound) until they finish or are restarted (docs/agent.md).
//!
//! Each slot is a small seqlock: the agent (its one writer, the scheduler thread) bumps `seq` to
//! odd, writes the fields, bumps it to even; a reader that sees an odd or changed `seq` skips the
//! slot (the agent is alive and busy with it, so it is not the guardian's to repair). The
//! guardian only reads.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::sys::{
    rawfs::thread_start_ticks,
    sched::{ThreadPolicy, set_policy},
};

/// How many threads may be promoted at once on a node (the scheduler promotes no more).
pub const MAX_PROMOTED: usize = slowpoke_common::MAX_PROMOTED_THREADS as usize;

/// One promoted thread. All zero: free.
#[repr(C)]
#[derive(Default)]
pub struct Slot {
    seq: AtomicU32,
    /// 1 while the thread may run a policy the agent set.
    armed: AtomicU32,
    tid: AtomicU32,
    tgid: AtomicU32,
    start_ticks: AtomicU64,
    policy: AtomicU32,
    priority: AtomicU32,
    nice: AtomicU32,
    flags: AtomicU32,
}

/// The table in the shared page. All zero (a fresh anonymous mapping) is a valid empty table.
#[repr(C)]
pub struct PromotedTable {
    slots: [Slot; MAX_PROMOTED],
}

/// A thread as the slot names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promoted {
    pub tid: u32,
    pub tgid: u32,
    pub start_ticks: u64,
    /// The policy to restore.
    pub original: ThreadPolicy,
}

impl PromotedTable {
    /// Fills a free slot (before the policy changes). `None`: the table is full.
    pub fn arm(&self, p: &Promoted) -> Option<usize> {
        let i = self
            .slots
            .iter()
            .position(|s| s.armed.load(Ordering::SeqCst) == 0)?;
        let s = &self.slots[i];
        s.seq.fetch_add(1, Ordering::SeqCst);
        s.tid.store(p.tid, Ordering::SeqCst);
        s.tgid.store(p.tgid, Ordering::SeqCst);
        s.start_ticks.store(p.start_ticks, Ordering::SeqCst);
        s.policy.store(p.original.policy, Ordering::SeqCst);
        s.priority.store(p.original.priority, Ordering::SeqCst);
        s.nice.store(p.original.nice as u32, Ordering::SeqCst);
        s.flags.store(p.original.flags as u32, Ordering::SeqCst);
        s.armed.store(1, Ordering::SeqCst);
        s.seq.fetch_add(1, Ordering::SeqCst);
        Some(i)
    }

    /// Frees slot `i` (after the policy was restored, or the change failed).
    pub fn disarm(&self, i: usize) {
        if let Some(s) = self.slots.get(i) {
            s.seq.fetch_add(1, Ordering::SeqCst);
            s.armed.store(0, Ordering::SeqCst);
            s.seq.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The threads listed now (consistent slots only).
    pub fn listed(&self) -> impl Iterator<Item = Promoted> + '_ {
        self.slots.iter().filter_map(read_slot)
    }

    /// Restores every listed thread that is still the thread listed (same process, same start
    /// time) to its own policy. Async-signal-safe (atomics, `open`/`read` on a stack buffer,
    /// `sched_setattr`): the guardian calls it in its forked child. It leaves the slots as they
    /// are: only the agent frees them (its scheduler thread is the slots' one writer, so a
    /// watchdog pass while the agent is slow can never free a slot the agent just reused).
    /// Returns how many threads got their policy back.
    pub fn restore_all(&self) -> usize {
        let mut n = 0;
        for s in &self.slots {
            let Some(p) = read_slot(s) else { continue };
            if thread_start_ticks(p.tgid, p.tid) == Some(p.start_ticks)
                && set_policy(p.tid, p.original) == 0
            {
                n += 1;
            }
        }
        n
    }
}

fn read_slot(s: &Slot) -> Option<Promoted> {
    let seq = s.seq.load(Ordering::SeqCst);
    if seq % 2 == 1 || s.armed.load(Ordering::SeqCst) == 0 {
        return None;
    }
    let p = Promoted {
        tid: s.tid.load(Ordering::SeqCst),
        tgid: s.tgid.load(Ordering::SeqCst),
        start_ticks: s.start_ticks.load(Ordering::SeqCst),
        original: ThreadPolicy {
            policy: s.policy.load(Ordering::SeqCst),
            priority: s.priority.load(Ordering::SeqCst),
            nice: s.nice.load(Ordering::SeqCst) as i32,
            flags: u64::from(s.flags.load(Ordering::SeqCst)),
        },
    };
    (s.seq.load(Ordering::SeqCst) == seq).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<PromotedTable> {
        // SAFETY: all-zero atomics are a valid empty table (as in the shared mapping).
        unsafe { Box::new(std::mem::zeroed()) }
    }

    #[test]
    fn armed_slots_are_listed_until_disarmed_and_a_full_table_refuses() {
        let t = table();
        let p = Promoted {
            tid: 42,
            tgid: 41,
            start_ticks: 7,
            original: ThreadPolicy {
                nice: -3,
                ..ThreadPolicy::default()
            },
        };
        let i = t.arm(&p).expect("free slot");
        assert_eq!(t.listed().collect::<Vec<_>>(), vec![p]);
        t.disarm(i);
        assert_eq!(t.listed().count(), 0);
        for _ in 0..MAX_PROMOTED {
            t.arm(&p).expect("free slot");
        }
        assert!(t.arm(&p).is_none(), "full");
    }

    #[test]
    fn restore_all_restores_a_live_thread_and_skips_a_reused_id() {
        let t = table();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: gettid has no failure mode.
            let tid = unsafe { libc::gettid() } as u32;
            tx.send(tid).expect("send");
            done_rx.recv().expect("recv");
            crate::sys::sched::get_policy(tid).expect("policy")
        });
        let tid = rx.recv().expect("tid");
        let tgid = std::process::id();
        let start = thread_start_ticks(tgid, tid).expect("start time");
        let mine = crate::sys::sched::get_policy(tid).expect("policy");
        // The thread "was" at nice 5 before a promotion: restoring sets that (no privilege
        // needed to lower a priority).
        let original = ThreadPolicy { nice: 5, ..mine };
        t.arm(&Promoted {
            tid,
            tgid,
            start_ticks: start,
            original,
        });
        // A reused id: same tid, another start time: left alone.
        t.arm(&Promoted {
            tid,
            tgid,
            start_ticks: start + 1,
            original: ThreadPolicy { nice: 9, ..mine },
        });
        assert_eq!(t.restore_all(), 1);
        assert_eq!(
            t.listed().count(),
            2,
            "the agent frees the slots, not the guardian"
        );
        done_tx.send(()).expect("send");
        assert_eq!(h.join().expect("join").nice, 5);
    }
}

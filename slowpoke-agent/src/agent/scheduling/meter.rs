//! The share cap's meter: how long the threads the applier promoted have run on each CPU, from
//! the kernel's context switches (`kernel::share`). Exact, not sampled: a promoted thread's time
//! counts from its switch-in (or its promotion, if later) to its switch-out, and the run going
//! on now is added at each reading.
//!
//! A thread demoted while it runs leaves the kernel's list before its switch-out, so the meter
//! adds its run up to the demotion from the last reading (the caller reads every wake-up, just
//! before it decides and demotes).

use std::collections::HashMap;

use slowpoke_common::PromotedRun;

use crate::kernel::share::PromotedRuns;

pub struct Meter {
    runs: Option<PromotedRuns>,
    /// tid -> when it was promoted (`CLOCK_MONOTONIC` ns), as the kernel was told.
    marked: HashMap<u32, u64>,
    /// The last reading.
    last: Vec<PromotedRun>,
    /// Per CPU: runs of threads demoted while they ran, up to their demotion.
    demoted_ns: Vec<u64>,
    /// The sums of the last reading (kept: no allocation per reading).
    totals: Vec<u64>,
}

impl Meter {
    /// `runs`: `None` without kernel programs (test hooks only): nothing is measured, and the
    /// share cap never acts.
    pub fn new(runs: Option<PromotedRuns>) -> Meter {
        Meter {
            runs,
            marked: HashMap::new(),
            last: Vec::new(),
            demoted_ns: Vec::new(),
            totals: Vec::new(),
        }
    }

    /// Thread `tid` is about to run promoted. False: the kernel's list is full (it is as large
    /// as the guardian's table) or refused.
    pub fn mark(&mut self, tid: u32, now_ns: u64) -> bool {
        let Some(runs) = self.runs.as_mut() else {
            return true;
        };
        if let Err(e) = runs.mark(tid, now_ns) {
            tracing::debug!(tid, "share cap: {e}");
            return false;
        }
        self.marked.insert(tid, now_ns);
        true
    }

    /// Thread `tid` is back to its own policy.
    pub fn unmark(&mut self, tid: u32, now_ns: u64) {
        let Some(at) = self.marked.remove(&tid) else {
            return;
        };
        if let Some(runs) = self.runs.as_mut() {
            runs.unmark(tid);
        }
        if let Some(cpu) = self.last.iter().position(|r| r.tid == tid) {
            if self.demoted_ns.len() < self.last.len() {
                self.demoted_ns.resize(self.last.len(), 0);
            }
            self.demoted_ns[cpu] += now_ns.saturating_sub(self.last[cpu].switched_in_ns.max(at));
        }
    }

    /// Per CPU: the promoted threads' time so far at `now_ns` (monotonic; the run going on now
    /// included). `None`: not measured (no kernel programs, or the read failed).
    pub fn read(&mut self, now_ns: u64) -> Option<&[u64]> {
        let runs = self.runs.as_ref()?;
        match runs.read() {
            Ok(r) => self.last = r,
            Err(e) => {
                tracing::debug!("share cap: {e}");
                return None;
            }
        }
        self.totals.clear();
        self.totals
            .extend(totals(&self.last, &self.marked, &self.demoted_ns, now_ns));
        Some(&self.totals)
    }
}

/// Per CPU: the kernel's sum, the run of a marked thread going on now (from its switch-in or its
/// promotion, whichever is later) and the runs of threads demoted while they ran.
fn totals<'a>(
    runs: &'a [PromotedRun],
    marked: &'a HashMap<u32, u64>,
    demoted_ns: &'a [u64],
    now_ns: u64,
) -> impl Iterator<Item = u64> + 'a {
    runs.iter().enumerate().map(move |(cpu, r)| {
        let now_running = marked
            .get(&r.tid)
            .filter(|_| r.tid != 0)
            .map_or(0, |&at| now_ns.saturating_sub(r.switched_in_ns.max(at)));
        r.used_ns + now_running + demoted_ns.get(cpu).copied().unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(used_ns: u64, switched_in_ns: u64, tid: u32) -> PromotedRun {
        PromotedRun {
            used_ns,
            switched_in_ns,
            tid,
            pad: 0,
        }
    }

    #[test]
    fn a_promoted_run_going_on_counts_from_its_switch_in_or_its_promotion() {
        let marked = HashMap::from([(7, 100), (8, 500)]);
        let runs = [run(1_000, 200, 7), run(2_000, 300, 8), run(3_000, 400, 9)];
        assert_eq!(
            totals(&runs, &marked, &[], 1_000).collect::<Vec<_>>(),
            vec![
                1_000 + 800, // switched in at 200, after its promotion
                2_000 + 500, // promoted at 500 while it ran
                3_000,       // not promoted: nothing added
            ]
        );
        assert_eq!(
            totals(&runs, &marked, &[5, 6], 1_000).collect::<Vec<_>>(),
            vec![1_805, 2_506, 3_000]
        );
    }

    #[test]
    fn without_kernel_maps_nothing_is_measured_and_marks_succeed() {
        let mut m = Meter::new(None);
        assert!(m.mark(1, 10));
        m.unmark(1, 20);
        assert_eq!(m.read(30), None);
    }
}

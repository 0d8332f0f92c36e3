//! What a service owes and how much of it may be paid: the debt sources and the safety cap.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

/// Safety cap: the share of a sliding window of wall time a service may spend stopped.
#[derive(Debug)]
pub struct StopBudget {
    window_ns: u64,
    max_share: f64,
    /// Stopped intervals (start, end) that overlap the window.
    intervals: VecDeque<(u64, u64)>,
}

impl StopBudget {
    pub fn new(window_ns: u64, max_share: f64) -> StopBudget {
        StopBudget {
            window_ns,
            max_share,
            intervals: VecDeque::new(),
        }
    }

    pub fn set_share(&mut self, max_share: f64) {
        self.max_share = max_share;
    }

    /// Stopped time within `[now − window, now]`.
    pub fn used(&mut self, now: u64) -> u64 {
        let from = now.saturating_sub(self.window_ns);
        while self.intervals.front().is_some_and(|&(_, e)| e <= from) {
            self.intervals.pop_front();
        }
        self.intervals
            .iter()
            .map(|&(s, e)| e.min(now).saturating_sub(s.max(from)))
            .sum()
    }

    /// How long the service may be stopped starting `now`.
    pub fn allowed(&mut self, now: u64) -> u64 {
        let cap = (self.window_ns as f64 * self.max_share.clamp(0.0, 1.0)) as u64;
        cap.saturating_sub(self.used(now))
    }

    pub fn record(&mut self, start: u64, end: u64) {
        if end > start {
            self.intervals.push_back((start, end));
        }
    }
}

/// Where a service's debt comes from.
pub trait DebtSource: Send + 'static {
    /// Total debt owed so far (monotonic).
    fn owed_ns(&mut self) -> u64;
    /// Everything owed up to `settled_ns` is paid or dropped: re-arm the trigger.
    fn rearm(&mut self, settled_ns: u64);
}

/// A debt counter in memory: tests and manual experiments add to it.
#[derive(Clone, Debug, Default)]
pub struct CounterDebt(pub Arc<AtomicU64>);

impl DebtSource for CounterDebt {
    fn owed_ns(&mut self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn rearm(&mut self, _settled_ns: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_share_of_window() {
        let mut b = StopBudget::new(1_000, 0.5);
        assert_eq!(b.allowed(10_000), 500);
        b.record(10_000, 10_300);
        assert_eq!(b.allowed(10_300), 200);
        // Half the interval has slid out of the window.
        assert_eq!(b.used(11_150), 150);
        assert_eq!(b.allowed(12_000), 500);
    }
}

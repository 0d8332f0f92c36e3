//! The scheduling decisions, pure (no system calls, time passed in, unit-tested): which threads
//! serve requests now (from the kernel's [`RequestEvent`]s), which of them run first, and the
//! promote/demote actions that turn the set promoted now into that one, **only when the set
//! changes** (a change that preempts another CPU costs the agent ~20 µs, `docs/tail.md`).
//!
//! Units: every time is `CLOCK_MONOTONIC` ns of this node (the kernel's `bpf_ktime_get_ns`).
//!
//! The rules:
//! - `oldest-first`: the `k` requests with the smallest `origin_ns` (arrival at the app's entry)
//!   across every scheduled service — every thread serving one of them: a caller waiting for
//!   its callees and the callees on this node, whose origins agree within [`SAME_REQUEST_NS`];
//!   `per-service-fifo`: per service, the `k` with the smallest `arrival_ns` (arrival at that
//!   service). Ties by arrival, then thread id.
//! - **age cap**: a request served here for longer than `age_cap_ns` (since its `arrival_ns`,
//!   whatever the policy: an old request end-to-end is exactly the one to run first, but one
//!   that never finishes here must not hold the node) is not promoted again until its thread
//!   starts another request.
//! - **share cap**: the time promoted threads run is charged per CPU in periods of
//!   [`PERIOD_NS`]; once one CPU's charge reaches `max_share` of the period, every promoted thread
//!   is demoted until the period ends (normal work, sshd and the kubelet, keeps the rest). The
//!   charge is the kernel's, exact to the context switch (`meter`, `kernel::share`), passed in
//!   as per-CPU sums ([`Core::charge`]); the core wakes its caller when the cap could first be
//!   reached ([`Core::next_deadline`]), so it is not overshot by more than a wake-up's delay.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use slowpoke_common::{REQUEST_DROPPED, REQUEST_END, REQUEST_START, RequestEvent};

use crate::api::SchedulingPolicy;

/// The share cap's accounting period (the spike's cap, measured in docs/tail.md).
pub const PERIOD_NS: u64 = 10_000_000;

/// Threads whose origins lie this close serve one request (`oldest-first`): the error of a
/// carried origin is the age's time in flight, p99 2–21 µs and at most 73 µs measured on a
/// loaded 2-core machine (`docs/tail.md`, exactness). Two requests that entered the app closer
/// than this count as one (at 2000 req/s, Poisson, about one consecutive pair in ten).
pub const SAME_REQUEST_NS: u64 = 50_000;

/// What the core needs of a schedule (validated by the agent).
#[derive(Clone, Debug, PartialEq)]
pub struct CoreConfig {
    pub policy: SchedulingPolicy,
    /// Kernel service ids scheduled; events of other services are ignored.
    pub services: BTreeSet<u32>,
    pub k: usize,
    pub age_cap_ns: u64,
    pub max_share: f64,
}

/// A request a thread serves now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    pub tgid: u32,
    pub service: u32,
    pub origin_ns: u64,
    pub arrival_ns: u64,
    /// The thread's creation time from the kernel (`RequestEvent::thread_start_ns`), 0 if
    /// unknown.
    pub thread_start_ns: u64,
}

/// Why a thread goes back to its own policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its request ended (or it started another one that does not rank).
    Finished,
    /// Older requests took its place among the `k`.
    Displaced,
    AgeCap,
    ShareCap,
    /// The schedule ended (removed, lapsed, a service left it).
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote { tid: u32, tgid: u32 },
    Demote { tid: u32, tgid: u32, reason: Reason },
}

/// Counters of the decisions (the applier counts what the kernel refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounts {
    pub requests: u64,
    pub requests_with_age: u64,
    pub promotions: u64,
    pub demotions: u64,
    pub age_capped: u64,
    pub share_capped: u64,
}

pub struct Core {
    cfg: CoreConfig,
    /// Thread id -> the request it serves.
    active: HashMap<u32, Active>,
    /// Threads whose current request passed the age cap.
    capped: BTreeSet<u32>,
    /// Thread id -> tgid, promoted now.
    promoted: BTreeMap<u32, u32>,
    period_start_ns: u64,
    /// Per CPU: the promoted time so far (the meter's sums), at the last [`Core::charge`], and
    /// at the start of the current period.
    charged_ns: Vec<u64>,
    period_base_ns: Vec<u64>,
    /// When the last [`Core::charge`] was read (0: never).
    charged_at_ns: u64,
    /// The share cap was reached in the current period.
    share_held: bool,
    /// See [`Core::wake_up_to`]: per scheduled service, from the last decision.
    wake_up_to: BTreeMap<u32, u64>,
    counts: CoreCounts,
}

impl Core {
    pub fn new(cfg: CoreConfig, now_ns: u64) -> Core {
        Core {
            charged_ns: Vec::new(),
            period_base_ns: Vec::new(),
            charged_at_ns: 0,
            cfg,
            active: HashMap::new(),
            capped: BTreeSet::new(),
            promoted: BTreeMap::new(),
            period_start_ns: now_ns,
            share_held: false,
            wake_up_to: BTreeMap::new(),
            counts: CoreCounts::default(),
        }
    }

    /// A new schedule for the same scheduler: requests already known stay known; the next
    /// [`Core::decide`] demotes what no longer ranks.
    pub fn reconfigure(&mut self, cfg: CoreConfig) {
        self.active.retain(|_, a| cfg.services.contains(&a.service));
        self.cfg = cfg;
    }

    pub fn counts(&self) -> CoreCounts {
        self.counts
    }

    /// When thread `tid` was created, as the kernel reported it with its request (0: unknown).
    pub fn thread_start_ns(&self, tid: u32) -> u64 {
        self.active.get(&tid).map_or(0, |a| a.thread_start_ns)
    }

    pub fn promoted(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.promoted.iter().map(|(&t, &g)| (t, g))
    }

    /// Takes one kernel event.
    pub fn observe(&mut self, ev: &RequestEvent) {
        if !self.cfg.services.contains(&ev.service) {
            return;
        }
        match ev.kind {
            REQUEST_START => {
                self.counts.requests += 1;
                if ev.origin_ns != ev.arrival_ns {
                    self.counts.requests_with_age += 1;
                }
                self.capped.remove(&ev.tid);
                self.active.insert(
                    ev.tid,
                    Active {
                        tgid: ev.tgid,
                        service: ev.service,
                        origin_ns: ev.origin_ns,
                        arrival_ns: ev.arrival_ns,
                        thread_start_ns: ev.thread_start_ns,
                    },
                );
            }
            REQUEST_END => {
                self.capped.remove(&ev.tid);
                self.active.remove(&ev.tid);
            }
            // Started on a woken worker that another thread beat to the connection: that
            // thread's start follows; this one served nothing.
            REQUEST_DROPPED => {
                self.counts.requests = self.counts.requests.saturating_sub(1);
                if ev.origin_ns != ev.arrival_ns {
                    self.counts.requests_with_age = self.counts.requests_with_age.saturating_sub(1);
                }
                self.capped.remove(&ev.tid);
                self.active.remove(&ev.tid);
            }
            _ => {}
        }
    }

    /// The thread is gone or cannot be changed (the applier said so): forget its request.
    pub fn forget(&mut self, tid: u32) {
        self.active.remove(&tid);
        self.capped.remove(&tid);
        self.promoted.remove(&tid);
    }

    /// The applier could not promote `tid` (gone, not a member, refused): not counted as a
    /// promotion, and its request is forgotten.
    pub fn refused(&mut self, tid: u32) {
        if self.promoted.contains_key(&tid) {
            self.counts.promotions = self.counts.promotions.saturating_sub(1);
        }
        self.forget(tid);
    }

    /// The promoted threads' time per CPU so far (monotonic sums, the meter's), read at
    /// `now_ns`: what they used of the current period is the growth since its start.
    pub fn charge(&mut self, now_ns: u64, totals: &[u64]) {
        if self.period_base_ns.len() != totals.len() {
            self.period_base_ns = totals.to_vec();
        }
        self.charged_ns.clear();
        self.charged_ns.extend_from_slice(totals);
        self.charged_at_ns = now_ns;
    }

    /// The most any CPU used of the current period, as last charged.
    fn most_used_ns(&self) -> u64 {
        self.charged_ns
            .iter()
            .zip(&self.period_base_ns)
            .map(|(t, b)| t.saturating_sub(*b))
            .max()
            .unwrap_or(0)
    }

    fn budget_ns(&self) -> u64 {
        (self.cfg.max_share * PERIOD_NS as f64) as u64
    }

    /// Since the last [`Core::decide`]: only an event of `service` whose request's key
    /// (`origin_ns`, or `arrival_ns` under `per-service-fifo`, [`Core::wakes_by_arrival`]) is at
    /// most this can change what runs first; later ones can wait for the next deadline. 0: any
    /// event can (fewer than `k` requests rank: across the node, or in that service for
    /// `per-service-fifo`). While the share cap holds, none can (1).
    ///
    /// Why: the `k` ranked requests are the oldest; a request that starts with a later key
    /// ranks below them, and one with a later key that ends was not ranked.
    pub fn wake_up_to(&self, service: u32) -> u64 {
        if self.share_held {
            return 1;
        }
        self.wake_up_to.get(&service).copied().unwrap_or(0)
    }

    /// The services scheduled now.
    pub fn services(&self) -> impl Iterator<Item = u32> + '_ {
        self.cfg.services.iter().copied()
    }

    pub fn wakes_by_arrival(&self) -> bool {
        self.cfg.policy == SchedulingPolicy::PerServiceFifo
    }

    /// The wanted set now, and the actions that get there from the promoted set.
    pub fn decide(&mut self, now_ns: u64) -> Vec<Action> {
        self.roll_period(now_ns);
        self.cap_ages(now_ns);
        if !self.promoted.is_empty() && self.most_used_ns() >= self.budget_ns() {
            self.share_held = true;
        }
        let wanted: BTreeMap<u32, u32> = if self.share_held {
            BTreeMap::new()
        } else {
            let (wanted, wake_up_to) = self.ranked();
            self.wake_up_to = wake_up_to;
            wanted
        };
        let mut actions = Vec::new();
        let gone: Vec<(u32, u32)> = self
            .promoted
            .iter()
            .filter(|(t, _)| !wanted.contains_key(t))
            .map(|(&t, &g)| (t, g))
            .collect();
        for (tid, tgid) in gone {
            let reason = if self.share_held {
                self.counts.share_capped += 1;
                Reason::ShareCap
            } else if self.capped.contains(&tid) {
                self.counts.age_capped += 1;
                Reason::AgeCap
            } else if self.active.get(&tid).is_none_or(|a| a.tgid != tgid) {
                Reason::Finished
            } else {
                Reason::Displaced
            };
            self.demote(tid, tgid, reason, &mut actions);
        }
        for (&tid, &tgid) in &wanted {
            if let std::collections::btree_map::Entry::Vacant(e) = self.promoted.entry(tid) {
                e.insert(tgid);
                self.counts.promotions += 1;
                actions.push(Action::Promote { tid, tgid });
            }
        }
        actions
    }

    /// Demotes the promoted threads whose process fails `keep` (it left the service) and forgets
    /// their requests.
    pub fn drop_processes(&mut self, keep: impl Fn(u32) -> bool) -> Vec<Action> {
        let mut actions = Vec::new();
        let gone: Vec<(u32, u32)> = self.promoted().filter(|&(_, g)| !keep(g)).collect();
        for (tid, tgid) in gone {
            self.demote(tid, tgid, Reason::Stopped, &mut actions);
        }
        self.active.retain(|_, a| keep(a.tgid));
        actions
    }

    /// Demotes every promoted thread (the schedule ends).
    pub fn stop(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let all: Vec<(u32, u32)> = self.promoted().collect();
        for (tid, tgid) in all {
            self.demote(tid, tgid, Reason::Stopped, &mut actions);
        }
        actions
    }

    /// When [`Core::decide`] must run again even without events: while something is promoted,
    /// the end of the period or the first moment a CPU could reach the share cap (its charge
    /// grows at most as fast as the clock), whichever comes first; while the cap holds, the end
    /// of the period; else the next age cap.
    pub fn next_deadline(&self) -> Option<u64> {
        let period_end = self.period_start_ns + PERIOD_NS;
        if !self.promoted.is_empty() {
            if self.charged_at_ns == 0 {
                return Some(period_end); // not measured
            }
            let left = self.budget_ns().saturating_sub(self.most_used_ns());
            return Some(period_end.min(self.charged_at_ns.saturating_add(left)));
        }
        if self.share_held {
            return Some(period_end);
        }
        self.active
            .iter()
            .filter(|(t, _)| !self.capped.contains(t))
            .map(|(_, a)| a.arrival_ns + self.cfg.age_cap_ns)
            .min()
    }

    fn demote(&mut self, tid: u32, tgid: u32, reason: Reason, out: &mut Vec<Action>) {
        self.promoted.remove(&tid);
        self.counts.demotions += 1;
        out.push(Action::Demote { tid, tgid, reason });
    }

    fn roll_period(&mut self, now_ns: u64) {
        if now_ns >= self.period_start_ns + PERIOD_NS {
            let periods = (now_ns - self.period_start_ns) / PERIOD_NS;
            self.period_start_ns += periods * PERIOD_NS;
            self.period_base_ns.clone_from(&self.charged_ns);
            self.share_held = false;
        }
    }

    fn cap_ages(&mut self, now_ns: u64) {
        let cap = self.cfg.age_cap_ns;
        for (&tid, a) in &self.active {
            if now_ns.saturating_sub(a.arrival_ns) > cap {
                self.capped.insert(tid);
            }
        }
    }

    /// The threads that should run first now (tid -> tgid), and [`Core::wake_up_to`] per
    /// scheduled service.
    fn ranked(&self) -> (BTreeMap<u32, u32>, BTreeMap<u32, u64>) {
        let mut eligible: Vec<(u64, u64, u32, &Active)> = self
            .active
            .iter()
            .filter(|(t, _)| !self.capped.contains(t))
            .map(|(&t, a)| {
                let key = match self.cfg.policy {
                    SchedulingPolicy::OldestFirst => a.origin_ns,
                    SchedulingPolicy::PerServiceFifo => a.arrival_ns,
                };
                (key, a.arrival_ns, t, a)
            })
            .collect();
        eligible.sort_unstable_by_key(|&(key, arrival, tid, _)| (key, arrival, tid));
        // Per bucket (the node, or a service): how many requests ranked, and the key of the
        // youngest one. A request is a group of threads whose keys lie within `same` of the
        // group's first: every thread serving one of the `k` oldest requests runs first.
        let same = self.same_request_ns();
        let mut taken: HashMap<u32, (usize, u64)> = HashMap::new();
        let mut out = BTreeMap::new();
        for (key, _, tid, a) in eligible {
            let (n, first) = taken.entry(self.bucket(a.service)).or_default();
            if *n > 0 && key <= first.saturating_add(same) {
                out.insert(tid, a.tgid);
            } else if *n < self.cfg.k {
                *n += 1;
                *first = key;
                out.insert(tid, a.tgid);
            }
        }
        // A full bucket: only requests at least as old as its youngest ranked one matter (and
        // that one's other threads, within `same` of it).
        let up_to = |bucket: u32| match taken.get(&bucket) {
            Some(&(n, first)) if n >= self.cfg.k => first.saturating_add(same),
            _ => 0,
        };
        let wake = self
            .cfg
            .services
            .iter()
            .map(|&s| (s, up_to(self.bucket(s))))
            .collect();
        (out, wake)
    }

    /// How far apart two threads' keys may be and still serve one request: `oldest-first`
    /// ranks by the origin, which a callee learns as an age re-based on its clock, off by the
    /// age's time in flight ([`SAME_REQUEST_NS`]); `per-service-fifo` ranks by the arrival at
    /// each service, one thread per request.
    fn same_request_ns(&self) -> u64 {
        match self.cfg.policy {
            SchedulingPolicy::OldestFirst => SAME_REQUEST_NS,
            SchedulingPolicy::PerServiceFifo => 0,
        }
    }

    /// Where a request of `service` competes for the `k` places: the whole node
    /// (`oldest-first`) or its service (`per-service-fifo`).
    fn bucket(&self, service: u32) -> u32 {
        match self.cfg.policy {
            SchedulingPolicy::OldestFirst => 0,
            SchedulingPolicy::PerServiceFifo => service,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn cfg(policy: SchedulingPolicy, k: usize) -> CoreConfig {
        CoreConfig {
            policy,
            services: [1, 2].into(),
            k,
            age_cap_ns: 100 * MS,
            max_share: 0.5,
        }
    }

    fn start(tid: u32, service: u32, origin_ns: u64, arrival_ns: u64) -> RequestEvent {
        RequestEvent {
            at_ns: arrival_ns,
            origin_ns,
            arrival_ns,
            tid,
            tgid: 100 + service,
            service,
            kind: REQUEST_START,
            thread_start_ns: 0,
        }
    }

    fn end(tid: u32, service: u32) -> RequestEvent {
        RequestEvent {
            tid,
            tgid: 100 + service,
            service,
            kind: REQUEST_END,
            ..RequestEvent::default()
        }
    }

    fn promote(tid: u32, service: u32) -> Action {
        Action::Promote {
            tid,
            tgid: 100 + service,
        }
    }

    fn demote(tid: u32, service: u32, reason: Reason) -> Action {
        Action::Demote {
            tid,
            tgid: 100 + service,
            reason,
        }
    }

    /// A worker woken for a fresh connection that another thread read (`REQUEST_DROPPED`)
    /// serves nothing: it is no longer the oldest request, and it is not counted.
    #[test]
    fn a_dropped_early_start_is_forgotten_and_not_counted() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        c.observe(&start(10, 1, MS, 2 * MS)); // carried an age: the woken worker
        c.observe(&start(11, 1, 3 * MS, 3 * MS));
        assert_eq!(c.decide(4 * MS), vec![promote(10, 1)]);
        c.observe(&RequestEvent {
            kind: REQUEST_DROPPED,
            ..start(10, 1, MS, 2 * MS)
        });
        // The thread that read the connection starts the request.
        c.observe(&start(12, 1, MS, 2 * MS));
        assert_eq!(
            c.decide(5 * MS),
            vec![demote(10, 1, Reason::Finished), promote(12, 1)]
        );
        let counts = c.counts();
        assert_eq!((counts.requests, counts.requests_with_age), (2, 1));
    }

    #[test]
    fn oldest_first_promotes_the_k_oldest_origins_across_services_and_acts_only_on_change() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        // Thread 11 of service 2 serves a request that entered the app first (origin 1 ms),
        // though it arrived here last.
        c.observe(&start(10, 1, 2 * MS, 2 * MS));
        c.observe(&start(11, 2, MS, 3 * MS));
        c.observe(&start(12, 7, 0, 0)); // not scheduled
        assert_eq!(c.decide(4 * MS), vec![promote(11, 2)]);
        assert_eq!(c.decide(4 * MS), vec![], "no change, no action");
        c.observe(&end(11, 2));
        assert_eq!(
            c.decide(5 * MS),
            vec![demote(11, 2, Reason::Finished), promote(10, 1)]
        );
        // An older request arrives: it displaces the promoted one.
        c.observe(&start(13, 2, MS / 2, 6 * MS));
        assert_eq!(
            c.decide(6 * MS),
            vec![demote(10, 1, Reason::Displaced), promote(13, 2)]
        );
        let n = c.counts();
        assert_eq!((n.requests, n.requests_with_age), (3, 2));
        assert_eq!((n.promotions, n.demotions), (3, 2));
    }

    #[test]
    fn oldest_first_runs_every_thread_of_the_oldest_request_first() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        // The entry's thread 10 waits for its callees 20 and 21 (on this node), whose origins
        // came as ages and are off by the age's time in flight; thread 11 serves a later one.
        c.observe(&start(10, 1, MS, MS));
        c.observe(&start(11, 1, 2 * MS, 2 * MS));
        c.observe(&start(20, 2, MS + 3_000, 3 * MS));
        c.observe(&start(21, 2, MS + SAME_REQUEST_NS, 3 * MS));
        let mut got = c.decide(4 * MS);
        got.sort_by_key(|a| match a {
            Action::Promote { tid, .. } | Action::Demote { tid, .. } => *tid,
        });
        assert_eq!(got, vec![promote(10, 1), promote(20, 2), promote(21, 2)]);
        // Their events wake the scheduler; the later request's do not.
        assert_eq!(c.wake_up_to(1), MS + SAME_REQUEST_NS);
        // A callee of the later request (origin 2 ms) waits.
        c.observe(&start(22, 2, 2 * MS + 5_000, 4 * MS));
        assert_eq!(c.decide(5 * MS), vec![]);
        // The oldest request ends at its callees, then at the entry: the next one's threads run.
        c.observe(&end(20, 2));
        c.observe(&end(21, 2));
        c.observe(&end(10, 1));
        let mut got = c.decide(6 * MS);
        got.sort_by_key(|a| match a {
            Action::Promote { tid, .. } | Action::Demote { tid, .. } => *tid,
        });
        assert_eq!(
            got,
            vec![
                demote(10, 1, Reason::Finished),
                promote(11, 1),
                demote(20, 2, Reason::Finished),
                demote(21, 2, Reason::Finished),
                promote(22, 2),
            ]
        );
    }

    #[test]
    fn per_service_fifo_takes_k_per_service_by_arrival_here() {
        let mut c = Core::new(cfg(SchedulingPolicy::PerServiceFifo, 2), 0);
        c.observe(&start(1, 1, 0, 5 * MS));
        c.observe(&start(2, 1, 9, 3 * MS));
        c.observe(&start(3, 1, 0, 4 * MS));
        c.observe(&start(4, 2, 0, 9 * MS));
        let mut got = c.decide(10 * MS);
        got.sort_by_key(|a| match a {
            Action::Promote { tid, .. } | Action::Demote { tid, .. } => *tid,
        });
        assert_eq!(got, vec![promote(2, 1), promote(3, 1), promote(4, 2)]);
    }

    #[test]
    fn only_events_as_old_as_the_youngest_ranked_request_wake_the_scheduler() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 2), 0);
        c.observe(&start(10, 1, 5 * MS, 5 * MS));
        c.decide(6 * MS);
        assert_eq!(
            c.wake_up_to(1),
            0,
            "one request for two places: any event ranks"
        );
        c.observe(&start(11, 2, 3 * MS, 6 * MS));
        c.observe(&start(12, 1, 8 * MS, 8 * MS));
        c.decide(9 * MS);
        assert_eq!(
            c.wake_up_to(1),
            5 * MS + SAME_REQUEST_NS,
            "ranked: the origins 3 and 5 ms (and their other threads' within SAME_REQUEST_NS)"
        );
        assert_eq!(
            c.wake_up_to(2),
            5 * MS + SAME_REQUEST_NS,
            "one order across the node's services"
        );
        assert!(!c.wakes_by_arrival());
        // A request that starts later than 5 ms ranks below both: it changes nothing.
        c.observe(&start(13, 2, 7 * MS, 9 * MS));
        assert_eq!(c.decide(10 * MS), vec![]);
        c.observe(&end(10, 1));
        c.decide(11 * MS);
        assert_eq!(
            c.wake_up_to(2),
            7 * MS + SAME_REQUEST_NS,
            "ranked now: 3 and 7 ms"
        );

        // Per service, by arrival here: a service with fewer than k wakes on every event.
        let mut f = Core::new(cfg(SchedulingPolicy::PerServiceFifo, 1), 0);
        f.observe(&start(1, 1, 0, 5 * MS));
        f.decide(6 * MS);
        assert_eq!(f.wake_up_to(1), 5 * MS);
        assert_eq!(
            f.wake_up_to(2),
            0,
            "service 2 has no request: any event of it ranks"
        );
        f.observe(&start(2, 2, 0, 2 * MS));
        f.decide(7 * MS);
        assert_eq!((f.wake_up_to(1), f.wake_up_to(2)), (5 * MS, 2 * MS));
        assert!(f.wakes_by_arrival());
    }

    #[test]
    fn a_request_past_the_age_cap_is_demoted_once_and_its_next_request_ranks_again() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        c.observe(&start(1, 1, 0, 0));
        c.observe(&start(2, 1, MS, MS));
        assert_eq!(c.decide(MS), vec![promote(1, 1)]);
        assert_eq!(
            c.next_deadline(),
            Some(10 * MS),
            "period end while promoted"
        );
        assert_eq!(c.decide(100 * MS), vec![], "at the cap: not past it");
        assert_eq!(
            c.decide(100 * MS + 1),
            vec![demote(1, 1, Reason::AgeCap), promote(2, 1)]
        );
        assert_eq!(c.decide(100 * MS + 2), vec![]);
        assert_eq!(c.counts().age_capped, 1);
        // Thread 1 starts a fresh request, older than nothing but thread 2's is capped too now.
        c.observe(&start(1, 1, 102 * MS, 102 * MS));
        assert_eq!(
            c.decide(102 * MS),
            vec![demote(2, 1, Reason::AgeCap), promote(1, 1)]
        );
    }

    #[test]
    fn the_share_cap_demotes_everything_until_the_period_ends() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 2), 0);
        c.observe(&start(1, 1, 0, 0));
        c.observe(&start(2, 2, MS, MS));
        // Sums from before the schedule: only their growth counts.
        c.charge(MS, &[40 * MS, 70 * MS]);
        assert_eq!(c.decide(MS).len(), 2, "promoted at 1 ms");
        assert_eq!(
            c.next_deadline(),
            Some(6 * MS),
            "nothing used yet: the cap (5 ms) could be reached 5 ms after the reading"
        );
        c.charge(4 * MS, &[43 * MS, 71 * MS]); // 3 ms on CPU 0, 1 ms on CPU 1
        assert_eq!(c.decide(4 * MS), vec![], "below 5 ms on every CPU");
        assert_eq!(c.next_deadline(), Some(6 * MS), "2 ms left on CPU 0");
        c.charge(6 * MS, &[45 * MS, 71 * MS]); // CPU 0 reaches 5 ms = 0.5 x 10 ms
        assert_eq!(
            c.decide(6 * MS),
            vec![
                demote(1, 1, Reason::ShareCap),
                demote(2, 2, Reason::ShareCap)
            ]
        );
        assert_eq!(c.decide(9 * MS), vec![], "held until the period ends");
        assert_eq!(c.wake_up_to(1), 1, "while held, no event needs a wake-up");
        assert_eq!(c.next_deadline(), Some(10 * MS));
        c.charge(10 * MS, &[45 * MS, 71 * MS]);
        assert_eq!(c.decide(10 * MS), vec![promote(1, 1), promote(2, 2)]);
        c.charge(14 * MS, &[49 * MS, 71 * MS]);
        assert_eq!(c.decide(14 * MS), vec![], "4 ms of the new period");
        assert_eq!(c.next_deadline(), Some(15 * MS));
        c.charge(15 * MS, &[49 * MS, 71 * MS]);
        assert_eq!(
            c.next_deadline(),
            Some(16 * MS),
            "it slept: still 1 ms left, counted from the new reading"
        );
        assert_eq!(c.counts().share_capped, 2);
        assert_eq!(
            c.stop(),
            vec![demote(1, 1, Reason::Stopped), demote(2, 2, Reason::Stopped)]
        );
    }

    #[test]
    fn unmeasured_the_share_cap_waits_for_the_period_end() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        c.observe(&start(1, 1, 0, 0));
        assert_eq!(c.decide(MS), vec![promote(1, 1)]);
        assert_eq!(
            c.next_deadline(),
            Some(10 * MS),
            "never charged: not a busy loop"
        );
    }

    #[test]
    fn forgotten_and_unscheduled_threads_leave_and_a_new_schedule_keeps_known_requests() {
        let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
        c.observe(&start(1, 1, 0, 0));
        c.observe(&start(2, 2, MS, MS));
        assert_eq!(c.decide(MS), vec![promote(1, 1)]);
        c.forget(1);
        assert_eq!(c.decide(MS), vec![promote(2, 2)]);

        let mut only_1 = cfg(SchedulingPolicy::OldestFirst, 1);
        only_1.services = [1].into();
        c.reconfigure(only_1);
        assert_eq!(c.decide(MS), vec![demote(2, 2, Reason::Finished)]);
        assert_eq!(c.next_deadline(), None);
        // A process that leaves the service: its promoted threads go back at once.
        c.observe(&start(3, 1, 0, MS));
        assert_eq!(c.decide(MS), vec![promote(3, 1)]);
        assert_eq!(
            c.drop_processes(|tgid| tgid != 101),
            vec![demote(3, 1, Reason::Stopped)]
        );
        assert_eq!(c.decide(MS), vec![], "its request is forgotten");
    }
}

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
//! - **in their order**: each ranked request has a rank (0: the oldest), and the applier gives
//!   each rank its own real-time priority, a younger request's a lower one. With `k` = 2 on a
//!   fan-out, the second-oldest request takes the CPU the oldest one leaves (its last callee
//!   runs on one CPU) before the rest share it; with one priority for all `k`, the older one
//!   did not preempt the younger. A thread whose request moves up (an older one ended) is
//!   re-ranked ([`Action::Rerank`]).
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

/// What the applier does to a thread. `rank`: the place of the thread's request among those
/// that run first (0: the oldest, or the oldest of its service for `per-service-fifo`); the
/// applier gives each rank its own real-time priority, a younger request's a lower one, so the
/// ranked requests run in their order, not only before the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Promote {
        tid: u32,
        tgid: u32,
        rank: u32,
    },
    /// A promoted thread whose request moved to another rank (an older one ended, or arrived).
    Rerank {
        tid: u32,
        tgid: u32,
        rank: u32,
    },
    Demote {
        tid: u32,
        tgid: u32,
        reason: Reason,
    },
}

/// A thread promoted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Promoted {
    tgid: u32,
    rank: u32,
}

/// Counters of the decisions (the applier counts what the kernel refused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounts {
    pub requests: u64,
    pub requests_with_age: u64,
    pub promotions: u64,
    /// Promoted threads given another rank's priority.
    pub reranks: u64,
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
    /// Thread id -> its process and rank, promoted now.
    promoted: BTreeMap<u32, Promoted>,
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
        self.promoted.iter().map(|(&t, p)| (t, p.tgid))
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
            // thread's start follows; this one served nothing. The worker's own next request
            // may be reported before (the drop is made by the other thread): that one stays.
            REQUEST_DROPPED => {
                self.counts.requests = self.counts.requests.saturating_sub(1);
                if ev.origin_ns != ev.arrival_ns {
                    self.counts.requests_with_age = self.counts.requests_with_age.saturating_sub(1);
                }
                if self
                    .active
                    .get(&ev.tid)
                    .is_some_and(|a| a.arrival_ns == ev.arrival_ns)
                {
                    self.capped.remove(&ev.tid);
                    self.active.remove(&ev.tid);
                }
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
        let wanted: BTreeMap<u32, Promoted> = if self.share_held {
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
            .map(|(&t, p)| (t, p.tgid))
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
        for (&tid, &want) in &wanted {
            let Promoted { tgid, rank } = want;
            match self.promoted.insert(tid, want) {
                None => {
                    self.counts.promotions += 1;
                    actions.push(Action::Promote { tid, tgid, rank });
                }
                Some(was) if was.rank != rank => {
                    self.counts.reranks += 1;
                    actions.push(Action::Rerank { tid, tgid, rank });
                }
                Some(_) => {}
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

    /// The threads that should run first now (tid -> tgid and rank), and [`Core::wake_up_to`]
    /// per scheduled service.
    fn ranked(&self) -> (BTreeMap<u32, Promoted>, BTreeMap<u32, u64>) {
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
            // A new request (not another thread of the last one ranked) takes a place, if left.
            if *n == 0 || key > first.saturating_add(same) {
                if *n == self.cfg.k {
                    continue;
                }
                *n += 1;
                *first = key;
            }
            out.insert(tid, promoted(a.tgid, *n - 1));
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

/// A ranked thread: `rank` counts from 0 (the oldest request).
fn promoted(tgid: u32, rank: usize) -> Promoted {
    Promoted {
        tgid,
        rank: u32::try_from(rank).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;

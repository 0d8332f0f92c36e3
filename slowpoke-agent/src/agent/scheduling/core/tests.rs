//! The core's unit tests (time passed in, no system calls).

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
    promote_at(tid, service, 0)
}

fn promote_at(tid: u32, service: u32, rank: u32) -> Action {
    Action::Promote {
        tid,
        tgid: 100 + service,
        rank,
    }
}

fn by_tid(mut actions: Vec<Action>) -> Vec<Action> {
    actions.sort_by_key(|a| match a {
        Action::Promote { tid, .. } | Action::Rerank { tid, .. } | Action::Demote { tid, .. } => {
            *tid
        }
    });
    actions
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

/// The drop is reported by the thread that read the connection, so the worker's own next
/// request (read from another connection) may be reported first: the late drop leaves it.
#[test]
fn a_late_drop_leaves_the_workers_next_request() {
    let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 1), 0);
    c.observe(&start(10, 1, MS, 2 * MS)); // the woken worker's early start
    c.observe(&start(10, 1, 3 * MS, 3 * MS)); // it read another connection
    c.observe(&RequestEvent {
        kind: REQUEST_DROPPED,
        ..start(10, 1, MS, 2 * MS)
    });
    c.observe(&start(12, 1, MS, 2 * MS)); // the reader of the first connection
    c.observe(&start(13, 1, 4 * MS, 4 * MS));
    assert_eq!(c.decide(5 * MS), vec![promote(12, 1)]);
    c.observe(&end(12, 1));
    assert_eq!(
        c.decide(6 * MS),
        vec![demote(12, 1, Reason::Finished), promote(10, 1)],
        "the worker's own request is still known"
    );
    assert_eq!(c.counts().requests, 3);
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
    let got = by_tid(c.decide(4 * MS));
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
    let got = by_tid(c.decide(6 * MS));
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
    let got = by_tid(c.decide(10 * MS));
    assert_eq!(
        got,
        vec![promote(2, 1), promote_at(3, 1, 1), promote(4, 2)],
        "ranked per service: 2 before 3 in service 1, 4 first in service 2"
    );
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
    assert_eq!(c.decide(10 * MS), vec![promote(1, 1), promote_at(2, 2, 1)]);
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

#[test]
fn ranked_requests_run_in_their_order_and_move_up_when_an_older_one_ends() {
    let mut c = Core::new(cfg(SchedulingPolicy::OldestFirst, 2), 0);
    // Request A (origin 1 ms): entry thread 10 and callee 20; request B (2 ms): entry 11 and
    // callee 21; request C (3 ms): thread 12, not ranked with k = 2.
    c.observe(&start(10, 1, MS, MS));
    c.observe(&start(11, 1, 2 * MS, 2 * MS));
    c.observe(&start(12, 1, 3 * MS, 3 * MS));
    c.observe(&start(20, 2, MS + 3_000, 4 * MS));
    c.observe(&start(21, 2, 2 * MS + 2_000, 4 * MS));
    assert_eq!(
        c.decide(5 * MS),
        vec![
            promote(10, 1),
            promote_at(11, 1, 1),
            promote(20, 2),
            promote_at(21, 2, 1)
        ]
    );
    // A ends: B's threads move up to rank 0 (a priority change, not a new promotion) and C
    // takes rank 1.
    c.observe(&end(20, 2));
    c.observe(&end(10, 1));
    let got = by_tid(c.decide(6 * MS));
    assert_eq!(
        got,
        vec![
            demote(10, 1, Reason::Finished),
            Action::Rerank {
                tid: 11,
                tgid: 101,
                rank: 0
            },
            promote_at(12, 1, 1),
            demote(20, 2, Reason::Finished),
            Action::Rerank {
                tid: 21,
                tgid: 102,
                rank: 0
            },
        ]
    );
    assert_eq!(c.decide(7 * MS), vec![], "no change, no action");
    let n = c.counts();
    assert_eq!((n.promotions, n.reranks, n.demotions), (5, 2, 2));
}

//! The pause actuator on real processes, without the kernel: "pause N ns now" and a debt counter.

mod agent_util;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use agent_util::{TempDir, is_stopped, nginx, sleeper, wait_for};
use slowpoke_agent::{
    actuator::{Actuator, ActuatorConfig, CounterDebt, PauseKind},
    kernel::PauseRequest,
    safety::state::{StateFile, read_listed},
    sys::clock::monotonic_ns,
};

fn actuator(state: &TempDir, debt: CounterDebt, cfg: ActuatorConfig) -> Actuator {
    Actuator::spawn(
        "svc",
        Arc::new(StateFile::new(state.path())),
        Box::new(debt),
        cfg,
    )
}

#[test]
fn prefork_server_is_paused_as_a_whole() {
    let server = nginx(2);
    let mut pids = vec![server.pid()];
    pids.extend(agent_util::children(server.pid()));
    assert_eq!(pids.len(), 3, "master + 2 workers");
    let state = TempDir::new("act-whole");
    let act = Arc::new(actuator(
        &state,
        CounterDebt::default(),
        ActuatorConfig::default(),
    ));
    act.set_pids(&pids);
    let d = 300_000_000;
    let a = act.clone();
    let pause = std::thread::spawn(move || a.pause_now(d).expect("pause outcome"));
    wait_for(
        Duration::from_secs(2),
        "every nginx process stopped",
        || pids.iter().all(|&p| is_stopped(p)).then_some(()),
    );
    // Recorded in the state file while stopped.
    let listed = read_listed(state.path()).expect("state file");
    for p in &pids {
        assert!(
            listed.contains(p),
            "pid {p} listed in the state file while stopped: {listed:?}"
        );
    }
    let out = pause.join().expect("pause thread");
    // SIGCONT always follows: every process runs again right away.
    wait_for(
        Duration::from_millis(100),
        "every nginx process resumed",
        || pids.iter().all(|&p| !is_stopped(p)).then_some(()),
    );
    assert_eq!(out.pids.len(), 3);
    let err = (out.achieved_ns as f64 - d as f64).abs() / d as f64;
    assert!(
        err < 0.03,
        "achieved {} ns for {d} ns requested",
        out.achieved_ns
    );
    assert!(
        read_listed(state.path()).expect("state file").is_empty(),
        "state file emptied after the pause"
    );
    let s = act.stats();
    assert_eq!(s.pauses, 1);
    assert_eq!(s.pause_ns, out.achieved_ns);
}

#[test]
fn pause_accuracy() {
    let p = sleeper();
    let state = TempDir::new("act-accuracy");
    let act = actuator(&state, CounterDebt::default(), ActuatorConfig::default());
    act.set_pids(&[p.pid()]);
    for d in [1_000_000u64, 5_000_000, 20_000_000, 100_000_000] {
        let mut errs: Vec<f64> = (0..5)
            .map(|_| {
                let out = act.pause_now(d).expect("pause outcome");
                assert!(!is_stopped(p.pid()), "resumed after the pause");
                assert!(
                    out.achieved_ns >= d,
                    "never shorter: {} for {d}",
                    out.achieved_ns
                );
                out.achieved_ns as f64 - d as f64
            })
            .collect();
        errs.sort_by(f64::total_cmp);
        eprintln!(
            "pause {d} ns: overshoot min {:.0} median {:.0} max {:.0} ns",
            errs[0], errs[2], errs[4]
        );
        // A few % (plus 100 µs for signal delivery on a shared 2-core machine), on the median: a
        // saturated non-preemptible kernel can delay even a real-time thread by milliseconds once
        // in a while (and that oversleep is carried forward as negative debt anyway).
        let median = errs[2];
        assert!(
            median <= 0.03 * d as f64 + 100_000.0,
            "pause of {d} ns: median overshoot {median} ns"
        );
    }
}

#[test]
fn debt_below_quantum_is_paid_when_idle_and_oversleep_is_carried() {
    let p = sleeper();
    let state = TempDir::new("act-idle");
    let debt = CounterDebt::default();
    let act = actuator(
        &state,
        debt.clone(),
        ActuatorConfig {
            idle_ns: 20_000_000,
            ..ActuatorConfig::default()
        },
    );
    act.set_pids(&[p.pid()]);
    act.set_active(true);
    debt.0.fetch_add(700_000, Ordering::SeqCst); // below the 1 ms quantum
    let s = wait_for(Duration::from_secs(2), "the idle debt paid", || {
        let s = act.stats();
        (s.pauses == 1).then_some(s)
    });
    // At least the debt; an oversleep (1.2 ms for 700 µs once, in a CI run on the loaded 2-core
    // machine) is carried, which the second pause checks precisely below.
    assert!(
        s.paid_ns >= 700_000 && s.paid_ns < 3_700_000,
        "paid {} ns of 700 µs",
        s.paid_ns
    );
    assert_eq!(s.pause_ns, s.paid_ns);
    // More debt: the oversleep of the first pause is deducted from the second.
    debt.0.fetch_add(3_000_000, Ordering::SeqCst);
    act.flush(Duration::from_secs(2));
    let s2 = act.stats();
    let total = s2.paid_ns as i64 - 3_700_000;
    assert!(
        (0..200_000).contains(&total),
        "total paid {} ns for 3.7 ms owed",
        s2.paid_ns
    );
    assert!(!is_stopped(p.pid()));
}

#[test]
fn safety_cap_drops_debt_beyond_the_share() {
    let p = sleeper();
    let state = TempDir::new("act-cap");
    let debt = CounterDebt::default();
    let act = actuator(
        &state,
        debt.clone(),
        ActuatorConfig {
            max_stopped_share: 0.2,
            window_ns: 1_000_000_000,
            ..ActuatorConfig::default()
        },
    );
    act.set_pids(&[p.pid()]);
    debt.0.fetch_add(1_000_000_000, Ordering::SeqCst);
    act.flush(Duration::from_secs(3));
    let s = act.stats();
    assert!(
        (200_000_000..215_000_000).contains(&s.paid_ns),
        "paid {} ns: the cap allows 200 ms per 1 s window",
        s.paid_ns
    );
    assert_eq!(s.dropped_ns, 800_000_000);
    assert!(!is_stopped(p.pid()));
}

#[test]
fn processes_stopped_by_someone_else_are_left_alone() {
    let a = sleeper();
    let b = sleeper();
    // SAFETY: signal to our own child.
    unsafe { libc::kill(b.pid() as i32, libc::SIGSTOP) };
    wait_for(Duration::from_secs(1), "b stopped", || {
        is_stopped(b.pid()).then_some(())
    });
    let state = TempDir::new("act-foreign");
    let act = actuator(&state, CounterDebt::default(), ActuatorConfig::default());
    act.set_pids(&[a.pid(), b.pid()]);
    let out = act.pause_now(5_000_000).expect("pause");
    assert_eq!(out.pids, vec![a.pid()]);
    assert!(!is_stopped(a.pid()));
    assert!(
        is_stopped(b.pid()),
        "a process stopped by someone else stays stopped"
    );
}

#[test]
fn services_pause_independently_and_at_the_same_time() {
    let a = sleeper();
    let b = sleeper();
    let state = TempDir::new("act-indep");
    let file = Arc::new(StateFile::new(state.path()));
    let act_a = Arc::new(Actuator::spawn(
        "a",
        file.clone(),
        Box::new(CounterDebt::default()),
        ActuatorConfig::default(),
    ));
    let act_b = Arc::new(Actuator::spawn(
        "b",
        file,
        Box::new(CounterDebt::default()),
        ActuatorConfig::default(),
    ));
    act_a.set_pids(&[a.pid()]);
    act_b.set_pids(&[b.pid()]);
    let ta = {
        let act = act_a.clone();
        std::thread::spawn(move || act.pause_now(200_000_000).expect("pause a"))
    };
    let tb = {
        let act = act_b.clone();
        std::thread::spawn(move || act.pause_now(100_000_000).expect("pause b"))
    };
    wait_for(Duration::from_secs(1), "both stopped at once", || {
        (is_stopped(a.pid()) && is_stopped(b.pid())).then_some(())
    });
    let (oa, ob) = (ta.join().expect("a"), tb.join().expect("b"));
    assert!(
        ob.end_ns < oa.end_ns && ob.start_ns < oa.end_ns && oa.start_ns < ob.end_ns,
        "overlapping pauses"
    );
    assert!(!is_stopped(a.pid()) && !is_stopped(b.pid()));
}

/// Synchronized plans at the actuator level (no kernel): a quantum pause of A (a kernel pause
/// request) makes B pay everything it owes at the same moment, below the quantum too; a service
/// that is pausing already is left alone.
#[test]
fn a_quantum_pause_makes_the_others_pay_what_they_owe_at_once() {
    let (a, b) = (sleeper(), sleeper());
    let state = TempDir::new("act-sync");
    let file = Arc::new(StateFile::new(state.path()));
    // Idle payment off (1 min): only the synchronization may make B pay.
    let cfg = ActuatorConfig {
        idle_ns: 60_000_000_000,
        ..ActuatorConfig::default()
    };
    let (debt_a, debt_b) = (CounterDebt::default(), CounterDebt::default());
    let act_a = Actuator::spawn("a", file.clone(), Box::new(debt_a.clone()), cfg);
    let act_b = Arc::new(Actuator::spawn("b", file, Box::new(debt_b.clone()), cfg));
    act_a.set_pids(&[a.pid()]);
    act_b.set_pids(&[b.pid()]);
    act_a.set_active(true);
    act_b.set_active(true);
    let others = vec![act_b.pay_handle()];
    act_a.set_on_kernel_pause(Some(Arc::new(move || {
        for o in &others {
            o.pay_now();
        }
    })));
    // B owes 400 µs (below the 1 ms quantum: on its own it would wait).
    debt_b.0.fetch_add(400_000, Ordering::SeqCst);
    debt_a.0.fetch_add(5_000_000, Ordering::SeqCst);
    act_a.kernel_request(PauseRequest {
        service: 0,
        stopped_tgid: None,
        at_ns: monotonic_ns(),
        owed_ns: 5_000_000,
    });
    let sb = wait_for(Duration::from_secs(2), "B paid at A's pause", || {
        let s = act_b.stats();
        (s.pauses == 1).then_some(s)
    });
    wait_for(Duration::from_secs(2), "A's pause done", || {
        (act_a.stats().pauses == 1).then_some(())
    });
    let (ra, rb) = (act_a.recent_pauses(), act_b.recent_pauses());
    assert_eq!(ra[0].kind, PauseKind::Kernel);
    assert_eq!(rb[0].kind, PauseKind::Synchronized);
    let skew = rb[0].start_ns as i64 - ra[0].start_ns as i64;
    eprintln!(
        "B stopped {skew} ns after A; B paid {} ns of 400 µs",
        sb.paid_ns
    );
    assert!(
        (0..2_000_000).contains(&skew),
        "B's pause starts with A's: {skew} ns"
    );
    assert!(
        rb[0].start_ns < ra[0].end_ns,
        "B's pause overlaps A's: {rb:?} {ra:?}"
    );
    assert!(
        (400_000..1_400_000).contains(&sb.paid_ns),
        "B paid all it owed: {}",
        sb.paid_ns
    );
    assert_eq!(sb.synchronized_pauses, 1);
    assert!(!is_stopped(a.pid()) && !is_stopped(b.pid()));

    // A service that is pausing already is left alone: no second pause queued behind it.
    let bb = act_b.clone();
    let manual = std::thread::spawn(move || bb.pause_now(100_000_000).expect("manual pause"));
    wait_for(Duration::from_secs(1), "B stopped", || {
        is_stopped(b.pid()).then_some(())
    });
    debt_b.0.fetch_add(3_000_000, Ordering::SeqCst);
    assert!(!act_b.pay_now(), "not asked while pausing");
    manual.join().expect("manual");
    std::thread::sleep(Duration::from_millis(30));
    let s = act_b.stats();
    assert_eq!((s.pauses, s.synchronized_pauses), (2, 1), "{s:?}");
    assert!(s.synchronized_skipped >= 1);
    // The debt is not lost: the next occasion (here a flush) pays it.
    act_b.flush(Duration::from_secs(2));
    let s = act_b.stats();
    assert!(
        s.paid_ns >= 3_400_000 && s.paid_ns < 4_600_000,
        "paid {} ns of 3.4 ms owed",
        s.paid_ns
    );
    assert!(!is_stopped(b.pid()));
}

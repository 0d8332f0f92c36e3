//! The kernel's own safety checks on a real nginx: it never stops (or spins) a protected
//! process — by tgid, or by cgroup v2 id covering the cgroup's whole subtree — and stops nothing
//! while the agent's heartbeat is stale. Run as root (the tests load the kernel programs).

mod kernel_support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use kernel_support::{
    KeepAlive, Server, heartbeat_forever, load_kernel, nginx_server, proc_state, serial,
};
use slowpoke_agent::{
    api::Mode,
    kernel::{Kernel, MAX_PROTECTED_PIDS, PauseRequest, cgroup_v2_id},
};
use slowpoke_testkit::cgroup::ScratchCgroup;
use tokio::sync::mpsc::UnboundedReceiver;

const SERVER: u32 = 0;

/// nginx as a service whose every visit owes a whole quantum (so each visit triggers), with
/// in-kernel stop on; a keep-alive client.
struct Setup {
    rt: tokio::runtime::Runtime,
    rx: UnboundedReceiver<PauseRequest>,
    client: KeepAlive,
    kernel: Kernel,
    // Dropped last: continued and killed even if a test fails while it is stopped.
    server: Server,
}

impl Setup {
    fn new(mode: Mode, in_kernel_stop: bool) -> Setup {
        let server = nginx_server();
        let mut kernel = load_kernel();
        let rx = kernel.take_pause_requests().unwrap();
        kernel.set_members(SERVER, &[server.pid()]).unwrap();
        kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
        let delay = if mode == Mode::Spin {
            slowpoke_agent::kernel::MAX_SPIN_NS
        } else {
            kernel.quantum_ns()
        };
        kernel
            .set_delay(SERVER, delay, mode, in_kernel_stop)
            .unwrap();
        let client = KeepAlive::connect(server.port);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Setup {
            rt,
            rx,
            client,
            kernel,
            server,
        }
    }

    /// One request (a visit that triggers a pause): true when the kernel stopped nginx in the
    /// receive. Either way nginx answers in the end (resumed here when stopped) and the trigger
    /// is re-armed with the debt paid.
    fn visit_stops_the_server(&mut self) -> bool {
        let pid = self.server.pid();
        self.client.send_request("/hello.txt");
        let rx = &mut self.rx;
        let request = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await })
            .ok()
            .flatten()
            .expect("a pause request: the debt reached the quantum");
        let stopped = match request.stopped_tgid {
            Some(tgid) => {
                assert_eq!(tgid, pid);
                // Stopped on the way back from the receive; bounded wait, never a fixed sleep.
                let sent = Instant::now();
                while proc_state(pid) != 'T' {
                    assert!(
                        sent.elapsed() < Duration::from_secs(1),
                        "not stopped 1 s later"
                    );
                    std::thread::yield_now();
                }
                // SAFETY: kill(2) on our own child.
                assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
                true
            }
            None => false,
        };
        // A server the kernel did not stop answers without any help.
        assert_eq!(self.client.read_response(), 200);
        assert_ne!(proc_state(pid), 'T');
        self.kernel.rearm(SERVER, request.owed_ns).unwrap();
        stopped
    }

    /// (kernel stops, denied stops, stale stops)
    fn stops(&self) -> (u64, u64, u64) {
        let c = self.kernel.counters(SERVER).unwrap();
        (c.kernel_stops, c.denied_stops, c.stale_stops)
    }
}

#[test]
fn kernel_never_stops_a_protected_tgid() {
    let _serial = serial();
    let mut t = Setup::new(Mode::Pause, true);
    heartbeat_forever(&mut t.kernel);

    t.kernel.set_protected_pids(&[t.server.pid()]).unwrap();
    assert!(!t.visit_stops_the_server(), "a protected tgid was stopped");
    assert_eq!(t.stops(), (0, 1, 0));

    // Another process protected, the member not: stopped.
    t.kernel.set_protected_pids(&[std::process::id()]).unwrap();
    assert!(
        t.visit_stops_the_server(),
        "an unprotected member was not stopped"
    );
    assert_eq!(t.stops(), (1, 1, 0));

    // Back in the set, then the set emptied.
    t.kernel
        .set_protected_pids(&[std::process::id(), t.server.pid()])
        .unwrap();
    assert!(!t.visit_stops_the_server());
    t.kernel.set_protected_pids(&[]).unwrap();
    assert!(t.visit_stops_the_server());
    assert_eq!(t.stops(), (2, 2, 0));

    let c = t.kernel.counters(SERVER).unwrap();
    assert_eq!((c.visits, c.pause_requests), (4, 4), "{c:?}");
    let too_many: Vec<u32> = (2..).take(MAX_PROTECTED_PIDS + 1).collect();
    let e = t.kernel.set_protected_pids(&too_many).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
}

#[test]
fn kernel_never_stops_a_process_in_or_below_a_protected_cgroup() {
    let _serial = serial();
    let mut t = Setup::new(Mode::Pause, true);
    heartbeat_forever(&mut t.kernel);
    let mut cgroup = ScratchCgroup::new("kernel-safety");
    let leaf = cgroup.child("leaf");
    let other = cgroup.child("other");
    cgroup.add(&leaf, t.server.pid());
    let id = |dir: &std::path::Path| cgroup_v2_id(dir).unwrap();

    // Neither: stopped.
    t.kernel.set_protected_cgroups(&[id(&other)]).unwrap();
    assert!(
        t.visit_stops_the_server(),
        "a process outside the protected cgroup"
    );
    // Its own cgroup.
    t.kernel.set_protected_cgroups(&[id(&leaf)]).unwrap();
    assert!(
        !t.visit_stops_the_server(),
        "a process in a protected cgroup was stopped"
    );
    // Its parent's cgroup: the whole subtree is covered.
    t.kernel
        .set_protected_cgroups(&[id(&other), id(cgroup.path())])
        .unwrap();
    assert!(
        !t.visit_stops_the_server(),
        "a process below a protected cgroup was stopped"
    );
    t.kernel.set_protected_cgroups(&[]).unwrap();
    assert!(t.visit_stops_the_server());
    assert_eq!(t.stops(), (2, 2, 0));
    drop(t); // nginx gone before its cgroup is removed
}

#[test]
fn kernel_stops_nothing_without_a_fresh_heartbeat() {
    let _serial = serial();
    let mut t = Setup::new(Mode::Pause, true);
    let max_age = Duration::from_millis(300);
    t.kernel
        .set_heartbeat_max_age(max_age.as_nanos() as u64)
        .unwrap();
    assert!(t.kernel.set_heartbeat_max_age(0).is_err());

    // Never beaten.
    assert!(!t.visit_stops_the_server(), "stopped before the first beat");
    assert_eq!(t.stops(), (0, 0, 1));

    // Beating every 10 ms while the agent is alive, as the agent does.
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    let beater = t
        .kernel
        .heartbeat()
        .beat_every(Duration::from_millis(10), move || {
            flag.load(Ordering::Relaxed)
        })
        .unwrap();
    assert!(
        t.visit_stops_the_server(),
        "not stopped with a live heartbeat"
    );
    assert_eq!(t.stops(), (1, 0, 1));

    // The agent hangs (its liveness check fails): once the last beat is older than the max age,
    // no more stops. The passing of time is what this checks: wait for the last beat to age.
    alive.store(false, Ordering::Relaxed);
    std::thread::sleep(max_age * 2);
    assert!(
        !t.visit_stops_the_server(),
        "stopped with a stale heartbeat"
    );
    assert_eq!(t.stops(), (1, 0, 2));

    // It recovers and beats: stops again.
    alive.store(true, Ordering::Relaxed);
    t.kernel.beat().unwrap();
    assert!(t.visit_stops_the_server(), "not stopped once beaten again");
    assert_eq!(t.stops(), (2, 0, 2));

    // The beater goes (the agent stops or exits): stale again.
    drop(beater);
    std::thread::sleep(max_age * 2);
    assert!(!t.visit_stops_the_server(), "stopped after the beats ended");
    assert_eq!(t.stops(), (2, 0, 3));

    // Meanwhile the debt kept accruing and every trigger reached the agent.
    let c = t.kernel.counters(SERVER).unwrap();
    assert_eq!((c.visits, c.pause_requests), (5, 5), "{c:?}");
    assert_eq!(c.owed_ns, 5 * t.kernel.quantum_ns());
}

#[test]
fn kernel_spins_nothing_for_a_protected_process_or_without_a_heartbeat() {
    let _serial = serial();
    let mut t = Setup::new(Mode::Spin, false);
    let n = 5;
    let spin_after = |t: &mut Setup| {
        for _ in 0..n {
            assert_eq!(t.client.get("/hello.txt"), 200);
        }
        t.kernel.counters(SERVER).unwrap().spin_ns
    };

    assert_eq!(spin_after(&mut t), 0, "spun before the first beat");
    assert_eq!(t.stops(), (0, 0, n));

    heartbeat_forever(&mut t.kernel);
    t.kernel.set_protected_pids(&[t.server.pid()]).unwrap();
    assert_eq!(spin_after(&mut t), 0, "spun a protected process");
    assert_eq!(t.stops(), (0, n, n));

    t.kernel.set_protected_pids(&[]).unwrap();
    let spun = spin_after(&mut t);
    assert!(
        spun >= n * slowpoke_agent::kernel::MAX_SPIN_NS,
        "{n} visits spun {spun} ns"
    );
    assert_eq!(t.stops(), (0, n, n));
}

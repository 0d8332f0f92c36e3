//! Pause debt, the trigger gate, the in-kernel stop and the spin actuator on a real nginx.
//! Run as root (the tests load the kernel programs).

mod kernel_support;

use std::{
    io::Read,
    time::{Duration, Instant},
};

use kernel_support::{KeepAlive, heartbeat_forever, load_kernel, nginx_server, proc_state, serial};
use slowpoke_agent::{api::Mode, kernel::PauseRequest};
use tokio::sync::mpsc::UnboundedReceiver;

const SERVER: u32 = 0;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn next_request(
    rt: &tokio::runtime::Runtime,
    rx: &mut UnboundedReceiver<PauseRequest>,
    within: Duration,
) -> Option<PauseRequest> {
    rt.block_on(async { tokio::time::timeout(within, rx.recv()).await.ok().flatten() })
}

#[test]
fn kernel_pause_debt_and_triggers_are_exact() {
    let _serial = serial();
    let rt = runtime();
    let server = nginx_server();
    let mut kernel = load_kernel();
    let mut rx = kernel.take_pause_requests().unwrap();
    assert!(
        kernel.take_pause_requests().is_err(),
        "the stream is taken once"
    );
    let (delay, quantum) = (300_000u64, 1_000_000u64);
    kernel.set_quantum(quantum).unwrap();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    kernel.set_delay(SERVER, delay, Mode::Pause, false).unwrap();

    // The agent's side, simulated: it pays what is owed at each request, then re-arms.
    let mut client = KeepAlive::connect(server.port);
    let (mut paid, mut triggers) = (0u64, 0u64);
    let n = 12u64;
    for visit in 1..=n {
        assert_eq!(client.get("/hello.txt"), 200);
        let owed = visit * delay;
        if owed - paid >= quantum {
            let request = next_request(&rt, &mut rx, Duration::from_secs(5))
                .unwrap_or_else(|| panic!("no pause request after visit {visit}"));
            assert_eq!(request.service, SERVER);
            assert_eq!(request.stopped_tgid, None);
            assert_eq!(request.owed_ns, owed);
            triggers += 1;
            paid = owed;
            kernel.rearm(SERVER, paid).unwrap();
        } else {
            assert!(
                rx.try_recv().is_err(),
                "unexpected pause request after visit {visit}"
            );
        }
    }
    assert_eq!(triggers, 3); // at visits 4, 8 and 12
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!(c.visits, n);
    assert_eq!(c.owed_ns, n * delay);
    assert_eq!(c.pause_requests, triggers);
    assert_eq!((c.kernel_stops, c.dropped_requests, c.spin_ns), (0, 0, 0));

    // Without a re-arm the gate stays closed: one request, however large the debt grows.
    for _ in 0..8 {
        assert_eq!(client.get("/hello.txt"), 200);
    }
    let request = next_request(&rt, &mut rx, Duration::from_secs(5)).expect("a pause request");
    assert_eq!(request.owed_ns, (n + 4) * delay);
    assert!(
        next_request(&rt, &mut rx, Duration::from_millis(300)).is_none(),
        "the gate must hold further requests until rearm"
    );
    assert_eq!(kernel.counters(SERVER).unwrap().owed_ns, (n + 8) * delay);

    // Removing the delay stops the debt.
    kernel.set_delay(SERVER, 0, Mode::Pause, false).unwrap();
    assert_eq!(client.get("/hello.txt"), 200);
    assert_eq!(kernel.counters(SERVER).unwrap().owed_ns, (n + 8) * delay);
}

#[test]
fn kernel_pause_in_kernel_stop_stops_the_visiting_process() {
    let _serial = serial();
    let rt = runtime();
    let server = nginx_server();
    let mut kernel = load_kernel();
    heartbeat_forever(&mut kernel);
    let mut rx = kernel.take_pause_requests().unwrap();
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    // The first visit's debt is a whole quantum: it triggers.
    kernel
        .set_delay(SERVER, kernel.quantum_ns(), Mode::Pause, true)
        .unwrap();

    let mut client = KeepAlive::connect(server.port);
    client.send_request("/hello.txt");
    let request = next_request(&rt, &mut rx, Duration::from_secs(5)).expect("a pause request");
    assert_eq!(request.stopped_tgid, Some(server.pid()));
    // The SIGSTOP was sent inside the receive; the process stops on its way back to user space,
    // before it runs any code of its own. On a loaded machine the request can overtake that
    // last step by a few scheduler ticks: allow a bounded wait, never a fixed sleep.
    let sent = Instant::now();
    while proc_state(server.pid()) != 'T' {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "the server is not stopped 1 s after the pause request (state {})",
            proc_state(server.pid())
        );
        std::thread::yield_now();
    }

    // Stopped at the receive: no response while stopped.
    client
        .stream()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let pending = client.stream().read(&mut byte);
    assert!(pending.is_err(), "a stopped server answered: {pending:?}");
    assert_eq!(proc_state(server.pid()), 'T');
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!((c.visits, c.kernel_stops, c.pause_requests), (1, 1, 1));

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGCONT) }, 0);
    client
        .stream()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(client.read_response(), 200);
    assert_ne!(proc_state(server.pid()), 'T');
}

#[test]
fn kernel_spin_delays_each_visit() {
    let _serial = serial();
    let server = nginx_server();
    let mut kernel = load_kernel();
    heartbeat_forever(&mut kernel);
    kernel.set_members(SERVER, &[server.pid()]).unwrap();
    kernel.set_listen_ports(SERVER, &[server.port]).unwrap();
    let mut client = KeepAlive::connect(server.port);
    let n = 50u64;
    let delay = 200_000u64;

    let mut fastest = Duration::MAX;
    for _ in 0..n {
        let start = Instant::now();
        assert_eq!(client.get("/hello.txt"), 200);
        fastest = fastest.min(start.elapsed());
    }
    assert_eq!(kernel.counters(SERVER).unwrap().spin_ns, 0);

    kernel.set_delay(SERVER, delay, Mode::Spin, false).unwrap();
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(client.get("/hello.txt"), 200);
    }
    let elapsed = start.elapsed();
    let c = kernel.counters(SERVER).unwrap();
    assert_eq!(c.visits, 2 * n);
    assert!(
        c.spin_ns >= n * delay,
        "spin_ns {} < {}",
        c.spin_ns,
        n * delay
    );
    // Upper bound: the deadline ends each spin; only preemption while spinning (a loaded
    // machine) can stretch it, so allow 20 ms in total.
    assert!(
        c.spin_ns < n * delay + 20_000_000,
        "spin_ns {} overshoots {} by more than 20 ms",
        c.spin_ns,
        n * delay
    );
    let floor = (fastest + Duration::from_nanos(delay)) * n as u32;
    assert!(
        elapsed >= floor,
        "{n} requests took {elapsed:?}, less than n * (fastest {fastest:?} + delay)"
    );
    assert_eq!(c.owed_ns, 0, "spin mode owes no pause");

    // A delay above the cap spins at most MAX_SPIN_NS per visit.
    kernel
        .set_delay(SERVER, 50_000_000, Mode::Spin, false)
        .unwrap();
    assert_eq!(client.get("/hello.txt"), 200);
    let spun = kernel.counters(SERVER).unwrap().spin_ns - c.spin_ns;
    assert!(
        (slowpoke_agent::kernel::MAX_SPIN_NS..slowpoke_agent::kernel::MAX_SPIN_NS + 4_000_000)
            .contains(&spun),
        "capped spin took {spun} ns"
    );
}

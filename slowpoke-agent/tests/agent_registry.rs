//! Selectors resolve to the right processes, re-resolution follows worker changes, cores and CPU
//! time are measured.

mod agent_util;

use std::{path::PathBuf, time::Duration};

use agent_util::{TempDir, children, nginx, python_http_server, sleeper, start_agent, wait_for};
use slowpoke_agent::api::ServiceSpec;

fn spec(f: impl FnOnce(&mut ServiceSpec)) -> ServiceSpec {
    let mut s = ServiceSpec::default();
    f(&mut s);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_ports_and_comm_selectors() {
    let py = python_http_server();
    let state = TempDir::new("reg-sel");
    let agent = start_agent(&state).await;
    let by_pid = agent
        .put_service("py", spec(|s| s.pids = Some(vec![py.pid()])))
        .expect("pids");
    assert_eq!(by_pid.pids, vec![py.pid()]);
    assert_eq!(
        by_pid.listen_ports,
        vec![py.port],
        "listening ports discovered from /proc"
    );
    let by_port = agent
        .put_service("py2", spec(|s| s.ports = Some(vec![py.port])))
        .expect("ports");
    assert_eq!(by_port.pids, vec![py.pid()]);

    let web = nginx(2);
    let mut all = vec![web.pid()];
    all.extend(children(web.pid()));
    all.sort_unstable();
    let by_port = agent
        .put_service("web", spec(|s| s.ports = Some(vec![web.port])))
        .expect("ports");
    assert_eq!(
        by_port.pids, all,
        "master and both workers hold the listening socket"
    );
    let by_comm = agent
        .put_service("nginx", spec(|s| s.comm = Some("nginx".into())))
        .expect("comm");
    for p in &all {
        assert!(
            by_comm.pids.contains(p),
            "comm selector finds {p}: {:?}",
            by_comm.pids
        );
    }
    assert!(by_comm.listen_ports.contains(&web.port));

    // New workers join and old ones leave after re-resolution (nginx replaces its workers on HUP).
    let old = children(web.pid());
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(web.pid() as i32, libc::SIGHUP) };
    let new = wait_for(Duration::from_secs(10), "new nginx workers", || {
        let c = children(web.pid());
        (c.len() == 2 && c.iter().all(|p| !old.contains(p))).then_some(c)
    });
    let mut want = vec![web.pid()];
    want.extend(&new);
    want.sort_unstable();
    wait_for(
        Duration::from_secs(5),
        "the registry to follow the new workers",
        || (agent.services().services["web"].pids == want).then_some(()),
    );
    let stats = agent.stats();
    let w = &stats.services["web"];
    assert_eq!(w.pids, want);
    assert!(w.cores >= 1.0 && w.cores <= 2.0, "cores {}", w.cores);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_time_is_monotonic_and_cores_override() {
    let state = TempDir::new("reg-cpu");
    let agent = start_agent(&state).await;
    let busy = std::process::Command::new("python3")
        .args([
            "-c",
            "import time\nwhile time.process_time()<0.3: pass\ntime.sleep(1000)",
        ])
        .spawn()
        .expect("spawning a busy process");
    let mut busy = agent_util::Proc {
        child: busy,
        port: 0,
        dir: None,
    };
    let info = agent
        .put_service(
            "busy",
            spec(|s| {
                s.pids = Some(vec![busy.pid()]);
                s.cores = Some(3.5);
            }),
        )
        .expect("register");
    assert_eq!(info.pids, vec![busy.pid()]);
    let used = wait_for(Duration::from_secs(5), "0.25 s of CPU time", || {
        let c = agent.stats().services["busy"].cpu_ns;
        (c >= 250_000_000).then_some(c)
    });
    assert!(
        (agent.stats().services["busy"].cores - 3.5).abs() < 1e-9,
        "override wins"
    );
    let _ = busy.child.kill();
    let _ = busy.child.wait();
    wait_for(Duration::from_secs(5), "the dead process to leave", || {
        agent.stats().services["busy"].pids.is_empty().then_some(())
    });
    assert!(
        agent.stats().services["busy"].cpu_ns >= used,
        "cpu_ns stays monotonic after exit"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_queue_wait_shows_processes_sharing_one_cpu() {
    let state = TempDir::new("reg-wait");
    let agent = start_agent(&state).await;
    // Two processes pinned to the same CPU, each burning 0.4 s of CPU: while both are runnable
    // only one runs, the other waits on the run queue.
    let hog = || {
        let child = std::process::Command::new("python3")
            .args([
                "-c",
                "import os, time\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n\
                 while time.process_time() < 0.4: pass\ntime.sleep(1000)",
            ])
            .spawn()
            .expect("spawning a busy process");
        agent_util::Proc {
            child,
            port: 0,
            dir: None,
        }
    };
    let (a, b) = (hog(), hog());
    agent
        .put_service("hogs", spec(|s| s.pids = Some(vec![a.pid(), b.pid()])))
        .expect("register");
    let s = wait_for(Duration::from_secs(10), "0.8 s of CPU time", || {
        let s = agent.stats().services["hogs"].clone();
        (s.cpu_ns >= 750_000_000).then_some(s)
    });
    // Until the first of them had its 0.4 s, the other waited whenever it ran: ≥ 0.4 s of wait
    // in all (more when anything else ran on that CPU). 0.2 s leaves room for start-up.
    assert!(
        s.wait_ns >= 200_000_000,
        "run-queue wait {} ns for two processes sharing one CPU",
        s.wait_ns
    );
    drop((a, b));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeslices_count_a_services_wake_ups() {
    let state = TempDir::new("reg-slices");
    let agent = start_agent(&state).await;
    // A process that wakes 300 times from a 1 ms sleep, then says so and sleeps for good: every
    // wake-up puts its thread on a CPU once more, so the service ran at least 300 timeslices.
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, time\nfor _ in range(300): time.sleep(0.001)\nprint(flush=True)\ntime.sleep(1000)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning a waking process");
    let mut out = child.stdout.take().expect("piped stdout");
    let waker = agent_util::Proc {
        child,
        port: 0,
        dir: None,
    };
    agent
        .put_service("waker", spec(|s| s.pids = Some(vec![waker.pid()])))
        .expect("register");
    let mut line = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut line).expect("the process finished its wake-ups");
    let s = agent.stats().services["waker"].clone();
    assert!(
        s.timeslices >= 300,
        "{} timeslices for 300 wake-ups",
        s.timeslices
    );
    drop(waker);
    agent.shutdown().await;
}

/// A fresh cgroup directory under `root` (removed on drop after its processes are gone).
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(root: &str, tag: &str) -> Option<Cgroup> {
        let p = PathBuf::from(root).join(format!("slowpoke-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&p).ok()?;
        Some(Cgroup(p))
    }
    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .expect("moving a process into the cgroup");
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..200 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_selector_v2_and_v1_quota() {
    let state = TempDir::new("reg-cg");
    let agent = start_agent(&state).await;
    let v2_root = slowpoke_agent::sys::procfs::cgroup2_root().expect("a cgroup2 hierarchy");
    let cg = Cgroup::new(v2_root.to_str().expect("utf-8"), "v2").expect("creating a v2 cgroup");
    let a = sleeper();
    let b = sleeper();
    cg.add(a.pid());
    let info = agent
        .put_service("cg", spec(|s| s.cgroup = Some(cg.0.display().to_string())))
        .expect("cgroup selector");
    assert_eq!(info.pids, vec![a.pid()]);
    cg.add(b.pid());
    let mut want = vec![a.pid(), b.pid()];
    want.sort_unstable();
    wait_for(Duration::from_secs(5), "a process moved in to join", || {
        (agent.services().services["cg"].pids == want).then_some(())
    });
    // cgroup v1 CPU quota (hybrid hosts): 0.5 CPU.
    if std::path::Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists() {
        let v1 = Cgroup::new("/sys/fs/cgroup/cpu", "v1").expect("creating a v1 cpu cgroup");
        std::fs::write(v1.0.join("cpu.cfs_period_us"), "100000").expect("period");
        std::fs::write(v1.0.join("cpu.cfs_quota_us"), "50000").expect("quota");
        let c = sleeper();
        v1.add(c.pid());
        agent
            .put_service("v1", spec(|s| s.cgroup = Some(v1.0.display().to_string())))
            .expect("v1 cgroup selector");
        let cores = wait_for(Duration::from_secs(5), "cores from the v1 quota", || {
            let c = agent.stats().services["v1"].cores;
            ((c - 0.5).abs() < 1e-9).then_some(c)
        });
        assert!((cores - 0.5).abs() < 1e-9);
        agent.delete_service("v1").expect("delete");
        drop(c);
    }
    agent.shutdown().await;
    drop((a, b));
}

/// A service of an app spread over nodes may have no process on this one (`may_be_absent`): it
/// registers with no members, and a process that appears later joins at the next resolution.
/// Without the flag the same selector is refused; protected processes are refused either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_absent_from_this_node_registers_empty_and_fills_later() {
    let state = TempDir::new("reg-absent");
    let agent = start_agent(&state).await;
    // A process name nothing else on the machine has: a copy of sleep under that name.
    let bin = state.path().join("spkabsentzz");
    std::fs::copy("/bin/sleep", &bin).expect("copying /bin/sleep");
    let absent = |s: &mut ServiceSpec| {
        s.comm = Some("spkabsentzz".into());
        s.may_be_absent = true;
    };
    let e = agent
        .put_service("late", spec(|s| s.comm = Some("spkabsentzz".into())))
        .expect_err("no such process yet, and the flag is not set");
    assert!(e.to_string().contains("matches no process"), "{e}");
    let info = agent
        .put_service("late", spec(absent))
        .expect("absent from this node is allowed with may_be_absent");
    assert!(info.pids.is_empty(), "{info:?}");
    let mut late = std::process::Command::new(&bin)
        .arg("1000")
        .spawn()
        .expect("starting the renamed sleep");
    let pid = late.id();
    wait_for(Duration::from_secs(10), "the late process to join", || {
        agent
            .service("late")
            .ok()
            .filter(|s| s.pids == vec![pid])
            .map(|_| ())
    });
    let _ = late.kill();
    let _ = late.wait();
    // pid 1 is protected, not absent: still refused.
    let e = agent
        .put_service(
            "init",
            spec(|s| {
                s.pids = Some(vec![1]);
                s.may_be_absent = true;
            }),
        )
        .expect_err("pid 1 is never a member");
    assert!(e.to_string().contains("never stops"), "{e}");
    agent.shutdown().await;
}

/// A port service's listener may open after the registration (`may_be_absent`) and close while
/// its process lives on: the resolver's index of the sockets' owners (`registry::listeners`)
/// follows both at its next passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_service_follows_a_listener_that_opens_and_closes() {
    use std::io::{BufRead, BufReader, Write};
    let state = TempDir::new("reg-late-port");
    let agent = start_agent(&state).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let info = agent
        .put_service(
            "late",
            spec(|s| {
                s.ports = Some(vec![port]);
                s.may_be_absent = true;
            }),
        )
        .expect("nobody listens yet, and the flag is set");
    assert!(info.pids.is_empty(), "{info:?}");
    // Opens its listener, then closes it, each on a line from the test.
    let script = format!(
        "import socket, sys\n\
         sys.stdin.readline()\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port}))\n\
         s.listen()\n\
         print('up', flush=True)\n\
         sys.stdin.readline()\n\
         s.close()\n\
         print('down', flush=True)\n\
         sys.stdin.readline()\n"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting python3");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("its stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
    let mut step = |want: &str| {
        stdin.write_all(b"\n").expect("writing to python3");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("reading python3");
        assert_eq!(line.trim(), want);
    };
    step("up");
    wait_for(
        Duration::from_secs(10),
        "the listener's process to join",
        || (agent.service("late").ok()?.pids == vec![pid]).then_some(()),
    );
    step("down");
    wait_for(
        Duration::from_secs(10),
        "the process to leave with its listener",
        || agent.service("late").ok()?.pids.is_empty().then_some(()),
    );
    let _ = child.kill();
    let _ = child.wait();
    agent.shutdown().await;
}

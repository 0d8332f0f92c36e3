//! Nothing stays stopped: the guardian resumes a stopped service when the agent dies in any way,
//! the next start repairs a kill of agent and guardian together, one agent per state dir.

mod agent_util;

use std::time::{Duration, Instant};

use agent_util::{
    AgentProc, TempDir, is_stopped, json, kill, sleeper, stop_through_agent, time_to_resume,
    wait_for,
};
use slowpoke_agent::{
    Agent, AgentError,
    safety::{
        guardian::Guardian,
        state::{StateFile, read_listed},
    },
};

#[test]
fn sigkill_of_the_agent_resumes_the_service_within_100ms() {
    let p = sleeper();
    let state = TempDir::new("guard-kill");
    let mut agent = AgentProc::start(&state, &[]);
    let pause = stop_through_agent(&agent, p.pid());
    assert!(
        read_listed(state.path())
            .expect("state file")
            .contains(&p.pid())
    );
    let t0 = Instant::now();
    kill(agent.pid(), libc::SIGKILL);
    let took = time_to_resume(p.pid(), t0, Duration::from_secs(2));
    let _ = agent.child.wait();
    let _ = pause.join();
    eprintln!("resumed {took:?} after SIGKILL of the agent");
    assert!(
        took < Duration::from_millis(100),
        "resumed only after {took:?}"
    );
}

#[test]
fn sigterm_is_a_clean_shutdown_that_resumes() {
    let p = sleeper();
    let state = TempDir::new("guard-term");
    let mut agent = AgentProc::start(&state, &[]);
    let pause = stop_through_agent(&agent, p.pid());
    let t0 = Instant::now();
    kill(agent.pid(), libc::SIGTERM);
    let took = time_to_resume(p.pid(), t0, Duration::from_secs(2));
    assert!(
        took < Duration::from_millis(100),
        "resumed only after {took:?}"
    );
    let status = wait_for(Duration::from_secs(15), "the agent to exit", || {
        agent.child.try_wait().ok().flatten()
    });
    let _ = pause.join();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(read_listed(state.path()).expect("state file").is_empty());
}

#[test]
fn next_start_resumes_after_agent_and_guardian_are_killed_together() {
    let p = sleeper();
    let state = TempDir::new("guard-both");
    let mut agent = AgentProc::start(&state, &[]);
    let guardian = agent.guardian_pid();
    let pause = stop_through_agent(&agent, p.pid());
    kill(guardian, libc::SIGKILL);
    kill(agent.pid(), libc::SIGKILL);
    let _ = agent.child.wait();
    let _ = pause.join();
    // Nobody is left to repair: the process stays stopped...
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        is_stopped(p.pid()),
        "stays stopped with agent and guardian gone"
    );
    // ...until the next agent starts on the same state dir.
    let t0 = Instant::now();
    let _next = AgentProc::start(&state, &[]);
    let took = time_to_resume(p.pid(), t0, Duration::from_secs(30));
    eprintln!("resumed {took:?} after the next start");
}

#[test]
fn two_agents_on_one_state_dir_refuse() {
    let state = TempDir::new("guard-lock");
    let _first = AgentProc::start(&state, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slowpoke-agent"))
        .args(["--test-hooks", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("running a second agent");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another slowpoke agent is already running"),
        "stderr: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_agent_lock_and_start_repair() {
    let state = TempDir::new("guard-lib");
    // A previous run left a stopped process listed.
    let p = sleeper();
    kill(p.pid(), libc::SIGSTOP);
    wait_for(Duration::from_secs(1), "stopped", || {
        is_stopped(p.pid()).then_some(())
    });
    StateFile::new(state.path())
        .set("stopped:old", &[p.pid()])
        .expect("state file");
    let a = agent_util::start_agent(&state).await;
    assert!(
        !is_stopped(p.pid()),
        "start resumes what the state file lists"
    );
    match Agent::start(agent_util::test_config(&state)).await {
        Err(AgentError::Conflict(m)) => assert!(m.contains("already running"), "{m}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second agent on the same state dir started"),
    }
    a.shutdown().await;
    // The lock is released by shutdown.
    let b = agent_util::start_agent(&state).await;
    b.shutdown().await;
}

#[test]
fn guardian_of_a_multithreaded_process_resumes_on_pipe_close() {
    // The test harness is multi-threaded: the same situation as an agent embedded in a binary.
    let p = sleeper();
    let state = TempDir::new("guard-fork");
    let file = StateFile::new(state.path());
    file.set("stopped:x", &[p.pid()]).expect("state file");
    let g = Guardian::spawn(file.path()).expect("fork guardian");
    assert!(g.alive());
    kill(p.pid(), libc::SIGSTOP);
    wait_for(Duration::from_secs(1), "stopped", || {
        is_stopped(p.pid()).then_some(())
    });
    let t0 = Instant::now();
    drop(g); // closes the pipe, as the death of the owner would
    let took = time_to_resume(p.pid(), t0, Duration::from_secs(1));
    assert!(took < Duration::from_millis(100), "resumed after {took:?}");
}

#[test]
fn agent_without_kernel_fails_clearly_unless_test_hooks() {
    // Only meaningful where the kernel programs cannot load; elsewhere the agent must start.
    let state = TempDir::new("guard-nokernel");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cfg = slowpoke_agent::AgentConfig {
        state_dir: state.path().to_path_buf(),
        ..slowpoke_agent::AgentConfig::default()
    };
    match rt.block_on(Agent::start(cfg)) {
        Ok(a) => {
            let h = a.health();
            assert_eq!(
                h.features.get("kernel").map(String::as_str),
                Some("on"),
                "{h:?}"
            );
            rt.block_on(a.shutdown());
        }
        Err(e) => {
            assert!(matches!(e, AgentError::Unavailable(_)), "{e:?}");
            assert!(
                e.to_string().contains("cannot load the kernel programs"),
                "{e}"
            );
        }
    }
    // The health endpoint of a running binary agent says what is on.
    let agent = AgentProc::start(&state, &[]);
    let h = json(&agent.call("GET", "/v1/health", None).1);
    assert!(
        h["features"]["guardian"]
            .as_str()
            .is_some_and(|g| g.starts_with("on")),
        "{h}"
    );
}

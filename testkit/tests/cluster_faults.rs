//! Faults during an experiment across the one-machine cluster (root; needs the debug
//! `slowpoke`, `slowpoke-agent` and `slowpoke-emu`: `cargo build --bins`). An emulated app
//! (chain3) runs in node 1; both nodes' agents hold its registration (node 2's without members,
//! `may_be_absent`) and the experiment's plan; a `slowpoke what-if --cluster` child runs from the
//! root namespace with a 2 s lease. Once the plan is on both agents, one fault:
//!
//! - (a) node 1's agent killed (SIGKILL), (b) node 1 cut off (its veth down), (c) node 1's agent
//!   restarted: the coordinator ends with a message naming the node and what happened;
//! - (d) the coordinator killed (SIGKILL): both agents drop its plan when its lease lapses.
//!
//! Every case: no plan left on any reachable agent, the cut-off node's lease lapses and its
//! agent resumes everything on its own (seen through its Unix socket, the node's own way in),
//! and no service stays stopped. The times measured are printed (`--nocapture`) and quoted in
//! docs/multi-node.md.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use slowpoke_testkit::{
    Proc, TempDir,
    cluster::Cluster,
    cluster_agent::{NodeAgent, random_token, write_description},
    proc_state, wait_for, workspace_bin,
};

static LOCK: Mutex<()> = Mutex::new(());

/// The experiment's lease on the agents, seconds.
const LEASE_S: f64 = 2.0;
/// The emulated app's first port in node 1 (its own network namespace: nothing else there).
const BASE_PORT: u16 = 18_300;

/// Two nodes with their agents, chain3 running in node 1, and the cluster description.
struct Bed {
    cluster: Cluster,
    dir: TempDir,
    agents: Vec<NodeAgent>,
    description: PathBuf,
    /// The services' processes (all in node 1).
    pids: Vec<u32>,
    entry: String,
    _app: Proc,
}

fn bed() -> Bed {
    let cluster = Cluster::up(2);
    let dir = TempDir::new("cluster-faults");
    let agents: Vec<NodeAgent> = cluster
        .nodes()
        .iter()
        .map(|n| start_agent(n, &dir.path().join(&n.name), &random_token().unwrap()))
        .collect();
    for a in &agents {
        a.wait_ready(Duration::from_secs(30)).unwrap();
    }
    let description = dir.path().join("cluster.json");
    write_description(cluster.nodes(), &agents, &description).unwrap();
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/chain3.json");
    let mut app = cluster.spawn(
        1,
        Command::new(workspace_bin("slowpoke-emu"))
            .arg("run")
            .arg(&topology)
            .args(["--bind", &cluster.node(1).addr.to_string()])
            .args(["--base-port", &BASE_PORT.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    BufReader::new(app.child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: serde_json::Value = serde_json::from_str(&line).expect("the emulator's JSON line");
    let pids = info["services"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["pids"].as_array().unwrap().iter())
        .map(|p| u32::try_from(p.as_u64().unwrap()).unwrap())
        .collect();
    Bed {
        entry: info["entry"].as_str().unwrap().to_owned(),
        cluster,
        dir,
        agents,
        description,
        pids,
        _app: app,
    }
}

fn start_agent(node: &slowpoke_testkit::cluster::Node, dir: &Path, token: &str) -> NodeAgent {
    NodeAgent::start(
        node,
        &workspace_bin("slowpoke-agent"),
        dir,
        token,
        &["--log-level", "warn"],
    )
    .unwrap()
}

impl Bed {
    /// `slowpoke what-if --cluster` on chain3 (middle 1.5× as fast), short windows, the lease
    /// [`LEASE_S`]; its output piped.
    fn what_if(&self) -> Child {
        let port = |i: u16| format!("port:{}", BASE_PORT + i);
        Command::new(workspace_bin("slowpoke"))
            .arg("what-if")
            .arg("--cluster")
            .arg(&self.description)
            // chain3's services in name order: back, front, middle.
            .args(["--service", &format!("back={}", port(0))])
            .args(["--service", &format!("front={}", port(1))])
            .args(["--service", &format!("middle={}", port(2))])
            .args([
                "--entry",
                &self.entry,
                "--target",
                "middle",
                "--speedup",
                "1.5x",
            ])
            .args(["--duration", "1", "--warmup", "0.5", "--repetitions", "5"])
            .args(["--precision", "0", "--connections", "8"])
            .args(["--lease", &LEASE_S.to_string()])
            .arg("--results-dir")
            .arg(self.dir.path().join("results"))
            .env_remove("SLOWPOKE_AGENT_TOKEN")
            .env_remove("SLOWPOKE_CLUSTER")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting slowpoke what-if")
    }

    /// Waits until the experiment's plan is in force on every agent.
    fn wait_for_the_plan(&self, what_if: &mut Child) {
        wait_for(Duration::from_mins(1), "the plan on both agents", || {
            if let Ok(Some(st)) = what_if.try_wait() {
                let mut err = String::new();
                what_if
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("slowpoke what-if ended ({st}) before its plan was installed: {err}");
            }
            self.agents
                .iter()
                .all(|a| tcp_get(a, "/v1/slowdown").and_then(|b| has_plan(&b)) == Some(true))
                .then_some(())
        });
    }

    /// Every service's process runs (none stays stopped, `T`), within `within`.
    fn services_run(&self, within: Duration) {
        wait_for(within, "every service running (not stopped)", || {
            self.pids
                .iter()
                .all(|&p| proc_state(p).is_some_and(|s| s != 'T'))
                .then_some(())
        });
    }
}

/// The coordinator's exit: its stderr and how long after `since` it came.
fn ends(mut child: Child, since: Instant) -> (String, Duration) {
    let status = wait_for(Duration::from_mins(1), "slowpoke what-if to end", || {
        child.try_wait().unwrap()
    });
    let took = since.elapsed();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !status.success(),
        "the experiment succeeded despite the fault: {err}"
    );
    (err, took)
}

/// `GET path` on an agent over TCP with its token; the body, None when it does not answer.
fn tcp_get(agent: &NodeAgent, path: &str) -> Option<String> {
    ureq::get(&format!("{}{path}", agent.url))
        .timeout(Duration::from_secs(2))
        .set("Authorization", &format!("Bearer {}", agent.token))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// `GET path` on an agent through its Unix socket, as a process of its node would.
fn socket_get(agent: &NodeAgent, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(agent.socket()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// True when a `GET /v1/slowdown` answer holds a plan delaying some service.
fn has_plan(body: &str) -> Option<bool> {
    let plan: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(plan["services"].as_object().is_some_and(|s| !s.is_empty()))
}

/// No plan on `agent` (reached over TCP) within `within`; how long that took.
fn plan_gone(agent: &NodeAgent, within: Duration, since: Instant) -> Duration {
    wait_for(within, &format!("no plan on {}", agent.node), || {
        (tcp_get(agent, "/v1/slowdown").and_then(|b| has_plan(&b)) == Some(false))
            .then(|| since.elapsed())
    })
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(pid).unwrap(), signal) },
        0
    );
}

fn lease() -> Duration {
    Duration::from_secs_f64(LEASE_S)
}

#[test]
fn a_sigkilled_agent_ends_the_experiment_naming_its_node() {
    let _turn = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bed = bed();
    let mut what_if = bed.what_if();
    bed.wait_for_the_plan(&mut what_if);
    let t0 = Instant::now();
    kill(bed.agents[0].pid(), libc::SIGKILL);
    let (err, took) = ends(what_if, t0);
    assert!(
        err.contains(&format!(
            "agent spk-n1 ({}) stopped answering during",
            bed.agents[0].url
        )) && err.contains("its plan lapses with its lease within 2 s"),
        "{err}"
    );
    // Node 2 is reachable: its plan was removed. Node 1's guardian resumed its services.
    plan_gone(&bed.agents[1], Duration::from_secs(5), t0);
    bed.services_run(lease());
    eprintln!("(a) agent SIGKILLed: the coordinator ended {took:?} after the kill");
}

#[test]
fn a_node_cut_off_ends_the_experiment_and_resumes_everything_on_its_own() {
    let _turn = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bed = bed();
    let mut what_if = bed.what_if();
    bed.wait_for_the_plan(&mut what_if);
    let veth = format!("{}h", bed.cluster.node(1).name);
    let ip = |state: &str| {
        let st = Command::new("ip")
            .args(["link", "set", &veth, state])
            .status()
            .unwrap();
        assert!(st.success(), "ip link set {veth} {state}");
    };
    let t0 = Instant::now();
    ip("down");
    // From inside node 1 (its agent's socket): the plan lapses with its lease.
    let lapsed = wait_for(lease() * 3, "node 1's plan to lapse", || {
        (socket_get(&bed.agents[0], "/v1/slowdown").and_then(|b| has_plan(&b)) == Some(false))
            .then(|| t0.elapsed())
    });
    bed.services_run(lease());
    let (err, took) = ends(what_if, t0);
    assert!(
        err.contains(&format!(
            "agent spk-n1 ({}) stopped answering during",
            bed.agents[0].url
        )),
        "{err}"
    );
    // Node 2 stayed reachable: its plan was removed by the coordinator.
    let on_n2 = plan_gone(&bed.agents[1], Duration::from_secs(1), t0);
    ip("up");
    bed.services_run(lease());
    eprintln!(
        "(b) node cut off: its plan lapsed {lapsed:?} after the cut; the coordinator ended {took:?} after it (node 2's plan gone by {on_n2:?})"
    );
}

#[test]
fn a_restarted_agent_ends_the_experiment_with_a_message_saying_so() {
    let _turn = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut bed = bed();
    let mut what_if = bed.what_if();
    bed.wait_for_the_plan(&mut what_if);
    let t0 = Instant::now();
    let old = &mut bed.agents[0];
    kill(old.pid(), libc::SIGTERM);
    wait_for(Duration::from_secs(10), "the agent to exit", || {
        old.child.try_wait().unwrap()
    });
    let token = old.token.clone();
    let dir = old.state_dir.parent().unwrap().to_owned();
    bed.agents[0] = start_agent(bed.cluster.node(1), &dir, &token);
    let restarted = t0.elapsed();
    let (err, took) = ends(what_if, t0);
    assert!(
        err.contains(&format!(
            "agent spk-n1 ({}) restarted during",
            bed.agents[0].url
        )) && err.contains("lost its counters"),
        "{err}"
    );
    // Polled with a deadline: one GET may time out on a loaded machine, which says nothing
    // about the plan (a fresh CI run under load 8 saw that).
    for a in &bed.agents {
        plan_gone(a, Duration::from_secs(5), t0);
    }
    bed.services_run(lease());
    eprintln!(
        "(c) agent restarted (down for {restarted:?}): the coordinator ended {took:?} after the SIGTERM"
    );
}

#[test]
fn a_sigkilled_coordinator_leaves_no_plan_once_its_lease_lapses() {
    let _turn = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bed = bed();
    let mut what_if = bed.what_if();
    bed.wait_for_the_plan(&mut what_if);
    let t0 = Instant::now();
    kill(what_if.id(), libc::SIGKILL);
    let _ = what_if.wait();
    let gone: Vec<Duration> = bed
        .agents
        .iter()
        .map(|a| plan_gone(a, lease() * 2, t0))
        .collect();
    assert!(
        gone.iter()
            .all(|&g| g <= lease() + Duration::from_millis(500)),
        "the plans outlived the lease of {LEASE_S} s by more than 0.5 s: {gone:?}"
    );
    bed.services_run(lease());
    eprintln!("(d) coordinator SIGKILLed: the agents dropped its plan {gone:?} after the kill");
}

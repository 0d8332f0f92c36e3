//! Starvation on 2 cores (spike question 2): two CPU-bound hogs, one per core, under a real-time
//! or deadline policy, while a normal (`SCHED_OTHER`) probe thread and an "agent" probe thread
//! (`SCHED_FIFO` 20, as `make_thread_precise`) each sleep 1 ms in a loop and note how late they
//! wake. The hogs live in a child process that a `SCHED_FIFO` 99 watchdog SIGKILLs after the run
//! (and that exits by itself a second later), so the machine is never left wedged.
//!
//! Usage: `tail-starve SCENARIO [seconds]`, SCENARIO one of `none`, `fifo10`, `fifo50`,
//! `agent_cap` (hogs `SCHED_FIFO` 10, the agent thread demotes a hog after 10 ms of real time and
//! promotes it again after 10 ms: a bounded 50 % share) and `deadline` (hogs `SCHED_DEADLINE`
//! 5 ms / 10 ms) and `rt_group` (hogs `SCHED_FIFO` 10 in a cgroup-v1 `cpu` group whose real-time
//! bandwidth is 5 ms per 10 ms, `RT_GROUP_SCHED`). Prints JSON. `tail-starve hog POLICY SECONDS` is the child.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tail_spike::{
    cgroup::CpuGroup,
    dist::summary,
    sched::{Policy, gettid, mono_ns, pin, set_policy},
};

const AGENT: Policy = Policy::Fifo(20);
const CAP_NS: u64 = 10_000_000;
const RT_GROUP: &str = "tailspike-rt";

fn hog_policy(scenario: &str) -> Option<Policy> {
    match scenario {
        "fifo10" | "agent_cap" | "rt_group" => Some(Policy::Fifo(10)),
        "fifo50" => Some(Policy::Fifo(50)),
        "deadline" => Some(Policy::Deadline {
            runtime_ns: 5_000_000,
            period_ns: 10_000_000,
        }),
        _ => None,
    }
}

/// The child: one hog per CPU, prints the hogs' thread ids, spins until `seconds` + 1 have passed.
fn hog(scenario: &str, seconds: u64) -> Result<()> {
    let policy = hog_policy(scenario).context("no hog in this scenario")?;
    // Forked from the watchdog: drop its priority before starting hogs (they inherit it).
    set_policy(0, Policy::Other { nice: 0 })?;
    let end = mono_ns() + (seconds + 1) * 1_000_000_000;
    let group = if scenario == "rt_group" {
        let g = CpuGroup::create(RT_GROUP)?;
        g.set("cpu.rt_period_us", "10000")?;
        g.set("cpu.rt_runtime_us", "5000")?;
        Some(Arc::new(g))
    } else {
        None
    };
    // The hogs spin only once their ids are out: a starved main thread could not print them.
    let go = Arc::new(std::sync::Barrier::new(3));
    let hogs: Vec<_> = (0..2)
        .map(|cpu| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (group, go) = (group.clone(), go.clone());
            let h = thread::spawn(move || {
                // A thread must be in a group with real-time bandwidth before it may turn RT.
                if let Some(g) = &group {
                    g.add_thread(gettid()).expect("join the RT group");
                }
                // Deadline threads may not be pinned narrower than their root domain.
                if !matches!(policy, Policy::Deadline { .. }) {
                    pin(0, cpu).expect("pin");
                }
                let set = set_policy(0, policy);
                tx.send((gettid(), set.as_ref().err().map(ToString::to_string)))
                    .ok();
                go.wait();
                if set.is_ok() {
                    while mono_ns() < end {
                        std::hint::spin_loop();
                    }
                }
            });
            (h, rx.recv())
        })
        .collect();
    for (_, r) in &hogs {
        let (tid, err) = r.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("{tid} {}", err.as_deref().unwrap_or("ok"));
    }
    go.wait();
    for (h, _) in hogs {
        h.join().ok();
    }
    Ok(())
}

/// Sleeps 1 ms in a loop until `stop`; returns each wake-up's lateness in µs.
fn probe(
    policy: Policy,
    stop: Arc<AtomicBool>,
    extra: impl Fn() + Send + 'static,
) -> thread::JoinHandle<Vec<f64>> {
    thread::spawn(move || {
        set_policy(0, policy).expect("probe policy");
        let mut late = Vec::new();
        while !stop.load(Relaxed) {
            let due = mono_ns() + 1_000_000;
            thread::sleep(Duration::from_millis(1));
            late.push((mono_ns() - due) as f64 / 1e3);
            extra();
        }
        late
    })
}

fn runtime_ns(tid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn run(scenario: &str, seconds: u64) -> Result<Value> {
    // The watchdog (this thread): above every hog from the start, so the run's own set-up is
    // never starved and the hogs are always stopped on time.
    set_policy(0, Policy::Fifo(99))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut child = None;
    let mut hogs: Vec<i32> = Vec::new();
    let mut hog_errors = Vec::new();
    if hog_policy(scenario).is_some() {
        let mut c = Command::new(std::env::current_exe()?)
            .args(["hog", scenario, &seconds.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(c.stdout.take().context("child stdout")?);
        for line in out.lines().take(2) {
            let line = line?;
            let (tid, status) = line.split_once(' ').context("hog line")?;
            hogs.push(tid.parse()?);
            if status != "ok" {
                hog_errors.push(status.to_string());
            }
        }
        child = Some(c);
    }
    let start = mono_ns();
    let before: Vec<u64> = hogs.iter().map(|&t| runtime_ns(t)).collect();
    let normal = probe(Policy::Other { nice: 0 }, stop.clone(), || {});
    let capped = hogs.clone();
    let cap = scenario == "agent_cap";
    let since = std::sync::Mutex::new(vec![(true, mono_ns()); hogs.len()]);
    let demotions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dem = demotions.clone();
    let agent = probe(AGENT, stop.clone(), move || {
        if !cap {
            return;
        }
        // The bounded share: real time for CAP_NS, then normal for CAP_NS, per hog.
        let now = mono_ns();
        let mut s = since.lock().unwrap();
        for (i, &tid) in capped.iter().enumerate() {
            let (rt, t) = s[i];
            if now - t >= CAP_NS {
                let p = if rt {
                    Policy::Other { nice: 0 }
                } else {
                    Policy::Fifo(10)
                };
                if set_policy(tid, p).is_ok() {
                    s[i] = (!rt, now);
                    dem.fetch_add(u64::from(rt), Relaxed);
                }
            }
        }
    });
    thread::sleep(Duration::from_secs(seconds));
    let elapsed = (mono_ns() - start) as f64;
    let after: Vec<u64> = hogs.iter().map(|&t| runtime_ns(t)).collect();
    let share: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(&a, &b)| a.saturating_sub(b) as f64 / elapsed)
        .collect();
    if let Some(mut c) = child {
        c.kill().ok();
        c.wait().ok();
    }
    if scenario == "rt_group" {
        drop(CpuGroup::create(RT_GROUP)?);
    }
    set_policy(0, Policy::Other { nice: 0 })?;
    stop.store(true, Relaxed);
    let (normal, agent) = (
        normal.join().unwrap_or_default(),
        agent.join().unwrap_or_default(),
    );
    Ok(json!({
        "scenario": scenario, "seconds": seconds,
        "rt_runtime_us": std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us")?.trim(),
        "rt_period_us": std::fs::read_to_string("/proc/sys/kernel/sched_rt_period_us")?.trim(),
        "hog_errors": hog_errors,
        "hog_cpu_share": share.iter().map(|s| slowpoke_stats::round4(*s)).collect::<Vec<_>>(),
        "hog_runtime_ns": [before, after],
        "demotions": demotions.load(Relaxed),
        "normal_probe_late_us": summary(&normal),
        "agent_probe_late_us": summary(&agent),
        "loadavg": std::fs::read_to_string("/proc/loadavg")?.trim(),
    }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs = |i: usize| {
        args.get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(3u64)
            .min(10)
    };
    match args.first().map(String::as_str) {
        Some("hog") => hog(args.get(1).context("hog POLICY SECONDS")?, secs(2)),
        Some(s @ ("none" | "fifo10" | "fifo50" | "agent_cap" | "deadline" | "rt_group")) => {
            println!("{}", serde_json::to_string_pretty(&run(s, secs(1))?)?);
            Ok(())
        }
        _ => bail!(
            "usage: tail-starve none|fifo10|fifo50|agent_cap|deadline|rt_group [seconds (<= 10)]"
        ),
    }
}

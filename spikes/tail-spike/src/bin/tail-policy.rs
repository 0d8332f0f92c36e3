//! Policy-change latency (spike question 1): three CPU-bound threads share CPU 1 (a "target" and
//! two contenders); a controller on CPU 0 (`SCHED_FIFO` 30, as the agent's precise threads) waits
//! until the target is off the CPU, then changes a policy so the target should run first. The
//! target notes when it next runs (`first_us` after the change) and when it has done `work_us` of
//! CPU since (`extra_us` = completion − change − work: what the change failed to give). Mechanisms
//! are interleaved round by round. `tail-policy rate` measures the cost of one change instead.
//!
//! Usage: `tail-policy latency [work_us] [trials] [rounds]` | `tail-policy rate`. Prints JSON.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tail_spike::{
    cgroup::{self, CpuGroup},
    dist::summary,
    sched::{Policy, gettid, mono_ns, pin, set_nice, set_policy},
};

/// A gap in the target's clock reads longer than this means it was off the CPU.
const GAP_NS: u64 = 3_000;
const NORMAL: Policy = Policy::Other { nice: 0 };
const MECHANISMS: [&str; 10] = [
    "none",
    "fifo",
    "rr",
    "nice_target",
    "nice_others",
    "idle_others",
    "cg_move_shares",
    "cg_quota_others",
    "fifo_in_rt_group",
    "fifo_move_to_rt_group",
];

#[derive(Default)]
struct Shared {
    armed: AtomicU64,
    first: AtomicU64,
    done: AtomicU64,
    beat: AtomicU64,
    work_ns: AtomicU64,
    stop: AtomicBool,
    tid: AtomicI32,
}

fn spawn_spinner(shared: Arc<Shared>, is_target: bool) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        pin(0, 1).expect("pin to CPU 1");
        if !is_target {
            while !shared.stop.load(Relaxed) {
                std::hint::spin_loop();
            }
            return;
        }
        shared.tid.store(gettid(), Relaxed);
        let (mut prev, mut ran) = (mono_ns(), 0u64);
        while !shared.stop.load(Relaxed) {
            let now = mono_ns();
            shared.beat.store(now, Relaxed);
            let armed = shared.armed.load(Relaxed);
            if armed != 0 && now >= armed && shared.done.load(Relaxed) == 0 {
                if shared.first.load(Relaxed) == 0 {
                    shared.first.store(now, Relaxed);
                    ran = 0;
                } else if now - prev < GAP_NS {
                    ran += now - prev;
                    if ran >= shared.work_ns.load(Relaxed) {
                        shared.done.store(now, Relaxed);
                    }
                }
            }
            prev = now;
        }
    })
}

struct Bed {
    target: i32,
    others: Vec<i32>,
    hi: CpuGroup,
    lo: CpuGroup,
    /// Real-time bandwidth 5 ms per 10 ms: the bounded share recommended by `tail-starve`.
    rt: CpuGroup,
}

impl Bed {
    /// Everyone back to `SCHED_OTHER` nice 0 in the root group, then the mechanism's start.
    fn reset(&self, mech: &str) -> Result<()> {
        for &t in std::iter::once(&self.target).chain(&self.others) {
            cgroup::to_root(t)?;
            set_policy(t, NORMAL)?;
        }
        self.lo.set("cpu.cfs_quota_us", "-1")?;
        match mech {
            "cg_move_shares" => {
                for &t in std::iter::once(&self.target).chain(&self.others) {
                    self.lo.add_thread(t)?;
                }
            }
            "fifo_in_rt_group" => self.rt.add_thread(self.target)?,
            "cg_quota_others" => {
                self.hi.add_thread(self.target)?;
                for &t in &self.others {
                    self.lo.add_thread(t)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The change that should make the target run first.
    fn change(&self, mech: &str) -> Result<()> {
        match mech {
            "none" => {}
            // In the root group or (`fifo_in_rt_group`) already in the bandwidth group.
            "fifo" | "fifo_in_rt_group" => set_policy(self.target, Policy::Fifo(10))?,
            "rr" => set_policy(self.target, Policy::Rr(10))?,
            "nice_target" => set_nice(self.target, -20)?,
            "nice_others" => self.others.iter().try_for_each(|&t| set_nice(t, 19))?,
            "idle_others" => self
                .others
                .iter()
                .try_for_each(|&t| set_policy(t, Policy::Idle))?,
            "cg_move_shares" => self.hi.add_thread(self.target)?,
            "cg_quota_others" => self.lo.set("cpu.cfs_quota_us", "1000")?,
            "fifo_move_to_rt_group" => {
                self.rt.add_thread(self.target)?;
                set_policy(self.target, Policy::Fifo(10))?;
            }
            other => anyhow::bail!("unknown mechanism {other}"),
        }
        Ok(())
    }
}

/// One trial: `(first_us, extra_us, call_us)`, or `None` when the target never finished in 1 s.
fn trial(
    bed: &Bed,
    shared: &Shared,
    mech: &str,
    work_ns: u64,
    seed: &mut u64,
) -> Result<Option<[f64; 3]>> {
    bed.reset(mech)?;
    shared.first.store(0, Relaxed);
    shared.done.store(0, Relaxed);
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    thread::sleep(Duration::from_micros(1_000 + (*seed >> 33) % 4_000));
    // Wait until the target has been off the CPU for a while (at most 200 ms).
    let give_up = mono_ns() + 200_000_000;
    while mono_ns() < shared.beat.load(Relaxed) + 50_000 {
        if mono_ns() > give_up {
            return Ok(None);
        }
        std::hint::spin_loop();
    }
    let t0 = mono_ns();
    shared.armed.store(t0, Relaxed);
    bed.change(mech)?;
    let t1 = mono_ns();
    let deadline = t0 + 1_000_000_000;
    while shared.done.load(Relaxed) == 0 && mono_ns() < deadline {
        thread::sleep(Duration::from_micros(50));
    }
    shared.armed.store(0, Relaxed);
    let (first, done) = (shared.first.load(Relaxed), shared.done.load(Relaxed));
    // A note left over from the previous trial (the target read `armed` just before it was
    // cleared) is older than this trial's change: the trial is lost, not negative.
    if done == 0 || first < t0 || done < t0 {
        return Ok(None);
    }
    let us = |ns: u64| ns as f64 / 1e3;
    Ok(Some([
        us(first - t0),
        us(done - t0).max(0.0) - us(work_ns),
        us(t1 - t0),
    ]))
}

fn latency(work_us: u64, trials: usize, rounds: usize) -> Result<Value> {
    let shared = Arc::new(Shared::default());
    shared.work_ns.store(work_us * 1_000, Relaxed);
    let target = spawn_spinner(shared.clone(), true);
    let spinners: Vec<_> = (0..2)
        .map(|_| spawn_spinner(shared.clone(), false))
        .collect();
    while shared.tid.load(Relaxed) == 0 {
        thread::yield_now();
    }
    let me = std::process::id();
    let tasks = std::fs::read_dir(format!("/proc/{me}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    let (target_tid, ctl) = (shared.tid.load(Relaxed), gettid());
    let others: Vec<i32> = tasks
        .filter(|&t| t != target_tid && t != ctl && t != me as i32)
        .collect();
    anyhow::ensure!(others.len() == 2, "expected 2 contenders, found {others:?}");
    pin(0, 0)?;
    set_policy(0, Policy::Fifo(30)).context("controller SCHED_FIFO (run as root)")?;
    let bed = Bed {
        target: target_tid,
        others,
        hi: CpuGroup::create("tailspike-hi")?,
        lo: CpuGroup::create("tailspike-lo")?,
        rt: CpuGroup::create("tailspike-rtbw")?,
    };
    bed.rt.set("cpu.rt_period_us", "10000")?;
    bed.rt.set("cpu.rt_runtime_us", "5000")?;
    bed.hi.set("cpu.shares", "262144")?;
    bed.lo.set("cpu.shares", "2")?;
    let mut seed = 0x5eed_u64;
    let mut rows: Vec<(String, usize, [f64; 3])> = Vec::new();
    let mut lost: Vec<(String, usize)> = Vec::new();
    for round in 0..rounds {
        for mech in MECHANISMS {
            for _ in 0..trials {
                match trial(&bed, &shared, mech, work_us * 1_000, &mut seed)
                    .with_context(|| format!("a trial of {mech}"))?
                {
                    Some(r) => rows.push((mech.to_string(), round, r)),
                    None => lost.push((mech.to_string(), round)),
                }
            }
        }
    }
    bed.reset("none")?;
    shared.stop.store(true, Relaxed);
    target.join().ok();
    for s in spinners {
        s.join().ok();
    }
    let mut out = serde_json::Map::new();
    for mech in MECHANISMS {
        let pick = |i: usize| -> Vec<f64> {
            rows.iter()
                .filter(|r| r.0 == mech)
                .map(|r| r.2[i])
                .collect()
        };
        let per_round: Vec<f64> = (0..rounds)
            .filter_map(|k| {
                let v: Vec<f64> = rows
                    .iter()
                    .filter(|r| r.0 == mech && r.1 == k)
                    .map(|r| r.2[1])
                    .collect();
                slowpoke_stats::median(&v).and_then(slowpoke_stats::round4)
            })
            .collect();
        out.insert(
            mech.into(),
            json!({
                "first_run_us": summary(&pick(0)),
                "extra_us": summary(&pick(1)),
                "call_us": summary(&pick(2)),
                "extra_us_round_medians": per_round,
                "lost": lost.iter().filter(|l| l.0 == mech).count(),
            }),
        );
    }
    Ok(
        json!({ "work_us": work_us, "trials_per_round": trials, "rounds": rounds,
               "loadavg": std::fs::read_to_string("/proc/loadavg")?.trim(), "mechanisms": out }),
    )
}

/// Cost of one change and changes per second from one thread, on a sleeping and on a running
/// (CPU 1) target, the caller on CPU 0.
fn rate() -> Result<Value> {
    let shared = Arc::new(Shared::default());
    let busy = spawn_spinner(shared.clone(), true);
    while shared.tid.load(Relaxed) == 0 {
        thread::yield_now();
    }
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let sleeper = thread::spawn(move || {
        tid_tx.send(gettid()).ok();
        rx.recv().ok();
    });
    let sleeping = tid_rx.recv()?;
    pin(0, 0)?;
    let (one, two) = (
        CpuGroup::create("tailspike-a")?,
        CpuGroup::create("tailspike-b")?,
    );
    let mut out = serde_json::Map::new();
    for (which, tid) in [
        ("sleeping", sleeping),
        ("running", shared.tid.load(Relaxed)),
    ] {
        type Step<'a> = Box<dyn Fn(usize) -> std::io::Result<()> + 'a>;
        let ops: Vec<(&str, Step)> = vec![
            (
                "fifo_other",
                Box::new(|i| set_policy(tid, if i % 2 == 0 { Policy::Fifo(10) } else { NORMAL })),
            ),
            (
                "fifo_prio",
                Box::new(|i| set_policy(tid, Policy::Fifo(1 + (i % 10) as u32))),
            ),
            (
                "nice",
                Box::new(|i| set_nice(tid, if i % 2 == 0 { -20 } else { 19 })),
            ),
            (
                "idle_other",
                Box::new(|i| set_policy(tid, if i % 2 == 0 { Policy::Idle } else { NORMAL })),
            ),
            (
                "cgroup_move",
                Box::new(|i| {
                    if i % 2 == 0 {
                        one.add_thread(tid)
                    } else {
                        two.add_thread(tid)
                    }
                }),
            ),
        ];
        let mut by_op = serde_json::Map::new();
        for (name, op) in &ops {
            let mut per_call = Vec::new();
            let mut calls_per_s = Vec::new();
            for _round in 0..3 {
                let calls = 20_000;
                let start = mono_ns();
                for i in 0..calls {
                    let before = mono_ns();
                    op(i)?;
                    if i % 20 == 0 {
                        per_call.push((mono_ns() - before) as f64 / 1e3);
                    }
                }
                calls_per_s.push(calls as f64 / ((mono_ns() - start) as f64 / 1e9));
            }
            by_op.insert(
                (*name).into(),
                json!({ "call_us": summary(&per_call), "calls_per_s": calls_per_s }),
            );
        }
        set_policy(tid, NORMAL)?;
        cgroup::to_root(tid)?;
        out.insert(which.into(), Value::Object(by_op));
    }
    tx.send(()).ok();
    sleeper.join().ok();
    shared.stop.store(true, Relaxed);
    busy.join().ok();
    Ok(json!({ "loadavg": std::fs::read_to_string("/proc/loadavg")?.trim(), "rate": out }))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let result = match args.first().map(String::as_str) {
        Some("rate") => rate()?,
        Some("latency") => latency(num(1, 100), num(2, 50) as usize, num(3, 3) as usize)?,
        _ => anyhow::bail!("usage: tail-policy latency [work_us] [trials] [rounds] | rate"),
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

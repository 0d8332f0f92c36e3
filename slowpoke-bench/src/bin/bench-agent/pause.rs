//! Part 3, `pause_precision`: pauses as the paused process experiences them. The [`probe`]
//! child is registered as a service of the bench's library agent and paused with `pause_now`
//! (the whole pause path without debt accounting): `--pauses` pauses of 1 ms and of 10 ms per
//! round, in random order, 1–5 ms apart. Each pause is matched with the probe gap that overlaps
//! it most; per requested size: the error the probe saw, what the agent's accounting misses, the
//! stop and resume latencies, pooled and per round.
//!
//! [`probe`]: crate::probe

use std::time::Duration;

use serde_json::json;
use slowpoke_agent::{Agent, api::ServiceSpec, sys::clock::monotonic_ns};

use crate::{
    Options,
    harness::BenchAgent,
    loadavg,
    probe::{Gap, finish_probe, start_probe},
    summary,
};

/// Gaps shorter than this are the probe's own loop, not a pause.
const MIN_GAP_NS: u64 = 20_000;
/// The pause sizes asked for.
const SIZES_NS: [u64; 2] = [1_000_000, 10_000_000];
/// The probe's service name.
const NAME: &str = "probe";

/// xorshift64*: the order of the pauses and the gaps between them.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Mean, median, p99 (nearest rank) and max (NaN when empty).
fn stats4(xs: &[f64]) -> [f64; 4] {
    let s = slowpoke_stats::summarize(xs);
    let rank = |q| slowpoke_stats::nearest_rank(xs, q).unwrap_or(f64::NAN);
    [s.mean, s.median, rank(0.99), rank(1.0)]
}

/// Pooled statistics over every pause, and the per-round statistics with their 95 % CIs.
fn distribution(per_round: &[Vec<f64>]) -> serde_json::Value {
    let pooled: Vec<f64> = per_round.iter().flatten().copied().collect();
    let [mean, median, p99, max] = stats4(&pooled);
    let rounds: Vec<[f64; 4]> = per_round.iter().map(|r| stats4(r)).collect();
    let column = |i: usize| summary(&rounds.iter().map(|r| r[i]).collect::<Vec<_>>());
    json!({
        "mean": mean, "median": median, "p99": p99, "max": max,
        "per_round": {"mean": column(0), "median": column(1), "p99": column(2), "max": column(3)},
    })
}

/// One pause as the agent and the probe saw it.
struct PauseSample {
    requested_ns: u64,
    start_ns: u64,
    end_ns: u64,
    /// Delta of the service's `pause_ns` in the agent's stats.
    achieved_ns: u64,
    outcome_achieved_ns: u64,
    round: usize,
}

/// A pause matched with its probe gap: requested size, round, and in µs: |gap − requested|,
/// gap − achieved, achieved − requested, stop latency, resume latency.
struct Row {
    requested_ns: u64,
    round: usize,
    us: [f64; 5],
}

/// The pauses matched with the probe's gaps.
struct Matching {
    rows: Vec<Row>,
    /// Per gap: whether a pause explains it.
    matched: Vec<bool>,
    unmatched_pauses: usize,
}

fn pause_ns(agent: &Agent, name: &str) -> u64 {
    agent.stats().services.get(name).map_or(0, |s| s.pause_ns)
}

/// Starts the probe and an agent, makes every round's pauses, and returns them with the gaps
/// the probe saw and how many it had no room for.
fn make_pauses(o: &Options) -> (Vec<PauseSample>, Vec<Gap>, u64) {
    let bench = BenchAgent::start("agent", None);
    let agent = &bench.agent;
    let probe = start_probe(MIN_GAP_NS);
    let pid = probe.0.id();
    let info = agent
        .put_service(
            NAME,
            ServiceSpec {
                pids: Some(vec![pid]),
                ..ServiceSpec::default()
            },
        )
        .unwrap();
    assert_eq!(
        info.pids,
        vec![pid],
        "the probe service resolves to the probe"
    );
    let mut rng = Rng((monotonic_ns() ^ (u64::from(pid) << 32)) | 1);
    let mut samples = Vec::new();
    std::thread::sleep(Duration::from_millis(20));
    for round in 0..o.rounds {
        let mut order: Vec<u64> = SIZES_NS
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, o.pauses))
            .collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for requested_ns in order {
            let before = pause_ns(agent, NAME);
            let out = agent.pause_now(NAME, requested_ns).unwrap();
            let achieved_ns = pause_ns(agent, NAME) - before;
            samples.push(PauseSample {
                requested_ns,
                start_ns: out.start_ns,
                end_ns: out.end_ns,
                achieved_ns,
                outcome_achieved_ns: out.achieved_ns,
                round,
            });
            std::thread::sleep(Duration::from_micros(1_000 + rng.below(4_000)));
        }
    }
    let (gaps, overflow) = finish_probe(probe);
    agent.delete_service(NAME).unwrap();
    bench.shutdown();
    (samples, gaps, overflow)
}

/// Matches each pause with the gap of largest overlap with its [start, end] (the probe's gaps
/// are disjoint and sorted, so their ends are sorted too).
fn match_gaps(samples: &[PauseSample], gaps: &[Gap]) -> Matching {
    let mut m = Matching {
        rows: Vec::new(),
        matched: vec![false; gaps.len()],
        unmatched_pauses: 0,
    };
    for s in samples {
        let first_after = gaps.partition_point(|g| g.0 <= s.end_ns);
        let best = gaps[..first_after]
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, g)| g.0 + g.1 > s.start_ns)
            .map(|(i, g)| {
                let overlap = (g.0 + g.1).min(s.end_ns) as i64 - g.0.max(s.start_ns) as i64;
                (overlap, i)
            })
            .filter(|&(overlap, _)| overlap > 0)
            .max();
        let Some((_, i)) = best else {
            m.unmatched_pauses += 1;
            continue;
        };
        m.matched[i] = true;
        let (g_start, gap) = gaps[i];
        let us = |ns: i64| ns as f64 / 1e3;
        m.rows.push(Row {
            requested_ns: s.requested_ns,
            round: s.round,
            us: [
                us((gap as i64 - s.requested_ns as i64).abs()),
                us(gap as i64 - s.achieved_ns as i64),
                us(s.achieved_ns as i64 - s.requested_ns as i64),
                us(g_start as i64 - s.start_ns as i64),
                us((g_start + gap) as i64 - s.end_ns as i64),
            ],
        });
    }
    m
}

pub(crate) fn pause_precision(o: &Options) -> serde_json::Value {
    let loadavg_start = loadavg();
    let (samples, gaps, overflow) = make_pauses(o);
    let Matching {
        rows,
        matched,
        unmatched_pauses,
    } = match_gaps(&samples, &gaps);
    let mut by_size = serde_json::Map::new();
    for size in SIZES_NS {
        let metric = |m: usize| {
            let per_round: Vec<Vec<f64>> = (0..o.rounds)
                .map(|r| {
                    rows.iter()
                        .filter(|x| x.requested_ns == size && x.round == r)
                        .map(|x| x.us[m])
                        .collect()
                })
                .collect();
            distribution(&per_round)
        };
        let of_size: Vec<&PauseSample> =
            samples.iter().filter(|s| s.requested_ns == size).collect();
        by_size.insert(
            format!("{}ms", size / 1_000_000),
            json!({
                "pauses": of_size.len(),
                "matched": rows.iter().filter(|x| x.requested_ns == size).count(),
                "abs_gap_minus_requested_us": metric(0),
                "gap_minus_achieved_us": metric(1),
                "achieved_minus_requested_us": metric(2),
                "stop_latency_us": metric(3),
                "resume_latency_us": metric(4),
                "stats_delta_equals_outcome": of_size.iter().all(|s| s.achieved_ns == s.outcome_achieved_ns),
            }),
        );
    }
    let noise: Vec<f64> = gaps
        .iter()
        .zip(&matched)
        .filter(|(_, m)| !**m)
        .map(|(g, _)| g.1 as f64 / 1e3)
        .collect();
    let [_, noise_median, noise_p99, noise_max] = stats4(&noise);
    json!({
        "probe": "child process (this binary, --probe) spinning on CLOCK_MONOTONIC, one thread, no affinity",
        "min_gap_us": MIN_GAP_NS / 1000,
        "pauses_per_size_per_round": o.pauses,
        "interval_between_pauses_ms": [1, 5],
        "goal": "p99 |gap - requested| < 50 us (a plain Python supervisor here: median 58 us, p99 933 us)",
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "by_size": by_size,
        "unmatched_pauses": unmatched_pauses,
        "other_gaps": {
            "count": noise.len(),
            "median_us": noise_median,
            "p99_us": noise_p99,
            "max_us": noise_max,
            "overflow": overflow,
        },
    })
}

//! Topology generators: the synthetic families of the Slowpoke evaluation, with random but reproducible
//! per-service work (a `ChaCha8` stream seeded by `--seed`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::topology::{
    Call, Endpoint, EndpointRef, Mode, Sampling, Service, Serving, Topology, with_expectations,
};

/// The generator families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// s0 → s1 → … → s(N-1).
    Chain,
    /// s0 calls every other service once.
    Fanout,
    /// Binary tree (`s<i>` calls `s<2i+1>` and `s<2i+2>`), similar work everywhere.
    DagBalanced,
    /// Random recursive tree biased towards deep branches; work varies 20×.
    DagUnbalanced,
    /// s0 → k middle services → all call one relay → the relay calls the leaves (relay visited k times).
    DagRelay,
    /// Layered DAG: each node calls 1–2 nodes of the next layer, plus cross edges skipping a layer.
    DagCross,
    /// s0 calls each other service at most once, each with its own probability 0.2–0.9.
    DynamicOnce,
    /// s0 calls each other service once, and a second time with probability 0.2–0.8.
    DynamicTwice,
    /// s0 calls caches; each cache calls its database on a miss (probability 0.1–0.5).
    DynamicCache,
    /// Chain whose last service calls s1 again with probability 0.2–0.5 (a probabilistic cycle).
    DynamicCycle,
}

/// Every family, in the order of the docs.
pub const FAMILIES: &[Family] = &[
    Family::Chain,
    Family::Fanout,
    Family::DagBalanced,
    Family::DagUnbalanced,
    Family::DagRelay,
    Family::DagCross,
    Family::DynamicOnce,
    Family::DynamicTwice,
    Family::DynamicCache,
    Family::DynamicCycle,
];

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Chain => "chain",
            Family::Fanout => "fanout",
            Family::DagBalanced => "dag-balanced",
            Family::DagUnbalanced => "dag-unbalanced",
            Family::DagRelay => "dag-relay",
            Family::DagCross => "dag-cross",
            Family::DynamicOnce => "dynamic-once",
            Family::DynamicTwice => "dynamic-twice",
            Family::DynamicCache => "dynamic-cache",
            Family::DynamicCycle => "dynamic-cycle",
        }
    }

    /// Smallest `--size` the family accepts.
    pub fn min_size(self) -> usize {
        match self {
            Family::Chain => 1,
            Family::Fanout
            | Family::DagBalanced
            | Family::DagUnbalanced
            | Family::DynamicOnce
            | Family::DynamicTwice
            | Family::DynamicCycle => 2,
            Family::DagRelay | Family::DagCross | Family::DynamicCache => 3,
        }
    }

    /// Whether calls are probabilistic.
    pub fn is_dynamic(self) -> bool {
        matches!(
            self,
            Family::DynamicOnce
                | Family::DynamicTwice
                | Family::DynamicCache
                | Family::DynamicCycle
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown family {s:?}; one of {}",
                    FAMILIES
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Generator parameters.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub family: Family,
    /// Number of services.
    pub size: usize,
    pub seed: u64,
    pub mode: Mode,
}

struct Gen {
    rng: ChaCha8Rng,
    services: BTreeMap<String, Service>,
    names: Vec<String>,
}

const EP: &str = "work";

impl Gen {
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (self.rng.gen_range(lo.ln()..hi.ln())).exp()
    }

    /// Adds service `s{i}` with one endpoint of random work; `spread` widens the work range.
    fn add(&mut self, mode: Mode, spread: f64) {
        let i = self.names.len();
        let name = format!("s{i}");
        let cpu = (self.log_uniform(100.0 / spread, 400.0 * spread.sqrt())).round();
        let threads = self.rng.gen_range(1..=4);
        let response_bytes = self.log_uniform(100.0, 8192.0).round() as u64;
        let ep = Endpoint {
            cpu_us: cpu,
            response_bytes,
            mode,
            ..Endpoint::default()
        };
        self.services.insert(
            name.clone(),
            Service {
                threads,
                max_threads: None,
                port: None,
                node: None,
                serving: Serving::Async,
                endpoints: BTreeMap::from([(EP.to_owned(), ep)]),
            },
        );
        self.names.push(name);
    }

    fn call(&mut self, from: usize, to: usize, probability: f64) {
        let request_bytes = self.log_uniform(100.0, 2048.0).round() as u64;
        let p = (probability * 100.0).round() / 100.0;
        let call = Call {
            service: self.names[to].clone(),
            endpoint: EP.to_owned(),
            probability: p,
            request_bytes,
        };
        self.services
            .get_mut(&self.names[from])
            .expect("service")
            .endpoints
            .get_mut(EP)
            .expect("endpoint")
            .calls
            .push(call);
    }
}

/// Generates a topology of `spec.family` with `spec.size` services (`s0` is the entry, endpoint `work`), its
/// `expected` section filled in.
#[expect(
    clippy::too_many_lines,
    reason = "one short match arm per topology family: the families read best side by side"
)]
pub fn generate(spec: &GenSpec) -> Result<Topology, String> {
    let n = spec.size;
    let fam = spec.family;
    if n < fam.min_size() {
        return Err(format!(
            "family {fam} needs --size >= {}, not {n}",
            fam.min_size()
        ));
    }
    if n > 500 {
        return Err(format!("--size {n}: at most 500 services"));
    }
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(
            spec.seed ^ (fam as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ),
        services: BTreeMap::new(),
        names: Vec::new(),
    };
    let spread = if fam == Family::DagUnbalanced {
        4.0
    } else if fam == Family::DagBalanced {
        1.2
    } else {
        2.0
    };
    for _ in 0..n {
        g.add(spec.mode, spread);
    }
    match fam {
        Family::Chain => (1..n).for_each(|i| g.call(i - 1, i, 1.0)),
        Family::Fanout => (1..n).for_each(|i| g.call(0, i, 1.0)),
        Family::DagBalanced => (1..n).for_each(|i| g.call((i - 1) / 2, i, 1.0)),
        Family::DagUnbalanced => {
            for i in 1..n {
                // Mostly attach to one of the last two nodes: long, lopsided branches.
                let lo = i.saturating_sub(2);
                let parent = if g.rng.gen_bool(0.8) {
                    g.rng.gen_range(lo..i)
                } else {
                    g.rng.gen_range(0..i)
                };
                g.call(parent, i, 1.0);
            }
        }
        Family::DagRelay => {
            let mids = ((n - 2) / 2).max(1);
            let relay = mids + 1;
            for m in 1..=mids {
                g.call(0, m, 1.0);
                g.call(m, relay, 1.0);
            }
            (relay + 1..n).for_each(|l| g.call(relay, l, 1.0));
        }
        Family::DagCross => {
            let width = ((n - 1) as f64).sqrt().ceil().max(1.0) as usize;
            // Layer 0 = s0; then layers of `width`.
            let layer_of = |i: usize| if i == 0 { 0 } else { 1 + (i - 1) / width };
            let layers = layer_of(n - 1) + 1;
            let members =
                |l: usize| -> Vec<usize> { (0..n).filter(|&i| layer_of(i) == l).collect() };
            for l in 1..layers {
                let prev = members(l - 1);
                for &i in &members(l) {
                    let p = prev[g.rng.gen_range(0..prev.len())];
                    g.call(p, i, 1.0);
                }
                // Extra edges: a second parent in the previous layer, or a cross edge from two layers up.
                for &i in &members(l) {
                    if g.rng.gen_bool(0.5) {
                        let src = if l >= 2 && g.rng.gen_bool(0.5) {
                            members(l - 2)
                        } else {
                            prev.clone()
                        };
                        let p = src[g.rng.gen_range(0..src.len())];
                        let already = g.services[&g.names[p]].endpoints[EP]
                            .calls
                            .iter()
                            .any(|c| c.service == g.names[i]);
                        if !already {
                            g.call(p, i, 1.0);
                        }
                    }
                }
            }
        }
        Family::DynamicOnce => {
            for i in 1..n {
                let p = g.rng.gen_range(0.2..0.9);
                g.call(0, i, p);
            }
        }
        Family::DynamicTwice => {
            for i in 1..n {
                let p = g.rng.gen_range(0.2..0.8);
                g.call(0, i, 1.0);
                g.call(0, i, p);
            }
        }
        Family::DynamicCache => {
            let mut i = 1;
            while i < n {
                g.call(0, i, 1.0);
                if i + 1 < n {
                    let miss = g.rng.gen_range(0.1..0.5);
                    g.call(i, i + 1, miss);
                }
                i += 2;
            }
        }
        Family::DynamicCycle => {
            (1..n).for_each(|i| g.call(i - 1, i, 1.0));
            let p = g.rng.gen_range(0.2..0.5);
            g.call(n - 1, 1, p);
        }
    }
    let topo = Topology {
        name: format!("{fam}-{n}-seed{}-{}", spec.seed, spec.mode),
        family: Some(fam.name().to_owned()),
        allow_cycles: fam == Family::DynamicCycle,
        sampling: Sampling::Dither,
        entry: EndpointRef {
            service: "s0".into(),
            endpoint: EP.into(),
        },
        services: g.services,
        expected: None,
    };
    topo.validate().map_err(|e| format!("generator bug: {e}"))?;
    Ok(with_expectations(topo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::expected_visit_ratios;

    #[test]
    fn every_family_is_valid_and_reproducible() {
        for &family in FAMILIES {
            for size in [family.min_size(), 5, 12] {
                let spec = GenSpec {
                    family,
                    size,
                    seed: 7,
                    mode: Mode::Async,
                };
                let a = generate(&spec).unwrap();
                let b = generate(&spec).unwrap();
                assert_eq!(a, b, "{family} not reproducible");
                assert_eq!(a.services.len(), size);
                let r = expected_visit_ratios(&a);
                assert!((r["s0"] - 1.0).abs() < 1e-12, "{family}: {r:?}");
                assert!(
                    r.values().all(|v| *v > 0.0),
                    "{family} size {size}: unreachable service {r:?}"
                );
            }
        }
        assert!(
            generate(&GenSpec {
                family: Family::DagRelay,
                size: 2,
                seed: 1,
                mode: Mode::Sync
            })
            .is_err()
        );
    }

    #[test]
    fn relay_and_cycle_ratios() {
        let t = generate(&GenSpec {
            family: Family::DagRelay,
            size: 8,
            seed: 1,
            mode: Mode::Sync,
        })
        .unwrap();
        let r = expected_visit_ratios(&t);
        // mids = 3 → relay s4 visited 3 times, leaves s5..s7 3 times each.
        assert!(
            (r["s4"] - 3.0).abs() < 1e-12 && (r["s7"] - 3.0).abs() < 1e-12,
            "{r:?}"
        );
        let t = generate(&GenSpec {
            family: Family::DynamicCycle,
            size: 4,
            seed: 1,
            mode: Mode::Sync,
        })
        .unwrap();
        let p = t.services["s3"].endpoints["work"].calls[0].probability;
        let r = expected_visit_ratios(&t);
        assert!((r["s2"] - 1.0 / (1.0 - p)).abs() < 1e-9, "{r:?}");
    }
}

//! Expected visit ratios and demands: the maths behind `check`, the generators' `expected` section and the
//! evaluation's ground truth. Pure functions of a topology (no I/O).

use std::collections::{BTreeMap, BTreeSet};

use super::{EndpointRef, Expected, Topology};

/// Expected visits per end-to-end request of every endpoint (entry endpoint = 1 + calls back into it).
/// Errors when the calls form a cycle whose expected visits diverge.
pub fn endpoint_visit_ratios(topo: &Topology) -> Result<BTreeMap<EndpointRef, f64>, String> {
    let nodes = topo.endpoint_refs();
    let index: BTreeMap<&EndpointRef, usize> =
        nodes.iter().enumerate().map(|(i, r)| (r, i)).collect();
    // Edges (from, to, expected calls per visit).
    let mut edges = Vec::new();
    for (i, r) in nodes.iter().enumerate() {
        for c in &topo.services[&r.service].endpoints[&r.endpoint].calls {
            let to = EndpointRef {
                service: c.service.clone(),
                endpoint: c.endpoint.clone(),
            };
            if let Some(&j) = index.get(&to) {
                edges.push((i, j, c.probability));
            }
        }
    }
    let mut base = vec![0.0; nodes.len()];
    if let Some(&e) = index.get(&topo.entry) {
        base[e] = 1.0;
    }
    // Fixed-point iteration v = base + Mᵀv: exact after `depth` rounds for DAGs, geometric convergence for cycles
    // with probabilities < 1, divergence otherwise.
    let mut v = base.clone();
    for _ in 0..1_000_000 {
        let mut next = base.clone();
        for &(i, j, p) in &edges {
            next[j] += p * v[i];
        }
        let diff = next
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let big = next.iter().copied().fold(0.0, f64::max);
        v = next;
        if diff <= 4.0 * f64::EPSILON * big.max(1.0) {
            return Ok(nodes.into_iter().zip(v).collect());
        }
        if big > 1e9 {
            break;
        }
    }
    Err(
        "the expected number of visits per request diverges (a cycle whose calls are too likely)"
            .into(),
    )
}

/// Expected visits per end-to-end request of every service (`r_s`; 0 for unreachable services).
/// Panics only on a topology that failed [`Topology::validate`].
pub fn expected_visit_ratios(topo: &Topology) -> BTreeMap<String, f64> {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    let mut out: BTreeMap<String, f64> = topo.services.keys().map(|s| (s.clone(), 0.0)).collect();
    for (r, v) in eps {
        *out.get_mut(&r.service).expect("known service") += v;
    }
    out
}

/// Per service: the demand on its busiest resource per end-to-end request, in µs — the larger of
/// (CPU + lock + blocking sleep)·visits / threads (worker threads busy) and lock·visits (the mutex is one).
/// By the bottleneck law the service with the largest demand limits throughput to 1/demand (if the machine has
/// enough cores for everyone).
pub fn service_demands_us(topo: &Topology) -> BTreeMap<String, f64> {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    let mut busy: BTreeMap<String, f64> = BTreeMap::new();
    let mut lock: BTreeMap<String, f64> = BTreeMap::new();
    for (r, v) in &eps {
        let ep = &topo.services[&r.service].endpoints[&r.endpoint];
        *busy.entry(r.service.clone()).or_default() += v * (ep.cpu_us + ep.lock_us + ep.sleep_us);
        *lock.entry(r.service.clone()).or_default() += v * ep.lock_us;
    }
    topo.services
        .iter()
        .map(|(s, svc)| {
            let b = busy.get(s).copied().unwrap_or(0.0) / f64::from(svc.threads);
            (s.clone(), b.max(lock.get(s).copied().unwrap_or(0.0)))
        })
        .collect()
}

/// The service expected to limit throughput (largest [`service_demands_us`]) and its demand in µs.
pub fn expected_bottleneck(topo: &Topology) -> Option<(String, f64)> {
    service_demands_us(topo)
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// CPU time per end-to-end request summed over all services (µs; configured work only, no emulator overhead).
pub fn total_cpu_us_per_request(topo: &Topology) -> f64 {
    let eps = endpoint_visit_ratios(topo).expect("validated topology");
    eps.iter()
        .map(|(r, v)| {
            let ep = &topo.services[&r.service].endpoints[&r.endpoint];
            v * (ep.cpu_us + ep.lock_us)
        })
        .sum()
}

/// Fills `expected` from the topology itself.
pub fn with_expectations(mut topo: Topology) -> Topology {
    let visit_ratios = expected_visit_ratios(&topo);
    let demand_us = service_demands_us(&topo);
    let bottleneck = expected_bottleneck(&topo).map(|b| b.0).unwrap_or_default();
    topo.expected = Some(Expected {
        bottleneck,
        visit_ratios,
        demand_us,
    });
    topo
}

/// The set of services reachable from the entry (others never see a request).
pub fn reachable_services(topo: &Topology) -> BTreeSet<String> {
    expected_visit_ratios(topo)
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(s, _)| s)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Call, test_chain};

    #[test]
    fn ratios_and_bottleneck() {
        let t = test_chain();
        t.validate().unwrap();
        let r = expected_visit_ratios(&t);
        assert!((r["a"] - 1.0).abs() < 1e-12);
        assert!((r["b"] - 1.5).abs() < 1e-12);
        let (b, d) = expected_bottleneck(&t).unwrap();
        assert_eq!(b, "b");
        assert!((d - 150.0).abs() < 1e-9);
    }

    #[test]
    fn cycle_rules() {
        let mut t = test_chain();
        t.services
            .get_mut("b")
            .unwrap()
            .endpoints
            .get_mut("y")
            .unwrap()
            .calls
            .push(Call {
                service: "a".into(),
                endpoint: "x".into(),
                probability: 0.5,
                request_bytes: 0,
            });
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        t.allow_cycles = true;
        // a = 1 + 0.5 b ; b = 1.5 a  => a = 1/(1-0.75) = 4
        t.validate().unwrap();
        let r = expected_visit_ratios(&t);
        assert!((r["a"] - 4.0).abs() < 1e-9, "{r:?}");
        t.services
            .get_mut("b")
            .unwrap()
            .endpoints
            .get_mut("y")
            .unwrap()
            .calls[0]
            .probability = 1.0;
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("diverges"), "{e}");
    }
}

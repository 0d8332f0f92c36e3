//! Validation: the rules a topology must follow beyond its JSON types (names, references, numbers, cycles),
//! each error naming the file, the field's JSON path and the offending value.

use std::collections::BTreeMap;

use super::ratios::endpoint_visit_ratios;
use super::{EndpointRef, Topology, TopologyError};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Topology {
    /// Checks names, references, numbers and cycles; see [`Topology::validate_named`].
    pub fn validate(&self) -> Result<(), TopologyError> {
        self.validate_named("<topology>")
    }

    /// [`Topology::validate`] with errors labelled by `file`.
    #[expect(
        clippy::too_many_lines,
        reason = "one check per field of the file, in the file's order, each with its error"
    )]
    pub fn validate_named(&self, file: &str) -> Result<(), TopologyError> {
        let bad = |field: String, value: String, reason: &str| TopologyError::Invalid {
            file: file.to_owned(),
            field,
            value,
            reason: reason.to_owned(),
        };
        if self.services.is_empty() {
            return Err(bad(
                "services".into(),
                "{}".into(),
                "at least one service is required",
            ));
        }
        let mut ports = BTreeMap::new();
        for (sname, svc) in &self.services {
            let sfield = format!("services.{sname}");
            if !valid_name(sname) {
                return Err(bad(
                    sfield,
                    format!("{sname:?}"),
                    "service names may only use A-Z a-z 0-9 _ -",
                ));
            }
            if let Some(m) = svc.max_threads
                && (m == 0 || m > 256)
            {
                return Err(bad(
                    format!("{sfield}.max_threads"),
                    m.to_string(),
                    "must be 1..=256",
                ));
            }
            if svc.threads == 0 || svc.threads > svc.runtime_threads().min(256) {
                return Err(bad(
                    format!("{sfield}.threads"),
                    svc.threads.to_string(),
                    &match svc.max_threads {
                        Some(m) => format!("must be 1..={m} (max_threads)"),
                        None => "must be 1..=256".to_owned(),
                    },
                ));
            }
            if let Some(p) = svc.port {
                if p == 0 {
                    return Err(bad(
                        format!("{sfield}.port"),
                        "0".into(),
                        "must be 1..=65535 (omit it for an ephemeral port)",
                    ));
                }
                if let Some(other) = ports.insert(p, sname.clone()) {
                    return Err(bad(
                        format!("{sfield}.port"),
                        p.to_string(),
                        &format!("already used by service {other}"),
                    ));
                }
            }
            if let Some(node) = &svc.node
                && !slowpoke_api::cluster::valid_node_name(node)
            {
                return Err(bad(
                    format!("{sfield}.node"),
                    format!("{node:?}"),
                    "node names are 1 to 63 of A-Z a-z 0-9 . _ - (a node of the cluster description)",
                ));
            }
            if svc.endpoints.is_empty() {
                return Err(bad(
                    format!("{sfield}.endpoints"),
                    "{}".into(),
                    "at least one endpoint is required",
                ));
            }
            for (ename, ep) in &svc.endpoints {
                let efield = format!("{sfield}.endpoints.{ename}");
                if !valid_name(ename) {
                    return Err(bad(
                        efield,
                        format!("{ename:?}"),
                        "endpoint names may only use A-Z a-z 0-9 _ -",
                    ));
                }
                for (key, v) in [
                    ("cpu_us", ep.cpu_us),
                    ("lock_us", ep.lock_us),
                    ("sleep_us", ep.sleep_us),
                    ("wait_us", ep.wait_us),
                ] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(bad(
                            format!("{efield}.{key}"),
                            v.to_string(),
                            "must be a finite number >= 0 (µs)",
                        ));
                    }
                    if v > 60e6 {
                        return Err(bad(
                            format!("{efield}.{key}"),
                            v.to_string(),
                            "more than a minute per visit",
                        ));
                    }
                }
                if let Some(why) = ep.cpu_dist.problem() {
                    return Err(bad(
                        format!("{efield}.cpu_dist"),
                        format!("{:?}", ep.cpu_dist),
                        why,
                    ));
                }
                for (i, call) in ep.calls.iter().enumerate() {
                    let cfield = format!("{efield}.calls[{i}]");
                    let Some(target) = self.services.get(&call.service) else {
                        return Err(bad(
                            format!("{cfield}.service"),
                            format!("{:?}", call.service),
                            "unknown service",
                        ));
                    };
                    if !target.endpoints.contains_key(&call.endpoint) {
                        return Err(bad(
                            format!("{cfield}.endpoint"),
                            format!("{:?}", call.endpoint),
                            &format!("service {} has no such endpoint", call.service),
                        ));
                    }
                    if !(0.0..=1.0).contains(&call.probability) {
                        return Err(bad(
                            format!("{cfield}.probability"),
                            call.probability.to_string(),
                            "must be within 0..=1",
                        ));
                    }
                }
            }
        }
        let Some(entry_svc) = self.services.get(&self.entry.service) else {
            return Err(bad(
                "entry.service".into(),
                format!("{:?}", self.entry.service),
                "unknown service",
            ));
        };
        if !entry_svc.endpoints.contains_key(&self.entry.endpoint) {
            return Err(bad(
                "entry.endpoint".into(),
                format!("{:?}", self.entry.endpoint),
                "unknown endpoint of the entry service",
            ));
        }
        let allow_cycles = self.allow_cycles || self.family.as_deref() == Some("dynamic-cycle");
        if let Some(cycle) = self.find_cycle() {
            let path = cycle
                .iter()
                .map(|r| format!("{}.{}", r.service, r.endpoint))
                .collect::<Vec<_>>()
                .join(" -> ");
            if !allow_cycles {
                return Err(bad(
                    "services.*.endpoints.*.calls".into(),
                    path,
                    "calls form a cycle; set \"allow_cycles\": true (with probabilities < 1) if that is intended",
                ));
            }
        }
        if let Err(reason) = endpoint_visit_ratios(self) {
            return Err(bad(
                "services.*.endpoints.*.calls".into(),
                "(call graph)".into(),
                &reason,
            ));
        }
        Ok(())
    }

    /// A cycle of endpoint calls (probability > 0), if any, as the list of endpoints on it.
    pub fn find_cycle(&self) -> Option<Vec<EndpointRef>> {
        // Iterative DFS with colours over endpoints.
        let nodes: Vec<EndpointRef> = self.endpoint_refs();
        let index: BTreeMap<&EndpointRef, usize> =
            nodes.iter().enumerate().map(|(i, r)| (r, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|r| {
                self.services[&r.service].endpoints[&r.endpoint]
                    .calls
                    .iter()
                    .filter(|c| c.probability > 0.0)
                    .filter_map(|c| {
                        index
                            .get(&EndpointRef {
                                service: c.service.clone(),
                                endpoint: c.endpoint.clone(),
                            })
                            .copied()
                    })
                    .collect()
            })
            .collect();
        let mut colour = vec![0u8; nodes.len()];
        for start in 0..nodes.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            colour[start] = 1;
            while let Some(&mut (n, ref mut next)) = stack.last_mut() {
                if *next < succ[n].len() {
                    let m = succ[n][*next];
                    *next += 1;
                    match colour[m] {
                        0 => {
                            colour[m] = 1;
                            stack.push((m, 0));
                        }
                        1 => {
                            let pos = stack.iter().position(|&(k, _)| k == m).unwrap_or(0);
                            return Some(
                                stack[pos..]
                                    .iter()
                                    .map(|&(k, _)| nodes[k].clone())
                                    .chain([nodes[m].clone()])
                                    .collect(),
                            );
                        }
                        _ => {}
                    }
                } else {
                    colour[n] = 2;
                    stack.pop();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::parse;

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"cpu_us":"lots"}}}}}"#, "f.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("f.json") && e.contains("services.a.endpoints.x.cpu_us"),
            "{e}"
        );
        let t = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"cpu_us":-3}}}}}"#, "f.json").unwrap();
        let e = t.validate_named("f.json").unwrap_err().to_string();
        assert!(
            e.contains("f.json") && e.contains("services.a.endpoints.x.cpu_us") && e.contains("-3"),
            "{e}"
        );
        let t = parse(r#"{"entry":{"service":"a","endpoint":"x"},"services":{"a":{"endpoints":{"x":{"calls":[{"service":"zz","endpoint":"q"}]}}}}}"#, "f.json").unwrap();
        let e = t.validate_named("f.json").unwrap_err().to_string();
        assert!(e.contains("calls[0].service") && e.contains("zz"), "{e}");
    }

    #[test]
    fn cpu_distributions_parse_and_bad_ones_are_named() {
        use crate::topology::CpuDist;
        let with = |dist: &str| {
            parse(
                &format!(
                    r#"{{"entry":{{"service":"a","endpoint":"x"}},"services":{{"a":{{"endpoints":{{"x":{{"cpu_us":100,"cpu_dist":{dist}}}}}}}}}}}"#
                ),
                "f.json",
            )
        };
        let dist = |d: &str| with(d).unwrap().services["a"].endpoints["x"].cpu_dist;
        assert_eq!(dist(r#""exponential""#), CpuDist::Exponential);
        assert_eq!(
            dist(r#"{"pareto":{"alpha":1.5}}"#),
            CpuDist::Pareto { alpha: 1.5 }
        );
        assert_eq!(
            dist(r#"{"lognormal":{"sigma":2}}"#),
            CpuDist::Lognormal { sigma: 2.0 }
        );
        assert!(with(r#""gaussian""#).is_err());
        assert!(
            with(r#"{"pareto":{"alpha":1.5,"beta":2}}"#).is_err(),
            "unknown keys are errors"
        );
        let e = with(r#"{"pareto":{"alpha":0.9}}"#)
            .unwrap()
            .validate_named("f.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("services.a.endpoints.x.cpu_dist") && e.contains("alpha"),
            "{e}"
        );
    }

    #[test]
    fn a_node_name_follows_the_cluster_descriptions_rule() {
        let with_node = |node: &str| {
            parse(
                &format!(r#"{{"entry":{{"service":"a","endpoint":"x"}},"services":{{"a":{{"node":{node:?},"endpoints":{{"x":{{}}}}}}}}}}"#),
                "f.json",
            )
            .unwrap()
            .validate_named("f.json")
        };
        assert!(with_node("spk-n1").is_ok());
        assert!(with_node("host.example_2").is_ok());
        let e = with_node("a b").unwrap_err().to_string();
        assert!(
            e.contains("services.a.node") && e.contains("\"a b\""),
            "{e}"
        );
        assert!(with_node("").is_err());
        assert!(with_node(&"n".repeat(64)).is_err());
    }
}

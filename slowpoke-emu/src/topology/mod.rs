//! The topology file: which services exist, what each endpoint costs and whom it calls.
//!
//! One module per job: `schema` is the file's types (serde, defaults), `file` reads and writes it,
//! `validate` holds the rules beyond JSON types, `set` the `--set` changes and their keys, and `ratios`
//! the expected visit ratios and demands (pure maths). Everything is re-exported here, so callers write
//! `topology::load`, `topology::Topology`, `topology::expected_visit_ratios`.
//! Loading reports problems with the file name, the JSON path of the field and the offending value.

mod file;
mod ratios;
mod schema;
mod set;
mod validate;

pub use file::{TopologySource, load, parse, save};
pub use ratios::{
    endpoint_visit_ratios, expected_bottleneck, expected_visit_ratios, reachable_services,
    service_demands_us, total_cpu_us_per_request, with_expectations,
};
pub use schema::{
    Call, CpuDist, Endpoint, EndpointRef, Expected, Mode, Sampling, Service, Serving, Topology,
};
pub use set::{ENDPOINT_KEYS, LIVE_SERVICE_KEYS, SERVICE_KEYS, Set};

/// A problem with a topology, naming the file, the field (JSON path) and the value.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: field `{field}`: {message}")]
    Parse {
        file: String,
        field: String,
        message: String,
    },
    #[error("{file}: field `{field}` = {value}: {reason}")]
    Invalid {
        file: String,
        field: String,
        value: String,
        reason: String,
    },
}

/// A small two-service topology the unit tests of every module share: `a.x` (2 threads, 10 µs) calls `b.y`
/// (1 thread, 100 µs) once, and again with probability 0.5, so `r_b` = 1.5.
#[cfg(test)]
pub(crate) fn test_chain() -> Topology {
    parse(
        r#"{"entry":{"service":"a","endpoint":"x"},"services":{
          "a":{"threads":2,"endpoints":{"x":{"cpu_us":10,"calls":[{"service":"b","endpoint":"y"},{"service":"b","endpoint":"y","probability":0.5}]}}},
          "b":{"endpoints":{"y":{"cpu_us":100}}}}}"#,
        "t.json",
    )
    .unwrap()
}

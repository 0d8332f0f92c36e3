//! `bench-agent`: cost of the kernel programs and precision of the pauses, printed as one JSON
//! object (run as root, release build; `cargo xtask bench agent [-- ARGS]` runs the same):
//!
//! ```text
//! cargo run --release -p slowpoke-bench --bin bench-agent [-- --rounds 7 --seconds 2]
//!     [--pauses 200] [--time-wait 10000] [--sync-visits 200]
//!     [--owner-services 6 --owner-connections 64]
//!     [--only hook,tracked,echo,nginx,pause,resolve,owners,sync,sync-cluster,ages,ages-servers]
//! ```
//!
//! 1. `hook`: time per socket call of a process no service tracks, programs attached vs.
//!    detached (a tight 1-byte send/recv loop on a loopback TCP pair and on a unix socketpair),
//!    interleaved (the order alternates each round), repeated; mean and 95 % CI of the
//!    per-round difference (ns per call) and ratio.
//! 2. `throughput_echo`, `throughput_nginx`: a loopback request/response server (a child
//!    process answering 64-byte messages; Debian's nginx serving a small file), several
//!    keep-alive connections, untracked vs. tracked at zero delay (and with the programs
//!    detached), interleaved; mean and 95 % CI of the per-round loss in requests/s and in CPU
//!    time per request (server + client threads).
//! 3. `pause_precision`: pauses as the paused process experiences them. A probe child (this
//!    binary, `--probe`) spins on `CLOCK_MONOTONIC` and records every gap longer than 20 µs
//!    (the moments it did not run); a library `Agent` registers it as a service and pauses it
//!    with `pause_now` (`--pauses` pauses of 1 ms and of 10 ms per round, in random order, 1–5 ms
//!    apart). Each pause is matched with the probe's gap that overlaps it; per requested size:
//!    mean, median, p99 and max of |gap − requested| and of gap − achieved (the agent's
//!    `pause_ns` delta), pooled and as per-round statistics with 95 % CIs over the rounds.
//! 4. `resolve`: what the resolver pays to list the node's listening sockets, with
//!    `--time-wait` `TIME_WAIT` sockets on the node (an app that opens a connection per request
//!    leaves tens of thousands): `sock_diag` (what the agent uses) vs. reading
//!    `/proc/net/tcp{,6}` (what it used to), interleaved, per round `--lists` calls of each;
//!    mean and 95 % CI of the time per call and of the per-round ratio. `owners`: what a
//!    resolver pass pays to find who listens on the services' ports, every process's
//!    descriptors read for every port service vs. the index the resolver keeps across passes
//!    (`registry::Listeners`), CPU time per pass, interleaved (see [`resolve`]).
//! 5. `sync`: how close synchronized pauses are. Two echo server processes A and B are services
//!    of a library `Agent`; a pause plan gives A 2 ms per visit (a quantum pause at every
//!    visit) and B 0.4 ms (below the 1 ms quantum); one client visits A then B, `--sync-visits`
//!    times per run. Each round runs the plan synchronized and not (the order alternates), and
//!    from the agent's pause records takes: the share of A's quantum pauses at which B paid
//!    (a synchronized pause), the delay of each such B pause after A's start (median, p90,
//!    max), the share that started while A was still stopped, and the share of B's stopped
//!    time that overlapped A's; mean and 95 % CI over the rounds, and of the per-round
//!    difference of the overlap shares (synchronized − not, percentage points; without
//!    synchronization B pays once, at the end, so a ratio would divide by ≈ 0).
//! 6. `sync-cluster`: the same across two nodes of the cluster test bed (root; real agent
//!    processes, the release `slowpoke-agent` next to this binary): A on node 1, B on node 2,
//!    plans synchronized with and without `sync_peers` (interleaved); the share of A's quantum
//!    pauses B joined, the start skew across nodes (median, p90, max; pooled too) and the
//!    stopped-time overlap (see [`cluster_sync`]).
//!
//! 7. `ages`, `ages-servers`: what tracking request ages costs per call, and which request's
//!    age the calls of real servers carry (thread per request vs. event loops), see [`ages`].
//!
//! One module per part: [`hook`] (1, and the tracked call), [`throughput`] (2), [`pause`] (3,
//! with the [`probe`] child), [`resolve`] (4), [`sync`] (5), [`cluster_sync`] (6); [`echo`] is the request/response
//! server child, [`harness`] the kernel programs and library agent the parts measure with.

mod ages;
mod cluster_sync;
mod echo;
mod harness;
mod hook;
mod pause;
mod probe;
mod resolve;
mod sync;
mod throughput;

use serde_json::json;

/// Cost of the kernel programs and precision of the pauses, as one JSON object.
#[derive(clap::Parser)]
struct Options {
    /// Interleaved rounds of every measurement.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Socket calls per hook measurement.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// Seconds of load per throughput measurement.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Keep-alive connections of the throughput measurements.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Pauses of each size per round (pause precision).
    #[arg(long, default_value_t = 200)]
    pauses: usize,
    /// `TIME_WAIT` sockets made for the resolve measurement.
    #[arg(long, default_value_t = 10_000)]
    time_wait: usize,
    /// Listings of each kind per round (resolve measurement).
    #[arg(long, default_value_t = 20)]
    lists: usize,
    /// Port services (servers) of the owners measurement.
    #[arg(long, default_value_t = 6)]
    owner_services: usize,
    /// Connections held to each of them (owners measurement).
    #[arg(long, default_value_t = 64)]
    owner_connections: usize,
    /// Visits of each service per run (sync and sync-cluster measurements).
    #[arg(long, default_value_t = 200)]
    sync_visits: usize,
    /// Parts to run (all by default).
    #[arg(long, value_delimiter = ',', value_parser = ["hook", "tracked", "echo", "nginx", "pause", "resolve", "owners", "sync", "sync-cluster", "ages", "ages-servers"])]
    only: Vec<String>,
    /// Internal: be the echo server child on this port.
    #[arg(long, hide = true, value_name = "PORT")]
    server: Option<String>,
    /// Internal: be the pause-precision probe child (minimum gap, ns).
    #[arg(long, hide = true, value_name = "NS")]
    probe: Option<u64>,
}

impl Options {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// Mean and half-width of its 95 % interval (Student's t; null below two samples).
fn summary(xs: &[f64]) -> serde_json::Value {
    let s = slowpoke_stats::summarize(xs);
    let ci95 = s.half_width();
    json!({"mean": s.mean, "ci95": ci95.is_finite().then_some(ci95), "samples": xs})
}

/// `/proc/loadavg` as read.
fn loadavg() -> String {
    slowpoke_bench::machine::LoadAvg::read().raw
}

fn main() {
    let o = <Options as clap::Parser>::parse();
    if let Some(port) = &o.server {
        return echo::serve(port);
    }
    if let Some(min_gap_ns) = o.probe {
        return probe::run(min_gap_ns);
    }
    let loadavg_start = loadavg();
    let mut report = serde_json::Map::new();
    report.insert("rounds".into(), json!(o.rounds));
    report.insert("calls_per_measurement".into(), json!(o.calls));
    report.insert(
        "cpus".into(),
        json!(std::thread::available_parallelism().map_or(0, usize::from)),
    );
    report.insert("loadavg_start".into(), json!(loadavg_start));
    if o.runs("hook") {
        report.insert("hook_untracked".into(), hook::hook_overhead(&o));
    }
    if o.runs("tracked") {
        report.insert(
            "tracked_call_tcp_loopback".into(),
            hook::tracked_call_cost(&o),
        );
    }
    if o.runs("echo") {
        report.insert("throughput_echo".into(), throughput::throughput(&o, false));
    }
    if o.runs("nginx") {
        report.insert("throughput_nginx".into(), throughput::throughput(&o, true));
    }
    if o.runs("pause") {
        report.insert("pause_precision".into(), pause::pause_precision(&o));
    }
    if o.runs("resolve") {
        report.insert("resolve".into(), resolve::resolve_cost(&o));
    }
    if o.runs("owners") {
        report.insert("resolve_owners".into(), resolve::owners_cost(&o));
    }
    if o.runs("sync") {
        report.insert("synchronized_pauses".into(), sync::sync_closeness(&o));
    }
    if o.runs("sync-cluster") {
        report.insert(
            "synchronized_pauses_between_nodes".into(),
            cluster_sync::sync_cluster(&o),
        );
    }
    if o.runs("ages") {
        report.insert("request_ages_cost".into(), ages::cost(&o));
    }
    if o.runs("ages-servers") {
        report.insert("request_ages_servers".into(), ages::servers(&o));
    }
    report.insert("loadavg_end".into(), json!(loadavg()));
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).unwrap()
    );
}

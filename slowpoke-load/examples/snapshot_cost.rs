//! How long a [`LoadGenerator::snapshot`] takes under load, and the windows it yields:
//! `cargo run --release -p slowpoke-load --example snapshot_cost -- http://127.0.0.1:8080/ [CONNECTIONS]`.

use std::time::{Duration, Instant};

use slowpoke_load::{LoadGenerator, LoadSpec, RequestTemplate};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/".into());
    let connections = args.next().and_then(|c| c.parse().ok()).unwrap_or(64);
    let spec = LoadSpec {
        connections,
        ..LoadSpec::new(vec![RequestTemplate::get(url)])
    };
    let generator = LoadGenerator::start(spec).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let mut prev = generator.snapshot();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        let t = Instant::now();
        let snap = generator.snapshot();
        let cost = t.elapsed();
        let w = snap.window_since(&prev);
        println!(
            "window {:.3}s: {:.0} req/s, p99 {} µs, generator {:.2} cores ({:.1} µs CPU/request); snapshot took {} µs",
            w.secs,
            w.rps,
            w.p99_us,
            w.generator_cores,
            w.cpu_ns_per_request / 1e3,
            cost.as_micros()
        );
        prev = snap;
    }
    let last = generator.stop();
    println!(
        "total: {} ok, {} errors",
        last.completed_ok,
        last.attempts() - last.completed_ok
    );
}

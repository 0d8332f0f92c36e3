//! `slowpoke-load`: a wrk/oha-like command line over the closed-loop load generator.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use slowpoke_load::{
    Arrivals, GeneratorOptions, LoadSpec, Report, RequestTemplate, RunLength, Schedule,
    parse_duration, parse_header, parse_method, parse_mix, run_with,
};

/// Exit code when the run completed but too many requests failed.
const EXIT_TOO_MANY_ERRORS: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "slowpoke-load",
    version,
    about = "HTTP/1.1 load generator. Closed loop (default): N keep-alive connections, each sends its next \
             request as soon as the previous response arrived. Open loop (--rate/--trace): requests sent at their \
             due times whatever the responses, latency measured from the due time.",
    after_help = "Examples:\n  slowpoke-load -c 64 -d 10s http://127.0.0.1:8080/\n  slowpoke-load -n 100000 -m POST \
                  -H 'Content-Type: application/json' -b '{\"k\":1}' http://127.0.0.1:8080/api\n  slowpoke-load --mix \
                  mix.json -d 5s --json\n  slowpoke-load --rate 2000 -c 256 -d 30s http://127.0.0.1:8080/   # open loop, Poisson\n\nExit status: 0 success; 1 bad input or unreachable entry; 2 bad command \
                  line; 3 the run completed but its error ratio (non-2xx + timeouts + connection errors over all \
                  requests) exceeded --max-error-ratio."
)]
struct Cli {
    /// Target URL(s), `http://HOST:PORT/PATH`; several URLs are picked at random with equal weight.
    #[arg(value_name = "URL", required_unless_present = "mix")]
    urls: Vec<String>,
    /// Keep-alive connections (each has one request in flight at a time).
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: usize,
    /// Measurement length, e.g. 10s, 500ms, 2m (default 10s unless -n is given).
    #[arg(short = 'd', long, value_parser = duration_arg, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Send exactly this many requests after the warm-up instead of running for a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Load before the measurement starts (same connections; not counted).
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    warmup: Duration,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,
    /// Extra header, `'Name: value'` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "'NAME: VALUE'", value_parser = header_arg)]
    headers: Vec<(String, String)>,
    /// Request body.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    body: Option<String>,
    /// Request body read from a file.
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// Per-request timeout (connect + request + whole response); a late request counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    timeout: Duration,
    /// JSON list of weighted request templates:
    /// `[{"method":"GET","url":"http://…","headers":{"K":"V"},"body":"…","weight":3}, …]`
    /// (used instead of URL, -m, -H and -b).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["urls", "method", "headers", "body", "body_file"])]
    mix: Option<PathBuf>,
    /// Print one JSON object with the report on stdout instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Worker threads of the generator (watch the generator-bound warning before raising it).
    #[arg(short = 't', long, default_value_t = 1)]
    threads: usize,
    /// Exit with status 3 when the error ratio of the measurement exceeds this (0.01 = 1 %).
    #[arg(long, default_value_t = 0.01)]
    max_error_ratio: f64,
    /// Seed of the weighted random choice among templates.
    #[arg(long, default_value_t = GeneratorOptions::default().seed)]
    seed: u64,
    /// Never draw a progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long)]
    no_progress: bool,
    /// Open loop: send requests at this mean rate (requests/s) whatever the responses, latency measured from
    /// each request's due time (no coordinated omission); -c is then the most requests in flight at once.
    #[arg(long, value_name = "REQ_PER_S")]
    rate: Option<f64>,
    /// How the open loop's requests are spaced: `poisson` (exponential gaps) or `uniform`.
    #[arg(
        long,
        value_name = "KIND",
        default_value = "poisson",
        requires = "rate"
    )]
    arrivals: String,
    /// Open loop replaying a trace: one arrival time per line, seconds; with --rate, scaled to that mean rate.
    #[arg(long, value_name = "FILE", conflicts_with = "arrivals")]
    trace: Option<PathBuf>,
    /// Run the generator's threads at this real-time (FIFO) priority, 1 to 99 (needs root or the `CAP_SYS_NICE`
    /// capability), so that an app sharing these CPUs, or real-time threads of a schedule on it, do not delay
    /// its sends.
    #[arg(long, value_name = "PRIORITY", value_parser = clap::value_parser!(u8).range(1..=99))]
    realtime_priority: Option<u8>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn header_arg(s: &str) -> Result<(String, String), String> {
    parse_header(s).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_cli(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: &Cli) -> anyhow::Result<ExitCode> {
    let requests = templates(cli)?;
    if !(0.0..=1.0).contains(&cli.max_error_ratio) {
        bail!("--max-error-ratio must be between 0 and 1 (0.01 = 1 %)");
    }
    let spec = LoadSpec {
        requests,
        connections: cli.connections,
        timeout: cli.timeout,
        warmup: cli.warmup,
        arrivals: arrivals(cli)?,
    };
    let length = match (cli.requests, cli.duration) {
        (Some(n), _) => RunLength::Requests(n),
        (None, Some(d)) => RunLength::Duration(d),
        (None, None) => RunLength::Duration(Duration::from_secs(10)),
    };
    let options = GeneratorOptions {
        worker_threads: cli.threads,
        seed: cli.seed,
        realtime_priority: cli.realtime_priority,
    };
    spec.check()?;
    length.check()?;
    let progress = !cli.no_progress && !cli.json && std::io::stderr().is_terminal();
    if !cli.json {
        println!("{}", header_line(&spec, length, cli.threads));
    }
    let report = run_with(&spec, length, progress, &options)?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("serializing the report")?
        );
    } else {
        print!("{}", summary(&report));
    }
    if report.error_ratio > cli.max_error_ratio {
        eprintln!(
            "error: {:.2}% of the measured requests failed (non-2xx {}, timeouts {}, connection errors {}), above \
             --max-error-ratio {:.2}%",
            report.error_ratio * 100.0,
            report.non_2xx,
            report.timeouts,
            report.conn_errors,
            cli.max_error_ratio * 100.0
        );
        return Ok(ExitCode::from(EXIT_TOO_MANY_ERRORS));
    }
    Ok(ExitCode::SUCCESS)
}

fn arrivals(cli: &Cli) -> anyhow::Result<Arrivals> {
    let schedule = match (&cli.trace, cli.rate) {
        (Some(path), rate) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --trace {}", path.display()))?;
            Schedule::trace(&text, rate)
                .with_context(|| format!("in --trace {}", path.display()))?
        }
        (None, None) => return Ok(Arrivals::Closed),
        (None, Some(rate)) => match cli.arrivals.as_str() {
            "poisson" => Schedule::poisson(rate)?,
            "uniform" => Schedule::uniform(rate)?,
            other => bail!("--arrivals {other}: use poisson or uniform"),
        },
    };
    Ok(Arrivals::Open(schedule))
}

fn templates(cli: &Cli) -> anyhow::Result<Vec<RequestTemplate>> {
    if let Some(path) = &cli.mix {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --mix {}", path.display()))?;
        return parse_mix(&text).with_context(|| format!("in --mix {}", path.display()));
    }
    let method = parse_method(&cli.method)?;
    let body = match (&cli.body, &cli.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path)
                .with_context(|| format!("reading --body-file {}", path.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    Ok(cli
        .urls
        .iter()
        .map(|url| RequestTemplate {
            method: method.clone(),
            url: url.clone(),
            headers: cli.headers.clone(),
            body: body.clone(),
            weight: 1,
        })
        .collect())
}

fn header_line(spec: &LoadSpec, length: RunLength, threads: usize) -> String {
    let what = match length {
        RunLength::Duration(d) => format!("{:.3}s test", d.as_secs_f64()),
        RunLength::Requests(n) => format!("{n}-request test"),
    };
    let urls: Vec<&str> = spec.requests.iter().map(|t| t.url.as_str()).collect();
    let shape = match &spec.arrivals {
        Arrivals::Closed => format!("{} connections", spec.connections),
        Arrivals::Open(s) => format!(
            "open loop at {:.1} req/s ({} arrivals), at most {} in flight",
            s.rate(),
            s.kind(),
            spec.connections
        ),
    };
    format!(
        "Running {what} @ {}\n  {shape}, {threads} thread(s), warm-up {:.3}s, timeout {:.3}s",
        urls.join(", "),
        spec.warmup.as_secs_f64(),
        spec.timeout.as_secs_f64()
    )
}

fn summary(r: &Report) -> String {
    let mut s = String::new();
    let pct = |x: f64| x * 100.0;
    let _ = writeln!(
        s,
        "  Requests:   {} measured in {:.3}s: {} 2xx, {} non-2xx, {} timeouts, {} connection errors ({:.2}% errors)",
        r.total_requests,
        r.secs,
        r.completed_ok,
        r.non_2xx,
        r.timeouts,
        r.conn_errors,
        pct(r.error_ratio)
    );
    let _ = writeln!(
        s,
        "  Throughput: {:.1} req/s (2xx per window); {:.1} req/s (2xx / mean per-connection time {:.3}s)",
        r.rps_window, r.rps_workers, r.mean_connection_secs
    );
    let _ = writeln!(
        s,
        "  Latency:    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}",
        us(r.p50_us),
        us(r.p90_us),
        us(r.p99_us),
        us(r.p999_us),
        us(r.max_us),
        us(r.mean_us)
    );
    let _ = writeln!(
        s,
        "  Generator:  {:.2} cores busy ({:.1}% of {} CPUs), {:.1} µs CPU per request, waited for a CPU {:.1}% of \
         the time",
        r.generator_cores,
        pct(r.cpu_share),
        r.online_cpus,
        r.cpu_ns_per_request / 1e3,
        pct(r.generator_wait_share)
    );
    if let Some(o) = &r.open_loop {
        let _ = writeln!(
            s,
            "  Open loop:  target {:.1} req/s ({}); waited for a connection p50 {}  p99 {}  max {}; most waiting {}",
            o.target_rps,
            o.arrivals,
            us(o.queue_wait_p50_us),
            us(o.queue_wait_p99_us),
            us(o.queue_wait_max_us),
            o.max_backlog
        );
        if r.rps < 0.95 * o.target_rps {
            let _ = writeln!(
                s,
                "  NOTE: {:.1} req/s completed, below the target {:.1}: the server (or -c {}) did not keep up, so \
                 requests queued and their latency grew",
                r.rps, o.target_rps, r.connections
            );
        }
        if o.shed > 0 {
            let _ = writeln!(
                s,
                "  WARNING: {} due requests were never sent: more than {} were already waiting",
                o.shed,
                slowpoke_load::MAX_BACKLOG
            );
        }
    }
    let _ = writeln!(
        s,
        "  Also sent:  {} warm-up and {} probe request(s)",
        r.warmup_requests, r.probe_requests
    );
    if r.generator_wait_share > 0.2 * r.generator_threads as f64 {
        let _ = writeln!(
            s,
            "  NOTE: the generator's threads waited for a CPU {:.0}% of the time: the machine is oversubscribed, so \
             requests were delayed by the generator too",
            pct(r.generator_wait_share / r.generator_threads as f64)
        );
    }
    if r.generator_bound {
        let _ = writeln!(
            s,
            "  WARNING: the generator's {} thread(s) were busy {:.0}% of the time: the result may measure the \
             generator, not the server (try --threads {} or fewer connections)",
            r.generator_threads,
            pct(r.generator_cores / r.generator_threads as f64),
            r.generator_threads + 1
        );
    }
    s
}

fn us(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2}ms", v / 1e3)
    } else {
        format!("{v:.0}µs")
    }
}

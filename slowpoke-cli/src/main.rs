//! `slowpoke`: the coordinator's command line, one module per subcommand over the coordinator
//! library (docs/cli.md). The emulated apps (`--topology`, `slowpoke eval`) come from
//! `slowpoke-eval`, behind the default feature `emu`; the in-process agent behind `in-process`.

// Doc comments here are the `--help` texts: prose for users, not code.
#![allow(clippy::doc_markdown)]

mod agents;
mod common;
mod connect;
#[cfg(feature = "emu")]
mod eval;
mod prepare;
mod profile;
mod progress;
mod results;
mod serve;
mod tail;
mod what_if;

use clap::{Parser, Subcommand};
use slowpoke_coordinator::experiment::RunError;

#[derive(Parser, Debug)]
#[command(
    name = "slowpoke",
    version,
    about = "What throughput would the application sustain if service T were faster? (virtual speedup)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Predict the end-to-end throughput after a hypothetical optimization of one service.
    WhatIf(what_if::WhatIfArgs),
    /// Sweep optimizations of every service: a ranked table and an SVG plot.
    Profile(profile::ProfileArgs),
    /// List the node agents and their health.
    Agents(agents::ListArgs),
    /// List or show stored results.
    Results(results::ResultsArgs),
    /// HTTP API and web page (default 127.0.0.1:7272); docs/coordinator-api.md.
    Serve(serve::ServeArgs),
    /// Tail-latency scheduling on the agents: enable, status, disable, compare (docs/tail.md).
    Tail(tail::TailArgs),
    /// Accuracy against ground truth over emulated topologies (RMSE per family and overall).
    #[cfg(feature = "emu")]
    Eval(eval::EvalArgs),
}

/// Runs the CLI; returns the exit code (0 ok, 1 error, 2 usage, 130 cancelled).
fn run() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let r = match cli.command {
        Command::WhatIf(a) => what_if::what_if(a),
        Command::Profile(a) => profile::profile(a),
        Command::Agents(a) => agents::list_agents(&a),
        Command::Results(a) => results::results_cmd(&a),
        Command::Serve(a) => serve::serve(&a),
        Command::Tail(a) => tail::tail(a),
        #[cfg(feature = "emu")]
        Command::Eval(a) => eval::eval(&a),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            if matches!(e.downcast_ref::<RunError>(), Some(RunError::Cancelled)) {
                eprintln!("slowpoke: {e}");
                return 130;
            }
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn main() {
    std::process::exit(run());
}

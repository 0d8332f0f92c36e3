//! `slowpoke-agent`: the node agent daemon (a thin wrapper over the library).

use std::{future::IntoFuture as _, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use slowpoke_agent::{Agent, AgentConfig, Auth};

/// Slowpoke node agent: counts visits of registered services with eBPF and pauses whole services
/// to apply a virtual-speedup plan. Serves its HTTP API until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the HTTP API. Off loopback a token is mandatory.
    #[arg(long, default_value = "127.0.0.1:7171")]
    listen: SocketAddr,
    /// File holding the bearer token that mutating calls must send (`Authorization: Bearer ...`).
    /// The environment variable `SLOWPOKE_AGENT_TOKEN` is used when this is not given.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Directory of the lock file (one agent per directory) and of the state file listing the
    /// processes that may be stopped (resumed at the next start if the agent died).
    #[arg(long, default_value = "/run/slowpoke")]
    state_dir: PathBuf,
    /// Pause quantum in microseconds: debt is paid in pauses of at least this long.
    #[arg(long, default_value_t = 1000)]
    quantum_us: u64,
    /// Largest delay per visit a plan may ask for, in milliseconds.
    #[arg(long, default_value_t = 100)]
    max_delay_ms: u64,
    /// Safety cap: largest share (0 < F <= 1) of any 1 s window a service may spend stopped; debt
    /// beyond it is dropped and reported.
    #[arg(long, default_value_t = 0.5)]
    max_stopped_share: f64,
    /// Longest lease, in seconds, a slowdown plan may ask for (`lease_ms`; more is refused with
    /// 400). A plan whose owner stops renewing its lease is removed when the lease lapses; plans
    /// that name no lease get 15 s (or this maximum, if lower).
    #[arg(long, default_value_t = 300.0, value_name = "S")]
    max_lease_s: f64,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `slowpoke_agent=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// TEST ONLY: run without the kernel programs and enable POST /v1/debug/pause/{name}.
    /// Compiled in only with the cargo feature `test-hooks`.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    test_hooks: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .with_context(|| format!("invalid --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = slowpoke_api::auth::token_from_file_or_env(
        args.token_file.as_deref(),
        slowpoke_api::auth::AGENT_TOKEN_ENV,
    )?;
    let auth = Auth::for_listen(args.listen, token)?;
    if !(args.max_stopped_share > 0.0 && args.max_stopped_share <= 1.0) {
        bail!(
            "--max-stopped-share must be in (0, 1], got {}",
            args.max_stopped_share
        );
    }
    if !(args.max_lease_s.is_finite() && args.max_lease_s >= 0.1) {
        bail!(
            "--max-lease-s must be at least 0.1 (seconds), got {}",
            args.max_lease_s
        );
    }
    let max_lease = Duration::from_secs_f64(args.max_lease_s.min(86_400.0));
    let cfg = AgentConfig {
        max_lease,
        default_lease: slowpoke_agent::DEFAULT_LEASE.min(max_lease),
        state_dir: args.state_dir,
        quantum_ns: args.quantum_us.saturating_mul(1000),
        max_delay_per_visit_ns: args.max_delay_ms.saturating_mul(1_000_000),
        max_stopped_share: args.max_stopped_share,
        #[cfg(feature = "test-hooks")]
        test_hooks: args.test_hooks,
        ..AgentConfig::default()
    };
    // Bind before starting the agent: a port in use fails fast and leaves nothing behind.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another agent running? use --listen)",
                args.listen
            )
        })?;
    let agent = Agent::start(cfg).await?;
    tracing::info!(listen = %args.listen, "HTTP API ready");
    let app = agent.router(auth);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .into_future(),
    );
    let early = tokio::select! {
        () = shutdown_signal() => None,
        r = &mut server => Some(r),
    };
    // Resume everything first (in-flight requests may be waiting on a pause), then drain HTTP.
    tokio::time::timeout(Duration::from_secs(10), agent.shutdown())
        .await
        .context("shutdown took longer than 10 s")?;
    if let Some(r) = early {
        return r.context("HTTP server task")?.context("HTTP server");
    }
    let _ = stop_http.send(());
    // Connections still open after 5 s are dropped with the process.
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(5), server).await {
        r.context("HTTP server task")?.context("HTTP server")?;
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received: shutting down");
}

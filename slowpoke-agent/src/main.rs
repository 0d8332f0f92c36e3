//! `slowpoke-agent`: the node agent daemon (a thin wrapper over the library).

// Doc comments of `Args` are the `--help` texts: prose for users, not code.
#![allow(clippy::doc_markdown)]

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser;
use slowpoke_agent::{
    Agent, AgentConfig, Auth,
    http::{SOCKET_FILE, bind_socket, serve_tcp, serve_unix},
    kernel::support::{EXIT_KERNEL_UNSUPPORTED, SupportReport},
    safety::protect::ProtectRules,
    sys::cred::group_id,
};
use slowpoke_api::auth::{AGENT_TOKEN_ENV, TokenSource};

/// The sync socket's port when --sync-listen is derived from --listen (the API's 7171 plus one).
const DEFAULT_SYNC_PORT: u16 = 7172;

/// Slowpoke node agent: counts visits of registered services with eBPF and pauses whole services
/// to apply a virtual-speedup plan. Serves its HTTP API on a root-only Unix socket (and on TCP
/// when asked) until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The API's Unix socket [default: STATE_DIR/agent.sock, i.e. /run/slowpoke/agent.sock].
    /// Root only (mode 0600) unless --socket-group is given.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Let the members of this group (name or gid) use the socket too (mode 0660).
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// Also serve the API over TCP on ADDR (e.g. 0.0.0.0:7171). Every call then needs the bearer
    /// token (--token-file), loopback included; only GET /v1/health answers without it (status
    /// only). There is no TLS: the token and all data cross the network in clear text, so use
    /// it only on a trusted network or behind a TLS proxy or mesh.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Take peer agents' synchronized-pause datagrams on this UDP address (e.g.
    /// 10.77.0.11:7172): with it, a synchronized plan's pauses line up across nodes (the plan's
    /// `sync_peers`; datagrams are authenticated with the plan's key). [default: with --listen,
    /// its IP and port 7172 (skipped with a warning when taken); without --listen, none: an agent
    /// on its Unix socket alone takes no network input]
    #[arg(long, value_name = "ADDR")]
    sync_listen: Option<SocketAddr>,
    /// A Host name TCP callers may use besides the listen address and localhost (repeatable;
    /// other names are refused: DNS rebinding).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_host: Vec<String>,
    /// File holding the bearer token of TCP calls (`Authorization: Bearer ...`): readable by its
    /// owner only (mode 0600 or 0400, symlinks followed), re-read when it changes. The
    /// environment variable `SLOWPOKE_AGENT_TOKEN` is used when this is not given.
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
    /// The most a slowdown plan may ask for in its own `max_stopped_share` (F between
    /// --max-stopped-share and 1), which applies while that plan is in force: large virtual
    /// speedups stop the other services most of the time. More is refused with 400. [default:
    /// 0.9, or --max-stopped-share when higher]
    #[arg(long, value_name = "F")]
    max_plan_stopped_share: Option<f64>,
    /// A process name (as in /proc/PID/comm; `*` matches any run of characters) the agent never
    /// stops, whatever a selector says. Repeatable; the names given replace the default list
    /// (sshd*, systemd, systemd-*, init, getty, agetty, login, dbus-*, kubelet, containerd,
    /// containerd-shim*, dockerd, crio, conmon, runc, etcd, kube-apiserver, kube-scheduler,
    /// kube-controller-manager, kube-proxy, slowpoke-agent, slowpoke-guard, slowpoke). pid 1,
    /// kernel threads, the agent and every process in its cgroup are protected regardless.
    #[arg(long = "protect-comm", value_name = "NAME")]
    protect_comm: Vec<String>,
    /// Confine the agent to one tenant: only processes whose uids (real, effective, saved,
    /// filesystem) are all among the given ones may be selected. Repeatable.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Confine the agent to one tenant: only processes inside these cgroup directories (v1 or v2,
    /// descendants included) may be selected. Repeatable.
    #[arg(long = "allow-cgroup", value_name = "PATH")]
    allow_cgroup: Vec<PathBuf>,
    /// Longest lease, in seconds, a slowdown plan may ask for (`lease_ms`; more is refused with
    /// 400). A plan whose owner stops renewing its lease is removed when the lease lapses; plans
    /// that name no lease get 15 s (or this maximum, if lower).
    #[arg(long, default_value_t = 300.0, value_name = "S")]
    max_lease_s: f64,
    /// The node's CPUs, in cpuset syntax (`0-3,6`): the node stats of GET /v1/stats (`cpus`,
    /// busy and total time) count only these, for a node confined to a cpuset. Default: every
    /// online CPU.
    #[arg(long, value_name = "LIST")]
    node_cpus: Option<String>,
    /// The node is this cgroup (v2 directory) of a bigger machine: the node stats' busy time is
    /// the CPU time of the processes inside it (`cpu.stat`), not of everything on --node-cpus.
    /// For a node that shares its CPUs with programs that are not on it in the setting being
    /// modelled (the one-machine cluster's load generator). Default: everything on the CPUs.
    #[arg(long, value_name = "PATH")]
    node_cgroup: Option<PathBuf>,
    /// Where the kubelet's pod cgroups are (`kubepods.slice/…` or `kubepods/…` directly below
    /// it), for `pods` selectors: a kubelet with its own `--cgroup-root`, or the host's cgroupfs
    /// mounted elsewhere in the agent's container. Repeatable, searched in order. Default: the
    /// cgroup2 mount, then the cgroup v1 `cpu` and `pids` hierarchies.
    #[arg(long = "pod-cgroup-root", value_name = "PATH")]
    pod_cgroup_root: Vec<PathBuf>,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as
    /// `slowpoke_agent=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Check that this kernel has everything the kernel programs need (BTF, the sock
    /// tracepoints, program and map types, helpers), print the report and exit: 0 when all is
    /// present, 3 when something is missing, 1 when the check itself could not run (not root).
    /// For an init container or ExecStartPre. See docs/kernel.md#support.
    #[arg(long)]
    check_kernel: bool,
    /// With --check-kernel: print the report as one JSON object.
    #[arg(long, requires = "check_kernel")]
    json: bool,
    /// TEST ONLY: run without the kernel programs and enable POST /v1/debug/pause/{name}.
    /// Compiled in only with the cargo feature `test-hooks`.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    test_hooks: bool,
}

/// `--node-cpus LIST`: the CPUs, each of which must be online (a CPU with no line in /proc/stat
/// would silently count as nothing).
fn node_cpus(list: Option<&str>) -> anyhow::Result<Option<Vec<u32>>> {
    let Some(list) = list else {
        return Ok(None);
    };
    let cpus = slowpoke_api::cluster::parse_cpu_list(list)
        .map_err(|e| anyhow::anyhow!("--node-cpus: {e}"))?;
    let online = slowpoke_agent::sys::procfs::node_cpu(Some(&cpus)).map_or(0, |(n, _, _)| n);
    if online as usize != cpus.len() {
        bail!(
            "--node-cpus {list}: only {online} of these {} CPUs are online (see /sys/devices/system/cpu/online): give the node's online CPUs",
            cpus.len()
        );
    }
    Ok(Some(cpus))
}

/// `--node-cgroup PATH`: a cgroup v2 directory whose `cpu.stat` can be read.
fn node_cgroup(path: Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = path else {
        return Ok(None);
    };
    if slowpoke_agent::sys::procfs::cgroup_cpu_ns(&path).is_none() {
        bail!(
            "--node-cgroup {}: no readable cpu.stat with usage_usec there: give a cgroup v2 directory (e.g. /sys/fs/cgroup/<node>)",
            path.display()
        );
    }
    Ok(Some(path))
}

/// `--check-kernel [--json]`: the report on stdout; the exit code says the verdict.
fn check_kernel(json: bool) -> ExitCode {
    let report = SupportReport::probe();
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.lacks_something() {
        ExitCode::from(EXIT_KERNEL_UNSUPPORTED as u8)
    } else if report.supported() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.check_kernel {
        return Ok(check_kernel(args.json));
    }
    // Before anything else starts (lock, guardian, sockets): a kernel that lacks what the
    // programs need fails here with one message and its own exit code. A check that could not
    // run (an unknown, not a missing feature) does not stop the start: the load will tell.
    #[cfg(feature = "test-hooks")]
    let check = !args.test_hooks;
    #[cfg(not(feature = "test-hooks"))]
    let check = true;
    if check && let Some(message) = SupportReport::probe().missing_message() {
        eprintln!("Error: {message}");
        return Ok(ExitCode::from(EXIT_KERNEL_UNSUPPORTED as u8));
    }
    // The audit trail (who changed what) stays on at any level unless the filter names it.
    let filter = if args.log_level.contains("audit") {
        args.log_level.clone()
    } else {
        format!("{},audit=info", args.log_level)
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("invalid --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))?;
    Ok(ExitCode::SUCCESS)
}

/// `--sync-listen`, else `--listen`'s IP with the default sync port, else none.
fn sync_listen(sync_listen: Option<SocketAddr>, listen: Option<SocketAddr>) -> Option<SocketAddr> {
    sync_listen.or_else(|| listen.map(|l| SocketAddr::new(l.ip(), DEFAULT_SYNC_PORT)))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let socket_group = args
        .socket_group
        .as_deref()
        .map(group_id)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--socket-group: {e}"))?;
    let token = TokenSource::from_file_or_env(args.token_file.as_deref(), AGENT_TOKEN_ENV)?;
    let mut auth = Auth::socket(socket_group);
    if let Some(listen) = args.listen {
        auth = auth.with_tcp(listen, token, args.allowed_host.clone())?;
    } else if !args.allowed_host.is_empty() {
        bail!("--allowed-host applies to TCP callers: give --listen ADDR too");
    }
    if !(args.max_stopped_share > 0.0 && args.max_stopped_share <= 1.0) {
        bail!(
            "--max-stopped-share must be in (0, 1], got {}",
            args.max_stopped_share
        );
    }
    if let Some(ceiling) = args.max_plan_stopped_share
        && !(args.max_stopped_share..=1.0).contains(&ceiling)
    {
        bail!(
            "--max-plan-stopped-share must be between --max-stopped-share ({}) and 1, got {ceiling}",
            args.max_stopped_share
        );
    }
    let mut protect = ProtectRules {
        allow_uids: args.allow_uid,
        allow_cgroups: args.allow_cgroup,
        ..ProtectRules::default()
    };
    if !args.protect_comm.is_empty() {
        protect.comms = args.protect_comm;
    }
    protect.validate().map_err(anyhow::Error::msg)?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.state_dir.join(SOCKET_FILE));
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
        protect,
        quantum_ns: args.quantum_us.saturating_mul(1000),
        max_delay_per_visit_ns: args.max_delay_ms.saturating_mul(1_000_000),
        max_stopped_share: args.max_stopped_share,
        max_plan_stopped_share: args
            .max_plan_stopped_share
            .unwrap_or(slowpoke_agent::DEFAULT_MAX_PLAN_STOPPED_SHARE),
        sync_listen: sync_listen(args.sync_listen, args.listen),
        sync_listen_defaulted: args.sync_listen.is_none(),
        node_cpus: node_cpus(args.node_cpus.as_deref())?,
        node_cgroup: node_cgroup(args.node_cgroup)?,
        pod_cgroup_roots: args.pod_cgroup_root,
        #[cfg(feature = "test-hooks")]
        test_hooks: args.test_hooks,
        ..AgentConfig::default()
    };
    // Bind TCP before starting the agent: a port in use fails fast and leaves nothing behind.
    let tcp = match args.listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another agent running? use --listen)")
        })?),
        None => None,
    };
    let agent = Agent::start(cfg).await?;
    // The socket only once the agent holds its state directory's lock: a stale socket is then
    // known to be nobody's and may be replaced.
    let (unix, socket_file) = match bind_socket(&socket, socket_group) {
        Ok(bound) => bound,
        Err(e) => {
            agent.shutdown().await;
            return Err(e.into());
        }
    };
    tracing::info!(socket = %socket_file.path().display(), listen = ?args.listen, "HTTP API ready");
    let app = agent.router(auth);
    let (stop_http, http_stopped) = tokio::sync::watch::channel(());
    let stopped = move || {
        let mut rx = http_stopped.clone();
        async move {
            let _ = rx.changed().await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve_unix(unix, app.clone(), stopped()));
    if let Some(l) = tcp {
        servers.spawn(serve_tcp(l, app, stopped()));
    }
    let early = tokio::select! {
        () = shutdown_signal() => None,
        r = servers.join_next() => r,
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
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(r) = servers.join_next().await {
            r.context("HTTP server task")?.context("HTTP server")?;
        }
        anyhow::Ok(())
    })
    .await;
    drop(socket_file);
    if let Ok(r) = drained {
        r?;
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

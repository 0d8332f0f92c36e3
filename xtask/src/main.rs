//! `cargo xtask`: the project's entry points. `setup` installs what the build and the tests need
//! (idempotent); `test` and `demo` run it first, so a fresh machine needs nothing else. `rails`
//! checks the workspace's structure (docs/rails.md); `test` runs it after the lints. `fuzz` and
//! `schemathesis` attack the request parsing of both HTTP APIs (docs/security/fuzz.md); `test`
//! runs both briefly after the tests. `image` builds the container images and `deploy check`
//! checks deploy/ (manifests, units, images, a podman run of the agent's); `test` runs it last.

mod cluster;
mod deploy;
mod fuzz;
mod old_kernel;
mod rails;
mod schemathesis;
mod setup;
mod tally;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Slowpoke project tasks", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: rust-src for nightly, bpf-linker, Debian packages, bpffs/tracefs
    /// mounts, cargo-fuzz, a venv with schemathesis.
    Setup,
    /// Set up, check formatting and lints, then run every test (as root: the tests load eBPF),
    /// then the deployment checks (`deploy check`), a 30 s fuzz smoke run and a short
    /// schemathesis run.
    Test {
        /// Skip `cargo fmt --check`, `cargo clippy` and the guard rails.
        #[arg(long)]
        no_lint: bool,
        /// Skip the fuzz smoke run and the schemathesis run after the tests.
        #[arg(long)]
        no_fuzz: bool,
        /// Skip the deployment checks after the tests (`deploy check`: images, manifests,
        /// units, podman and systemd-nspawn runs).
        #[arg(long)]
        no_deploy: bool,
        /// Extra arguments passed to the test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Guard rails (docs/rails.md): no import cycle between a crate's modules, no product file
    /// over 800 lines, long functions only with a stated reason, no test routes in the release
    /// agent, a client of the agent builds without the eBPF toolchain.
    Rails {
        /// Print the findings as one JSON array on stdout.
        #[arg(long)]
        json: bool,
        /// Skip the two rails that run cargo builds (release agent, client without bpf-linker).
        #[arg(long)]
        no_build: bool,
    },
    /// Fuzz the request parsing of both HTTP APIs (cargo-fuzz targets over slowpoke-api in
    /// fuzz/): build every target and run each for a while; a crash fails with its reproducer.
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (fuzz/Cargo.toml lists them).
        #[arg(long, value_name = "NAME")]
        target: Option<String>,
    },
    /// Run schemathesis against both `OpenAPI` documents (a real agent, confined, and `slowpoke
    /// serve` in front of it, inside a network namespace of their own).
    Schemathesis {
        /// Test cases per API operation.
        #[arg(long, default_value_t = 50)]
        max_examples: u32,
        /// Schemathesis's random seed: runs repeat; give another to explore further.
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// Do not build first (the debug `slowpoke-agent` and `slowpoke` must exist).
        #[arg(long)]
        no_build: bool,
        /// Internal: already inside the network namespace.
        #[arg(long, hide = true)]
        in_namespace: bool,
        /// More arguments for `schemathesis run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A cluster on this machine (docs/multi-node.md): `up` makes N nodes (a network namespace
    /// on the bridge spk-br0 and a cgroup with a cpuset each) with one agent per node; `down`
    /// stops the agents and removes everything, also what an interrupted `up` left.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Container images of the agent and the coordinator (deploy/images, `FROM scratch`):
    /// release binaries, then buildah. Both unless one is named.
    Image {
        #[arg(long)]
        agent: bool,
        #[arg(long)]
        coordinator: bool,
    },
    /// Deployment files (deploy/, docs/deploy.md): `check` validates the manifests and units,
    /// builds the images and runs the agent's under podman as its manifest asks;
    /// `podman-flags` prints the flags the agent's manifest turns into.
    Deploy {
        #[command(subcommand)]
        action: DeployAction,
    },
    /// Set up, build, start the 9-service shop app and ask: what if cart did half its CPU work?
    Demo {
        /// Also pass these arguments to `slowpoke what-if`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Benchmarks that print JSON: `agent` (hook overhead, throughput loss, pause precision),
    /// `emu` (emulator overhead, load generator cost, shop app saturation) or `whatif` (time to
    /// answer a 5-point what-if on the shop app at the default precision, load generator and node
    /// CPU, agent hook cost): the `bench-NAME` binaries of crate `slowpoke-bench`.
    Bench {
        #[arg(value_parser = ["agent", "emu", "whatif"])]
        which: String,
        /// Passed to the benchmark (`--` before them is optional).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The agent on Debian 12's own 6.1 kernel under qemu (not in CI; downloads the kernel
    /// package, debootstraps a root into target/old-kernel/): runs `slowpoke-agent
    /// --check-kernel` and the agent in the VM and writes the console and the JSON report to
    /// docs/results/old-kernel-YYYYMMDD/ (docs/kernel.md#support).
    OldKernel {
        /// The kernel package [default: the newest linux-image-6.1.0-N-amd64 apt offers].
        #[arg(long, value_name = "NAME")]
        package: Option<String>,
        /// qemu accelerator: tcg (software emulation), kvm, or auto (kvm if /dev/kvm opens).
        /// The default is tcg: on this project's machines /dev/kvm opens but a KVM guest printed
        /// nothing in 2 minutes.
        #[arg(long, default_value = "tcg", value_parser = ["auto", "kvm", "tcg"])]
        accel: String,
        /// Output directory [default: docs/results/old-kernel-YYYYMMDD].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Give up on the VM after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout_s: u64,
        /// Use the release agent already built.
        #[arg(long)]
        no_build: bool,
        /// Also run the agent's kernel tests (`kernel_visits`, `kernel_pause`, `kernel_safety`) in
        /// the VM.
        #[arg(long)]
        kernel_tests: bool,
    },
    /// Accuracy evaluation suite against ground truth (see docs/evaluation.md), or the tail
    /// suite (`--suite tail`: default scheduling vs the tail schedules, docs/tail.md;
    /// `--suite tail-real`: the same on apache2 + PHP servers).
    Eval {
        /// Passed to `slowpoke eval`, e.g. `--suite quick` or `--suite tail` (`--` before them
        /// is optional); `--suite real` and `--suite tail-real` run the examples `eval_real` and
        /// `eval_tail_real` of slowpoke-eval.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DeployAction {
    /// Every check `cargo xtask test` runs on deploy/.
    Check {
        /// Do not build the release binaries (they must exist).
        #[arg(long)]
        no_build: bool,
        /// Skip the podman run of the agent's image (what-if, stop, kill).
        #[arg(long)]
        no_trial: bool,
    },
    /// Print the `podman run` flags generated from the agent's manifest.
    PodmanFlags,
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Bring up the nodes and start an agent in each (prints where they are).
    Up {
        /// How many nodes (more than this machine has CPUs share them).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// The agent binary to start [default: build and use the debug `slowpoke-agent`].
        #[arg(long, value_name = "PATH")]
        agent_bin: Option<PathBuf>,
        /// The same token in every node's token file, so that one coordinator
        /// (`--agent-token-file`, a single token for all agents) can drive them all.
        #[arg(long)]
        same_token: bool,
    },
    /// Stop the agents and remove every node, link and cgroup of a cluster.
    Down,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.task {
        Task::Setup => setup_all(&root),
        Task::Test {
            no_lint,
            no_fuzz,
            no_deploy,
            args,
        } => test(
            &root,
            &TestSkips {
                lint: no_lint,
                fuzz: no_fuzz,
                deploy: no_deploy,
            },
            &args,
        ),
        Task::Fuzz { seconds, target } => fuzz::fuzz(&root, seconds, target.as_deref()),
        Task::Schemathesis {
            max_examples,
            seed,
            no_build,
            in_namespace,
            args,
        } => {
            let opts = schemathesis::Options {
                max_examples,
                seed,
                extra: args,
                log: None,
            };
            if in_namespace {
                schemathesis::run_inside(&root, &opts)
            } else {
                schemathesis::run_boxed(&root, &opts, !no_build)
            }
        }
        Task::Rails { json, no_build } => {
            rails::run(&root, json, rails::Options { builds: !no_build })
        }
        Task::Cluster { action } => match action {
            ClusterAction::Up {
                nodes,
                json,
                agent_bin,
                same_token,
            } => cluster::up(
                &root,
                &cluster::UpOptions {
                    nodes,
                    json,
                    agent_bin,
                    same_token,
                },
            ),
            ClusterAction::Down => cluster::down(),
        },
        Task::Image { agent, coordinator } => {
            let which: Vec<deploy::image::Which> = match (agent, coordinator) {
                (true, false) => vec![deploy::image::Which::Agent],
                (false, true) => vec![deploy::image::Which::Coordinator],
                _ => deploy::image::Which::ALL.to_vec(),
            };
            deploy::image(&root, &which)
        }
        Task::Deploy { action } => match action {
            DeployAction::Check { no_build, no_trial } => {
                setup_all(&root)?;
                deploy::check(
                    &root,
                    &deploy::CheckOptions {
                        build: !no_build,
                        trial: !no_trial,
                    },
                )
            }
            DeployAction::PodmanFlags => deploy::print_podman_flags(&root),
        },
        Task::Demo { args } => demo(&root, &args),
        Task::Bench { which, args } => bench(&root, &which, &args),
        Task::Eval { args } => eval(&root, &args),
        Task::OldKernel {
            package,
            accel,
            out,
            timeout_s,
            no_build,
            kernel_tests,
        } => old_kernel::run_old_kernel(
            &root,
            &old_kernel::Options {
                package,
                accel,
                out,
                timeout: std::time::Duration::from_secs(timeout_s),
                no_build,
                kernel_tests,
            },
        ),
    }
}

/// Everything `setup` installs, including the tools of `fuzz` and `schemathesis` (which `test`
/// runs briefly): cargo-fuzz and a venv with schemathesis, and kubernetes-validate in that venv
/// for `deploy check`.
fn setup_all(root: &Path) -> Result<()> {
    setup::ensure()?;
    fuzz::ensure_cargo_fuzz()?;
    schemathesis::ensure_installed(root)?;
    deploy::ensure_installed(root)?;
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Runs a command in the workspace, failing with the command line when it fails.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("xtask: {shown}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed: {status}");
    }
    Ok(())
}

/// Runs a command with its standard output and error going to `log` (created afresh), as the
/// steps `xtask test` runs after the tests do: their own chatter (libFuzzer's progress lines,
/// schemathesis's pytest-like report) stays in the file and out of the test run's output. A
/// failure prints the log's last lines and says where the rest is.
pub(crate) fn run_logged(cmd: &mut Command, log: &Path) -> Result<std::process::ExitStatus> {
    let shown = format!("{cmd:?}");
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone().context("duplicating a log file handle")?;
    eprintln!("xtask: {shown} (output in {})", log.display());
    let status = cmd
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        eprintln!(
            "xtask: {shown} failed ({status}); its last {} lines (all of it in {}):",
            tail.len(),
            log.display()
        );
        for line in tail {
            eprintln!("  | {line}");
        }
    }
    Ok(status)
}

/// How much of a failed logged step's output [`run_logged`] shows.
const LOG_TAIL_LINES: usize = 60;

/// Cargo's target directory (`$CARGO_TARGET_DIR` or `<root>/target`).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

pub(crate) fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    cmd
}

/// `cargo run --release --quiet -p PACKAGE KIND NAME --` (KIND: `--bin` or `--example`); the
/// caller appends the program's arguments.
fn cargo_run_release(root: &Path, package: &str, kind: &str, name: &str) -> Command {
    let mut cmd = cargo(root);
    cmd.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        package,
        kind,
        name,
        "--",
    ]);
    cmd
}

/// The test-only features, for `cargo build`/`cargo test` at the workspace root: the agent's test
/// hooks and the coordinator's fake world (`slowpoke_coordinator::fake`, which the runner's and
/// the server's integration tests need: they declare it in `required-features`). Never
/// `[dependencies]` features: feature unification would carry them into release binaries.
pub(crate) const TEST_FEATURES: &str = "slowpoke-agent/test-hooks,slowpoke-coordinator/fake";

/// What `cargo xtask test` leaves out (`--no-lint`, `--no-fuzz`, `--no-deploy`).
struct TestSkips {
    lint: bool,
    fuzz: bool,
    deploy: bool,
}

fn test(root: &Path, skip: &TestSkips, args: &[String]) -> Result<()> {
    let (no_lint, no_fuzz) = (skip.lint, skip.fuzz);
    setup_all(root)?;
    if !no_lint {
        run(cargo(root).args(["fmt", "--all", "--", "--check"]))?;
        // The fuzz crate is a workspace of its own (fuzz/Cargo.toml): `--all` does not reach it.
        run(cargo(root).args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
        // As release builds compile it (no test hooks), then the agent with its test hooks.
        run(cargo(root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        run(cargo(root).args([
            "clippy",
            "-p",
            "slowpoke-agent",
            "--all-targets",
            "--features",
            "test-hooks",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The coordinator's tests on its fake world exist only with its `fake` feature.
        run(cargo(root).args([
            "clippy",
            "-p",
            "slowpoke-coordinator",
            "--all-targets",
            "--features",
            "fake",
            "--",
            "-D",
            "warnings",
        ]))?;
        fuzz::clippy(root)?;
    }
    // Build everything first so test binaries can find each other's executables. The agent's
    // test hooks (the manual pause endpoint, running without kernel programs) exist only with
    // its `test-hooks` feature, the coordinator's fake world only with its `fake` feature: the
    // tests and the agent binary they spawn are built with both.
    run(cargo(root).args(["build", "--all-targets", "--features", TEST_FEATURES]))?;
    // The end-to-end tests measure throughput of emulated apps: a debug emulator spends more on
    // HTTP than the topologies' configured work, so they run the release one. The coordinator's
    // image binary (a pure client: no default features) is built in the same invocation: alone,
    // it compiled ~120 crates the emulator also needs a second time with other features (179 of
    // the deploy checks' 197 s in a fresh clone, issue #17's budget is 3 minutes).
    run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "slowpoke-emu",
        "--bin",
        "slowpoke-emu",
        "-p",
        "slowpoke-cli",
        "--bin",
        "slowpoke",
        "--no-default-features",
    ]))?;
    if !no_lint {
        // After the builds: the client rail's type check then reuses their dependencies, and the
        // release agent's kernel object comes from the shared BPF build (slowpoke-agent/build.rs).
        rails::run(root, false, rails::Options { builds: true })?;
    }
    let emu = target_dir(root).join("release/slowpoke-emu");
    // Timing-sensitive integration tests (pause precision) share 2 cores: two test threads at most.
    let mut cmd = cargo(root);
    cmd.env("SLOWPOKE_EMU_BIN", &emu)
        .args(["test", "--features", TEST_FEATURES, "--no-fail-fast"])
        .args(["--", "--test-threads=2"])
        .args(args);
    let (status, tally) = tally::run_counting(&mut cmd)?;
    let tests = if status.success() && args.is_empty() && tally.passed == 0 {
        // Unfiltered, a run that passed nothing ran nothing: never a green run.
        Err(anyhow::anyhow!(
            "cargo test ran no test ({} test binaries reported)",
            tally.binaries
        ))
    } else if status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("cargo test failed: {status}"))
    };
    // deploy/ (manifests, units, both images, the agent's image under podman), after the tests
    // whatever they said: a broken deployment is worth knowing about either way.
    if !skip.deploy
        && let Err(e) = deploy::check(
            root,
            &deploy::CheckOptions {
                // The binaries exist: the coordinator's from the release build above, the
                // agent's from the guard rails (built alone). Without the rails, build them.
                build: no_lint,
                trial: true,
            },
        )
    {
        eprintln!("xtask: {e:#}");
        println!("{}", tally.closing_line());
        return Err(e);
    }
    if !no_fuzz {
        // After the tests, whatever they said: a fuzz crash is worth knowing about either way.
        let fuzzed = fuzz::smoke(root);
        let schema = schemathesis::run_boxed(root, &schemathesis::Options::smoke(root), false);
        if let Err(e) = fuzzed.and(schema) {
            eprintln!("xtask: {e:#}");
            println!("{}", tally.closing_line());
            return Err(e);
        }
    }
    // The run's closing line, after everything else (fuzz and schemathesis log to files).
    println!("{}", tally.closing_line());
    tests
}

fn demo(root: &Path, args: &[String]) -> Result<()> {
    setup::ensure()?;
    run(cargo(root).args(["build", "--release", "--bins"]))?;
    let topology = root.join("testkit/topologies/shop.json");
    let delta_us = half_of_configured_work(&topology, "cart")?;
    let mut cmd = Command::new(target_dir(root).join("release/slowpoke"));
    cmd.current_dir(root)
        .arg("what-if")
        .arg("--topology")
        .arg(&topology)
        .args(["--target", "cart", "--delta-us"])
        .arg(format!("{delta_us}"))
        .args(["--truth", "--summary-json"])
        .args(args);
    run(&mut cmd)
}

/// Δ for the demo: half of the CPU work the topology configures for `service` per visit (the
/// mean over its endpoints, weighted equally), so prediction and ground truth use the same Δ.
fn half_of_configured_work(topology: &Path, service: &str) -> Result<f64> {
    let text = std::fs::read_to_string(topology)
        .with_context(|| format!("reading {}", topology.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", topology.display()))?;
    let endpoints = json["services"][service]["endpoints"]
        .as_object()
        .with_context(|| format!("{}: no endpoints for service {service}", topology.display()))?;
    let works: Vec<f64> = endpoints
        .values()
        .filter_map(|e| e["cpu_us"].as_f64())
        .collect();
    if works.is_empty() {
        bail!("{}: service {service} has no cpu_us", topology.display());
    }
    Ok(works.iter().sum::<f64>() / works.len() as f64 / 2.0)
}

/// `bench NAME`: the `bench-NAME` binary of `slowpoke-bench`, release build.
fn bench(root: &Path, which: &str, args: &[String]) -> Result<()> {
    setup::ensure()?;
    if which == "whatif" {
        return bench_whatif(root, args);
    }
    run(cargo_run_release(root, "slowpoke-bench", "--bin", &format!("bench-{which}")).args(args))
}

/// `bench whatif`: the release emulator and `bench-agent` (for its short hook-cost part) are
/// built first and handed to `bench-whatif` through the environment.
fn bench_whatif(root: &Path, args: &[String]) -> Result<()> {
    run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "slowpoke-emu",
        "--bin",
        "slowpoke-emu",
    ]))?;
    run(cargo(root).args([
        "build",
        "--release",
        "-p",
        "slowpoke-bench",
        "--bin",
        "bench-agent",
    ]))?;
    let release = target_dir(root).join("release");
    run(
        cargo_run_release(root, "slowpoke-bench", "--bin", "bench-whatif")
            .env("SLOWPOKE_EMU_BIN", release.join("slowpoke-emu"))
            .env("SLOWPOKE_BENCH_AGENT_BIN", release.join("bench-agent"))
            .args(args),
    )
}

fn eval(root: &Path, args: &[String]) -> Result<()> {
    setup::ensure()?;
    run(cargo(root).args(["build", "--release", "--bins"]))?;
    // The real-server suites start Debian's servers through the test kit: they are examples of
    // slowpoke-eval (`eval_real`, `eval_tail_real`), not suites of the `slowpoke` binary.
    for (suite, example) in [("real", "eval_real"), ("tail-real", "eval_tail_real")] {
        if let Some(rest) = example_suite_args(args, suite) {
            return run(cargo_run_release(root, "slowpoke-eval", "--example", example).args(rest));
        }
    }
    // The cluster suite needs a cluster: bring up two nodes with the release agent unless the
    // caller names one, and take it down afterwards whatever happens.
    if suite_is(args, "cluster") && !args.iter().any(|a| a.starts_with("--cluster")) {
        cluster::up(
            root,
            &cluster::UpOptions {
                nodes: 2,
                json: false,
                agent_bin: Some(target_dir(root).join("release/slowpoke-agent")),
                same_token: false,
            },
        )?;
        let file = target_dir(root).join("cluster").join(cluster::CLUSTER_FILE);
        let r = run(cargo_run_release(root, "slowpoke-cli", "--bin", "slowpoke")
            .arg("eval")
            .args(args)
            .arg("--cluster")
            .arg(&file));
        let down = cluster::down();
        return r.and(down);
    }
    run(cargo_run_release(root, "slowpoke-cli", "--bin", "slowpoke")
        .arg("eval")
        .args(args))
}

/// `--suite NAME` or `--suite=NAME` among `args`.
fn suite_is(args: &[String], name: &str) -> bool {
    args.iter()
        .any(|a| a.strip_prefix("--suite=") == Some(name))
        || args.windows(2).any(|w| w[0] == "--suite" && w[1] == name)
}

/// `--suite NAME` (or `--suite=NAME`) anywhere in `args`: the other arguments.
fn example_suite_args(args: &[String], name: &str) -> Option<Vec<String>> {
    let mut rest = Vec::new();
    let mut real = false;
    let mut it = args.iter().filter(|a| *a != "--");
    while let Some(a) = it.next() {
        if a.strip_prefix("--suite=") == Some(name) {
            real = true;
        } else if a == "--suite" {
            match it.next() {
                Some(v) if v == name => real = true,
                Some(v) => {
                    rest.push(a.clone());
                    rest.push(v.clone());
                }
                None => rest.push(a.clone()),
            }
        } else {
            rest.push(a.clone());
        }
    }
    real.then_some(rest)
}

#[cfg(test)]
mod tests {
    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn real_suite_args(args: &[String]) -> Option<Vec<String>> {
        super::example_suite_args(args, "real")
    }

    #[test]
    fn the_real_suite_is_told_apart_from_the_others() {
        assert_eq!(
            real_suite_args(&v(&["--suite", "real", "--runs", "2"])),
            Some(v(&["--runs", "2"]))
        );
        assert_eq!(
            real_suite_args(&v(&["--", "--out", "d", "--suite=real"])),
            Some(v(&["--out", "d"]))
        );
        assert_eq!(real_suite_args(&v(&["--suite", "quick"])), None);
        assert_eq!(real_suite_args(&v(&[])), None);
        assert_eq!(real_suite_args(&v(&["--suite", "tail-real"])), None);
        assert_eq!(
            super::example_suite_args(
                &v(&["--suite=tail-real", "--repetitions", "5"]),
                "tail-real"
            ),
            Some(v(&["--repetitions", "5"]))
        );
        assert_eq!(
            super::example_suite_args(&v(&["--suite", "tail"]), "tail-real"),
            None
        );
        assert!(super::suite_is(&v(&["--suite", "cluster"]), "cluster"));
        assert!(super::suite_is(
            &v(&["--out", "d", "--suite=cluster"]),
            "cluster"
        ));
        assert!(!super::suite_is(&v(&["--suite", "quick"]), "cluster"));
    }
}

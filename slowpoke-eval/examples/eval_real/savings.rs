//! The what-ifs of the real-server suite that are not scaling questions: a real per-request
//! saving in the target, a configuration change switched live, its Δ measured independently of
//! the product.
//!
//! - `nginx-gzip`: nginx (1 worker) → memcached, gzip at level 6; the saving: level 5.
//! - `nginx-subfilter`: the same app with gzip at level 1 and a `sub_filter` rewrite of a
//!   phrase in the page's body; the saving: no rewrite.
//! - `haproxy-lua`: haproxy (1 thread) running a Lua action of 16000 rounds of hashing per
//!   request → nginx (2 workers, a static file); the saving: 8000 rounds.
//!
//! **Δ, independently**: before the what-ifs, the load runs against each configuration in turn
//! (`--delta-rounds` rounds, alternating which goes first), and the target's processes' CPU time
//! over the requests the load completed gives its CPU per request under each; Δ is the mean of
//! the rounds' paired differences, with its 95 % interval. Neither the kernel programs' visit
//! counts nor the product's `p_T` enter it.
//!
//! The CPU time is `/proc/PID/stat`'s utime + stime of the server's master and its workers,
//! **plus the master's cutime + cstime**: a reload replaces the workers, and a worker that exits
//! within a window takes its whole lifetime's CPU out of the workers' sum; once its master has
//! reaped it, that time is in the master's children's times. The sum is then monotone and its
//! growth over a window is what the tree spent in it, whichever worker spent it. (Before
//! 2026-12-08 the children's times were left out.)

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use slowpoke_agent::sys::procfs;
use slowpoke_coordinator::experiment::{LoadConfig, LoadStarter as _};
use slowpoke_coordinator::real::{RealLoadStarter, TruthCommands};
use slowpoke_testkit::swap::{Variants, haproxy_lua, variants};
use slowpoke_testkit::{GZIP_6, Nginx, NginxMemcached, TempDir, children};

use crate::{Running, port_service};

pub(crate) const SAVINGS: [&str; 3] = ["nginx-gzip", "nginx-subfilter", "haproxy-lua"];

const GZIP_1: &str = "gzip on; gzip_comp_level 1; gzip_min_length 0; gzip_types text/plain;";
const SUB_FILTERS: &str =
    "sub_filter_types text/plain; sub_filter_once off; sub_filter 'kernel visit' 'kernel-visit';";
const LUA_BASE: u32 = 16_000;
const LUA_OPTIMIZED: u32 = 8_000;

/// Starts a saving case's servers in their baseline configuration: the running app, its
/// target's name, and the pid whose process tree is the target.
pub(crate) fn start(case: &str, page_kib: usize) -> Result<(Running, &'static str, u32)> {
    let scripts = TempDir::new("eval-real-saving");
    let swap = |proc: &slowpoke_testkit::Proc, file: &str, from: &str, to: &str, sig: &str| {
        let live = proc.dir().expect("a kit server has a directory").join(file);
        variants(&live, scripts.path(), case, &[(from, to)], proc.pid(), sig)
    };
    let (procs, services, entry, v, target, root): (_, _, _, Variants, _, _) = match case {
        "nginx-gzip" | "nginx-subfilter" => {
            let (directives, from, to) = if case == "nginx-gzip" {
                (GZIP_6.to_owned(), "gzip_comp_level 6", "gzip_comp_level 5")
            } else {
                (format!("{GZIP_1} {SUB_FILTERS}"), SUB_FILTERS, "")
            };
            let app = NginxMemcached::with_location(1, page_kib * 1024, &directives);
            let v = swap(&app.nginx, "nginx.conf", from, to, "HUP");
            let services = BTreeMap::from([
                ("web".to_owned(), port_service(app.nginx.port)),
                ("cache".to_owned(), port_service(app.memcached.port)),
            ]);
            let root = app.nginx.pid();
            (
                vec![app.nginx, app.memcached],
                services,
                app.url,
                v,
                "web",
                root,
            )
        }
        "haproxy-lua" => {
            let web = Nginx {
                workers: 2,
                ..Nginx::default()
            }
            .start();
            let proxy = haproxy_lua(web.port, LUA_BASE);
            let v = swap(
                &proxy,
                "work.lua",
                &format!("for i = 1, {LUA_BASE} "),
                &format!("for i = 1, {LUA_OPTIMIZED} "),
                "USR2",
            );
            let services = BTreeMap::from([
                ("proxy".to_owned(), port_service(proxy.port)),
                ("web".to_owned(), port_service(web.port)),
            ]);
            let entry = format!("http://127.0.0.1:{}/hello.txt", proxy.port);
            let root = proxy.pid();
            (vec![proxy, web], services, entry, v, "proxy", root)
        }
        other => bail!("unknown saving case `{other}`"),
    };
    Ok((
        Running {
            _procs: procs,
            _scripts: scripts,
            services,
            entry,
            truth: TruthCommands {
                apply: v.apply,
                restore: v.restore,
            },
        },
        target,
        root,
    ))
}

/// The CPU time of `root` and its children so far, µs, counting the children it has reaped
/// (its cutime + cstime): monotone across a reload that replaces the children. Only the root's
/// reaped children count: a worker's own children (none here) would be counted twice otherwise.
fn tree_cpu_us(root: u32) -> Result<f64> {
    let mut ticks = 0u64;
    for pid in std::iter::once(root).chain(children(root)) {
        let stat = procfs::stat(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
        ticks += stat.cpu_ticks;
        if pid == root {
            ticks += stat.reaped_cpu_ticks;
        }
    }
    Ok((ticks * procfs::ns_per_tick()) as f64 / 1e3)
}

/// Δ measured independently of the product: the target's CPU per request under each
/// configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MeasuredDelta {
    /// Mean of the rounds' paired differences, µs per request.
    pub(crate) delta: f64,
    /// Its 95 % CI half-width, µs.
    pub(crate) half_width: f64,
    /// The target's CPU per request, baseline and optimized, µs (means over the rounds).
    pub(crate) base: f64,
    pub(crate) optimized: f64,
}

/// Runs the load against each configuration in turn, `rounds` times, `secs` per window.
pub(crate) fn measure_delta(
    running: &Running,
    root: u32,
    load: &LoadConfig,
    rounds: usize,
    secs: f64,
) -> Result<MeasuredDelta> {
    let mut cfg = load.clone();
    cfg.url.clone_from(&running.entry);
    let mut generator = RealLoadStarter.start(&cfg).map_err(anyhow::Error::msg)?;
    let sh = |cmd: &str| -> Result<()> {
        let st = std::process::Command::new("sh")
            .args(["-c", cmd])
            .status()?;
        if !st.success() {
            bail!("`{cmd}`: {st}");
        }
        Ok(())
    };
    // The servers' processes after a reload: the tree's root stays, its workers are new.
    let mut per_request = |optimized: bool| -> Result<f64> {
        sh(if optimized {
            &running.truth.apply
        } else {
            &running.truth.restore
        })?;
        // Let the new workers take the connections.
        std::thread::sleep(Duration::from_secs(1));
        let c0 = tree_cpu_us(root)?;
        generator.begin_window();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let w = generator.end_window();
        let c1 = tree_cpu_us(root)?;
        if w.completed_ok == 0 {
            bail!("no request completed while measuring Δ");
        }
        Ok((c1 - c0) / w.completed_ok as f64)
    };
    let (mut base, mut opt, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (b, o) = if round % 2 == 0 {
            let b = per_request(false)?;
            (b, per_request(true)?)
        } else {
            let o = per_request(true)?;
            (per_request(false)?, o)
        };
        eprintln!(
            "  Δ round {}: {b:.1} → {o:.1} µs of CPU per request",
            round + 1
        );
        base.push(b);
        opt.push(o);
        diffs.push(b - o);
    }
    sh(&running.truth.restore)?;
    generator.stop();
    let s = slowpoke_coordinator::stats::summarize(&diffs);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    Ok(MeasuredDelta {
        delta: s.mean,
        half_width: s.half_width(),
        base: mean(&base),
        optimized: mean(&opt),
    })
}

//! `sock_ops` TCP header options (spike question 3): loads `tail-spike-ebpf`'s program, attaches it
//! to a cgroup-v2 group this process moves into, and checks on loopback and across a veth pair
//! between two network namespaces whether the 8-byte option written by the caller's side is parsed
//! by the callee's side: on data segments, on connections opened before the program was attached
//! (and on them again once a `bpf_iter/tcp` program has switched their callbacks on),
//! with the callbacks switched on late (from the RTT callback), with TSO/GRO on and off; then the
//! cost per round trip with and without the program (3 interleaved rounds). Prints JSON.
//!
//! Usage: `tail-hdropt [path to the BPF object]`; build the object first (docs/tail.md).

mod net;

use std::{
    fs,
    io::Read,
    net::{SocketAddr, TcpStream},
    path::Path,
};

use anyhow::{Context, Result};
use aya::{
    Btf, Ebpf,
    maps::{Array, MapData},
    programs::{CgroupAttachMode, Iter, SockOps, sock_ops::SockOpsLinkId},
};
use serde_json::{Value, json};
use tail_spike::{dist::summary, sched::mono_ns};

const OBJ: &str = "target/bpf-spike/bpfel-unknown-none/release/tail-hdropt";
const CGROUP2: &str = "/sys/fs/cgroup/unified";
const GROUP: &str = "tailspike";
const PORT: u16 = 47_123;
const SLOT_NAMES: [&str; 18] = [
    "established",
    "len_cb",
    "write_cb",
    "write_ok",
    "write_psh",
    "parse_cb",
    "found",
    "found_psh",
    "delay_sum_ns",
    "delay_max_ns",
    "segs_in",
    "data_segs_in",
    "rtt_cb",
    "late_flags",
    "write_fail",
    "found_syn",
    "distinct_found",
    "last_stamp",
];

struct Spike {
    ebpf: Ebpf,
    counters: Array<MapData, u64>,
    ops: Array<MapData, u64>,
    config: Array<MapData, u64>,
    link: Option<SockOpsLinkId>,
    cgroup: fs::File,
}

impl Spike {
    fn prog(&mut self) -> Result<&mut SockOps> {
        Ok(self
            .ebpf
            .program_mut("tail_hdropt")
            .context("program")?
            .try_into()?)
    }

    fn attach(&mut self, on: bool) -> Result<()> {
        if on && self.link.is_none() {
            let cg = self.cgroup.try_clone()?;
            self.link = Some(self.prog()?.attach(cg, CgroupAttachMode::Single)?);
        } else if !on && let Some(link) = self.link.take() {
            self.prog()?.detach(link)?;
        }
        Ok(())
    }

    /// Runs the `iter/tcp` program over every TCP socket of the root namespace, then of
    /// [`net::NETNS`] (an iterator walks the namespace it was created in):
    /// `{"seen","set","last_error","visited"}` summed over both.
    fn run_iter(&mut self) -> Result<Value> {
        let btf = Btf::from_sys_fs()?;
        let prog: &mut Iter = self
            .ebpf
            .program_mut("tail_iter_tcp")
            .context("iter")?
            .try_into()?;
        prog.load("tcp", &btf)?;
        for in_netns in [false, true] {
            let link = prog.attach()?;
            let link = prog.take_link(link)?;
            std::thread::scope(|scope| {
                scope
                    .spawn(move || -> Result<()> {
                        if in_netns {
                            net::enter_netns()?;
                        }
                        let mut sink = Vec::new();
                        link.into_file()?.read_to_end(&mut sink)?;
                        Ok(())
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("iterator thread panicked"))?
            })?;
        }
        let map = Array::<_, u64>::try_from(self.ebpf.map("ITER").context("ITER")?)?;
        Ok(json!({
            "seen": map.get(&0, 0)?,
            "set": map.get(&1, 0)?,
            "last_error": -(map.get(&2, 0)? as i64),
            "visited": map.get(&3, 0)?,
        }))
    }

    fn reset(&mut self) -> Result<()> {
        for i in 0..36 {
            self.counters.set(i, 0, 0)?;
        }
        for i in 0..32 {
            self.ops.set(i, 0, 0)?;
        }
        Ok(())
    }

    /// Counters of both sides and the callbacks seen since the last reset.
    fn snapshot(&self) -> Result<Value> {
        let side = |s: u32| -> Result<Value> {
            let mut m = serde_json::Map::new();
            for (i, name) in SLOT_NAMES.iter().enumerate() {
                m.insert(
                    (*name).into(),
                    self.counters.get(&(s * 18 + i as u32), 0)?.into(),
                );
            }
            Ok(Value::Object(m))
        };
        let mut ops = serde_json::Map::new();
        for op in 0..32u32 {
            let n = self.ops.get(&op, 0)?;
            if n > 0 {
                ops.insert(op.to_string(), n.into());
            }
        }
        Ok(json!({ "caller": side(0)?, "callee": side(1)?, "callbacks_by_op": ops }))
    }
}

fn pings(c: &mut TcpStream, n: usize) -> Result<Vec<f64>> {
    let (msg, mut buf) = ([b'x'; 64], [0u8; 64]);
    let mut rtt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = mono_ns();
        net::ping(c, &msg, &mut buf)?;
        rtt.push((mono_ns() - t) as f64 / 1e3);
    }
    Ok(rtt)
}

fn run(obj: &Path) -> Result<Value> {
    let bytes = fs::read(obj).with_context(|| {
        format!(
            "{}: build it first (docs/tail.md, \"Spike\")",
            obj.display()
        )
    })?;
    let mut ebpf = Ebpf::load(&bytes)?;
    let counters = Array::try_from(ebpf.take_map("COUNTERS").context("COUNTERS")?)?;
    let ops = Array::try_from(ebpf.take_map("OPS").context("OPS")?)?;
    let mut config = Array::try_from(ebpf.take_map("CONFIG").context("CONFIG")?)?;
    config.set(0, 1, 0)?;
    config.set(1, u64::from(PORT), 0)?;
    let group = Path::new(CGROUP2).join(GROUP);
    fs::create_dir_all(&group)?;
    fs::write(group.join("cgroup.procs"), std::process::id().to_string())?;
    let mut s = Spike {
        ebpf,
        counters,
        ops,
        config,
        link: None,
        cgroup: fs::File::open(&group)?,
    };
    s.prog()?.load()?;
    let _veth = net::Veth::create()?;
    let lo: SocketAddr = format!("127.0.0.1:{PORT}").parse()?;
    let peer: SocketAddr = format!("{}:{PORT}", net::PEER_IP).parse()?;
    net::serve(lo, false)?;
    net::serve(peer, true)?;
    let mut out = serde_json::Map::new();

    // Connections opened before the program is attached.
    let mut old_lo = net::echo_client(lo)?;
    let mut old_veth = net::echo_client(peer)?;
    s.attach(true)?;
    s.reset()?;
    pings(&mut old_lo, 200)?;
    pings(&mut old_veth, 200)?;
    out.insert("pre_attach_200_pings_each_lo_veth".into(), s.snapshot()?);
    // The same connections after the iter/tcp program switched their callbacks on.
    let iter = s.run_iter()?;
    s.reset()?;
    pings(&mut old_lo, 200)?;
    pings(&mut old_veth, 200)?;
    let mut after = s.snapshot()?;
    after["iter"] = iter;
    out.insert("pre_attach_after_iter_200_pings_each_lo_veth".into(), after);

    for (name, addr) in [("loopback", lo), ("veth", peer)] {
        s.reset()?;
        let mut c = net::echo_client(addr)?;
        pings(&mut c, 1000)?;
        out.insert(format!("{name}_1000_pings"), s.snapshot()?);
    }

    s.config.set(0, 2, 0)?;
    s.reset()?;
    let mut c = net::echo_client(lo)?;
    pings(&mut c, 1000)?;
    out.insert("loopback_late_flags_1000_pings".into(), s.snapshot()?);
    s.config.set(0, 1, 0)?;

    for (name, addr) in [("loopback", lo), ("veth", peer)] {
        s.reset()?;
        net::bulk(addr, 8 << 20)?;
        out.insert(format!("{name}_bulk_8MiB"), s.snapshot()?);
    }
    match net::Veth::offloads(false) {
        Ok(()) => {
            s.reset()?;
            net::bulk(peer, 8 << 20)?;
            out.insert("veth_bulk_8MiB_tso_gro_off".into(), s.snapshot()?);
            net::Veth::offloads(true)?;
        }
        Err(e) => {
            out.insert(
                "veth_bulk_8MiB_tso_gro_off".into(),
                json!({ "error": e.to_string() }),
            );
        }
    }

    out.insert("cost_64B_ping_pong".into(), cost(&mut s, lo, peer)?);
    s.attach(false)?;
    fs::write(
        Path::new(CGROUP2).join("cgroup.procs"),
        std::process::id().to_string(),
    )?;
    let _ = fs::remove_dir(&group);
    out.insert(
        "kernel".into(),
        fs::read_to_string("/proc/sys/kernel/osrelease")?
            .trim()
            .into(),
    );
    out.insert(
        "loadavg".into(),
        fs::read_to_string("/proc/loadavg")?.trim().into(),
    );
    Ok(Value::Object(out))
}

/// Cost: 3 interleaved rounds of (program off, on) per path, a fresh connection each, then the
/// kernel's run-time accounting of the program in a round of its own.
fn cost(s: &mut Spike, lo: SocketAddr, peer: SocketAddr) -> Result<Value> {
    let mut cost = serde_json::Map::new();
    for (name, addr) in [("loopback", lo), ("veth", peer)] {
        let (mut off, mut on, mut rounds) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            for attached in [false, true] {
                s.attach(attached)?;
                let mut c = net::echo_client(addr)?;
                pings(&mut c, 2000)?;
                let rtt = pings(&mut c, 20_000)?;
                let mean = rtt.iter().sum::<f64>() / rtt.len() as f64;
                rounds.push(
                    json!({ "program": attached, "rtt_mean_us": slowpoke_stats::round4(mean) }),
                );
                if attached {
                    on.extend(rtt);
                } else {
                    off.extend(rtt);
                }
            }
        }
        // The kernel's own accounting of the program, in a round of its own (run-time stats add
        // two clock reads per call, so they stay off during the rounds above).
        s.attach(true)?;
        let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
        let mut c = net::echo_client(addr)?;
        pings(&mut c, 2000)?;
        let before = s.prog()?.info()?;
        pings(&mut c, 20_000)?;
        let after = s.prog()?.info()?;
        drop(stats_fd);
        let calls = after.run_count() - before.run_count();
        let ns = after
            .run_time()
            .saturating_sub(before.run_time())
            .as_nanos() as f64;
        cost.insert(
            name.into(),
            json!({
                "rtt_us_without": summary(&off), "rtt_us_with": summary(&on), "rounds": rounds,
                "program_ns_per_call": slowpoke_stats::round4(ns / calls.max(1) as f64),
                "program_calls_per_round_trip": slowpoke_stats::round4(calls as f64 / 20_000.0),
            }),
        );
    }
    Ok(Value::Object(cost))
}

fn main() -> Result<()> {
    let obj = std::env::args().nth(1).unwrap_or_else(|| OBJ.into());
    let result = run(Path::new(&obj))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

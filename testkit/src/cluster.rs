//! A cluster on one machine: N "nodes", each as separate as Linux allows without virtual
//! machines — a network namespace of its own joined to the others by a bridge, its own cgroup
//! with a cpuset, its own processes — so that multi-node code crosses a real network (veth
//! pairs, a bridge, real addresses) instead of loopback.
//!
//! Layout (every name starts with [`PREFIX`], which is how [`Cluster::clean_leftovers`] finds
//! what an earlier run left, even one that was killed with SIGKILL and never ran its `Drop`):
//! - the bridge [`BRIDGE`] in the root namespace, address [`BRIDGE_ADDR`]/24;
//! - node `i` (1-based): network namespace `spk-n<i>` (`ip netns`, so `/run/netns/spk-n<i>`), its
//!   end of a veth pair named `eth0` with address `10.77.0.<10+i>`/24, `lo` up, a default route
//!   through the bridge; the root end `spk-n<i>h` is a port of the bridge;
//! - node `i`'s cgroup v2 directory `<cgroup2>/spk-cluster/spk-n<i>` with one CPU in its cpuset
//!   (round robin over the online CPUs: more nodes than CPUs share them). On a pure cgroup v2
//!   node the cpuset controller is enabled in `spk-cluster`'s `subtree_control`; on a hybrid node
//!   (cpuset bound to v1, as on our test machines) a v1 directory `<cpuset>/spk-cluster/spk-n<i>`
//!   holds the cpuset and the process joins both;
//! - `spk-n<i>/daemon`, a sub-cgroup for the node's own daemons (its agent): an agent protects
//!   every process of its own cgroup, so it must not sit in the cgroup it is meant to act on.
//!
//! Processes join a node in [`Command::pre_exec`], between fork and exec: `setns` into the
//! node's network namespace, then writing `0` (the caller itself) into the node's
//! `cgroup.procs`. So the program starts already inside, with no window in which it runs outside
//! its cpuset or network. Not `ip netns exec`: it also unshares the mount namespace and remounts
//! `/sys`, which hides `/sys/fs/cgroup` and bpffs from the program — an agent needs both.

use std::{
    io,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use slowpoke_api::cluster::ClusterNode;

use crate::{Proc, cgroup::cgroup2_mount};

/// Every interface, namespace and cgroup of a cluster starts with this.
pub const PREFIX: &str = "spk-";
/// The bridge joining the nodes, in the root network namespace.
pub const BRIDGE: &str = "spk-br0";
/// The bridge's address: the root namespace (load generator, coordinator) as the nodes see it.
pub const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The cgroup directory holding one directory per node (under the cgroup2 root, and under the
/// v1 cpuset root on a hybrid node).
const CGROUP_PARENT: &str = "spk-cluster";
/// Node name prefix: `spk-n1`, `spk-n2`...
const NODE_PREFIX: &str = "spk-n";
/// Addresses 10.77.0.11..=10.77.0.254 leave room for this many nodes.
pub const MAX_NODES: usize = 244;

/// One node of a [`Cluster`].
#[derive(Clone, Debug)]
pub struct Node {
    /// `spk-n<i>`: its network namespace and cgroup directory names.
    pub name: String,
    /// Its address on the bridge (10.77.0.<10+i>).
    pub addr: Ipv4Addr,
    /// Its cpuset (`cpuset.cpus` syntax, e.g. `1`).
    pub cpus: String,
    /// Its cgroup v2 directory: what its processes join (give it to `--allow-cgroup`).
    pub cgroup: PathBuf,
    /// `cgroup/daemon`: the node's own daemons (its agent), inside the node but apart from
    /// what they act on.
    pub daemon_cgroup: PathBuf,
    /// The v1 cpuset directory on a hybrid node (None on pure cgroup v2).
    pub cpuset_v1: Option<PathBuf>,
}

impl Node {
    /// This node in a cluster description (`slowpoke_api::cluster`, what `--cluster FILE` reads):
    /// its address, the agent at `agent_url` with its `token_file`, and how a process enters it
    /// (network namespace, cgroups, cpus).
    pub fn describe(&self, agent_url: &str, token_file: Option<PathBuf>) -> ClusterNode {
        ClusterNode {
            name: self.name.clone(),
            address: self.addr.into(),
            agent: agent_url.to_owned(),
            token_file,
            netns: Some(self.name.clone()),
            cgroups: std::iter::once(self.cgroup.clone())
                .chain(self.cpuset_v1.clone())
                .collect(),
            cpus: Some(self.cpus.clone()),
        }
    }
}

/// Where a spawned process goes inside its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The node's cgroup: services, what an agent may act on.
    Work,
    /// The node's `daemon` sub-cgroup: its agent.
    Daemon,
}

/// N nodes on this machine (see the module doc). Drop and [`Cluster::down`] remove everything
/// it made and kill every process left in its nodes; [`Cluster::keep`] leaves it up.
pub struct Cluster {
    nodes: Vec<Node>,
    armed: bool,
}

/// How cpusets are set on this machine.
enum Cpusets {
    /// Pure cgroup v2 (or at least cpuset available there): the controller in the v2 tree.
    V2,
    /// Hybrid: the cpuset controller is bound to the v1 hierarchy mounted here.
    V1(PathBuf),
}

impl Cluster {
    /// Brings up `n` nodes (needs root), removing the leftovers of an earlier run first.
    /// Panics with what went wrong; [`Cluster::try_up`] returns it.
    pub fn up(n: usize) -> Cluster {
        Cluster::try_up(n).unwrap_or_else(|e| panic!("bringing up a {n}-node cluster: {e}"))
    }

    /// Like [`Cluster::up`], with the error returned. On an error nothing is left behind.
    pub fn try_up(n: usize) -> io::Result<Cluster> {
        if !(1..=MAX_NODES).contains(&n) {
            return Err(io::Error::other(format!(
                "{n} nodes: give 1 to {MAX_NODES} (one 10.77.0.0/24 address each)"
            )));
        }
        Cluster::clean_leftovers()?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            armed: true,
        };
        // On an error `cluster` drops here and removes what was made so far.
        let cpusets = prepare_cgroup_parent()?;
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{BRIDGE_ADDR}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        let cpus = online_cpus()?;
        for i in 1..=n {
            let node = add_node(i, &cpus[(i - 1) % cpus.len()].to_string(), &cpusets)?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `i`, 1-based like the names (`spk-n1` is `node(1)`).
    pub fn node(&self, i: usize) -> &Node {
        i.checked_sub(1)
            .and_then(|k| self.nodes.get(k))
            .unwrap_or_else(|| panic!("no node {i}: this cluster has 1..={}", self.nodes.len()))
    }

    /// Starts `cmd` inside node `i` (its network namespace and cgroup, so its cpuset) with
    /// stdin, stdout and stderr as `cmd` sets them. The process is killed when the returned
    /// [`Proc`] drops, and anyway when the cluster goes down.
    pub fn spawn(&self, i: usize, cmd: &mut Command) -> Proc {
        self.spawn_at(i, Place::Work, cmd)
    }

    /// Like [`Cluster::spawn`], in the node's daemon sub-cgroup: for its agent.
    pub fn spawn_daemon(&self, i: usize, cmd: &mut Command) -> Proc {
        self.spawn_at(i, Place::Daemon, cmd)
    }

    fn spawn_at(&self, i: usize, place: Place, cmd: &mut Command) -> Proc {
        let child = spawn_in(self.node(i), place, cmd)
            .unwrap_or_else(|e| panic!("starting {cmd:?} in node {i}: {e}"));
        Proc {
            child,
            port: 0,
            home: None,
        }
    }

    /// Leaves the cluster up when this value goes away (for `cargo xtask cluster up`); remove it
    /// later with [`Cluster::clean_leftovers`].
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// Stops every process in the nodes and removes the namespaces, links and cgroups.
    pub fn down(mut self) -> io::Result<()> {
        self.armed = false;
        Cluster::clean_leftovers().map(|_| ())
    }

    /// Removes everything named with [`PREFIX`] that a cluster makes — processes in its cgroups
    /// and namespaces (SIGCONT, then SIGKILL), network namespaces, links, cgroup directories —
    /// whoever made it, even a run killed with SIGKILL. Returns what it removed.
    pub fn clean_leftovers() -> io::Result<Vec<String>> {
        let mut removed = Vec::new();
        let trees = cgroup_trees();
        let namespaces: Vec<String> = list_netns()?
            .into_iter()
            .filter(|n| n.starts_with(NODE_PREFIX))
            .collect();
        // Processes first: an occupied cgroup cannot be removed, and a namespace holds on to its
        // veth while a process is still inside.
        kill_until_gone(&trees, &namespaces)?;
        for ns in &namespaces {
            ip(&["netns", "delete", ns])?;
            removed.push(format!("network namespace {ns}"));
        }
        for link in list_links()? {
            if link.starts_with(PREFIX) {
                // A veth's root end disappears with its namespace, maybe before this runs.
                match ip(&["link", "delete", &link]) {
                    Ok(()) => removed.push(format!("link {link}")),
                    Err(_) if !list_links()?.contains(&link) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for tree in &trees {
            for dir in cgroup_dirs(tree).iter().rev() {
                remove_cgroup(dir)?;
                removed.push(format!("cgroup {}", dir.display()));
            }
        }
        Ok(removed)
    }

    /// The processes (pids) in node cgroups left by any run: what [`Cluster::clean_leftovers`]
    /// would kill. `place` chooses the daemons' sub-cgroups or everything else.
    pub fn leftover_pids(place: Place) -> Vec<u32> {
        let Some(root) = cgroup2_mount() else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        for dir in cgroup_dirs(&root.join(CGROUP_PARENT)) {
            if (dir.file_name() == Some("daemon".as_ref())) == (place == Place::Daemon) {
                pids.extend(cgroup_procs(&dir));
            }
        }
        pids
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = Cluster::clean_leftovers()
        {
            eprintln!("warning: removing the cluster: {e} (run `cargo xtask cluster down`)");
        }
    }
}

/// Starts `cmd` inside `node` at `place` (see the module doc for how it joins). The caller owns
/// the child.
pub fn spawn_in(node: &Node, place: Place, cmd: &mut Command) -> io::Result<Child> {
    let netns = std::fs::File::open(Path::new("/run/netns").join(&node.name))
        .map_err(|e| io::Error::other(format!("opening node {}'s namespace: {e}", node.name)))?;
    let dir = match place {
        Place::Work => &node.cgroup,
        Place::Daemon => &node.daemon_cgroup,
    };
    let mut procs = vec![open_procs(dir)?];
    if let Some(v1) = &node.cpuset_v1 {
        procs.push(open_procs(v1)?);
    }
    let net_fd = netns.as_raw_fd();
    let proc_fds: Vec<i32> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: between fork and exec the closure only makes system calls (setns, write) on file
    // descriptors opened above, which stay open until spawn returns; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(net_fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            for &fd in &proc_fds {
                // "0": the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop((netns, procs));
    child
}

fn open_procs(dir: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| io::Error::other(format!("opening {}/cgroup.procs: {e}", dir.display())))
}

/// Runs `ip ARGS`, its stderr in the error.
fn ip(args: &[&str]) -> io::Result<()> {
    ip_output(args).map(|_| ())
}

fn ip_output(args: &[&str]) -> io::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::other(format!("running ip (install iproute2): {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`ip {}` failed ({}): {} (run as root)",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn list_netns() -> io::Result<Vec<String>> {
    // Lines like `spk-n1 (id: 0)` or just `spk-n1`.
    Ok(ip_output(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

fn list_links() -> io::Result<Vec<String>> {
    // Lines like `7: spk-n1h@if2: <BROADCAST,...> ...`.
    Ok(ip_output(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}

fn add_node(i: usize, cpus: &str, cpusets: &Cpusets) -> io::Result<Node> {
    let name = format!("{NODE_PREFIX}{i}");
    let addr = Ipv4Addr::new(10, 77, 0, u8::try_from(10 + i).expect("at most MAX_NODES"));
    let host_end = format!("{name}h");
    ip(&["netns", "add", &name])?;
    ip(&[
        "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
    ])?;
    ip(&["link", "set", &host_end, "master", BRIDGE, "up"])?;
    ip(&[
        "-n",
        &name,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &name, "link", "set", "eth0", "up"])?;
    ip(&["-n", &name, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        &name,
        "route",
        "add",
        "default",
        "via",
        &BRIDGE_ADDR.to_string(),
    ])?;

    let v2 = cgroup2_root()?.join(CGROUP_PARENT).join(&name);
    make_dir(&v2)?;
    make_dir(&v2.join("daemon"))?;
    let cpuset_v1 = match cpusets {
        Cpusets::V2 => {
            write(&v2.join("cpuset.cpus"), cpus)?;
            None
        }
        Cpusets::V1(root) => {
            let dir = root.join(CGROUP_PARENT).join(&name);
            make_dir(&dir)?;
            // A v1 cpuset takes no process before both its CPUs and memory nodes are set.
            write(&dir.join("cpuset.cpus"), cpus)?;
            write(&dir.join("cpuset.mems"), &read(&root.join("cpuset.mems"))?)?;
            Some(dir)
        }
    };
    Ok(Node {
        name,
        addr,
        cpus: cpus.to_owned(),
        daemon_cgroup: v2.join("daemon"),
        cgroup: v2,
        cpuset_v1,
    })
}

/// Creates `spk-cluster` and makes cpusets available in it: in the v2 tree when the v2 root
/// offers the controller, else in the v1 cpuset hierarchy.
fn prepare_cgroup_parent() -> io::Result<Cpusets> {
    let root = cgroup2_root()?;
    let parent = root.join(CGROUP_PARENT);
    make_dir(&parent)?;
    let v2_has_cpuset = read(&root.join("cgroup.controllers"))?
        .split_whitespace()
        .any(|c| c == "cpuset");
    if v2_has_cpuset {
        write(&root.join("cgroup.subtree_control"), "+cpuset")?;
        write(&parent.join("cgroup.subtree_control"), "+cpuset")?;
        return Ok(Cpusets::V2);
    }
    let v1 = cpuset_v1_mount().ok_or_else(|| {
        io::Error::other(
            "no cpuset controller: neither in cgroup v2's cgroup.controllers nor a v1 cpuset \
             mount in /proc/mounts (mount one, or boot with cgroup v2)",
        )
    })?;
    let dir = v1.join(CGROUP_PARENT);
    make_dir(&dir)?;
    write(&dir.join("cpuset.cpus"), &read(&v1.join("cpuset.cpus"))?)?;
    write(&dir.join("cpuset.mems"), &read(&v1.join("cpuset.mems"))?)?;
    Ok(Cpusets::V1(v1))
}

fn cgroup2_root() -> io::Result<PathBuf> {
    cgroup2_mount().ok_or_else(|| {
        io::Error::other("no cgroup2 mount in /proc/mounts: mount cgroup2 (the agent needs it too)")
    })
}

/// Where the v1 cpuset controller is mounted, if it is.
fn cpuset_v1_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.get(2) == Some(&"cgroup")
                && f.get(3)
                    .is_some_and(|o| o.split(',').any(|o| o == "cpuset"))
        })
        .map(|f| PathBuf::from(f[1]))
}

/// `spk-cluster` in every hierarchy a cluster may use (those that exist).
fn cgroup_trees() -> Vec<PathBuf> {
    cgroup2_mount()
        .into_iter()
        .chain(cpuset_v1_mount())
        .map(|root| root.join(CGROUP_PARENT))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// `top` and every cgroup directory below it, parents first (empty when `top` does not exist).
fn cgroup_dirs(top: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if !top.join("cgroup.procs").exists() {
        return dirs;
    }
    let mut next = vec![top.to_path_buf()];
    while let Some(dir) = next.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        dirs.push(dir);
    }
    // Parents before children: sort by depth.
    dirs.sort_by_key(|d| d.components().count());
    dirs
}

fn cgroup_procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills (SIGCONT, then SIGKILL: a stopped process is continued first, as everywhere in this
/// kit) every process in the cgroup trees and network namespaces, again until none is left:
/// a process may fork while it is being killed.
fn kill_until_gone(trees: &[PathBuf], namespaces: &[String]) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut pids: Vec<u32> = trees
            .iter()
            .flat_map(|t| cgroup_dirs(t))
            .flat_map(|d| cgroup_procs(&d))
            .collect();
        for ns in namespaces {
            // `ip netns pids` lists every process whose network namespace is this one.
            if let Ok(out) = ip_output(&["netns", "pids", ns]) {
                pids.extend(out.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
        }
        // A zombie has left its cgroup already; one in a namespace waits for its parent.
        pids.retain(|&p| !matches!(crate::proc_state(p), None | Some('Z')));
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "processes {pids:?} in the cluster survive SIGKILL (in D state?): retry later"
            )));
        }
        for pid in pids {
            let Ok(pid) = i32::try_from(pid) else {
                continue;
            };
            // SAFETY: kill(2) on processes inside the cluster's cgroups and namespaces.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// rmdir of an empty cgroup, retried briefly: the kernel may still count a process that has
/// just died as a member.
fn remove_cgroup(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(io::Error::other(format!(
                    "removing cgroup {}: {e} (is a process still in it? see its cgroup.procs)",
                    dir.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn online_cpus() -> io::Result<Vec<u32>> {
    parse_cpu_list(&read(Path::new("/sys/devices/system/cpu/online"))?)
}

/// `0-2,5` -> [0, 1, 2, 5] (`slowpoke_api::cluster::parse_cpu_list`).
fn parse_cpu_list(text: &str) -> io::Result<Vec<u32>> {
    slowpoke_api::cluster::parse_cpu_list(text).map_err(io::Error::other)
}

fn make_dir(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::other(format!(
            "creating cgroup {}: {e} (run as root)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| io::Error::other(format!("reading {}: {e}", path.display())))
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
        .map_err(|e| io::Error::other(format!("writing {text:?} to {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_expand_ranges() {
        assert_eq!(parse_cpu_list("0-2,5\n").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }
}

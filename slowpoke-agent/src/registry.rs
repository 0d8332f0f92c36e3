//! Services and how they are found: a selector resolves to processes (re-resolved periodically,
//! so new workers join and dead ones leave), their listening ports, their usable CPUs and their
//! CPU time.

pub mod listeners;
pub mod pods;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

pub use self::{listeners::Listeners, pods::PodSelector};
use crate::{
    api::{ExcludedProcess, ServiceSpec},
    error::AgentError,
    sys::procfs,
};

/// The longest service name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Service names are path segments and label values: `[A-Za-z0-9._-]{1,64}`.
pub fn validate_name(name: &str) -> Result<(), AgentError> {
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(AgentError::BadRequest(format!(
            "invalid service name {name:?}: use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

/// One way of finding a service's processes.
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    Pids(Vec<u32>),
    Ports(Vec<u16>),
    Cgroup(PathBuf),
    Comm(String),
    /// Kubernetes pods (by UID) in the kubelet's cgroups; see [`pods`].
    Pods(PodSelector),
}

/// The processes no selector may reach (the agent's protection rules, `safety::protect`),
/// asked at every resolution so that a protected process never becomes a member.
pub trait Guard {
    /// Why `pid` may never be a member, or `None` when it may.
    fn refuse(&self, pid: u32) -> Option<String>;
    /// Whether the kernel may count every process of the cgroup directory `dir` as a member
    /// (before the next resolution has checked a newcomer).
    fn may_track_cgroup(&self, dir: &Path) -> bool;
}

/// No protection at all: for tests of the registry alone.
pub struct Unguarded;

impl Guard for Unguarded {
    fn refuse(&self, _pid: u32) -> Option<String> {
        None
    }
    fn may_track_cgroup(&self, _dir: &Path) -> bool {
        true
    }
}

/// What a selector resolves to right now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Thread-group ids, sorted.
    pub pids: Vec<u32>,
    /// Processes matched but protected (never members), with the reason.
    pub excluded: Vec<ExcludedProcess>,
    /// cgroup v2 ids (cgroup selector on a v2 path only) of the directories the kernel may count
    /// as a whole: none that holds a protected process or that the guard keeps for itself.
    pub cgroup_ids: Vec<u64>,
    /// Listening TCP ports whose receives are the service's visits.
    pub listen_ports: Vec<u16>,
    /// The processes' other listening ports (admin, control): server side, not visits.
    pub other_ports: Vec<u16>,
}

const SELECTOR_HELP: &str = "give exactly one of {\"ports\":[8080]}, {\"pids\":[123]}, \
                             {\"cgroup\":\"/sys/fs/cgroup/...\"}, {\"comm\":\"nginx\"}, \
                             {\"pods\":[{\"uid\":\"...\",\"name\":\"ns/pod\"}]} (with \
                             \"ports\" or without)";

impl Selector {
    /// Checks a spec: exactly one non-empty selector, a sane `cores` override. `pod_roots`:
    /// where a `pods` selector looks for the kubelet's cgroups (empty: the cgroup mounts).
    pub fn from_spec(spec: &ServiceSpec, pod_roots: &[PathBuf]) -> Result<Selector, AgentError> {
        if let Some(k) = &spec.kubernetes {
            return Err(AgentError::BadRequest(format!(
                "`{}` is a pod or label selector: the coordinator resolves it through the \
                 Kubernetes API (slowpoke what-if, POST /v1/experiments) and gives each agent \
                 \"pods\" (UIDs and container ids); an agent never reads the Kubernetes API",
                k.display()
            )));
        }
        // `ports` with `pods` means the ports inside the pods: one selector, not two.
        let given = usize::from(spec.ports.is_some() && spec.pods.is_none())
            + usize::from(spec.pids.is_some())
            + usize::from(spec.cgroup.is_some())
            + usize::from(spec.comm.is_some())
            + usize::from(spec.pods.is_some());
        if given != 1 {
            return Err(AgentError::BadRequest(format!(
                "{} selectors given: {SELECTOR_HELP}",
                if given == 0 { "no" } else { "more than one" }
            )));
        }
        if let Some(c) = spec.cores
            && !(c.is_finite() && c > 0.0)
        {
            return Err(AgentError::BadRequest(format!(
                "\"cores\" must be a positive number, got {c}"
            )));
        }
        if let Some(p) = &spec.listen_ports
            && p.contains(&0)
        {
            return Err(AgentError::BadRequest(
                "\"listen_ports\" must not contain port 0".into(),
            ));
        }
        let sel = if let Some(pods) = &spec.pods {
            if spec
                .ports
                .as_ref()
                .is_some_and(|p| p.is_empty() || p.contains(&0))
            {
                return Err(AgentError::BadRequest(
                    "\"ports\" must list at least one port, none of them 0".into(),
                ));
            }
            Selector::Pods(PodSelector {
                pods: pods::check(pods, spec.may_be_absent)?,
                ports: spec.ports.clone(),
                roots: if pod_roots.is_empty() {
                    pods::default_roots()
                } else {
                    pod_roots.to_vec()
                },
            })
        } else if let Some(p) = &spec.ports {
            if p.is_empty() || p.contains(&0) {
                return Err(AgentError::BadRequest(
                    "\"ports\" must list at least one port, none of them 0".into(),
                ));
            }
            Selector::Ports(p.clone())
        } else if let Some(p) = &spec.pids {
            if p.is_empty() || p.contains(&0) {
                return Err(AgentError::BadRequest(
                    "\"pids\" must list at least one process id, none of them 0".into(),
                ));
            }
            Selector::Pids(p.clone())
        } else if let Some(c) = &spec.cgroup {
            if !c.starts_with('/') || c.split('/').any(|s| s == "..") {
                return Err(AgentError::BadRequest(format!(
                    "\"cgroup\" must be an absolute path without '..', e.g. /sys/fs/cgroup/unified/my.slice, got {c:?}"
                )));
            }
            Selector::Cgroup(PathBuf::from(c))
        } else {
            let c = spec.comm.clone().unwrap_or_default();
            if c.is_empty() || c.contains('/') || c.contains('\n') {
                return Err(AgentError::BadRequest(
                    "\"comm\" must be a non-empty process name as in /proc/PID/comm".into(),
                ));
            }
            Selector::Comm(c)
        };
        Ok(sel)
    }

    /// Pid selectors name processes, not threads: refuses a thread id (its `/proc/TID` exists
    /// too) naming the process it belongs to. Checked at registration; later passes skip what
    /// became a thread id.
    pub fn check_process_ids(&self) -> Result<(), AgentError> {
        let Selector::Pids(pids) = self else {
            return Ok(());
        };
        for &p in pids {
            if let Some(st) = procfs::status(p)
                && st.tgid != p
            {
                let comm = procfs::comm(st.tgid).unwrap_or_default();
                return Err(AgentError::BadRequest(format!(
                    "{p} is a thread of process {} ({comm}), not a process: \"pids\" takes \
                     process ids (thread-group ids); give {} to select that process",
                    st.tgid, st.tgid
                )));
            }
        }
        Ok(())
    }

    /// Resolves to processes now. Every candidate goes past `guard`: the ones it refuses are
    /// listed in `excluded`, never in `pids`. Errors say why nothing could be read.
    /// `index`: the resolver's [`Listeners`], refreshed for this pass (`None`: read every
    /// process's descriptors, as a registration does).
    pub fn resolve(
        &self,
        listen_ports: Option<&[u16]>,
        guard: &dyn Guard,
        index: Option<&Listeners>,
    ) -> Result<Resolved, AgentError> {
        let ports_of = |pids: &[u32]| match index {
            Some(l) => l.ports_of(pids),
            None => procfs::listen_ports_of(pids),
        };
        // (directory, its processes) of a cgroup v2 selector: its id goes to the kernel only if
        // none of them is refused.
        let mut v2_dirs: Vec<(PathBuf, BTreeSet<u32>)> = Vec::new();
        let candidates: BTreeSet<u32> = match self {
            Selector::Pids(p) => p
                .iter()
                .copied()
                .filter(|&p| procfs::status(p).is_some_and(|s| s.tgid == p))
                .collect(),
            Selector::Ports(ports) => match index {
                Some(l) => l.owners(ports),
                None => procfs::pids_listening_on(ports),
            },
            Selector::Cgroup(dir) => {
                std::fs::metadata(dir.join("cgroup.procs")).map_err(|e| {
                    AgentError::BadRequest(format!(
                        "cgroup {} is not readable ({e}): give the absolute path of a cgroup directory",
                        dir.display()
                    ))
                })?;
                cgroup_members(std::slice::from_ref(dir), &mut v2_dirs)
            }
            Selector::Pods(sel) => {
                let (dirs, _missing) = pods::dirs(sel);
                let all = cgroup_members(&dirs, &mut v2_dirs);
                match &sel.ports {
                    None => all,
                    Some(ports) => {
                        // Only the processes listening there, so the kernel may not count
                        // their cgroups as a whole.
                        v2_dirs.clear();
                        let all: Vec<u32> = all.into_iter().collect();
                        procfs::listening_ports_by_pid(&all)
                            .into_iter()
                            .filter(|(_, port)| ports.contains(port))
                            .map(|(pid, _)| pid)
                            .collect()
                    }
                }
            }
            Selector::Comm(c) => {
                // The kernel truncates comm to 15 bytes.
                let want: &str = match c.char_indices().nth(15) {
                    Some((i, _)) => &c[..i],
                    None => c,
                };
                procfs::all_pids()
                    .into_iter()
                    .filter(|&p| procfs::comm(p).is_some_and(|n| n == want))
                    .collect()
            }
        };
        let mut pids = Vec::new();
        let mut excluded = Vec::new();
        for pid in candidates {
            match guard.refuse(pid) {
                None => pids.push(pid),
                Some(reason) => excluded.push(ExcludedProcess {
                    pid,
                    comm: procfs::comm(pid).unwrap_or_default(),
                    reason,
                }),
            }
        }
        let cgroup_ids = v2_dirs
            .iter()
            .filter(|(d, procs)| {
                guard.may_track_cgroup(d) && !excluded.iter().any(|e| procs.contains(&e.pid))
            })
            .filter_map(|(d, _)| procfs::cgroup_id(d))
            .collect();
        let listen_ports_given = listen_ports.is_some();
        let listen_ports = match (listen_ports, self) {
            (Some(p), _) => p.to_vec(),
            (None, Selector::Ports(p) | Selector::Pods(PodSelector { ports: Some(p), .. })) => {
                let mut p = p.clone();
                p.sort_unstable();
                p.dedup();
                p
            }
            (None, _) => ports_of(&pids),
        };
        // Given ports name the visit ports; whatever else the processes listen on is theirs too
        // (its traffic must not look like outgoing calls to an unregistered dependency).
        // (Discovered visit ports are already all of them.)
        let by_port = matches!(
            self,
            Selector::Ports(_) | Selector::Pods(PodSelector { ports: Some(_), .. })
        );
        let other_ports = if listen_ports_given || by_port {
            ports_of(&pids)
                .into_iter()
                .filter(|p| !listen_ports.contains(p))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Resolved {
            pids,
            excluded,
            cgroup_ids,
            listen_ports,
            other_ports,
        })
    }

    /// Why an empty resolution is an error for a new registration: nothing matched (400), or
    /// only protected processes did (403, naming them).
    pub fn nothing_matched(&self, excluded: &[ExcludedProcess]) -> AgentError {
        const NAMED: usize = 8;
        if !excluded.is_empty() {
            let mut named: Vec<String> = excluded
                .iter()
                .take(NAMED)
                .map(|e| format!("{} ({}): {}", e.pid, e.comm, e.reason))
                .collect();
            if excluded.len() > NAMED {
                named.push(format!("and {} more", excluded.len() - NAMED));
            }
            return AgentError::Forbidden(format!(
                "the selector matches only processes the agent never stops: {}; select the \
                 service's own processes (see docs/agent.md, \"Protected processes\")",
                named.join("; ")
            ));
        }
        let what = match self {
            Selector::Pids(p) => format!("none of the processes {p:?} exists"),
            Selector::Ports(p) => format!("no process listens on TCP port(s) {p:?}"),
            Selector::Cgroup(c) => format!("cgroup {} has no processes", c.display()),
            Selector::Comm(c) => format!("no process is named {c:?} (see /proc/PID/comm)"),
            Selector::Pods(sel) => {
                let names: Vec<&str> = sel.pods.iter().map(|p| p.name.as_str()).collect();
                match &sel.ports {
                    Some(p) => format!(
                        "no process of pod(s) {names:?} listens on TCP port(s) {p:?} in its \
                         network namespace"
                    ),
                    None => format!("pod(s) {names:?} have no processes"),
                }
            }
        };
        AgentError::BadRequest(format!(
            "selector matches no process: {what}; start the service first"
        ))
    }
}

/// Every process of the cgroup directories `dirs` and their descendants; the v2 directories
/// and their own processes are added to `v2_dirs` (their ids may go to the kernel).
fn cgroup_members(dirs: &[PathBuf], v2_dirs: &mut Vec<(PathBuf, BTreeSet<u32>)>) -> BTreeSet<u32> {
    let mut all = BTreeSet::new();
    for dir in dirs {
        let v2 = procfs::is_cgroup2(dir);
        for d in procfs::cgroup_tree(dir) {
            let procs = procfs::cgroup_procs(&d);
            all.extend(&procs);
            if v2 {
                v2_dirs.push((d, procs));
            }
        }
    }
    all
}

/// A sum of per-key counters (per process or per thread) kept monotonic when keys go away: the
/// last value read of a key that left is kept, and a reused key never makes the sum go back.
#[derive(Debug, Default)]
struct MonotonicSum {
    live: BTreeMap<u32, u64>,
    departed: u64,
    reported: u64,
}

impl MonotonicSum {
    /// Takes this pass's readings (`None`: the key is still there but could not be read: keep
    /// its last value) and returns the total.
    fn update(&mut self, readings: impl IntoIterator<Item = (u32, Option<u64>)>) -> u64 {
        let mut now = BTreeMap::new();
        for (k, v) in readings {
            let last = self.live.get(&k).copied().unwrap_or(0);
            now.insert(k, v.unwrap_or(last).max(last));
        }
        for (k, v) in &self.live {
            if !now.contains_key(k) {
                self.departed += v;
            }
        }
        self.live = now;
        let total = self.departed + self.live.values().sum::<u64>();
        self.reported = self.reported.max(total);
        self.reported
    }
}

/// CPU time of a service, kept monotonic when its processes exit.
#[derive(Debug, Default)]
pub struct CpuAccount(MonotonicSum);

impl CpuAccount {
    /// Reads the CPU time of `pids` and returns the service total (monotonic).
    pub fn update(&mut self, pids: &[u32]) -> u64 {
        let tick = procfs::ns_per_tick();
        self.0.update(
            pids.iter()
                .map(|&p| (p, procfs::stat(p).map(|s| s.cpu_ticks * tick))),
        )
    }
}

/// A service's scheduler statistics summed over every thread of its processes, each kept
/// monotonic when threads exit; 0 on kernels without them (`/proc/PID/task/TID/schedstat`
/// missing).
#[derive(Debug, Default)]
pub struct SchedAccount {
    wait: MonotonicSum,
    timeslices: MonotonicSum,
}

/// [`SchedAccount`]'s totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedTotals {
    /// Time runnable but waiting for a CPU (the scheduler's `run_delay`), ns.
    pub wait_ns: u64,
    /// Timeslices on a CPU (mostly one per wake-up).
    pub timeslices: u64,
}

impl SchedAccount {
    /// Reads the statistics of every thread of `pids` and returns the service's totals.
    pub fn update(&mut self, pids: &[u32]) -> SchedTotals {
        let mut threads = Vec::new();
        for &p in pids {
            procfs::thread_schedstats(p, &mut threads);
        }
        SchedTotals {
            wait_ns: self
                .wait
                .update(threads.iter().map(|(t, s)| (*t, Some(s.wait_ns)))),
            timeslices: self
                .timeslices
                .update(threads.iter().map(|(t, s)| (*t, Some(s.timeslices)))),
        }
    }
}

/// CPUs the service may use: the union of its threads' affinities (cpuset included), capped by
/// the tightest CPU quota of its processes' cgroups (v1 and v2).
pub fn usable_cpus(pids: &[u32]) -> f64 {
    let mut cpus = BTreeSet::new();
    let mut quota: Option<f64> = None;
    for &p in pids {
        for t in procfs::threads(p) {
            if let Some(set) = procfs::affinity(t) {
                cpus.extend(set);
            }
        }
        if let Some(q) = procfs::cpu_quota(p) {
            quota = Some(quota.map_or(q, |b: f64| b.min(q)));
        }
    }
    let n = if cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        cpus.len()
    };
    let n = n as f64;
    quota.map_or(n, |q| n.min(q))
}

/// Threads of the service in total.
pub fn thread_count(pids: &[u32]) -> usize {
    pids.iter().map(|&p| procfs::threads(p).len()).sum()
}

/// Effective parallelism: min(usable CPUs, threads that can serve at once). `serving`: threads
/// seen doing socket work recently (0 = unknown: all threads count).
pub fn effective_cores(usable: f64, serving: usize, threads: usize) -> f64 {
    let servers = if serving > 0 { serving } else { threads.max(1) };
    usable.min(servers as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_selector() {
        let none = ServiceSpec::default();
        assert!(matches!(
            Selector::from_spec(&none, &[]),
            Err(AgentError::BadRequest(_))
        ));
        let two = ServiceSpec {
            ports: Some(vec![80]),
            comm: Some("nginx".into()),
            ..Default::default()
        };
        assert!(matches!(
            Selector::from_spec(&two, &[]),
            Err(AgentError::BadRequest(_))
        ));
        let empty = ServiceSpec {
            pids: Some(vec![]),
            ..Default::default()
        };
        assert!(matches!(
            Selector::from_spec(&empty, &[]),
            Err(AgentError::BadRequest(_))
        ));
        let ok = ServiceSpec {
            comm: Some("nginx".into()),
            ..Default::default()
        };
        assert_eq!(
            Selector::from_spec(&ok, &[]).expect("valid"),
            Selector::Comm("nginx".into())
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("cart-1.v2_x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
    }

    #[test]
    fn cores_rule() {
        assert!((effective_cores(2.0, 1, 8) - 1.0).abs() < 1e-9);
        assert!((effective_cores(2.0, 0, 8) - 2.0).abs() < 1e-9);
        assert!((effective_cores(0.5, 4, 8) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn own_process_resolves_by_pid_and_comm() {
        let me = std::process::id();
        let r = Selector::Pids(vec![me])
            .resolve(None, &Unguarded, None)
            .expect("resolves");
        assert_eq!(r.pids, vec![me]);
        let comm = procfs::comm(me).expect("comm");
        let r = Selector::Comm(comm)
            .resolve(None, &Unguarded, None)
            .expect("resolves");
        assert!(r.pids.contains(&me));
        let mut cpu = CpuAccount::default();
        let a = cpu.update(&[me]);
        let b = cpu.update(&[]);
        assert_eq!(a, b, "cpu time of a departed process is kept");
        let mut sched = SchedAccount::default();
        let a = sched.update(&[me]);
        assert!(a.timeslices > 0, "this test's threads ran");
        let b = sched.update(&[]);
        assert_eq!(a, b, "wait and timeslices of departed threads are kept");
    }

    #[test]
    fn monotonic_sum_keeps_departed_and_unreadable_keys() {
        let mut m = MonotonicSum::default();
        assert_eq!(m.update([(1, Some(10)), (2, Some(5))]), 15);
        // Key 2 unreadable this pass: its last value stays.
        assert_eq!(m.update([(1, Some(12)), (2, None)]), 17);
        // Key 1 left: its 12 are kept; key 2 reused with a smaller value never goes back.
        assert_eq!(m.update([(2, Some(1)), (3, Some(4))]), 21);
        assert_eq!(m.update([]), 21);
    }
}

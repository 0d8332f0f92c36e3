//! Protected processes: who the agent never stops, whatever a selector says.
//!
//! A root daemon that stops processes must not be usable to freeze the node itself (pid 1, the
//! kernel's threads, the way in — sshd — and the container runtime), nor to freeze itself (a
//! stopped agent resumes nobody). The rules, stated once here and applied twice:
//!
//! - at every resolution of a selector (the registry asks [`Protection::why`] about every
//!   candidate, on every pass, so a protected newcomer never joins): protected processes are left
//!   out and listed with the reason, and a selector that finds nothing else is refused;
//! - in the kernel, right before every in-kernel stop (the agent fills the deny maps with
//!   [`Protection::kernel_pids`], [`Protection::kernel_cgroups`] and the processes left out).
//!
//! What is protected: pid 1; kernel threads (`PF_KTHREAD`); the agent and its guardian, and every
//! process in their cgroup v2 subtree (in a container that is the agent's container; the root
//! cgroup is never protected as a whole: it holds every process); processes whose name matches
//! the deny list ([`DEFAULT_PROTECTED_COMMS`], replaced by `--protect-comm`). Optionally the agent
//! is confined to one tenant: only processes of the allowed uids (`--allow-uid`), only processes
//! inside the allowed cgroups (`--allow-cgroup`).
//!
//! Nothing here knows about services or the kernel maps: it reads `/proc` and answers "may this
//! process be stopped, and if not, why".

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use crate::sys::procfs;

/// Why a process outside the `--allow-cgroup` directories is not a member. On a node of a
/// cluster sharing one kernel those are the other nodes' processes: a service registered with
/// `may_be_absent` that matches only such processes is absent here, not refused.
pub const OUTSIDE_ALLOWED_CGROUPS: &str = "outside the cgroups allowed by --allow-cgroup";

/// Process names (`/proc/PID/comm`, `*` matches any run of characters) the agent never stops
/// unless `--protect-comm` replaces the list: the node's init and its core daemons, the ways in
/// (a frozen sshd or getty locks the operator out), the message bus systemd needs, the container
/// runtime and the kubelet (a frozen runtime takes every pod with it, and a frozen kubelet gets
/// the node marked `NotReady` and its pods evicted), the Kubernetes control plane of a
/// control-plane node, and Slowpoke itself (another agent, a guardian, a coordinator renewing
/// its plan's lease).
pub const DEFAULT_PROTECTED_COMMS: &[&str] = &[
    "init",
    "systemd",
    "systemd-*",
    "sshd*",
    "agetty",
    "getty",
    "login",
    "dbus-*",
    "kubelet",
    "containerd",
    "containerd-shim*",
    "dockerd",
    "crio",
    "conmon",
    "runc",
    "etcd",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller-manager",
    "kube-proxy",
    "slowpoke-agent",
    "slowpoke-guard",
    "slowpoke",
];

/// The kernel truncates `comm` to this many bytes (`TASK_COMM_LEN` − 1).
const COMM_LEN: usize = 15;

/// The operator's protection rules (`AgentConfig::protect`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectRules {
    /// Names never stopped (`*` wildcards; matched against the 15-byte `comm`).
    pub comms: Vec<String>,
    /// When not empty: only processes whose real, effective, saved and filesystem uids are all
    /// listed may be members.
    pub allow_uids: Vec<u32>,
    /// When not empty: only processes inside one of these cgroup directories (v1 or v2,
    /// descendants included) may be members.
    pub allow_cgroups: Vec<PathBuf>,
    /// Protect every process in the agent's (and guardian's) cgroup v2 subtree (default true).
    /// Turn it off only for a process that embeds the agent and starts, in its own cgroup, the
    /// services it measures; the agent and guardian themselves stay protected.
    pub own_cgroup: bool,
}

impl Default for ProtectRules {
    fn default() -> Self {
        ProtectRules {
            comms: DEFAULT_PROTECTED_COMMS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            allow_uids: Vec::new(),
            allow_cgroups: Vec::new(),
            own_cgroup: true,
        }
    }
}

impl ProtectRules {
    /// Refuses rules that cannot work, saying which flag to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self
            .comms
            .iter()
            .find(|c| c.is_empty() || c.contains('/') || c.contains('\n') || *c == "*")
        {
            return Err(format!(
                "--protect-comm {bad:?}: give a process name as in /proc/PID/comm (a `*` matches \
                 any run of characters; `*` alone would protect everything)"
            ));
        }
        for dir in &self.allow_cgroups {
            if !dir.is_absolute() || !dir.join("cgroup.procs").exists() {
                return Err(format!(
                    "--allow-cgroup {}: not a cgroup directory (no cgroup.procs); give the \
                     absolute path of one, e.g. /sys/fs/cgroup/tenant.slice",
                    dir.display()
                ));
            }
        }
        Ok(())
    }
}

/// Whether `comm` matches `pattern` (`*` matches any run of characters, so `systemd-*` matches
/// `systemd-journal`). A pattern longer than the kernel keeps is truncated like `comm` is:
/// `kube-controller-manager` matches the `kube-controller` the kernel shows.
pub fn comm_matches(pattern: &str, comm: &str) -> bool {
    let pattern = if pattern.contains('*') {
        pattern
    } else {
        truncate_comm(pattern)
    };
    glob(pattern.as_bytes(), comm.as_bytes())
}

fn truncate_comm(s: &str) -> &str {
    let mut end = s.len().min(COMM_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `*`-only glob, iterative with one backtrack point (linear in practice, no recursion).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The rules applied to the node as it is now; taken once per resolver pass (and per
/// registration), so that a change (the agent moved to another cgroup, a new guardian) is seen
/// at the next pass.
#[derive(Debug)]
pub struct Protection<'a> {
    rules: &'a ProtectRules,
    agent: u32,
    guardian: Option<u32>,
    /// cgroup2 mount point, when there is one.
    cgroup2_root: Option<PathBuf>,
    /// cgroup v2 paths (relative to the cgroup2 root, e.g. `/system.slice/x.service`) of the
    /// agent and its guardian, the root excepted.
    own_cgroups: Vec<String>,
    /// Processes inside `--allow-cgroup` now (`None`: no such restriction).
    allowed: Option<BTreeSet<u32>>,
    /// `--allow-cgroup` directories, symlinks resolved.
    allowed_dirs: Vec<PathBuf>,
}

impl<'a> Protection<'a> {
    /// The rules for an agent running as `agent` (the process embedding the library: a daemon
    /// or an in-process coordinator) with its guardian `guardian`.
    pub fn now(rules: &'a ProtectRules, agent: u32, guardian: Option<u32>) -> Protection<'a> {
        let mut own_cgroups = Vec::new();
        if rules.own_cgroup {
            for pid in std::iter::once(agent).chain(guardian) {
                if let Some(path) = procfs::cgroup2_path(pid)
                    && path != "/"
                    && !own_cgroups.contains(&path)
                {
                    own_cgroups.push(path);
                }
            }
        }
        let (allowed, allowed_dirs) = if rules.allow_cgroups.is_empty() {
            (None, Vec::new())
        } else {
            let mut pids = BTreeSet::new();
            let mut dirs = Vec::new();
            for dir in &rules.allow_cgroups {
                match procfs::cgroup_pids(dir) {
                    Ok(p) => pids.extend(p),
                    // Fails closed: nothing in it is allowed this pass.
                    Err(e) => tracing::warn!("--allow-cgroup {}: {e}", dir.display()),
                }
                dirs.push(dir.canonicalize().unwrap_or_else(|_| dir.clone()));
            }
            (Some(pids), dirs)
        };
        Protection {
            rules,
            agent,
            guardian,
            cgroup2_root: procfs::cgroup2_root(),
            own_cgroups,
            allowed,
            allowed_dirs,
        }
    }

    /// Why `pid` may never be stopped by the agent, or `None` when it may.
    pub fn why(&self, pid: u32) -> Option<String> {
        if pid <= 1 {
            return Some("pid 1, the node's init".into());
        }
        if pid == self.agent {
            return Some("the agent itself".into());
        }
        if Some(pid) == self.guardian {
            return Some("the agent's guardian".into());
        }
        if procfs::is_kernel_thread(pid) {
            return Some("a kernel thread".into());
        }
        if !self.own_cgroups.is_empty()
            && let Some(path) = procfs::cgroup2_path(pid)
            && let Some(own) = self.own_cgroups.iter().find(|o| is_under(&path, o))
        {
            return Some(format!("in the agent's cgroup {own}"));
        }
        if let Some(comm) = procfs::comm(pid)
            && let Some(pattern) = self.rules.comms.iter().find(|p| comm_matches(p, &comm))
        {
            return Some(format!(
                "its name matches the protected name {pattern:?} (--protect-comm)"
            ));
        }
        if !self.rules.allow_uids.is_empty() {
            let Some(status) = procfs::status(pid) else {
                return Some("its uid cannot be read (--allow-uid)".into());
            };
            if let Some(uid) = status
                .uids
                .iter()
                .find(|u| !self.rules.allow_uids.contains(u))
            {
                return Some(format!("runs as uid {uid}, not allowed by --allow-uid"));
            }
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&pid)
        {
            return Some(OUTSIDE_ALLOWED_CGROUPS.into());
        }
        None
    }

    /// Whether the kernel may count every process of the cgroup directory `dir` as a member
    /// (its cgroup id in the membership map, so that a new process there is counted before the
    /// next resolution): not for a directory of or under the agent's cgroup, nor outside the
    /// allowed cgroups. The processes found there are checked one by one besides.
    pub fn may_track_cgroup(&self, dir: &Path) -> bool {
        if let Some(root) = &self.cgroup2_root
            && let Ok(rel) = dir.strip_prefix(root)
        {
            let rel = format!("/{}", rel.display());
            if self.own_cgroups.iter().any(|o| is_under(&rel, o)) {
                return false;
            }
        }
        if self.allowed.is_some() {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
            return self.allowed_dirs.iter().any(|a| dir.starts_with(a));
        }
        true
    }

    /// Thread-group ids the kernel must never stop whatever else it is told: pid 1, the agent
    /// and its guardian.
    pub fn kernel_pids(&self) -> Vec<u32> {
        let mut v = vec![1, self.agent];
        v.extend(self.guardian);
        v
    }

    /// cgroup directories whose whole subtree the kernel must never stop: the agent's and the
    /// guardian's (the root excepted).
    pub fn kernel_cgroups(&self) -> Vec<PathBuf> {
        let Some(root) = &self.cgroup2_root else {
            return Vec::new();
        };
        self.own_cgroups
            .iter()
            .map(|rel| root.join(rel.trim_start_matches('/')))
            .collect()
    }
}

/// `path` is `dir` or below it (cgroup paths, `/`-separated, compared component-wise).
fn is_under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_truncated_names() {
        assert!(comm_matches("systemd-*", "systemd-journal"));
        assert!(!comm_matches("systemd-*", "systemd"));
        assert!(comm_matches("systemd", "systemd"));
        assert!(!comm_matches("systemd", "systemdx"));
        assert!(comm_matches("containerd-shim*", "containerd-shim"));
        assert!(comm_matches("sshd*", "sshd"));
        assert!(comm_matches("sshd*", "sshd-session"));
        assert!(!comm_matches("sshd*", "xsshd"));
        assert!(comm_matches("*a*b", "xxaxxb"));
        assert!(!comm_matches("*a*b", "xxaxxbc"));
        // The kernel shows 15 bytes of a longer name.
        assert!(comm_matches("kube-controller-manager", "kube-controller"));
        assert!(!comm_matches("kube-controller-manager", "kube-controll"));
    }

    #[test]
    fn rules_refuse_what_would_protect_everything_or_nothing() {
        assert!(ProtectRules::default().validate().is_ok());
        let star = ProtectRules {
            comms: vec!["*".into()],
            ..ProtectRules::default()
        };
        assert!(star.validate().unwrap_err().contains("--protect-comm"));
        let dir = ProtectRules {
            allow_cgroups: vec!["/tmp".into()],
            ..ProtectRules::default()
        };
        assert!(dir.validate().unwrap_err().contains("--allow-cgroup /tmp"));
    }

    #[test]
    fn init_self_and_kernel_threads_are_protected() {
        let rules = ProtectRules::default();
        let me = std::process::id();
        let p = Protection::now(&rules, me, None);
        assert_eq!(p.why(1).as_deref(), Some("pid 1, the node's init"));
        assert_eq!(p.why(me).as_deref(), Some("the agent itself"));
        // kthreadd is pid 2 wherever the kernel has its own pid namespace here.
        if procfs::comm(2).as_deref() == Some("kthreadd") {
            assert_eq!(p.why(2).as_deref(), Some("a kernel thread"));
        }
        assert!(p.kernel_pids().contains(&me));
        let uid = ProtectRules {
            allow_uids: vec![12_345],
            ..ProtectRules::default()
        };
        let p = Protection::now(&uid, 0, None);
        assert!(
            p.why(me).unwrap().contains("--allow-uid"),
            "{:?}",
            p.why(me)
        );
    }

    #[test]
    fn cgroup_paths_compare_by_component() {
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a"));
        assert!(!is_under("/ab", "/a"));
    }
}

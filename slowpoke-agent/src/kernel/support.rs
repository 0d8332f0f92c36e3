//! Does the running kernel have what the kernel programs need? Probed feature by feature (BTF,
//! the two socket tracepoints, program and map types, helpers, atomics) before anything is
//! loaded, so an old kernel gets ONE message listing everything it lacks instead of the first
//! verifier error the load happens to hit. `slowpoke-agent --check-kernel` prints the same report
//! for admins, init containers and `ExecStartPre`. The "since" releases and their sources are in
//! docs/kernel.md, section "Kernel support" (`#support`); keep the two in step.
//!
//! Features, not version numbers: distributions backport (and configure away) BPF features, so
//! a release number alone would be wrong both ways. The version in each requirement only tells
//! the admin which kernel to move to.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};
use serde::Serialize;

use super::btf::Btf;

/// Exit code of `slowpoke-agent` (and of `--check-kernel`) when the kernel lacks a requirement:
/// distinct from 1 (any other failure) and 2 (command-line usage), so an init container, a
/// systemd unit or a script can tell "wrong kernel" from "broken agent".
pub const EXIT_KERNEL_UNSUPPORTED: i32 = 3;

/// Where the docs state the requirements (the message points there).
pub const DOCS: &str = "docs/kernel.md#support";

/// One thing the kernel programs need from the kernel.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    /// What the kernel must offer, as the message names it.
    pub name: &'static str,
    /// The first mainline Linux release that has it.
    pub since: &'static str,
    /// What of Slowpoke needs it.
    pub used_by: &'static str,
    probe: Probe,
}

#[derive(Clone, Copy, Debug)]
enum Probe {
    Btf,
    SockLayout,
    BtfTracepointPrograms,
    Tracepoint(&'static str),
    Map(MapType),
    Atomics,
    Helper(BpfHelper),
    /// `fexit` on a kernel function whose parameters must start with these (the programs read
    /// those positions and the return value).
    Fexit(&'static str, &'static [&'static str]),
    /// Optional rows ([`ages::AGES`]): a program type, a helper in a program type, a struct
    /// member in BTF.
    ProgramType(ProgramType),
    HelperIn(ProgramType, BpfHelper),
    BtfStruct(&'static str, &'static str),
}

/// Both programs share one code path, so every requirement is both programs'; `used_by` says
/// which part of that path calls it.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        name: "kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)",
        since: "5.4",
        used_by: "tp_btf attach, field offsets",
        probe: Probe::Btf,
    },
    Requirement {
        name: "struct sock/sock_common fields in BTF",
        since: "5.6",
        used_by: "socket role and endpoints",
        probe: Probe::SockLayout,
    },
    Requirement {
        name: "BTF-typed tracepoint programs (tp_btf)",
        since: "5.5",
        used_by: "program type of both programs",
        probe: Probe::BtfTracepointPrograms,
    },
    Requirement {
        name: "tracepoint sock:sock_recv_length",
        since: "6.3",
        used_by: "attach point of sock_recv_length",
        probe: Probe::Tracepoint("sock_recv_length"),
    },
    Requirement {
        name: "tracepoint sock:sock_send_length",
        since: "6.3",
        used_by: "attach point of sock_send_length",
        probe: Probe::Tracepoint("sock_send_length"),
    },
    Requirement {
        name: "ring buffer map",
        since: "5.8",
        used_by: "pause requests (PAUSE_EVENTS)",
        probe: Probe::Map(MapType::RingBuf),
    },
    Requirement {
        name: "LRU hash map",
        since: "4.10",
        used_by: "sockets, threads, endpoints",
        probe: Probe::Map(MapType::LruHash),
    },
    Requirement {
        name: "per-CPU array map",
        since: "4.6",
        used_by: "traffic counters",
        probe: Probe::Map(MapType::PerCpuArray),
    },
    Requirement {
        name: "BPF atomics (fetch-add, cmpxchg)",
        since: "5.12",
        used_by: "debt and pause gate",
        probe: Probe::Atomics,
    },
    Requirement {
        name: "helper bpf_loop",
        since: "5.17",
        used_by: "spin actuator",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_loop),
    },
    Requirement {
        name: "helper bpf_send_signal",
        since: "5.3",
        used_by: "in-kernel stop",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_send_signal),
    },
    Requirement {
        name: "helper bpf_ringbuf_reserve",
        since: "5.8",
        used_by: "pause requests",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_ringbuf_reserve),
    },
    Requirement {
        name: "helper bpf_get_current_cgroup_id",
        since: "4.18",
        used_by: "cgroup membership, protection",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_get_current_cgroup_id),
    },
    Requirement {
        name: "helper bpf_get_current_ancestor_cgroup_id",
        since: "5.6",
        used_by: "protected cgroup subtrees",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_get_current_ancestor_cgroup_id),
    },
    Requirement {
        name: "helper bpf_probe_read_kernel",
        since: "5.5",
        used_by: "socket fields",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_probe_read_kernel),
    },
    Requirement {
        name: "helper bpf_probe_read_user",
        since: "5.5",
        used_by: "HTTP/2 and pipelining check",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_probe_read_user),
    },
    Requirement {
        name: "helper bpf_get_current_task_btf",
        since: "5.11",
        used_by: "HTTP/2 and pipelining check",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_get_current_task_btf),
    },
    Requirement {
        name: "helper bpf_task_pt_regs",
        since: "5.15",
        used_by: "HTTP/2 and pipelining check",
        probe: Probe::Helper(BpfHelper::BPF_FUNC_task_pt_regs),
    },
];

/// Where the two programs attach on kernels without the sock tracepoints (before 6.3): the
/// returns of `tcp_recvmsg`/`tcp_sendmsg`, with the argument layouts of 5.19 and later (`flags`
/// fourth; `addr_len` after it until 6.x dropped it). Probed
/// only when a tracepoint is missing; every other requirement applies to them too.
pub const FALLBACK: &[Requirement] = &[
    Requirement {
        name: "fexit on tcp_recvmsg(sk, msg, len, flags, ...)",
        since: "5.19",
        used_by: "fallback attach point of receives",
        probe: Probe::Fexit("tcp_recvmsg", &["sk", "msg", "len", "flags"]),
    },
    Requirement {
        name: "fexit on tcp_sendmsg(sk, msg, size)",
        since: "5.5",
        used_by: "fallback attach point of sends",
        probe: Probe::Fexit("tcp_sendmsg", &["sk", "msg", "size"]),
    },
];

/// Where the programs attach on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `tp_btf/sock_recv_length` and `tp_btf/sock_send_length` (Linux ≥ 6.3).
    Tracepoints,
    /// `fexit/tcp_recvmsg` and `fexit/tcp_sendmsg` ([`FALLBACK`]).
    Fexit,
}

/// What the probe found for one requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Present,
    /// Absent; the detail says how the probe knows.
    Missing(String),
    /// The probe itself failed (typically: not root); says nothing about the kernel.
    Unknown(String),
}

/// The running kernel's release and the status of every [`REQUIREMENTS`] entry.
#[derive(Clone, Debug)]
pub struct SupportReport {
    pub release: String,
    pub checks: Vec<(Requirement, Status)>,
    /// The [`FALLBACK`] rows, probed only when a sock tracepoint is missing (else empty).
    pub fallback: Vec<(Requirement, Status)>,
    /// The optional [`ages::AGES`] rows (request ages); never part of the verdict.
    pub ages: Vec<(Requirement, Status)>,
}

/// `--check-kernel --json`: one object, stable field names.
#[derive(Serialize)]
struct JsonReport<'a> {
    kernel_release: &'a str,
    supported: bool,
    /// `tracepoints`, `fexit` (the fallback) or null.
    attach: Option<&'static str>,
    /// The one-line message the agent fails with, or null.
    message: Option<String>,
    checks: Vec<JsonCheck<'a>>,
    /// The fallback's rows (empty when the tracepoints are there).
    fallback: Vec<JsonCheck<'a>>,
    /// Request ages (optional): `{"checks": [...], "message": "..."}`.
    ages: serde_json::Value,
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    name: &'a str,
    since: &'a str,
    used_by: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// `6.3` > `5.17` > `5.4`: release numbers compared field by field.
fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

impl SupportReport {
    /// Probes the running kernel (reads its BTF; loads a few tiny programs and maps, which
    /// needs root like the agent itself).
    pub fn probe() -> SupportReport {
        let btf = Btf::from_sys_fs();
        SupportReport::probe_with(btf.as_ref().map_err(String::as_str))
    }

    /// As [`SupportReport::probe`], with the kernel's BTF already parsed (or the reason it
    /// could not be).
    pub fn probe_with(btf: Result<&Btf, &str>) -> SupportReport {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown release".into(), |r| r.trim().to_string());
        let checks: Vec<_> = REQUIREMENTS
            .iter()
            .map(|req| (*req, probe_one(req.probe, btf)))
            .collect();
        let tracepoints_missing = checks
            .iter()
            .any(|(r, s)| matches!(r.probe, Probe::Tracepoint(_)) && *s != Status::Present);
        let fallback = if tracepoints_missing {
            FALLBACK
                .iter()
                .map(|req| (*req, probe_one(req.probe, btf)))
                .collect()
        } else {
            Vec::new()
        };
        let ages = ages::AGES
            .iter()
            .map(|req| (*req, probe_one(req.probe, btf)))
            .collect();
        SupportReport {
            release,
            checks,
            fallback,
            ages,
        }
    }

    /// Where the programs can attach here: the tracepoints when present, else the fallback when
    /// all of it is present, else `None`.
    pub fn attach(&self) -> Option<Attach> {
        let tracepoints = self
            .checks
            .iter()
            .filter(|(r, _)| matches!(r.probe, Probe::Tracepoint(_)))
            .all(|(_, s)| *s == Status::Present);
        if tracepoints {
            Some(Attach::Tracepoints)
        } else if !self.fallback.is_empty()
            && self.fallback.iter().all(|(_, s)| *s == Status::Present)
        {
            Some(Attach::Fexit)
        } else {
            None
        }
    }

    /// Missing rows that matter: the tracepoints only when the fallback cannot stand in.
    fn missing(&self) -> Vec<&(Requirement, Status)> {
        let fallback_works = self.attach() == Some(Attach::Fexit);
        self.checks
            .iter()
            .filter(|(r, s)| {
                matches!(s, Status::Missing(_))
                    && !(fallback_works && matches!(r.probe, Probe::Tracepoint(_)))
            })
            .collect()
    }

    /// True when the programs can load here: nothing missing, nothing unknown.
    pub fn supported(&self) -> bool {
        self.attach().is_some()
            && self.missing().is_empty()
            && self
                .with_status(|s| matches!(s, Status::Unknown(_)))
                .is_empty()
    }

    fn with_status(&self, pick: fn(&Status) -> bool) -> Vec<&(Requirement, Status)> {
        self.checks
            .iter()
            .chain(&self.fallback)
            .filter(|(_, s)| pick(s))
            .collect()
    }

    /// True when every requirement is present.
    pub fn all_present(&self) -> bool {
        self.checks.iter().all(|(_, s)| *s == Status::Present)
    }

    /// Whether some requirement is known to be absent (an unknown status is not counted: a
    /// probe that could not run must not stop an agent whose load may well succeed).
    pub fn lacks_something(&self) -> bool {
        !self.missing().is_empty()
    }

    /// The one-line message the agent fails with when something is missing, else `None`:
    /// everything missing, each with the release that brought it, and which kernel to move to.
    pub fn missing_message(&self) -> Option<String> {
        let missing = self.missing();
        let newest = missing
            .iter()
            .map(|(r, _)| r.since)
            .max_by_key(|v| version_key(v))?;
        let list: Vec<String> = missing
            .iter()
            .map(|(r, _)| format!("{} (Linux ≥ {})", r.name, r.since))
            .collect();
        let fallback: Vec<String> = self
            .fallback
            .iter()
            .filter_map(|(r, s)| match s {
                Status::Present => None,
                Status::Missing(d) | Status::Unknown(d) => Some(format!("{} ({d})", r.name)),
            })
            .collect();
        let fallback = if fallback.is_empty() {
            String::new()
        } else {
            format!(
                "; the fexit fallback cannot stand in: {}",
                fallback.join(", ")
            )
        };
        Some(format!(
            "this kernel ({}) lacks: {}{fallback}; the kernel programs need all of them: run \
             Linux ≥ {newest} (Debian 12 ships linux-image-6.12.*+deb12-amd64) — see {DOCS}",
            self.release,
            list.join(", ")
        ))
    }

    /// The requirements the probe could not check, one phrase each, or `None`.
    pub fn unknown_message(&self) -> Option<String> {
        let unknown = self.with_status(|s| matches!(s, Status::Unknown(_)));
        if unknown.is_empty() {
            return None;
        }
        let list: Vec<String> = unknown
            .iter()
            .map(|(r, s)| match s {
                Status::Unknown(why) => format!("{} ({why})", r.name),
                _ => r.name.to_string(),
            })
            .collect();
        Some(format!(
            "could not check: {} — run the check as root (CAP_BPF and CAP_PERFMON)",
            list.join(", ")
        ))
    }

    /// The report for people: one line per requirement, then the verdict.
    pub fn text(&self) -> String {
        let mut out = format!(
            "kernel {}: requirements of the kernel programs\n",
            self.release
        );
        let fallback_works = self.attach() == Some(Attach::Fexit);
        for (req, status) in self.checks.iter().chain(&self.fallback) {
            let (word, detail) = match status {
                Status::Present => ("ok", ""),
                // Not needed: the fallback attaches instead.
                Status::Missing(d)
                    if fallback_works && matches!(req.probe, Probe::Tracepoint(_)) =>
                {
                    ("absent", d.as_str())
                }
                Status::Missing(d) => ("MISSING", d.as_str()),
                Status::Unknown(d) => ("UNKNOWN", d.as_str()),
            };
            text_row(&mut out, word, req, detail);
        }
        if self.all_present() {
            let _ = writeln!(out, "all {} present", self.checks.len());
        } else if fallback_works && self.supported() {
            let _ = writeln!(
                out,
                "supported through the fallback: fexit on tcp_recvmsg/tcp_sendmsg instead of the \
                 sock tracepoints (sendfile/splice bodies are not counted) — see {DOCS}"
            );
        }
        for message in [self.missing_message(), self.unknown_message()]
            .into_iter()
            .flatten()
        {
            let _ = writeln!(out, "{message}");
        }
        if !self.ages.is_empty() {
            ages::text(&self.ages, &mut out);
        }
        out
    }

    /// The report as JSON (`--check-kernel --json`).
    pub fn json(&self) -> serde_json::Value {
        let checks = self.checks.iter().map(json_row).collect();
        let fallback = self.fallback.iter().map(json_row).collect();
        serde_json::to_value(JsonReport {
            kernel_release: &self.release,
            supported: self.supported(),
            attach: self.attach().map(|a| match a {
                Attach::Tracepoints => "tracepoints",
                Attach::Fexit => "fexit",
            }),
            message: self.missing_message().or_else(|| self.unknown_message()),
            checks,
            fallback,
            ages: ages::json(&self.ages),
        })
        .unwrap_or_default()
    }
}

fn json_row((req, status): &(Requirement, Status)) -> JsonCheck<'_> {
    let (word, detail) = match status {
        Status::Present => ("present", None),
        Status::Missing(d) => ("missing", Some(d.as_str())),
        Status::Unknown(d) => ("unknown", Some(d.as_str())),
    };
    JsonCheck {
        name: req.name,
        since: req.since,
        used_by: req.used_by,
        status: word,
        detail,
    }
}

fn probe_one(probe: Probe, btf: Result<&Btf, &str>) -> Status {
    match probe {
        Probe::Btf => match btf {
            Ok(_) => Status::Present,
            Err(e) => Status::Missing(e.to_string()),
        },
        Probe::SockLayout => match btf {
            Ok(btf) => match super::Offsets::from_btf(btf, &mut BTreeMap::new()) {
                Ok(_) => Status::Present,
                Err(e) => Status::Missing(e.to_string()),
            },
            Err(_) => Status::Missing("no kernel BTF to read them from".into()),
        },
        Probe::BtfTracepointPrograms => prog::btf_tracepoint_programs(btf),
        Probe::Tracepoint(name) => tracepoint(name, btf),
        Probe::Map(map_type) => match is_map_supported(map_type) {
            Ok(true) => Status::Present,
            Ok(false) => Status::Missing("the kernel refuses to create one".into()),
            Err(e) => Status::Unknown(format!("{e}")),
        },
        Probe::Atomics => prog::atomics(),
        Probe::Fexit(function, params) => prog::fexit_on(btf, function, params),
        Probe::ProgramType(program_type) => ages::probe_program(program_type),
        Probe::HelperIn(program_type, helper) => ages::probe_helper(program_type, helper),
        Probe::BtfStruct(outer, member) => match btf {
            Ok(btf) => match btf.member(outer, member) {
                Ok(_) => Status::Present,
                Err(e) => Status::Missing(e),
            },
            Err(_) => Status::Missing("no kernel BTF to look in".into()),
        },
        Probe::Helper(helper) => match is_helper_supported(ProgramType::TracePoint, helper) {
            Ok(true) => Status::Present,
            Ok(false) => Status::Missing("the verifier does not know it".into()),
            Err(e) => Status::Unknown(format!("{e}")),
        },
    }
}

/// A tracepoint `tp_btf` can attach to has the BTF typedef `btf_trace_NAME`. Without BTF,
/// tracefs still tells whether the tracepoint exists (the BTF requirement is reported apart).
fn tracepoint(name: &str, btf: Result<&Btf, &str>) -> Status {
    if let Ok(btf) = btf {
        return if btf.has_typedef(&format!("btf_trace_{name}")) {
            Status::Present
        } else {
            Status::Missing(format!("no btf_trace_{name} in the kernel's BTF"))
        };
    }
    let roots = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let Some(root) = roots.iter().find(|r| Path::new(r).join("events").is_dir()) else {
        return Status::Unknown("no kernel BTF and no tracefs mounted to look in".into());
    };
    if Path::new(root).join("events/sock").join(name).is_dir() {
        Status::Present
    } else {
        Status::Missing(format!("no {root}/events/sock/{name}"))
    }
}

/// One requirement's line of the report for people (the required and the optional rows).
fn text_row(out: &mut String, word: &str, req: &Requirement, detail: &str) {
    let _ = write!(
        out,
        "  {word:<8} {:<58} Linux ≥ {:<5} {}",
        req.name, req.since, req.used_by
    );
    if !detail.is_empty() {
        let _ = write!(out, " [{detail}]");
    }
    out.push('\n');
}

mod ages;
mod prog;

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as the probe would make it on a kernel where exactly `missing` are absent.
    fn fake(release: &str, missing: &[&str], unknown: &[&str]) -> SupportReport {
        let checks = REQUIREMENTS
            .iter()
            .map(|r| {
                let status = if missing.contains(&r.name) {
                    Status::Missing("fake".into())
                } else if unknown.contains(&r.name) {
                    Status::Unknown("Operation not permitted".into())
                } else {
                    Status::Present
                };
                (*r, status)
            })
            .collect();
        SupportReport {
            release: release.into(),
            checks,
            fallback: Vec::new(),
            ages: Vec::new(),
        }
    }

    #[test]
    fn debian_12_message_lists_both_tracepoints_and_the_kernel_to_move_to() {
        let report = fake(
            "6.1.0-28-amd64",
            &[
                "tracepoint sock:sock_recv_length",
                "tracepoint sock:sock_send_length",
            ],
            &[],
        );
        assert!(report.lacks_something());
        assert!(!report.all_present());
        assert_eq!(
            report.missing_message().unwrap(),
            "this kernel (6.1.0-28-amd64) lacks: tracepoint sock:sock_recv_length (Linux ≥ 6.3), \
             tracepoint sock:sock_send_length (Linux ≥ 6.3); the kernel programs need all of \
             them: run Linux ≥ 6.3 (Debian 12 ships linux-image-6.12.*+deb12-amd64) — see \
             docs/kernel.md#support"
        );
        let json = report.json();
        assert_eq!(json["supported"], false);
        assert_eq!(json["kernel_release"], "6.1.0-28-amd64");
        let missing: Vec<&str> = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "missing")
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            missing,
            [
                "tracepoint sock:sock_recv_length",
                "tracepoint sock:sock_send_length"
            ]
        );
    }

    #[test]
    fn the_newest_missing_release_is_named_numerically_not_alphabetically() {
        // "5.17" sorts before "5.8" as text; the kernel to move to is 5.17.
        let report = fake(
            "5.10.0-30-amd64",
            &[
                "helper bpf_loop",
                "ring buffer map",
                "kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)",
            ],
            &[],
        );
        let message = report.missing_message().unwrap();
        assert!(message.contains("run Linux ≥ 5.17 "), "{message}");
        assert!(
            message.contains("kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF) (Linux ≥ 5.4), ring buffer map (Linux ≥ 5.8), helper bpf_loop (Linux ≥ 5.17)"),
            "{message}"
        );
    }

    #[test]
    fn unknown_is_not_missing() {
        let report = fake("6.18.0", &[], &["helper bpf_loop"]);
        assert!(!report.lacks_something());
        assert!(!report.all_present());
        assert_eq!(report.missing_message(), None);
        let unknown = report.unknown_message().unwrap();
        assert!(
            unknown.starts_with("could not check: helper bpf_loop (Operation not permitted)"),
            "{unknown}"
        );
        assert_eq!(report.json()["checks"][9]["status"], "unknown");
    }

    const TRACEPOINTS: [&str; 2] = [
        "tracepoint sock:sock_recv_length",
        "tracepoint sock:sock_send_length",
    ];

    /// Debian 12's 6.1 as the VM showed it: no sock tracepoints, the fallback present or not.
    fn without_tracepoints(fallback: &Status) -> SupportReport {
        let mut report = fake("6.1.0-57-amd64", &TRACEPOINTS, &[]);
        report.fallback = FALLBACK.iter().map(|r| (*r, fallback.clone())).collect();
        report
    }

    #[test]
    fn the_fexit_fallback_stands_in_for_the_missing_tracepoints() {
        let report = without_tracepoints(&Status::Present);
        assert_eq!(report.attach(), Some(Attach::Fexit));
        assert!(report.supported());
        assert!(!report.lacks_something());
        assert_eq!(report.missing_message(), None);
        let text = report.text();
        assert!(text.contains("supported through the fallback"), "{text}");
        assert!(!text.contains("MISSING"), "{text}");
        let json = report.json();
        assert_eq!(json["supported"], true);
        assert_eq!(json["attach"], "fexit");
        assert_eq!(json["fallback"].as_array().unwrap().len(), FALLBACK.len());
    }

    #[test]
    fn without_tracepoints_or_fallback_the_message_says_both() {
        let report = without_tracepoints(&Status::Missing("the kernel refuses fexit".into()));
        assert_eq!(report.attach(), None);
        assert!(report.lacks_something());
        let message = report.missing_message().unwrap();
        assert!(
            message.starts_with(
                "this kernel (6.1.0-57-amd64) lacks: tracepoint sock:sock_recv_length (Linux ≥ \
                 6.3), tracepoint sock:sock_send_length (Linux ≥ 6.3); the fexit fallback cannot \
                 stand in: fexit on tcp_recvmsg(sk, msg, len, flags, ...) (the kernel refuses \
                 fexit)"
            ),
            "{message}"
        );
        assert_eq!(report.json()["attach"], serde_json::Value::Null);
    }

    #[test]
    fn the_fallback_does_not_excuse_other_missing_features() {
        let mut report = without_tracepoints(&Status::Present);
        report.checks[9].1 = Status::Missing("fake".into()); // helper bpf_loop
        assert!(!report.supported());
        let message = report.missing_message().unwrap();
        assert!(
            message.contains("lacks: helper bpf_loop (Linux ≥ 5.17);"),
            "{message}"
        );
        assert!(!message.contains("tracepoint"), "{message}");
    }

    #[test]
    fn all_present_says_so() {
        let report = fake("6.18.0", &[], &[]);
        assert!(report.all_present());
        assert_eq!(report.missing_message(), None);
        assert!(
            report
                .text()
                .contains(&format!("all {} present", REQUIREMENTS.len()))
        );
        assert_eq!(report.json()["supported"], true);
        assert_eq!(report.json()["message"], serde_json::Value::Null);
    }

    #[test]
    fn btf_function_parameters_of_this_kernel() {
        let btf = Btf::from_sys_fs().expect("this kernel's BTF");
        let (_, params) = btf.function("tcp_sendmsg").expect("tcp_sendmsg in BTF");
        assert_eq!(params, ["sk", "msg", "size"]);
        // 6.1: (sk, msg, len, flags, addr_len); 6.18: addr_len gone. The fallback reads only
        // the first four and the return value.
        let (_, params) = btf.function("tcp_recvmsg").expect("tcp_recvmsg in BTF");
        assert_eq!(params[..4], ["sk", "msg", "len", "flags"]);
        assert!(btf.function("no_such_function_here").is_none());
    }

    #[test]
    fn atomics_instruction_encoding() {
        // lock *(u64 *)(r10 - 8) fetch_add r1: as `llvm-objdump` shows it, db 1a f8 ff 01 00 00 00
        assert_eq!(
            prog::insn(0xdb, 10, 1, -8, 1).to_le_bytes(),
            [0xdb, 0x1a, 0xf8, 0xff, 0x01, 0x00, 0x00, 0x00]
        );
    }
}

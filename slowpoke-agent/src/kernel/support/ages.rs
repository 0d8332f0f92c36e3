//! The optional rows of the kernel support check: what request ages (tail-latency scheduling,
//! docs/tail.md#request-ages) need beyond the programs every agent loads. Missing rows never
//! make the check fail — the agent runs without ages (or reports requests without carrying
//! their ages between services) and says so in its health features.

use std::fmt::Write as _;

use aya::{
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_program_supported},
};

use super::{Probe, Requirement, Status, json_row, text_row};

const SENDMSG_LOCKED: &str = "tracepoint tcp:tcp_sendmsg_locked";
const DATA_READY: &str = "tracepoint sock:sk_data_ready";

/// What request ages need (probed always, reported apart; `supported` ignores them).
pub const AGES: &[Requirement] = &[
    Requirement {
        name: "program type sock_ops",
        since: "4.13",
        used_by: "request ages: carried between services",
        probe: Probe::ProgramType(ProgramType::SockOps),
    },
    Requirement {
        name: "helper bpf_store_hdr_opt in sock_ops (TCP header options)",
        since: "5.10",
        used_by: "request ages: the age option",
        probe: Probe::HelperIn(ProgramType::SockOps, BpfHelper::BPF_FUNC_store_hdr_opt),
    },
    Requirement {
        name: "helper bpf_get_current_task in sock_ops",
        since: "5.10",
        used_by: "request ages: who connects",
        probe: Probe::HelperIn(ProgramType::SockOps, BpfHelper::BPF_FUNC_get_current_task),
    },
    Requirement {
        name: SENDMSG_LOCKED,
        since: "6.17",
        used_by: "request ages: a call's request before its segments (else: the current thread's)",
        probe: Probe::Tracepoint("tcp_sendmsg_locked"),
    },
    Requirement {
        name: DATA_READY,
        since: "6.3",
        used_by: "request ages: a request starts when its data arrives (else: when its thread \
                  first receives it)",
        probe: Probe::Tracepoint("sk_data_ready"),
    },
    Requirement {
        name: "bpf_iter/tcp (struct bpf_iter__tcp in BTF)",
        since: "5.9",
        used_by: "request ages: pooled connections (also needs Linux ≥ 6.12)",
        probe: Probe::BtfStruct("bpf_iter__tcp", "sk_common"),
    },
];

pub(super) fn probe_program(program_type: ProgramType) -> Status {
    match is_program_supported(program_type) {
        Ok(true) => Status::Present,
        Ok(false) => Status::Missing("the kernel refuses to load one".into()),
        Err(e) => Status::Unknown(format!("{e}")),
    }
}

pub(super) fn probe_helper(program_type: ProgramType, helper: BpfHelper) -> Status {
    match is_helper_supported(program_type, helper) {
        Ok(true) => Status::Present,
        Ok(false) => Status::Missing("the verifier does not allow it there".into()),
        Err(e) => Status::Unknown(format!("{e}")),
    }
}

/// The rows as text, after the verdict on the required ones.
pub(super) fn text(rows: &[(Requirement, Status)], out: &mut String) {
    let _ = writeln!(out, "optional: request ages (tail-latency scheduling)");
    for (req, status) in rows {
        let (word, detail) = match status {
            Status::Present => ("ok", ""),
            Status::Missing(d) => ("absent", d.as_str()),
            Status::Unknown(d) => ("UNKNOWN", d.as_str()),
        };
        text_row(out, word, req, detail);
    }
    let _ = writeln!(out, "{}", verdict(rows));
}

/// One line: what request ages do on this kernel.
pub(super) fn verdict(rows: &[(Requirement, Status)]) -> String {
    let absent = |name: &str| {
        rows.iter()
            .any(|(r, s)| r.name == name && *s != Status::Present)
    };
    let lacking: Vec<&str> = rows
        .iter()
        .filter(|(r, s)| *s != Status::Present && r.name != SENDMSG_LOCKED && r.name != DATA_READY)
        .map(|(r, _)| r.name)
        .collect();
    if !lacking.is_empty() {
        return format!(
            "request ages: requests are reported, but their ages are not carried between \
             services (lacking: {}) — see docs/tail.md#request-ages",
            lacking.join(", ")
        );
    }
    let mut line = if absent(SENDMSG_LOCKED) {
        String::from(
            "request ages: carried between services, each segment with the age of the thread \
             that builds it (no tcp:tcp_sendmsg_locked: exact for request/response calls, a \
             retransmit may carry another request's)",
        )
    } else {
        String::from(
            "request ages: carried between services (pooled connections too on Linux ≥ 6.12)",
        )
    };
    if absent(DATA_READY) {
        line.push_str(
            "; a request starts when its thread first receives it, not when its data arrives \
             (no sock:sk_data_ready)",
        );
    }
    if absent(SENDMSG_LOCKED) || absent(DATA_READY) {
        line.push_str(" — see docs/tail.md#request-ages");
    }
    line
}

pub(super) fn json(rows: &[(Requirement, Status)]) -> serde_json::Value {
    serde_json::json!({
        "checks": rows.iter().map(json_row).collect::<Vec<_>>(),
        "message": verdict(rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every requirement present but `name`, missing for `why`.
    fn all_present_but(name: &str, why: &str) -> Vec<(Requirement, Status)> {
        AGES.iter()
            .map(|r| {
                let status = if r.name == name {
                    Status::Missing(why.into())
                } else {
                    Status::Present
                };
                (*r, status)
            })
            .collect()
    }

    #[test]
    fn a_missing_tracepoint_says_how_ages_are_carried_then() {
        let rows = all_present_but(SENDMSG_LOCKED, "no btf_trace_tcp_sendmsg_locked");
        let message = verdict(&rows);
        assert!(
            message.contains("the thread that builds it")
                && message.contains("no tcp:tcp_sendmsg_locked"),
            "{message}"
        );
        let mut out = String::new();
        text(&rows, &mut out);
        assert!(
            out.contains("absent   tracepoint tcp:tcp_sendmsg_locked"),
            "{out}"
        );
        assert!(!message.contains("sk_data_ready"), "{message}");
    }

    #[test]
    fn without_sk_data_ready_ages_are_still_carried() {
        let rows = all_present_but(DATA_READY, "no btf_trace_sk_data_ready");
        let message = verdict(&rows);
        assert!(
            message.starts_with("request ages: carried between services")
                && message.contains("when its thread first receives it"),
            "{message}"
        );
    }
}

#[cfg(test)]
mod this_kernel {
    use super::super::{Btf, probe_one};
    use super::*;

    /// The machines the tests run on (6.18) have everything request ages need (the program
    /// and helper rows need root; they are not checked here).
    #[test]
    fn btf_rows_of_this_kernel() {
        let btf = Btf::from_sys_fs().expect("this kernel's BTF");
        for req in AGES
            .iter()
            .filter(|r| matches!(r.probe, Probe::Tracepoint(_) | Probe::BtfStruct(..)))
        {
            assert_eq!(
                probe_one(req.probe, Ok(&btf)),
                Status::Present,
                "{}",
                req.name
            );
        }
    }
}

//! The tail scheduler's share cap, measured by the kernel (`slowpoke-ebpf/src/share.rs`,
//! `docs/tail.md#the-share-cap`): `tp_btf/sched_switch` adds each promoted thread's time on a
//! CPU to that CPU's [`PromotedRun`] as it is switched out. The agent marks the threads it
//! promotes ([`PromotedRuns::mark`]) and reads the per-CPU sums ([`PromotedRuns::read`]).
//!
//! The program runs at every context switch of the node, so it is attached only while a service
//! tracks ages (a schedule always does) and detached with the last one.

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{BtfTracePoint, tp_btf::BtfTracePointLinkId},
};
use slowpoke_common::PromotedRun;

use super::{KernelError, ebpf_error, take_map};

const PROGRAM: &str = "sched_switch";
/// Health feature name, present only when the program cannot run (`Kernel::features`).
pub const FEATURE: &str = "tail_share_cap";

/// The maps of the share cap, handed to the scheduler thread
/// ([`super::Kernel::take_promoted_runs`]).
pub struct PromotedRuns {
    promoted: HashMap<MapData, u32, u64>,
    runs: PerCpuArray<MapData, PromotedRun>,
}

impl PromotedRuns {
    /// Thread `tid` runs promoted from `at_ns` (`CLOCK_MONOTONIC`): its time on a CPU counts.
    pub fn mark(&mut self, tid: u32, at_ns: u64) -> Result<(), KernelError> {
        self.promoted
            .insert(tid, at_ns, 0)
            .map_err(ebpf_error("PROMOTED"))
    }

    /// Thread `tid` no longer runs promoted.
    pub fn unmark(&mut self, tid: u32) {
        let _ = self.promoted.remove(&tid);
    }

    /// Per CPU: the promoted time summed so far and the thread running now.
    pub fn read(&self) -> Result<Vec<PromotedRun>, KernelError> {
        let values = self.runs.get(&0, 0).map_err(ebpf_error("PROMOTED_RUNS"))?;
        Ok(values.iter().copied().collect())
    }
}

/// The program's state in the agent: loaded once, linked while a service tracks ages.
pub(super) struct Share {
    runs: Option<PromotedRuns>,
    loaded: Option<Result<(), String>>,
    link: Option<BtfTracePointLinkId>,
}

impl Share {
    pub(super) fn new(ebpf: &mut Ebpf) -> Result<Share, KernelError> {
        Ok(Share {
            runs: Some(PromotedRuns {
                promoted: take_map(ebpf, "PROMOTED")?,
                runs: take_map(ebpf, "PROMOTED_RUNS")?,
            }),
            loaded: None,
            link: None,
        })
    }

    pub(super) fn take(&mut self) -> Result<PromotedRuns, KernelError> {
        self.runs
            .take()
            .ok_or_else(|| KernelError::Ebpf("the share-cap maps were already taken".into()))
    }

    /// Attaches (`on`) or detaches the program. A failure is logged and reported by
    /// [`Share::status`]: the scheduler then sees no promoted time and the cap never acts.
    pub(super) fn hook(&mut self, ebpf: &mut Ebpf, on: bool) {
        let result = if on && self.link.is_none() {
            program(ebpf).and_then(|tp| {
                if self.loaded.is_none() {
                    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {e}"))?;
                    self.loaded = Some(
                        tp.load(PROGRAM, &btf)
                            .map_err(|e| format!("tp_btf/{PROGRAM}: {e:#}")),
                    );
                }
                self.loaded.clone().unwrap_or(Ok(()))?;
                self.link = Some(
                    tp.attach()
                        .map_err(|e| format!("attaching tp_btf/{PROGRAM}: {e:#}"))?,
                );
                Ok(())
            })
        } else if !on && let Some(link) = self.link.take() {
            program(ebpf).and_then(|tp| {
                tp.detach(link)
                    .map_err(|e| format!("detaching tp_btf/{PROGRAM}: {e:#}"))
            })
        } else {
            Ok(())
        };
        if let Err(why) = result {
            tracing::warn!("the tail scheduler's share cap: {why}");
            if self.loaded.is_none() {
                self.loaded = Some(Err(why));
            }
        }
    }

    /// Why the share cap cannot be measured, if it cannot.
    pub(super) fn failure(&self) -> Option<&str> {
        match &self.loaded {
            Some(Err(why)) => Some(why),
            _ => None,
        }
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut BtfTracePoint, String> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| format!("program {PROGRAM} missing"))?
        .try_into()
        .map_err(|e| format!("program {PROGRAM}: {e}"))
}

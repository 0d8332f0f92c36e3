//! Field offsets of the running kernel, read from its BTF and handed to the kernel programs as
//! read-only globals (the programs never read a kernel struct at a guessed offset).

use std::collections::BTreeMap;

use super::{KernelError, btf};

/// Field offsets of the running kernel, read from its BTF and handed to the programs as
/// read-only globals.
pub(super) struct Offsets {
    pub(super) skc_daddr: u32,
    pub(super) skc_v6_daddr: u32,
    pub(super) skc_dport: u32,
    pub(super) skc_family: u32,
    pub(super) sk_protocol: u32,
    /// `x86_64` `pt_regs`: `si` (first buffer argument of read/recvfrom) and `orig_ax` (syscall
    /// number); `None` elsewhere (the HTTP/2 check is off).
    pub(super) regs: Option<(u32, u32)>,
}

impl Offsets {
    pub(super) fn from_btf(
        btf: &btf::Btf,
        features: &mut BTreeMap<String, String>,
    ) -> Result<Offsets, KernelError> {
        let field = |outer: &str, name: &str, size: u32| -> Result<u32, String> {
            let member = btf.member(outer, name)?;
            if member.size == size {
                Ok(member.offset)
            } else {
                Err(format!(
                    "{outer}.{name} is {} bytes, expected {size}",
                    member.size
                ))
            }
        };
        let sock = |name: &str, size: u32| {
            field("sock_common", name, size).map_err(|e| {
                KernelError::Unsupported(format!(
                    "reading sockets needs struct sock_common from BTF: {e}"
                ))
            })
        };
        let common = btf
            .member("sock", "__sk_common")
            .map_err(|e| KernelError::Unsupported(format!("struct sock from BTF: {e}")))?
            .offset;
        let skc_dport = sock("skc_dport", 2)?;
        if sock("skc_num", 2)? != skc_dport + 2 {
            return Err(KernelError::Unsupported(
                "struct sock_common: skc_num does not follow skc_dport".into(),
            ));
        }
        let sk_protocol = field("sock", "sk_protocol", 2)
            .map_err(|e| KernelError::Unsupported(format!("struct sock from BTF: {e}")))?;
        let regs = if cfg!(target_arch = "x86_64") {
            match (field("pt_regs", "si", 8), field("pt_regs", "orig_ax", 8)) {
                (Ok(si), Ok(nr)) => {
                    features.insert("http2_detection".into(), "on".into());
                    Some((si, nr))
                }
                (Err(e), _) | (_, Err(e)) => {
                    features.insert("http2_detection".into(), format!("off: {e}"));
                    None
                }
            }
        } else {
            features.insert(
                "http2_detection".into(),
                "off: the syscall-buffer check knows x86_64 only".into(),
            );
            None
        };
        Ok(Offsets {
            skc_daddr: common + sock("skc_daddr", 4)?,
            skc_v6_daddr: common + sock("skc_v6_daddr", 16)?,
            skc_dport: common + skc_dport,
            skc_family: common + sock("skc_family", 2)?,
            sk_protocol,
            regs,
        })
    }
}

impl Offsets {
    /// Loads the embedded kernel object with these offsets (and the age programs', and the age
    /// clock's test offset, 0 outside tests) as its read-only globals.
    pub(super) fn load_object(
        &self,
        ages: &super::ages::AgeOffsets,
        ages_clock_offset_ns: u64,
        btf: &aya::Btf,
    ) -> Result<aya::Ebpf, KernelError> {
        let (regs_arg1, regs_nr) = self.regs.unwrap_or((0, 0));
        aya::EbpfLoader::new()
            .btf(Some(btf))
            .override_global("OFF_SKC_DADDR", &self.skc_daddr, true)
            .override_global("OFF_SKC_V6_DADDR", &self.skc_v6_daddr, true)
            .override_global("OFF_SKC_DPORT", &self.skc_dport, true)
            .override_global("OFF_SKC_FAMILY", &self.skc_family, true)
            .override_global("OFF_SK_PROTOCOL", &self.sk_protocol, true)
            .override_global("OFF_REGS_ARG1", &regs_arg1, true)
            .override_global("OFF_REGS_SYSCALL_NR", &regs_nr, true)
            .override_global("OFF_TASK_TGID", &ages.task_tgid(), true)
            .override_global("OFF_SKC_STATE", &ages.skc_state(), true)
            .override_global("OFF_TASK_PID", &ages.task_pid(), true)
            .override_global("OFF_TASK_START_BOOTTIME", &ages.task_start_boottime(), true)
            .override_global("AGES_FROM_CURRENT", &ages.origin_from_current(), true)
            .override_global("AGES_CLOCK_OFFSET_NS", &ages_clock_offset_ns, true)
            .load(crate::KERNEL_OBJECT)
            .map_err(|e| KernelError::Ebpf(format!("loading the kernel object: {e}")))
    }
}

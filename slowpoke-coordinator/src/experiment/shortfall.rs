//! Did the target keep working while the others were paused? A target that ran dry (too few
//! requests in flight) or was crowded out of shared CPUs makes the slowed-down throughput, and so
//! the prediction, too low ([`model::target_shortfall`]); the result says so.

use crate::model::{self, TargetUse};
use crate::stats;

use super::result::TargetUseRecord;

/// The target's use of its cores in the baseline and slowed-down runs: medians over the
/// baseline and slowed-down windows (None when either has none).
pub fn target_use_record(base: &[TargetUse], slowed: &[TargetUse]) -> Option<TargetUseRecord> {
    let median = |w: &[TargetUse]| {
        let cores: Vec<f64> = w.iter().map(|u| u.cores).collect();
        let wait: Vec<f64> = w.iter().map(|u| u.wait).collect();
        let per_visit: Vec<f64> = w.iter().map(|u| u.per_visit_us).collect();
        Some(TargetUse {
            cores: stats::median(&cores)?,
            wait: stats::median(&wait)?,
            per_visit_us: stats::median(&per_visit)?,
        })
    };
    Some(TargetUseRecord {
        baseline: median(base)?,
        slowed: median(slowed)?,
    })
}

/// The warning for a target (parallelism `c`) that worked less while the others were paused
/// ([`model::target_shortfall`]), if it did.
pub fn target_use_warning(u: &TargetUseRecord, target: &str, c: f64) -> Option<String> {
    let why = model::target_shortfall(u.baseline, u.slowed, c)?;
    Some(shortfall_warning(target, c, u.baseline, u.slowed, why))
}

/// The text of [`target_use_warning`].
fn shortfall_warning(
    target: &str,
    c: f64,
    base: TargetUse,
    slow: TargetUse,
    why: model::Shortfall,
) -> String {
    let pct = |x: f64| x / c * 100.0;
    match why {
        model::Shortfall::RanDry { kept } => format!(
            "`{target}` ran dry while the others were paused: it used {:.0} % of its {c} core(s) \
             in the slowed-down runs against {:.0} % in the baseline ({:.0} % of it), so the \
             slowed-down throughput and the prediction are too low. Too few requests in flight: \
             raise the load's `connections` (docs/model.md, \"Requests in flight\")",
            pct(slow.cores),
            pct(base.cores),
            kept * 100.0
        ),
        model::Shortfall::CrowdedOut { kept } => format!(
            "`{target}` was crowded out of the shared CPUs while the others caught up after their \
             pauses: it used {:.0} % of its {c} core(s) in the slowed-down runs against {:.0} % in \
             the baseline ({:.0} % of it) and waited for a CPU {:.0} % of the time against {:.0} %, \
             so the slowed-down throughput and the prediction are too low: read the prediction as \
             a lower bound (docs/model.md, \"Shared cores\")",
            pct(slow.cores),
            pct(base.cores),
            kept * 100.0,
            pct(slow.wait),
            pct(base.wait)
        ),
    }
}

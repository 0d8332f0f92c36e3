//! The share of wall time a pause plan stops each service, and what to ask each agent for
//! (docs/model.md, "The stopped share a plan needs"). Pure: the session feeds it the
//! calibration's visit rates and the agents' caps.
//!
//! Each visit of service s owes d_s of pause, and s is visited v_s times a second, so s is
//! stopped v_s·d_s of the time. Under the plan v_s = r_s·X_slow and d_s = δ/r_s, so the share
//! is X_slow·δ; X_slow ≤ X_base (the optimization saves at most δ of 1/X), so the baseline's
//! rates bound it. An agent that caps below the need drops debt and the window is lost: ask
//! for the need with a margin, and refuse up front when it exceeds what the agent allows.

use std::collections::BTreeMap;

use slowpoke_api::agent::StopCap;

use crate::model::PausePlan;

/// Relative margin on the need: throughput and visit ratios drift by a few percent between the
/// calibration and a slowed-down window (more when pausing the others makes the target cheaper
/// per visit), which the result already warns about beyond 15 %.
pub(super) const SHARE_MARGIN: f64 = 1.2;

/// Absolute margin on the need: the cap holds over every sliding 1 s window, visits arrive
/// unevenly within a second, and debt is paid in whole quanta.
pub(super) const SHARE_SLACK: f64 = 0.05;

/// The most-stopped service of a plan and its share of wall time stopped.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Need {
    pub service: String,
    /// In (0, ∞): above 1 the plan cannot be paid at all.
    pub share: f64,
}

/// The largest v_s·d_s over the plan's services, with `visits_per_s` the baseline's visit rate
/// of each service (summed over agents). None when the plan stops nothing.
pub(super) fn needed(visits_per_s: &BTreeMap<String, f64>, plan: &PausePlan) -> Option<Need> {
    plan.delays_ns
        .iter()
        .map(|(s, d_ns)| Need {
            service: s.clone(),
            share: visits_per_s.get(s).copied().unwrap_or(0.0) * d_ns / 1e9,
        })
        .filter(|n| n.share > 0.0)
        .max_by(|a, b| a.share.total_cmp(&b.share))
}

/// Why an agent cannot run a plan: it needs more stopped time than the agent lets a plan ask.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OverCeiling {
    pub need: Need,
    pub ceiling: f64,
}

/// What to ask an agent whose caps are `cap` for a plan needing `need`: nothing (its default
/// covers the need with the margins, or it predates per-plan caps: `cap` None), else the need
/// with its margins, at most the agent's ceiling. Over the ceiling without margins: refused.
pub(super) fn ask(need: Option<&Need>, cap: Option<&StopCap>) -> Result<Option<f64>, OverCeiling> {
    let (Some(need), Some(cap)) = (need, cap) else {
        return Ok(None);
    };
    if need.share > cap.max_plan_stopped_share {
        return Err(OverCeiling {
            need: need.clone(),
            ceiling: cap.max_plan_stopped_share,
        });
    }
    let wanted = need.share * SHARE_MARGIN + SHARE_SLACK;
    Ok((wanted > cap.max_stopped_share).then(|| wanted.min(cap.max_plan_stopped_share)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(default: f64, ceiling: f64) -> StopCap {
        StopCap {
            max_stopped_share: default,
            max_plan_stopped_share: ceiling,
            in_force: default,
        }
    }

    fn need(share: f64) -> Need {
        Need {
            service: "db".into(),
            share,
        }
    }

    #[test]
    fn the_need_is_the_largest_visit_rate_times_delay() {
        // 1000 visits/s × 400 µs = 0.4; 2000 visits/s × 100 µs = 0.2; `idle` has no visits.
        let rates = [("db", 1000.0), ("cache", 2000.0)]
            .map(|(n, v)| (n.to_owned(), v))
            .into();
        let plan = PausePlan {
            delays_ns: [("db", 400_000.0), ("cache", 100_000.0), ("idle", 5e6)]
                .map(|(n, d)| (n.to_owned(), d))
                .into(),
            unvisited: Vec::new(),
        };
        let n = needed(&rates, &plan).expect("a need");
        assert_eq!(n.service, "db");
        assert!((n.share - 0.4).abs() < 1e-12, "{n:?}");
        let nothing = PausePlan {
            delays_ns: BTreeMap::new(),
            unvisited: Vec::new(),
        };
        assert_eq!(needed(&rates, &nothing), None);
    }

    #[test]
    fn asks_only_beyond_the_default_and_never_beyond_the_ceiling() {
        // 0.3 × 1.2 + 0.05 = 0.41 ≤ 0.5: the default covers it.
        assert_eq!(ask(Some(&need(0.3)), Some(&cap(0.5, 0.9))), Ok(None));
        // 0.5 × 1.2 + 0.05 = 0.65.
        let a = ask(Some(&need(0.5)), Some(&cap(0.5, 0.9)))
            .unwrap()
            .unwrap();
        assert!((a - 0.65).abs() < 1e-12, "{a}");
        // 0.8 × 1.2 + 0.05 = 1.01: clipped to the ceiling.
        assert_eq!(ask(Some(&need(0.8)), Some(&cap(0.5, 0.9))), Ok(Some(0.9)));
        // Over the ceiling without the margins: refused, naming both.
        assert_eq!(
            ask(Some(&need(0.95)), Some(&cap(0.5, 0.9))),
            Err(OverCeiling {
                need: need(0.95),
                ceiling: 0.9
            })
        );
        // An agent without per-plan caps, or a plan that stops nothing: ask nothing.
        assert_eq!(ask(Some(&need(0.95)), None), Ok(None));
        assert_eq!(ask(None, Some(&cap(0.5, 0.9))), Ok(None));
    }
}

//! What the API shows of an experiment: its summary line, its progress and its result, whether
//! it is one of this server's ([`Entry`]) or a result stored earlier (by this server, an earlier
//! one or the CLI).

use slowpoke_api::coordinator::{
    ExperimentResult, ExperimentSummary, ExperimentView, ProgressView, Status,
};

use super::request::Kind;
use super::state::Entry;
use crate::experiment::Progress;
use crate::results::{self, StoredResult};

/// Progress as the API shows it.
fn progress_view(p: &Progress) -> ProgressView {
    ProgressView {
        fraction: p.fraction,
        phase: p.phase.clone(),
        windows_done: p.windows_done,
        last_rps: p.last_rps,
    }
}

/// The progress of a finished experiment.
pub(super) fn progress_done() -> ProgressView {
    ProgressView {
        fraction: 1.0,
        phase: "done".into(),
        windows_done: 0,
        last_rps: None,
    }
}

fn kind_of(r: &StoredResult) -> Kind {
    match r {
        StoredResult::WhatIf(_) => Kind::WhatIf,
        StoredResult::Profile(_) => Kind::Profile,
        StoredResult::Tail(_) => Kind::Tail,
    }
}

/// The result as the API shows it: its own JSON (untagged, as the CLI prints it).
pub(super) fn result_view(r: &StoredResult) -> ExperimentResult {
    match r {
        StoredResult::WhatIf(w) => ExperimentResult::WhatIf(w.clone()),
        StoredResult::Profile(p) => ExperimentResult::Profile(p.clone()),
        StoredResult::Tail(t) => ExperimentResult::Tail(t.clone()),
    }
}

pub(super) fn stored_summary(r: &StoredResult) -> ExperimentSummary {
    let s = results::summarize(r);
    ExperimentSummary {
        id: s.id,
        kind: kind_of(r),
        status: Status::Done,
        progress: progress_done(),
        created: s.created,
        summary: Some(s.summary),
        error: None,
    }
}

/// A line of the results directory's list (not read in full: listing stays cheap).
pub(super) fn listed_summary(s: results::ResultSummary) -> ExperimentSummary {
    ExperimentSummary {
        kind: match s.kind.as_str() {
            "profile" => Kind::Profile,
            "tail" => Kind::Tail,
            _ => Kind::WhatIf,
        },
        id: s.id,
        status: Status::Done,
        progress: progress_done(),
        created: s.created,
        summary: Some(s.summary),
        error: None,
    }
}

impl Entry {
    pub(super) fn summary(&self) -> ExperimentSummary {
        let status = *self.status.borrow();
        let progress = match status {
            Status::Done => progress_done(),
            Status::Queued => ProgressView {
                phase: "preparing the app and the load".into(),
                ..progress_view(&self.monitor.progress())
            },
            Status::Running => progress_view(&self.monitor.progress()),
            Status::Failed | Status::Cancelled => {
                let mut p = progress_view(&self.monitor.progress());
                if p.phase.is_empty() {
                    // Ended before the runner started (preparing the app failed, or a cancel).
                    p.phase = if status == Status::Failed {
                        "failed".into()
                    } else {
                        "cancelled".into()
                    };
                }
                p
            }
        };
        ExperimentSummary {
            id: self.id.clone(),
            kind: self.kind,
            status,
            progress,
            created: self.created.clone(),
            summary: Some(
                self.result
                    .as_ref()
                    .map_or_else(|| self.asked.clone(), |r| results::summarize(r).summary),
            ),
            error: self.error.clone(),
        }
    }

    pub(super) fn view(&self) -> ExperimentView {
        ExperimentView {
            summary: self.summary(),
            result: self.result.as_ref().map(result_view),
        }
    }
}

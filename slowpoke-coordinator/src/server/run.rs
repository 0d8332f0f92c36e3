//! The life of one experiment after its request was accepted: build its app and load (the
//! [`super::Launcher`], on a blocking thread), run it, store its result and record how it ended
//! in its [`super::state::Entry`].

use std::sync::Arc;

use slowpoke_api::coordinator::Status;

use super::AppState;
use super::request::{Checked, Spec};
use crate::agents::SharedAgent;
use crate::experiment::{Monitor, RunError, spawn_profile, spawn_tail, spawn_what_if};
use crate::lease::Lease;
use crate::results::StoredResult;

/// Runs one experiment to its end and records how it ended.
pub(super) async fn drive(state: AppState, id: String, checked: Checked, agents: Vec<SharedAgent>) {
    let launcher = Arc::clone(&state.inner.launcher);
    let app = checked.app.clone();
    let built = tokio::task::spawn_blocking(move || launcher.backends(&app, agents))
        .await
        .unwrap_or_else(|e| Err(format!("preparing the app failed: {e}")));
    let backends = match built {
        Ok(mut b) => {
            // The agents know the experiment by its id: 409s and lapsed-lease logs name it.
            b.lease = Lease::new(&id, state.inner.lease);
            b
        }
        Err(e) => {
            finish(
                &state,
                &id,
                Err(format!("cannot prepare the experiment: {e}")),
            );
            return;
        }
    };
    // A cancel while the app was being prepared: nothing was installed yet.
    let cancelled = state
        .with_entry(&id, |e| e.monitor.is_cancelled())
        .unwrap_or(true);
    if cancelled {
        drop(backends);
        finish(&state, &id, Err(RunError::Cancelled.to_string()));
        return;
    }
    let outcome: Result<StoredResult, RunError> = match checked.spec {
        Spec::WhatIf(spec) => {
            let h = spawn_what_if(spec, backends);
            adopt(&state, &id, &h.monitor);
            h.wait().await.map(StoredResult::WhatIf)
        }
        Spec::Profile(spec) => {
            let h = spawn_profile(spec, backends);
            adopt(&state, &id, &h.monitor);
            h.wait().await.map(StoredResult::Profile)
        }
        Spec::Tail(spec) => {
            let h = spawn_tail(spec, backends);
            adopt(&state, &id, &h.monitor);
            h.wait().await.map(StoredResult::Tail)
        }
    };
    match outcome {
        Ok(mut r) => {
            let created = state.with_entry(&id, |e| e.created.clone());
            match &mut r {
                StoredResult::WhatIf(w) => {
                    w.id.clone_from(&id);
                    if let Some(c) = created {
                        w.created = c;
                    }
                }
                StoredResult::Profile(p) => {
                    p.id.clone_from(&id);
                    if let Some(c) = created {
                        p.created = c;
                    }
                }
                StoredResult::Tail(t) => {
                    t.id.clone_from(&id);
                    if let Some(c) = created {
                        t.created = c;
                    }
                }
            }
            let store = state.inner.store.clone();
            let to_save = r.clone();
            let saved = tokio::task::spawn_blocking(move || store.save(&to_save))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|r| r);
            if let Err(e) = &saved {
                tracing::error!("experiment {id}: cannot store the result: {e:#}");
            }
            state.with_entry(&id, |e| {
                e.result = Some(r);
                if let Err(err) = saved {
                    e.error = Some(format!("the result could not be stored: {err:#}"));
                }
                e.status.send_replace(Status::Done);
            });
        }
        Err(RunError::Cancelled) => finish(&state, &id, Err(RunError::Cancelled.to_string())),
        Err(e) => finish(&state, &id, Err(e.to_string())),
    }
}

/// Swaps the entry's placeholder monitor for the runner's, carrying a pending cancel over.
fn adopt(state: &AppState, id: &str, m: &Monitor) {
    state.with_entry(id, |e| {
        if e.monitor.is_cancelled() {
            m.cancel();
        }
        e.monitor = m.clone();
        e.status.send_replace(Status::Running);
    });
}

fn finish(state: &AppState, id: &str, outcome: Result<(), String>) {
    state.with_entry(id, |e| {
        let status = match &outcome {
            Ok(()) => Status::Done,
            Err(msg) if msg == &RunError::Cancelled.to_string() => Status::Cancelled,
            Err(_) => Status::Failed,
        };
        if let Err(msg) = outcome {
            tracing::info!("experiment {}: {msg}", e.id);
            e.error = Some(msg);
        }
        e.status.send_replace(status);
    });
}

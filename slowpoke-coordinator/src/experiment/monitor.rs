//! Observing and cancelling a running experiment: [`Progress`] is what it is doing now, a
//! [`Monitor`] is shared between the runner (which updates it and sleeps through it, so that a
//! cancellation wakes it at once) and whoever watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::RunError;

/// What an experiment is doing now (for a progress bar or an API).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=1, a best estimate.
    pub fraction: f64,
    /// Human-readable phase, e.g. `rep 2/5: slow`.
    pub phase: String,
    pub windows_done: usize,
    /// Last measured throughput, req/s.
    pub last_rps: Option<f64>,
    pub finished: bool,
}

type Callback = Box<dyn Fn(&Progress) + Send + Sync>;

#[derive(Default)]
struct MonitorInner {
    cancelled: AtomicBool,
    progress: Mutex<Progress>,
    callback: Mutex<Option<Callback>>,
}

/// Observes and cancels a running experiment. Cheap to clone; share it with the runner.
#[derive(Clone, Default)]
pub struct Monitor {
    inner: Arc<MonitorInner>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("cancelled", &self.is_cancelled())
            .field("progress", &self.progress())
            .finish()
    }
}

impl Monitor {
    pub fn new() -> Monitor {
        Monitor::default()
    }

    /// Calls `f` on every progress change (from the runner's thread; keep it quick).
    pub fn on_progress(&self, f: impl Fn(&Progress) + Send + Sync + 'static) {
        *self
            .inner
            .callback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Asks the experiment to stop; it removes every delay and returns [`RunError::Cancelled`].
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The progress now.
    pub fn progress(&self) -> Progress {
        self.inner
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Progress)) {
        let p = {
            let mut g = self
                .inner
                .progress
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut g);
            g.clone()
        };
        if let Some(cb) = self
            .inner
            .callback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            cb(&p);
        }
    }

    /// Sleeps `secs`, waking early (with an error) on cancellation.
    pub(super) fn sleep(&self, secs: f64) -> Result<(), RunError> {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        loop {
            if self.is_cancelled() {
                return Err(RunError::Cancelled);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }
}

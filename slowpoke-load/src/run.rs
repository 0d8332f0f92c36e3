//! One-shot runs like wrk: probe, warm-up, then a measurement of a fixed duration or a fixed request count.

use std::ops::Deref;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::generator::{GeneratorOptions, LoadGenerator};
use crate::open_counters::OpenReport;
use crate::shared::{MEASURE, WARMUP};
use crate::stats::{Snapshot, Window};
use crate::{LoadError, LoadSpec};

/// How long the measurement of [`run`] lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    /// Measure for this long (requests still in flight at the end are not counted).
    Duration(Duration),
    /// Send exactly this many requests after the warm-up, then stop.
    Requests(u64),
}

impl RunLength {
    /// A zero duration or request count is an error.
    pub fn check(&self) -> Result<(), LoadError> {
        match self {
            RunLength::Requests(0) => Err(LoadError::Invalid(
                "the request count must be at least 1".into(),
            )),
            RunLength::Duration(d) if d.is_zero() => Err(LoadError::Invalid(
                "the duration must be greater than zero".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// In JSON: `{"duration_secs": 10.0}` or `{"requests": 100000}`.
impl Serialize for RunLength {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            RunLength::Duration(d) => map.serialize_entry("duration_secs", &d.as_secs_f64())?,
            RunLength::Requests(n) => map.serialize_entry("requests", n)?,
        }
        map.end()
    }
}

/// Result of [`run`]. Dereferences to its measurement [`Window`] (`report.rps`, `report.p99_us`, …); in JSON
/// the window's fields are at the top level.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub window: Window,
    /// Measured requests with any outcome (2xx, non-2xx, timeout, connection error).
    pub total_requests: u64,
    /// Throughput the model uses: 2xx completions / measurement window (equal to `window.rps`).
    pub rps_window: f64,
    /// The published system's definition: 2xx completions / mean over connections of the time from the start
    /// of the measurement to that connection's last completion (wrk's N / mean per-thread time).
    pub rps_workers: f64,
    /// Mean per-connection completion time used for `rps_workers`, s.
    pub mean_connection_secs: f64,
    /// Requests sent during the warm-up (all outcomes; the upstream saw them too).
    pub warmup_requests: u64,
    /// Probe requests sent before the load (one per distinct address).
    pub probe_requests: u64,
    pub connections: usize,
    pub warmup_secs: f64,
    pub length: RunLength,
    /// What the open loop did (absent for a closed loop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenReport>,
}

impl Deref for Report {
    type Target = Window;
    fn deref(&self) -> &Window {
        &self.window
    }
}

/// One-shot run like wrk: starts a [`LoadGenerator`], loads for `spec.warmup`, then measures for a fixed
/// duration or a fixed number of requests, and stops. Blocks the calling thread (from async code, call it
/// through `spawn_blocking`). `progress` draws a progress bar on stderr.
pub fn run(spec: &LoadSpec, length: RunLength, progress: bool) -> Result<Report, LoadError> {
    run_with(spec, length, progress, &GeneratorOptions::default())
}

/// [`run`] with explicit [`GeneratorOptions`].
pub fn run_with(
    spec: &LoadSpec,
    length: RunLength,
    progress: bool,
    options: &GeneratorOptions,
) -> Result<Report, LoadError> {
    length.check()?;
    let limit = match length {
        RunLength::Requests(n) => Some(n),
        RunLength::Duration(_) => None,
    };
    let bar = progress.then(|| new_bar(length));
    let (generator, start, base) = if spec.warmup.is_zero() {
        // No warm-up: the connections start measuring right away.
        let generator = LoadGenerator::start_in(spec.clone(), options, MEASURE, limit)?;
        let (start, totals) = generator.started();
        (generator, start, totals)
    } else {
        // Warm-up: same connections, requests counted in their own epoch.
        let generator = LoadGenerator::start_in(spec.clone(), options, WARMUP, None)?;
        if let Some(bar) = &bar {
            bar.set_message("warm-up");
        }
        wait_until(Instant::now() + spec.warmup, bar.as_ref(), |_| {});
        let totals = generator.cpu_totals();
        let start = generator.begin_measurement(limit);
        (generator, start, totals)
    };
    let mut start_snap = Snapshot::empty(start, base.cpu_ns, options.worker_threads.max(1));
    start_snap.sched_wait_ns = base.wait_ns;
    if let Some(bar) = &bar {
        bar.set_message("measuring");
        bar.set_position(0);
        bar.reset_elapsed();
        if let RunLength::Requests(n) = length {
            bar.set_length(n);
        }
    }

    let mut end_snap = match length {
        RunLength::Duration(d) => {
            let end = start + d;
            wait_until(end, bar.as_ref(), |bar| {
                bar.set_position(start.elapsed().as_millis() as u64);
            });
            // No new requests from here on; those in flight complete after the read and are not counted.
            generator.close_budget();
            // The window is [start, time of the read] (the read comes a moment after `end`).
            generator.epoch_snapshot(MEASURE)
        }
        RunLength::Requests(_) => {
            while !generator.wait_all_finished(Duration::from_millis(100)) {
                if let Some(bar) = &bar {
                    bar.set_position(generator.epoch_snapshot(MEASURE).attempts());
                }
            }
            let mut snap = generator.epoch_snapshot(MEASURE);
            // The measurement ends with the last completion, not when we noticed it.
            if let Some(last) = generator.last_measured_done().into_iter().flatten().max() {
                snap.at = last;
            }
            snap
        }
    };
    let finishes: Vec<f64> = generator
        .last_measured_done()
        .into_iter()
        .flatten()
        .map(|t| t.saturating_duration_since(start).as_secs_f64())
        .collect();
    // Warm-up outcomes. In a counted run every connection has moved past the warm-up, so this is exact; in a
    // timed run a warm-up request still in flight (only possible when it outlasts the whole measurement)
    // is abandoned at stop and not counted.
    let warmup_requests = generator.epoch_snapshot(WARMUP).attempts();
    let probe_requests = generator.probe_requests();
    let connections = generator.connections();
    let open_loop = generator.open_report();
    let final_snap = generator.stop();
    // CPU of the measurement: up to the final read (the generator's threads are retired by now, so this
    // includes the short shutdown; negligible against a measurement).
    end_snap.cpu_ns = final_snap.cpu_ns;
    end_snap.sched_wait_ns = final_snap.sched_wait_ns;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let window = end_snap.window_since(&start_snap);
    let total_requests = end_snap.attempts();
    let (rps_workers, mean_connection_secs) = published_rps(window.completed_ok, &finishes);
    Ok(Report {
        rps_window: window.rps,
        window,
        total_requests,
        rps_workers,
        mean_connection_secs,
        warmup_requests,
        probe_requests,
        connections,
        warmup_secs: spec.warmup.as_secs_f64(),
        length,
        open_loop,
    })
}

/// The published system's throughput: `completed / mean(finishes)`, where `finishes` are the per-connection
/// completion times (s since the measurement start). Returns `(rps, mean)`; 0 when there is nothing to divide.
fn published_rps(completed: u64, finishes: &[f64]) -> (f64, f64) {
    if finishes.is_empty() {
        return (0.0, 0.0);
    }
    let mean = finishes.iter().sum::<f64>() / finishes.len() as f64;
    let rps = if mean > 0.0 {
        completed as f64 / mean
    } else {
        0.0
    };
    (rps, mean)
}

fn new_bar(length: RunLength) -> ProgressBar {
    let (len, template) = match length {
        RunLength::Duration(d) => (
            d.as_millis() as u64,
            "{spinner} {msg:10} [{elapsed_precise}] {wide_bar} {percent}%",
        ),
        RunLength::Requests(n) => (
            n,
            "{spinner} {msg:10} [{elapsed_precise}] {wide_bar} {pos}/{len}",
        ),
    };
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("static progress template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn wait_until(deadline: Instant, bar: Option<&ProgressBar>, mut tick: impl FnMut(&ProgressBar)) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
        if let Some(bar) = bar {
            tick(bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::published_rps;

    #[test]
    fn published_definition() {
        // 3000 requests; connections finished at 1 s, 2 s and 3 s: mean 2 s -> 1500 req/s, while the window
        // (3 s) gives 1000 req/s.
        let (rps, mean) = published_rps(3000, &[1.0, 2.0, 3.0]);
        assert!((mean - 2.0).abs() < 1e-12);
        assert!((rps - 1500.0).abs() < 1e-9);
        assert_eq!(published_rps(10, &[]), (0.0, 0.0));
    }
}

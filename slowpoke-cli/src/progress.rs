//! What a running experiment shows and hears on the terminal: the async runtime, Ctrl-C and
//! SIGTERM as a cancel, a progress bar on stderr.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use slowpoke_coordinator::experiment::Monitor;

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Ctrl-C (and SIGTERM) cancel the experiment; it removes every delay on its way out.
pub(crate) fn cancel_on_signal(rt: &tokio::runtime::Runtime, monitor: &Monitor) {
    let m = monitor.clone();
    rt.spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                if let Ok(mut s) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                {
                    s.recv().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        eprintln!("\ncancelling: removing every delay ...");
        m.cancel();
    });
}

/// A progress bar on a terminal (stderr), nothing otherwise.
pub(crate) fn progress_bar(monitor: &Monitor, quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let b = bar.clone();
    monitor.on_progress(move |p| {
        b.set_position((p.fraction * 1000.0) as u64);
        let last = p
            .last_rps
            .map(|r| format!(" (last window {r:.0} req/s)"))
            .unwrap_or_default();
        b.set_message(format!("{}{last}", p.phase));
    });
    Some(bar)
}

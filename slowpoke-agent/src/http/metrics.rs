//! `GET /metrics`: the stats in the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;

use crate::{api::Stats, safety::watchdog::WatchdogCounts};

/// One counter or gauge family: name, type, help, value of a service.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::api::ServiceStats) -> f64,
);

const FAMILIES: &[Family] = &[
    (
        "slowpoke_visits_total",
        "counter",
        "Requests served (visits).",
        |s| s.visits as f64,
    ),
    (
        "slowpoke_bytes_in_total",
        "counter",
        "Bytes received on server sockets.",
        |s| s.bytes_in as f64,
    ),
    (
        "slowpoke_bytes_out_total",
        "counter",
        "Bytes sent on server sockets.",
        |s| s.bytes_out as f64,
    ),
    (
        "slowpoke_calls_out_total",
        "counter",
        "Outgoing calls made.",
        |s| s.calls_out as f64,
    ),
    (
        "slowpoke_pause_seconds_total",
        "counter",
        "Achieved pause time.",
        |s| s.pause_ns as f64 / 1e9,
    ),
    ("slowpoke_pauses_total", "counter", "Pauses taken.", |s| {
        s.pauses as f64
    }),
    (
        "slowpoke_owed_seconds_total",
        "counter",
        "Pause debt owed.",
        |s| s.owed_ns as f64 / 1e9,
    ),
    (
        "slowpoke_dropped_seconds_total",
        "counter",
        "Pause debt dropped by the safety cap.",
        |s| s.dropped_ns as f64 / 1e9,
    ),
    (
        "slowpoke_spin_seconds_total",
        "counter",
        "Busy delay spent in the kernel (spin mode).",
        |s| s.spin_ns as f64 / 1e9,
    ),
    (
        "slowpoke_denied_stops_total",
        "counter",
        "In-kernel stops refused because the visiting process is protected.",
        |s| s.denied_stops as f64,
    ),
    (
        "slowpoke_stale_stops_total",
        "counter",
        "In-kernel stops skipped because the agent's heartbeat was stale.",
        |s| s.stale_stops as f64,
    ),
    (
        "slowpoke_refused_stops_total",
        "counter",
        "Stops of the service's processes the kernel refused (EPERM: no CAP_KILL for them).",
        |s| s.refused_stops as f64,
    ),
    (
        "slowpoke_cpu_seconds_total",
        "counter",
        "CPU time of the service's processes.",
        |s| s.cpu_ns as f64 / 1e9,
    ),
    (
        "slowpoke_run_queue_wait_seconds_total",
        "counter",
        "Time the service's threads were runnable but waited for a CPU.",
        |s| s.wait_ns as f64 / 1e9,
    ),
    (
        "slowpoke_cores",
        "gauge",
        "Effective parallelism of the service.",
        |s| s.cores,
    ),
    (
        "slowpoke_processes",
        "gauge",
        "Processes currently in the service.",
        |s| s.pids.len() as f64,
    ),
];

/// Renders a stats snapshot and the guardian's watchdog counters.
pub fn render(stats: &Stats, watchdog: &WatchdogCounts) -> String {
    let mut out = String::new();
    for (name, kind, help, value) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (svc, s) in &stats.services {
            let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", escape(svc), value(s));
        }
    }
    for (name, help, value) in [
        (
            "slowpoke_guardian_watchdog_episodes_total",
            "Times the agent made no progress for longer than the watchdog allows (stopped or hung).",
            watchdog.episodes,
        ),
        (
            "slowpoke_guardian_watchdog_resumes_total",
            "Passes in which the guardian resumed every listed process because the agent was stuck.",
            watchdog.passes,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    out
}

/// The agent's own counter: plans removed because their lease lapsed (a client stopped renewing;
/// an alert on its rate finds coordinators that crash).
pub fn render_leases(expired: u64) -> String {
    format!(
        "# HELP slowpoke_lease_expired_total Slowdown plans removed because their lease lapsed.\n\
         # TYPE slowpoke_lease_expired_total counter\n\
         slowpoke_lease_expired_total {expired}\n"
    )
}

/// The tail scheduler's counters (`slowpoke_scheduling_*`); nothing without a schedule.
pub fn render_scheduling(s: Option<&crate::api::SchedulingStats>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    let mut out = String::new();
    for (name, kind, help, value) in [
        (
            "slowpoke_scheduling_requests_total",
            "counter",
            "Requests the kernel reported starting on scheduled services' threads.",
            s.requests,
        ),
        (
            "slowpoke_scheduling_requests_with_age_total",
            "counter",
            "Of those, requests whose caller carried an age.",
            s.requests_with_age,
        ),
        (
            "slowpoke_scheduling_promotions_total",
            "counter",
            "Threads promoted to the real-time policy.",
            s.promotions,
        ),
        (
            "slowpoke_scheduling_demotions_total",
            "counter",
            "Threads returned to their own policy.",
            s.demotions,
        ),
        (
            "slowpoke_scheduling_age_capped_total",
            "counter",
            "Demotions because a request passed the age cap.",
            s.age_capped,
        ),
        (
            "slowpoke_scheduling_share_capped_total",
            "counter",
            "Demotions because promoted threads reached the CPU share cap.",
            s.share_capped,
        ),
        (
            "slowpoke_scheduling_failed_changes_total",
            "counter",
            "Policy changes the kernel refused (lost promotions).",
            s.failed_changes,
        ),
        (
            "slowpoke_scheduling_lost_events_total",
            "counter",
            "Kernel request events lost (ring buffer full).",
            s.lost_events,
        ),
        (
            "slowpoke_scheduling_wakeups_total",
            "counter",
            "Times the tail scheduler's thread woke up.",
            s.wakeups,
        ),
        (
            "slowpoke_scheduling_cpu_microseconds_total",
            "counter",
            "CPU time the tail scheduler's thread used, microseconds.",
            s.cpu_us,
        ),
        (
            "slowpoke_scheduling_promoted",
            "gauge",
            "Threads promoted now.",
            u64::from(s.promoted_now),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let mut s = Stats::default();
        s.services.insert(
            "cart".into(),
            crate::api::ServiceStats {
                visits: 7,
                pause_ns: 1_500_000_000,
                denied_stops: 3,
                ..Default::default()
            },
        );
        let text = render(
            &s,
            &WatchdogCounts {
                episodes: 1,
                passes: 3,
                last_pass_ns: 5,
            },
        );
        assert!(text.contains("slowpoke_visits_total{service=\"cart\"} 7\n"));
        assert!(text.contains("slowpoke_pause_seconds_total{service=\"cart\"} 1.5\n"));
        assert!(text.contains("# TYPE slowpoke_cores gauge"));
        assert!(text.contains("slowpoke_denied_stops_total{service=\"cart\"} 3\n"));
        assert!(text.contains("slowpoke_stale_stops_total{service=\"cart\"} 0\n"));
        let leases = render_leases(3);
        assert!(leases.contains("# TYPE slowpoke_lease_expired_total counter\n"));
        assert!(
            leases.ends_with("\nslowpoke_lease_expired_total 3\n"),
            "{leases}"
        );
        assert!(text.contains("\nslowpoke_guardian_watchdog_episodes_total 1\n"));
        assert!(text.contains("\nslowpoke_guardian_watchdog_resumes_total 3\n"));
        assert_eq!(render_scheduling(None), "");
        let sched = render_scheduling(Some(&crate::api::SchedulingStats {
            promotions: 4,
            promoted_now: 1,
            wakeups: 9,
            ..Default::default()
        }));
        assert!(
            sched.contains("\nslowpoke_scheduling_promotions_total 4\n"),
            "{sched}"
        );
        assert!(sched.contains("\nslowpoke_scheduling_wakeups_total 9\n"));
        assert!(sched.contains(
            "# TYPE slowpoke_scheduling_promoted gauge\nslowpoke_scheduling_promoted 1\n"
        ));
    }
}

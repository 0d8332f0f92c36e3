//! `GET /metrics`: the stats in the `OpenMetrics` text format, written by `prometheus-client` (the
//! Prometheus project's Rust client) from one stats snapshot per scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::api::{SchedulingStats, ServiceStats, Stats};
use crate::safety::watchdog::WatchdogCounts;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One value as it is exposed.
#[derive(Clone, Copy)]
enum Value {
    /// A counter of events.
    Count(u64),
    /// A counter of seconds (from nanoseconds or microseconds).
    Seconds(f64),
    /// A gauge.
    Gauge(f64),
    /// A gauge that counts things.
    Level(i64),
}

impl Value {
    fn metric_type(self) -> MetricType {
        match self {
            Value::Count(_) | Value::Seconds(_) => MetricType::Counter,
            Value::Gauge(_) | Value::Level(_) => MetricType::Gauge,
        }
    }

    fn unit(self) -> Option<&'static Unit> {
        match self {
            Value::Seconds(_) => Some(&Unit::Seconds),
            _ => None,
        }
    }

    fn encode(self, m: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        match self {
            Value::Count(v) => ConstCounter::new(v).encode(m),
            Value::Seconds(v) => ConstCounter::new(v).encode(m),
            Value::Gauge(v) => ConstGauge::new(v).encode(m),
            Value::Level(v) => ConstGauge::new(v).encode(m),
        }
    }
}

fn secs(ns: u64) -> Value {
    Value::Seconds(ns as f64 / 1e9)
}

/// A family with one sample per service: name (without the unit and `_total`, which the
/// encoder adds), help, value of a service.
type ServiceFamily = (&'static str, &'static str, fn(&ServiceStats) -> Value);

const SERVICE_FAMILIES: &[ServiceFamily] = &[
    ("slowpoke_visits", "Requests served (visits).", |s| {
        Value::Count(s.visits)
    }),
    (
        "slowpoke_bytes_in",
        "Bytes received on server sockets.",
        |s| Value::Count(s.bytes_in),
    ),
    ("slowpoke_bytes_out", "Bytes sent on server sockets.", |s| {
        Value::Count(s.bytes_out)
    }),
    ("slowpoke_calls_out", "Outgoing calls made.", |s| {
        Value::Count(s.calls_out)
    }),
    ("slowpoke_pause", "Achieved pause time.", |s| {
        secs(s.pause_ns)
    }),
    ("slowpoke_pauses", "Pauses taken.", |s| {
        Value::Count(s.pauses)
    }),
    ("slowpoke_owed", "Pause debt owed.", |s| secs(s.owed_ns)),
    (
        "slowpoke_dropped",
        "Pause debt dropped by the safety cap.",
        |s| secs(s.dropped_ns),
    ),
    (
        "slowpoke_spin",
        "Busy delay spent in the kernel (spin mode).",
        |s| secs(s.spin_ns),
    ),
    (
        "slowpoke_denied_stops",
        "In-kernel stops refused because the visiting process is protected.",
        |s| Value::Count(s.denied_stops),
    ),
    (
        "slowpoke_stale_stops",
        "In-kernel stops skipped because the agent's heartbeat was stale.",
        |s| Value::Count(s.stale_stops),
    ),
    (
        "slowpoke_refused_stops",
        "Stops of the service's processes the kernel refused (EPERM: no CAP_KILL for them).",
        |s| Value::Count(s.refused_stops),
    ),
    (
        "slowpoke_cpu",
        "CPU time of the service's processes.",
        |s| secs(s.cpu_ns),
    ),
    (
        "slowpoke_run_queue_wait",
        "Time the service's threads were runnable but waited for a CPU.",
        |s| secs(s.wait_ns),
    ),
    (
        "slowpoke_timeslices",
        "Timeslices the service's threads ran on a CPU (mostly one per wake-up).",
        |s| Value::Count(s.timeslices),
    ),
    (
        "slowpoke_cores",
        "Effective parallelism of the service.",
        |s| Value::Gauge(s.cores),
    ),
    (
        "slowpoke_processes",
        "Processes currently in the service.",
        |s| Value::Level(s.pids.len() as i64),
    ),
];

/// The node-wide families: name, help, value.
fn node_families(snap: &Snapshot) -> Vec<(&'static str, &'static str, Value)> {
    let mut out = vec![
        (
            "slowpoke_guardian_watchdog_episodes",
            "Times the agent made no progress for longer than the watchdog allows (stopped or hung).",
            Value::Count(snap.watchdog.episodes),
        ),
        (
            "slowpoke_guardian_watchdog_resumes",
            "Passes in which the guardian resumed every listed process because the agent was stuck.",
            Value::Count(snap.watchdog.passes),
        ),
        (
            "slowpoke_lease_expired",
            "Slowdown plans and schedules removed because their lease lapsed.",
            Value::Count(snap.leases_expired),
        ),
    ];
    if let Some(s) = &snap.stats.scheduling {
        out.extend(scheduling_families(s));
    }
    out
}

/// The tail scheduler's families (`slowpoke_scheduling_*`), present while a schedule is.
fn scheduling_families(s: &SchedulingStats) -> [(&'static str, &'static str, Value); 12] {
    [
        (
            "slowpoke_scheduling_requests",
            "Requests the kernel reported starting on scheduled services' threads.",
            Value::Count(s.requests),
        ),
        (
            "slowpoke_scheduling_requests_with_age",
            "Of those, requests whose caller carried an age.",
            Value::Count(s.requests_with_age),
        ),
        (
            "slowpoke_scheduling_promotions",
            "Threads promoted to the real-time policy.",
            Value::Count(s.promotions),
        ),
        (
            "slowpoke_scheduling_reranks",
            "Promoted threads moved to another rank's priority.",
            Value::Count(s.reranks),
        ),
        (
            "slowpoke_scheduling_demotions",
            "Threads returned to their own policy.",
            Value::Count(s.demotions),
        ),
        (
            "slowpoke_scheduling_age_capped",
            "Demotions because a request passed the age cap.",
            Value::Count(s.age_capped),
        ),
        (
            "slowpoke_scheduling_share_capped",
            "Demotions because promoted threads reached the CPU share cap.",
            Value::Count(s.share_capped),
        ),
        (
            "slowpoke_scheduling_failed_changes",
            "Policy changes the kernel refused (lost promotions).",
            Value::Count(s.failed_changes),
        ),
        (
            "slowpoke_scheduling_lost_events",
            "Kernel request events lost (ring buffer full).",
            Value::Count(s.lost_events),
        ),
        (
            "slowpoke_scheduling_wakeups",
            "Times the tail scheduler's thread woke up.",
            Value::Count(s.wakeups),
        ),
        (
            "slowpoke_scheduling_cpu",
            "CPU time the tail scheduler's thread used.",
            Value::Seconds(s.cpu_us as f64 / 1e6),
        ),
        (
            "slowpoke_scheduling_promoted",
            "Threads promoted now.",
            Value::Level(i64::from(s.promoted_now)),
        ),
    ]
}

/// What one scrape exposes: a stats snapshot, the guardian's watchdog counters and the lapsed
/// leases.
#[derive(Debug)]
pub struct Snapshot {
    pub stats: Stats,
    pub watchdog: WatchdogCounts,
    pub leases_expired: u64,
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let placeholder = ServiceStats::default();
        for (name, help, value) in SERVICE_FAMILIES {
            let kind = value(&placeholder);
            let mut family =
                encoder.encode_descriptor(name, help, kind.unit(), kind.metric_type())?;
            for (svc, s) in &self.stats.services {
                value(s).encode(family.encode_family(&[("service", svc.as_str())])?)?;
            }
        }
        for (name, help, value) in node_families(self) {
            value.encode(encoder.encode_descriptor(
                name,
                help,
                value.unit(),
                value.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Renders one scrape (ending with `# EOF`).
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(scheduling: Option<SchedulingStats>) -> Snapshot {
        let mut stats = Stats::default();
        stats.services.insert(
            "cart".into(),
            ServiceStats {
                visits: 7,
                pause_ns: 1_500_000_000,
                denied_stops: 3,
                cores: 0.25,
                ..Default::default()
            },
        );
        stats.services.insert(
            "we\"ird\\name".into(),
            ServiceStats {
                visits: 1,
                ..Default::default()
            },
        );
        stats.scheduling = scheduling;
        Snapshot {
            stats,
            watchdog: WatchdogCounts {
                episodes: 1,
                passes: 3,
                last_pass_ns: 5,
            },
            leases_expired: 3,
        }
    }

    #[test]
    fn renders_counters_gauges_and_units() {
        let text = render(snapshot(None));
        assert!(
            text.contains("slowpoke_visits_total{service=\"cart\"} 7\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE slowpoke_pause_seconds counter\n# UNIT slowpoke_pause_seconds seconds\n"
        ));
        assert!(text.contains("slowpoke_pause_seconds_total{service=\"cart\"} 1.5\n"));
        assert!(text.contains("# TYPE slowpoke_cores gauge"));
        assert!(text.contains("slowpoke_cores{service=\"cart\"} 0.25\n"));
        assert!(text.contains("slowpoke_denied_stops_total{service=\"cart\"} 3\n"));
        assert!(text.contains("slowpoke_stale_stops_total{service=\"cart\"} 0\n"));
        assert!(text.contains("\nslowpoke_lease_expired_total 3\n"));
        assert!(text.contains("\nslowpoke_guardian_watchdog_episodes_total 1\n"));
        assert!(text.contains("\nslowpoke_guardian_watchdog_resumes_total 3\n"));
        assert!(!text.contains("slowpoke_scheduling"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn escapes_label_values() {
        let text = render(snapshot(None));
        assert!(
            text.contains("slowpoke_visits_total{service=\"we\\\"ird\\\\name\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn scheduling_families_only_with_a_schedule() {
        let text = render(snapshot(Some(SchedulingStats {
            promotions: 4,
            promoted_now: 1,
            wakeups: 9,
            cpu_us: 2_500_000,
            ..Default::default()
        })));
        assert!(
            text.contains("\nslowpoke_scheduling_promotions_total 4\n"),
            "{text}"
        );
        assert!(text.contains("\nslowpoke_scheduling_wakeups_total 9\n"));
        assert!(text.contains("\nslowpoke_scheduling_cpu_seconds_total 2.5\n"));
        assert!(text.contains("# TYPE slowpoke_scheduling_promoted gauge\n"));
        assert!(text.contains("\nslowpoke_scheduling_promoted 1\n"));
    }
}

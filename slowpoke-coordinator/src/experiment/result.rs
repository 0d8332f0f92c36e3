//! What an experiment gives: the result types (part of the wire contract: `--json`, the HTTP
//! API, stored files, so they live in `slowpoke_api::coordinator`), and the id and timestamp
//! each result carries.

use std::time::Duration;

pub use slowpoke_api::coordinator::{
    Limit, PredictedBy, ProfileCurve, ProfilePoint, ProfileResult, RegimeRecord, ServiceRow,
    StopReason, TargetUseRecord, WhatIfResult, WindowRecord,
};

fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    // Days-from-civil inverse (H. Hinnant's algorithm), UTC.
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        ((rem % 3600) / 60) as u32,
        (rem % 60) as u32,
    )
}

fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now as `2026-11-22T04:31:12Z`.
pub fn now_rfc3339() -> String {
    let (y, mo, d, h, mi, s) = civil(unix_now().as_secs());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A sortable, unique-enough id: `20261122T043112-123-whatif-cart`.
pub fn new_id(kind: &str, what: &str) -> String {
    let now = unix_now();
    let (y, mo, d, h, mi, s) = civil(now.as_secs());
    let safe: String = what
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}-{:03}-{kind}-{safe}",
        now.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        // 2026-11-22T04:31:12Z
        assert_eq!(civil(1_795_321_872), (2026, 11, 22, 4, 31, 12));
    }

    #[test]
    fn ids_sort_by_time_and_name_what_they_are() {
        let id = new_id("whatif", "cart/v2");
        assert!(id.ends_with("-whatif-cart_v2"), "{id}");
        assert_eq!(id.as_bytes()[8], b'T', "{id}");
        assert!(now_rfc3339().ends_with('Z'));
    }
}

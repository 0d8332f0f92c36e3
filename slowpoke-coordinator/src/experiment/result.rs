//! What an experiment gives: the result types (part of the wire contract: `--json`, the HTTP
//! API, stored files, so they live in `slowpoke_api::coordinator`), and the id and timestamp
//! each result carries.

use time::OffsetDateTime;

pub use slowpoke_api::coordinator::{
    Limit, PredictedBy, ProfileCurve, ProfilePoint, ProfileResult, RegimeRecord, ServiceRow,
    ServiceWindowRecord, StopReason, TargetUseRecord, WhatIfResult, WindowRecord,
};

/// The UTC calendar fields of `t`: year, month, day, hour, minute, second.
fn civil(t: OffsetDateTime) -> (i32, u8, u8, u8, u8, u8) {
    (
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

/// Now as `2026-11-22T04:31:12Z`.
pub fn now_rfc3339() -> String {
    let (y, mo, d, h, mi, s) = civil(OffsetDateTime::now_utc());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A sortable, unique-enough id: `20261122T043112-123-whatif-cart`.
pub fn new_id(kind: &str, what: &str) -> String {
    let now = OffsetDateTime::now_utc();
    let (y, mo, d, h, mi, s) = civil(now);
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
        now.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time() {
        let at = |secs| OffsetDateTime::from_unix_timestamp(secs).unwrap();
        assert_eq!(civil(at(0)), (1970, 1, 1, 0, 0, 0));
        // 2026-11-22T04:31:12Z
        assert_eq!(civil(at(1_795_321_872)), (2026, 11, 22, 4, 31, 12));
    }

    #[test]
    fn ids_sort_by_time_and_name_what_they_are() {
        let id = new_id("whatif", "cart/v2");
        assert!(id.ends_with("-whatif-cart_v2"), "{id}");
        assert_eq!(id.as_bytes()[8], b'T', "{id}");
        assert!(now_rfc3339().ends_with('Z'));
    }
}

//! How far an agent's clock is from the coordinator's: pure arithmetic over timed calls.
//!
//! Each sample is one call: the coordinator's `CLOCK_MONOTONIC` when it sent the request and
//! when the answer came back, and the agent's own `CLOCK_MONOTONIC` in the answer
//! (`Stats::timestamp_ns`). The agent read its clock somewhere inside that round trip, so its
//! offset is `agent − (sent + received)/2`, within half the round trip either way (the
//! network's two directions may differ). The sample with the shortest round trip bounds it
//! best (as NTP's clock filter does). On one machine — the namespaces of `cargo xtask cluster`
//! share one clock — the true offset is 0, which the estimate must then contain.

/// One timed call, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The coordinator's clock when the request left.
    pub sent_ns: u64,
    /// The agent's clock in its answer.
    pub agent_ns: u64,
    /// The coordinator's clock when the answer arrived.
    pub received_ns: u64,
}

/// An agent's clock against the coordinator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockOffset {
    /// Agent minus coordinator, ns (positive: the agent's clock is ahead).
    pub offset_ns: i64,
    /// The true offset lies within ± this, ns: half the shortest round trip.
    pub uncertainty_ns: u64,
    /// Samples the estimate chose from.
    pub samples: usize,
}

/// The offset from the sample with the shortest round trip; None without a usable sample (no
/// sample, or none whose answer came after its request).
pub fn estimate(samples: &[ClockSample]) -> Option<ClockOffset> {
    let best = samples
        .iter()
        .filter(|s| s.received_ns >= s.sent_ns)
        .min_by_key(|s| s.received_ns - s.sent_ns)?;
    let half = (best.received_ns - best.sent_ns) / 2;
    let midpoint = i128::from(best.sent_ns) + i128::from(half);
    let offset = i128::from(best.agent_ns) - midpoint;
    Some(ClockOffset {
        offset_ns: i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX }),
        uncertainty_ns: half,
        samples: samples.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call sent at `sent`, answered after `up` + `down` ns, the agent reading its clock
    /// (ahead by `offset`) as the request arrives.
    fn call(sent: u64, up: u64, down: u64, offset: i64) -> ClockSample {
        ClockSample {
            sent_ns: sent,
            agent_ns: (i128::from(sent + up) + i128::from(offset)) as u64,
            received_ns: sent + up + down,
        }
    }

    #[test]
    fn injected_offsets_are_found_within_the_uncertainty() {
        for offset in [0_i64, 1_500_000, -2_000_000_000, 37] {
            let samples = [
                call(1_000_000_000_000, 900_000, 100_000, offset),
                call(1_000_010_000_000, 50_000, 60_000, offset),
                call(1_000_020_000_000, 400_000, 3_000_000, offset),
            ];
            let e = estimate(&samples).unwrap();
            assert_eq!(e.samples, 3);
            // The shortest round trip (110 µs) is chosen: ± 55 µs.
            assert_eq!(e.uncertainty_ns, 55_000);
            assert!(
                (e.offset_ns - offset).unsigned_abs() <= e.uncertainty_ns,
                "{offset}: {e:?}"
            );
            // Symmetric directions: exact.
            let sym = estimate(&[call(5_000_000_000, 70_000, 70_000, offset)]).unwrap();
            assert_eq!(sym.offset_ns, offset);
        }
    }

    #[test]
    fn no_usable_sample_gives_none() {
        assert_eq!(estimate(&[]), None);
        let backwards = ClockSample {
            sent_ns: 10,
            agent_ns: 5,
            received_ns: 9,
        };
        assert_eq!(estimate(&[backwards]), None);
    }
}

//! Plan leases: **no plan outlives the client that installed it by more than its lease.**
//!
//! A plan is a standing order to stop processes; the client that asked for it (a coordinator in
//! the middle of an experiment, a person with curl) may die, run out of memory or lose the
//! network without removing it. So every plan with services holds a [`Lease`]: an owner and a
//! deadline. The owner renews it while it still wants the plan; once the deadline passes the
//! agent removes the plan and resumes every member, exactly as `DELETE /v1/slowdown` does
//! (`agent/lease.rs` watches the deadline). While a lease is live, only its owner may replace or
//! remove the plan: two coordinators can no longer overwrite each other's plans in silence.
//!
//! This module is the pure part: the owner's name, the lengths a client may ask for, and who may
//! act on a live lease. Time is passed in (`now`), so the rules are unit-tested without sleeping.

use std::time::{Duration, Instant};

use crate::error::AgentError;

/// The owner of a plan put without one (a person with curl).
pub const ANONYMOUS: &str = "anonymous";

/// Shortest lease a client may ask for: below it a renewal's round trip and the agent's
/// expiry check (a few ms) would be a large share of the lease.
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// Longest owner name (an experiment id is about 40 characters).
const MAX_OWNER_LEN: usize = 128;

/// Checks an owner's name: `[A-Za-z0-9._:@-]{1,128}`. It is logged and shown in 409 messages,
/// so it may hold nothing that could forge a log line or need quoting in a URL query.
pub fn validate_owner(owner: &str) -> Result<(), AgentError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '-');
    if owner.is_empty() || owner.len() > MAX_OWNER_LEN || !owner.chars().all(ok_char) {
        return Err(AgentError::BadRequest(format!(
            "invalid owner {owner:?}: use 1 to {MAX_OWNER_LEN} characters of A-Z a-z 0-9 . _ : @ - \
             (the coordinator sends its experiment id)"
        )));
    }
    Ok(())
}

/// The lengths a client may ask for, set by the agent's operator.
#[derive(Clone, Copy, Debug)]
pub struct LeaseLimits {
    /// Granted when a plan names no `lease_ms`.
    pub default: Duration,
    /// Largest `lease_ms` accepted (`--max-lease-s`).
    pub max: Duration,
}

impl LeaseLimits {
    /// The lease a request asks for (`None`: `fallback`), or 400 saying what is allowed.
    pub fn grant(&self, lease_ms: Option<u64>, fallback: Duration) -> Result<Duration, AgentError> {
        let Some(ms) = lease_ms else {
            return Ok(fallback);
        };
        let asked = Duration::from_millis(ms);
        if asked > self.max {
            return Err(AgentError::BadRequest(format!(
                "lease_ms {ms} is above this agent's maximum of {} ms (set by its operator with \
                 --max-lease-s): ask for at most that and renew it with POST /v1/slowdown/renew \
                 while you need the plan",
                self.max.as_millis()
            )));
        }
        if asked < MIN_LEASE {
            return Err(AgentError::BadRequest(format!(
                "lease_ms {ms} is below the minimum of {} ms: ask for a longer lease and renew it",
                MIN_LEASE.as_millis()
            )));
        }
        Ok(asked)
    }
}

/// Who holds the plan in force, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    owner: String,
    granted: Duration,
    expires: Instant,
}

impl Lease {
    /// A lease of `granted` from `now`.
    pub fn grant(owner: &str, granted: Duration, now: Instant) -> Lease {
        Lease {
            owner: owner.to_owned(),
            granted,
            expires: now + granted,
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The length granted last.
    pub fn granted(&self) -> Duration {
        self.granted
    }

    /// What is left of it (zero once lapsed).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }

    pub fn lapsed(&self, now: Instant) -> bool {
        now >= self.expires
    }

    /// Extends it to `granted` from `now`.
    pub fn renew(&mut self, granted: Duration, now: Instant) {
        self.granted = granted;
        self.expires = now + granted;
    }

    /// 409 when `who` wants to change the plan while another owner's lease is live: the message
    /// names the holder and when the lease expires, and says what the caller can do.
    pub fn check_holder(&self, who: &str, now: Instant) -> Result<(), AgentError> {
        self.check_holder_of("slowdown plan", "/v1/slowdown", who, now)
    }

    /// [`Lease::check_holder`] for any leased thing: `what` (e.g. "schedule") and the path that
    /// removes it.
    pub fn check_holder_of(
        &self,
        what: &str,
        path: &str,
        who: &str,
        now: Instant,
    ) -> Result<(), AgentError> {
        if who == self.owner || self.lapsed(now) {
            return Ok(());
        }
        Err(AgentError::Conflict(format!(
            "the {what} is held by {:?} (owner given: {who:?}); its lease expires in \
             {:.1} s unless renewed. Wait for that experiment to end, or, as the node's operator, \
             remove it with DELETE {path}?force=true",
            self.owner,
            self.remaining(now).as_secs_f64()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: LeaseLimits = LeaseLimits {
        default: Duration::from_secs(15),
        max: Duration::from_mins(5),
    };

    #[test]
    fn owners_are_short_plain_names() {
        assert!(validate_owner("20261122T043112-123-whatif-cart").is_ok());
        assert!(validate_owner("alice@node-1:exp.2").is_ok());
        for bad in ["", "a b", "x\ny", "a/b", "é", &"x".repeat(129)] {
            assert!(validate_owner(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn lengths_are_bounded_by_the_operator() {
        assert_eq!(
            LIMITS.grant(None, LIMITS.default).ok(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            LIMITS.grant(Some(300_000), LIMITS.default).ok(),
            Some(Duration::from_mins(5))
        );
        let e = LIMITS
            .grant(Some(300_001), LIMITS.default)
            .expect_err("above the maximum");
        assert!(e.to_string().contains("maximum of 300000 ms"), "{e}");
        assert!(LIMITS.grant(Some(99), LIMITS.default).is_err());
    }

    #[test]
    fn only_the_holder_acts_on_a_live_lease() {
        let t0 = Instant::now();
        let mut l = Lease::grant("exp-1", Duration::from_secs(2), t0);
        assert!(l.check_holder("exp-1", t0).is_ok());
        let e = l
            .check_holder(ANONYMOUS, t0 + Duration::from_millis(500))
            .expect_err("another owner");
        let msg = e.to_string();
        assert!(msg.contains("\"exp-1\"") && msg.contains("1.5 s"), "{msg}");
        assert!(matches!(e, AgentError::Conflict(_)));
        // Renewed at 1.5 s: still held at 3 s, free at 3.5 s.
        l.renew(Duration::from_secs(2), t0 + Duration::from_millis(1500));
        assert!(!l.lapsed(t0 + Duration::from_secs(3)));
        assert!(
            l.check_holder("exp-2", t0 + Duration::from_secs(3))
                .is_err()
        );
        assert!(l.lapsed(t0 + Duration::from_millis(3500)));
        assert!(
            l.check_holder("exp-2", t0 + Duration::from_millis(3500))
                .is_ok()
        );
        assert_eq!(l.remaining(t0 + Duration::from_secs(9)), Duration::ZERO);
    }
}

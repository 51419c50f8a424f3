//! Whether a master can hold its addresses. A refresh the kernel refuses is retried at once;
//! once refreshes have failed for as long as a VIP lives in the kernel (the address is gone by
//! then), the instance gives its addresses up: FAULT for [`GIVE_UP_FOR`], so that a peer that
//! can hold them takes over, then it tries again. Pure: told the time and each refresh's outcome.

use std::time::{Duration, Instant};

use crate::daemon::vip::VIP_LIFETIME;

/// How long an instance that could not hold its addresses stays in FAULT before it tries again.
pub(super) const GIVE_UP_FOR: Duration = Duration::from_secs(10);

/// The refreshes' record.
#[derive(Debug, Default)]
pub(super) struct Holding {
    /// Since when every refresh failed (none: the last one worked).
    failing_since: Option<Instant>,
    /// Until when the addresses are given up.
    given_up_until: Option<Instant>,
}

impl Holding {
    /// A refresh at `now` worked (`ok`) or not; true when the instance must give its addresses
    /// up now.
    pub(super) fn refreshed(&mut self, now: Instant, ok: bool) -> bool {
        if ok {
            self.failing_since = None;
            return false;
        }
        let since = *self.failing_since.get_or_insert(now);
        if now.saturating_duration_since(since) < VIP_LIFETIME {
            return false;
        }
        self.failing_since = None;
        self.given_up_until = Some(now + GIVE_UP_FOR);
        true
    }

    /// Forgets the failures of a mastership that ended (the next one starts with a clean record).
    pub(super) fn forget_failures(&mut self) {
        self.failing_since = None;
    }

    /// Whether the addresses are given up at `now`.
    pub(super) fn given_up(&self, now: Instant) -> bool {
        self.given_up_until.is_some_and(|until| now < until)
    }

    /// When giving up ends, while it lasts.
    pub(super) fn until(&self) -> Option<Instant> {
        self.given_up_until
    }

    /// Ends giving up once its time is over; true when it just ended.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        let over = self.given_up_until.is_some_and(|until| now >= until);
        if over {
            self.given_up_until = None;
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_for_a_whole_lifetime_give_the_addresses_up_for_a_while() {
        let start = Instant::now();
        let mut holding = Holding::default();
        assert!(!holding.refreshed(start, false), "one failure is retried, not given up");
        assert!(!holding.refreshed(start + VIP_LIFETIME / 2, false));
        assert!(!holding.given_up(start + VIP_LIFETIME / 2));
        assert!(holding.refreshed(start + VIP_LIFETIME, false), "failing for the lifetime gives up");
        let given_up = start + VIP_LIFETIME;
        assert!(holding.given_up(given_up + GIVE_UP_FOR / 2));
        assert_eq!(holding.until(), Some(given_up + GIVE_UP_FOR));
        assert!(!holding.expire(given_up + GIVE_UP_FOR / 2));
        assert!(holding.expire(given_up + GIVE_UP_FOR));
        assert!(!holding.given_up(given_up + GIVE_UP_FOR));
        assert_eq!(holding.until(), None);
    }

    #[test]
    fn a_mastership_that_ended_leaves_no_failure_behind() {
        let start = Instant::now();
        let mut holding = Holding::default();
        assert!(!holding.refreshed(start, false));
        holding.forget_failures();
        assert!(!holding.refreshed(start + 2 * VIP_LIFETIME, false), "one failure of a new mastership is retried");
    }

    #[test]
    fn a_refresh_that_works_forgets_the_failures() {
        let start = Instant::now();
        let mut holding = Holding::default();
        assert!(!holding.refreshed(start, false));
        assert!(!holding.refreshed(start + VIP_LIFETIME / 2, true));
        assert!(!holding.refreshed(start + VIP_LIFETIME, false), "the clock starts again");
        assert!(!holding.refreshed(start + VIP_LIFETIME + VIP_LIFETIME / 2, false));
        assert!(holding.refreshed(start + 2 * VIP_LIFETIME, false));
    }
}

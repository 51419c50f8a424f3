//! What one instance counts: adverts each way, packets dropped or ignored by reason, notify
//! hooks; published on the status endpoint and logged when the instance stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::daemon::notify::HookRecord;

/// What an instance counts: adverts each way, packets dropped or ignored by reason, failed
/// notify hooks. Published on the status endpoint, logged when the instance stops.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Adverts sent.
    pub(super) sent: u64,
    /// Adverts accepted for this router.
    pub(super) received: u64,
    /// Accepted adverts whose address list differs from ours.
    pub(super) address_mismatch: u64,
    /// When an address mismatch was last logged (at most one line a minute).
    pub(super) mismatch_logged: Option<Instant>,
    /// VIP additions and refreshes the kernel refused.
    pub(super) vip_refresh_failures: u64,
    /// Packets dropped or ignored, by reason.
    pub(super) dropped: BTreeMap<&'static str, u64>,
    /// What the notify hooks did.
    pub(super) hooks: Arc<HookRecord>,
}

impl Counters {
    /// Counts one packet dropped or ignored for `reason`.
    pub(super) fn drop_one(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }
}

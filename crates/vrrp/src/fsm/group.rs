//! What a [`Router`] does for its sync group: say whether it wants mastership, and be moved by
//! the group (held in FAULT, made master, made backup). The decisions are the group's
//! ([`crate::sync::SyncGroup`]); these are the levers it pulls.

use std::time::Instant;

use super::action::Action;
use super::router::Router;
use super::state::{Reason, State};

impl Router {
    /// Whether this router's own fault is on (not counting one its sync group imposes).
    pub fn own_fault(&self) -> bool {
        self.faulted
    }

    /// Whether this router wants to be master: it is, or it is a backup whose master-down timer
    /// ran out and which has accepted no advert since (keepalived's `wantstate`).
    pub fn wants_master(&self) -> bool {
        self.state == State::Master || (self.state == State::Backup && self.wants_master)
    }

    /// Makes the router a member of a sync group: from now on it only *wants* mastership when
    /// its master-down timer runs out (or it starts as the owner); the group decides.
    pub(crate) fn join_group(&mut self) {
        self.grouped = true;
    }

    /// Whether its group holds it in FAULT.
    pub(crate) fn group_faulted(&self) -> bool {
        self.group_fault
    }

    /// Holds the router in FAULT for its group (or releases it); whether anything changed.
    pub(crate) fn set_group_fault(&mut self, now: Instant, on: bool) -> bool {
        if self.group_fault == on {
            return false;
        }
        self.group_fault = on;
        let before = (self.state, self.actions.len());
        self.apply_fault(now, Reason::Group);
        before != (self.state, self.actions.len())
    }

    /// The group takes over: a backup becomes master now. Whether anything changed.
    pub(crate) fn group_master(&mut self, now: Instant) -> bool {
        if self.state != State::Backup || self.maintenance {
            return false;
        }
        self.become_master(now, Reason::Group);
        true
    }

    /// The group gives up mastership: a master becomes backup now. It announces priority 0
    /// (keepalived's vrrp_sync_backup sends nothing), so that the peer holding the other
    /// members' mastership takes this one too after its skew time, not a whole
    /// Master_Down_Interval. Whether anything changed.
    pub(crate) fn group_backup(&mut self, now: Instant) -> bool {
        if self.state != State::Master {
            return false;
        }
        self.actions.push_back(Action::SendAdvert { priority: 0 });
        self.actions.push_back(Action::RemoveAddresses);
        let wait = self.master_down_interval();
        self.become_backup(now, wait, Reason::Group);
        true
    }
}

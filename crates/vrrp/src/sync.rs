//! Sync groups (keepalived's `vrrp_sync_group`): several virtual routers of one host that change
//! state together, pure like [`Router`]: told the time and the events of each member, it answers
//! with each member's actions and the group's own transitions.
//!
//! The rules, as keepalived 2.2 applies them (`vrrp/vrrp_sync.c`, the transition table
//! `VRRP_TSM` and `try_up_instance` in `vrrp/vrrp_scheduler.c`, `down_instance` in
//! `vrrp/vrrp_track.c`, `vrrp_state_backup` in `vrrp/vrrp.c`):
//!
//! - **FAULT spreads.** When one member faults (a tracker without weight fails, its link goes
//!   down), every other member goes to FAULT too (`vrrp_sync_fault`): a master announces
//!   priority 0 and removes its addresses, a backup stops listening.
//! - **Back together.** The group leaves FAULT only when no member has a fault of its own any
//!   more (keepalived counts them in `num_member_fault`); then every member comes back as a
//!   backup with a full Master_Down_Interval (`try_up_instance`, then `vrrp_sync_backup`).
//! - **Mastership needs every member.** A member whose master-down timer runs out only *wants*
//!   mastership and stays backup, its timer re-armed (`vrrp_sync_can_goto_master`: "only sync to
//!   master if everyone wants to, i.e. prefer backup state to avoid thrashing"). A member wants
//!   it until it accepts an advert (a live master of higher or equal priority, or any master
//!   with `preempt = false`: `vrrp_state_backup` sets `wantstate` back to BACKUP). So no member
//!   becomes master while another one sees a live master it accepts. When the last member comes
//!   to want it, every member becomes master at once (`vrrp_sync_master`).
//! - **Losing one loses all.** When a master member becomes backup by itself (an advert of
//!   higher priority), the other masters become backups too (`vrrp_sync_backup`).
//!   Deviation: each of them announces priority 0 as it leaves, where keepalived sends nothing,
//!   so that the peer takes those routers too after its skew time instead of a whole
//!   Master_Down_Interval with no master at all.
//! - **Owners** (priority 255) in a group want mastership from the start and get it when every
//!   member wants it; halo refuses groups that mix owners with other routers (keepalived warns
//!   "This won't work").
//!
//! A member that has not started (or has stopped) wants nothing: the group becomes master only
//! once every member runs. Stopping members never moves the others; the daemon stops a group's
//! members together.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use crate::fsm::{Action, Handover, Ignored, Router, RouterConfig, State};
use crate::packet::Advertisement;

/// A change of the group's state, with the member whose event caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupChange {
    /// Previous state of the group.
    pub from: State,
    /// New state: `Initialize` once every member stopped.
    pub to: State,
    /// Index of the member whose event moved the group.
    pub member: usize,
}

/// The routers of one sync group, moved together.
#[derive(Debug)]
pub struct SyncGroup {
    members: Vec<Router>,
    state: State,
    /// Members other than the one called that the last calls gave actions or timers.
    touched: Vec<bool>,
    changes: VecDeque<GroupChange>,
}

impl SyncGroup {
    /// A group of these routers (each in Initialize), in member order.
    pub fn new(mut members: Vec<Router>) -> Self {
        members.iter_mut().for_each(Router::join_group);
        let touched = vec![false; members.len()];
        Self { members, state: State::Initialize, touched, changes: VecDeque::new() }
    }

    /// The group's state: `Initialize` until every member started, then the state its members
    /// share (`Backup`, `Master`, `Fault`).
    pub fn state(&self) -> State {
        self.state
    }

    /// How many members the group has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the group has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A member's router, to read (state, priority, configuration, timers).
    pub fn router(&self, member: usize) -> Option<&Router> {
        self.members.get(member)
    }

    /// Puts a member's router in place of the one it had (a driver builds it once it knows its
    /// interface's address); refused (`false`) once that member has started.
    pub fn join(&mut self, member: usize, now: Instant, mut router: Router) -> bool {
        match self.members.get_mut(member) {
            Some(slot) if slot.state() == State::Initialize => {
                router.join_group();
                router.set_group_fault(now, slot.group_faulted());
                *slot = router;
                true
            }
            _ => false,
        }
    }

    /// Starts a member.
    pub fn start(&mut self, member: usize, now: Instant) {
        if let Some(router) = self.members.get_mut(member) {
            router.start(now);
            self.reconcile(now, member);
        }
    }

    /// Starts a member in the place of the same member of the process it replaces (see
    /// [`Router::adopt`]). Once no member is left to start, a group whose members all took the
    /// same state (all masters, all backups) is in that state without a change: nothing changed
    /// on the wire, so no group hook runs. Anything else goes through the group's rules.
    pub fn adopt(&mut self, member: usize, now: Instant, from: &Handover) {
        let Some(router) = self.members.get_mut(member) else { return };
        router.adopt(now, from);
        let started = self.members.iter().all(|r| r.state() != State::Initialize);
        let shared = self.members.first().map(Router::state).filter(|s| self.members.iter().all(|r| r.state() == *s));
        if let Some(state @ (State::Master | State::Backup)) = shared
            && started
            && self.state == State::Initialize
        {
            self.state = state;
            return;
        }
        self.reconcile(now, member);
    }

    /// Hands a member over (see [`Router::hand_over`]); the group is driven no more after.
    pub fn hand_over(&mut self, member: usize, now: Instant) -> Option<Handover> {
        self.members.get_mut(member).map(|r| r.hand_over(now))
    }

    /// Stops a member cleanly. The others are not moved; when the last member stops, the group
    /// is stopped (`Initialize`).
    pub fn shutdown(&mut self, member: usize, now: Instant) {
        if let Some(router) = self.members.get_mut(member) {
            router.shutdown(now);
            if self.members.iter().all(|r| r.state() == State::Initialize) {
                self.enter(State::Initialize, member);
            }
        }
    }

    /// A received advert for a member (see [`Router::handle_advert`]).
    pub fn handle_advert(&mut self, member: usize, now: Instant, source: IpAddr, advert: &Advertisement) -> Result<(), Ignored> {
        let router = self.members.get_mut(member).ok_or(Ignored::NotListening)?;
        let outcome = router.handle_advert(now, source, advert);
        self.reconcile(now, member);
        outcome
    }

    /// Fires a member's due timers.
    pub fn handle_timeout(&mut self, member: usize, now: Instant) {
        if let Some(router) = self.members.get_mut(member) {
            router.handle_timeout(now);
            self.reconcile(now, member);
        }
    }

    /// Sets a member's tracker adjustment.
    pub fn set_adjustment(&mut self, member: usize, now: Instant, adjustment: i32) {
        if let Some(router) = self.members.get_mut(member) {
            router.set_adjustment(now, adjustment);
            self.reconcile(now, member);
        }
    }

    /// Puts a member's node into maintenance or out of it (see [`Router::set_maintenance`]).
    pub fn set_maintenance(&mut self, member: usize, now: Instant, on: bool) {
        if let Some(router) = self.members.get_mut(member) {
            router.set_maintenance(now, on);
            self.reconcile(now, member);
        }
    }

    /// Sets a member's own fault.
    pub fn set_fault(&mut self, member: usize, now: Instant, faulted: bool) {
        if let Some(router) = self.members.get_mut(member) {
            router.set_fault(now, faulted);
            self.reconcile(now, member);
        }
    }

    /// Reconfigures a member in place (see [`Router::reconfigure`]).
    pub fn reconfigure(&mut self, member: usize, now: Instant, config: RouterConfig) -> Result<(), RouterConfig> {
        let Some(router) = self.members.get_mut(member) else { return Err(config) };
        router.reconfigure(now, config)?;
        self.reconcile(now, member);
        Ok(())
    }

    /// A member's next action.
    pub fn poll_action(&mut self, member: usize) -> Option<Action> {
        self.members.get_mut(member)?.poll_action()
    }

    /// A member's next deadline.
    pub fn poll_timeout(&self, member: usize) -> Option<Instant> {
        self.members.get(member)?.poll_timeout()
    }

    /// The group's next change of state.
    pub fn poll_change(&mut self) -> Option<GroupChange> {
        self.changes.pop_front()
    }

    /// The members (other than those called) that got new actions or timers since the last call
    /// of this: their drivers must drain them.
    pub fn take_touched(&mut self) -> Vec<usize> {
        let touched = self.touched.iter().enumerate().filter(|(_, t)| **t).map(|(i, _)| i).collect();
        self.touched.iter_mut().for_each(|t| *t = false);
        touched
    }

    /// Applies the group's rules after an event of `trigger` (see the module's documentation).
    fn reconcile(&mut self, now: Instant, trigger: usize) {
        if self.members.iter().any(Router::own_fault) {
            self.move_members(trigger, |r| r.set_group_fault(now, true));
            self.enter(State::Fault, trigger);
            return;
        }
        if self.state == State::Fault {
            self.move_members(trigger, |r| r.set_group_fault(now, false));
            self.enter(State::Backup, trigger);
        }
        if self.members.iter().any(|r| r.state() == State::Initialize) {
            return;
        }
        if self.state == State::Master && self.members.iter().any(|r| r.state() == State::Backup) {
            self.move_members(trigger, |r| r.group_backup(now));
            self.enter(State::Backup, trigger);
        }
        if self.state != State::Master && self.members.iter().all(Router::wants_master) {
            self.move_members(trigger, |r| r.group_master(now));
            self.enter(State::Master, trigger);
        }
        if self.state == State::Initialize {
            self.enter(State::Backup, trigger);
        }
    }

    /// Applies `lever` to every member, noting the members other than `trigger` it moved.
    fn move_members(&mut self, trigger: usize, mut lever: impl FnMut(&mut Router) -> bool) {
        for (i, router) in self.members.iter_mut().enumerate() {
            if lever(router) && i != trigger {
                self.touched[i] = true;
            }
        }
    }

    fn enter(&mut self, to: State, member: usize) {
        if self.state != to {
            self.changes.push_back(GroupChange { from: self.state, to, member });
            self.state = to;
        }
    }
}

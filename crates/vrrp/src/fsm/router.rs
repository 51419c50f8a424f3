//! One virtual router ([`Router`]): its state and timers, start and stop, reconfiguration,
//! trackers and faults, its timeouts and its transitions. What it does with a received advert,
//! for its sync group and at a handover is written beside it (receive, group, handover).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::action::Action;
use super::config::RouterConfig;
use super::state::{Reason, State};
use crate::packet::Advertisement;
use crate::types::{Priority, Version};

/// One virtual router.
#[derive(Debug)]
pub struct Router {
    pub(super) config: RouterConfig,
    /// Our primary address on the interface: the tie-breaker between equal priorities.
    pub(super) local_address: IpAddr,
    pub(super) state: State,
    /// Sum of tracker weights currently applied.
    adjustment: i32,
    /// Active faults (trackers without weight, interface down).
    pub(super) faulted: bool,
    /// The master's interval as learned from its adverts (v3), else ours.
    pub(super) master_adver_interval_cs: u16,
    /// Backup: when the master is declared down.
    pub(super) master_down_at: Option<Instant>,
    /// Master: next advert.
    pub(super) advert_at: Option<Instant>,
    /// Master: next gratuitous burst.
    pub(super) gratuitous_at: Option<Instant>,
    /// Preemption is allowed from this time on.
    pub(super) preempt_after: Option<Instant>,
    /// A member of a sync group: it never becomes master on its own, its group decides.
    pub(super) grouped: bool,
    /// Backup whose master-down timer ran out with no acceptable advert since (keepalived's
    /// `wantstate` MASTER): what a group waits for in every member before it takes over.
    pub(super) wants_master: bool,
    /// Held in FAULT because another member of its sync group is faulted.
    pub(super) group_fault: bool,
    /// A master's answer to a lower master (an advert and an announcement) waits until then.
    pub(super) lower_master_answer_after: Option<Instant>,
    /// The node is in maintenance: never master (see [`Router::set_maintenance`]).
    pub(super) maintenance: bool,
    pub(super) actions: VecDeque<Action>,
}

impl Router {
    /// A router in Initialize; `local_address` is the interface's primary address.
    pub fn new(config: RouterConfig, local_address: IpAddr) -> Self {
        let master_adver_interval_cs = config.advert_interval.centiseconds();
        Self {
            config,
            local_address,
            state: State::Initialize,
            adjustment: 0,
            faulted: false,
            master_adver_interval_cs,
            master_down_at: None,
            advert_at: None,
            gratuitous_at: None,
            preempt_after: None,
            grouped: false,
            wants_master: false,
            group_fault: false,
            lower_master_answer_after: None,
            maintenance: false,
            actions: VecDeque::new(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Configuration in use.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Priority after tracker weights: kept in 1..=254, except for the owner (255), which
    /// trackers do not move.
    pub fn effective_priority(&self) -> u8 {
        let base = self.config.priority.get();
        if base == Priority::OWNER.get() {
            return base;
        }
        (i32::from(base) + self.adjustment).clamp(1, 254) as u8
    }

    /// The master interval in use (learned from the master in v3).
    pub fn master_adver_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_adver_interval_cs) * 10)
    }

    /// Skew_Time: RFC 5798 §6.1 (v3, in centiseconds of the master's interval) or RFC 3768 §6.1
    /// (v2, fractions of a second).
    pub fn skew_time(&self) -> Duration {
        let weight = u64::from(256 - u16::from(self.effective_priority()));
        match self.config.version {
            Version::V3 => Duration::from_millis(weight * u64::from(self.master_adver_interval_cs) * 10 / 256),
            Version::V2 => Duration::from_micros(weight * 1_000_000 / 256),
        }
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval() + self.skew_time()
    }

    /// The next time [`Router::handle_timeout`] must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.master_down_at, self.advert_at, self.gratuitous_at].into_iter().flatten().min()
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Starts the router (RFC 5798 §6.4.1).
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        self.preempt_after = Some(now + self.config.preempt_delay);
        if self.faulted || self.group_fault {
            self.transition(State::Fault, if self.faulted { Reason::Fault } else { Reason::Group });
        } else if self.config.priority == Priority::OWNER {
            self.claim_mastership(now, Reason::Owner);
        } else {
            let wait = if self.config.eager_start { self.master_adver_interval() + self.skew_time() } else { self.master_down_interval() };
            self.become_backup(now, wait, Reason::Start);
        }
    }

    /// Stops cleanly: a master announces it with priority 0 so backups take over after skew.
    pub fn shutdown(&mut self, _now: Instant) {
        if self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: 0 });
            self.actions.push_back(Action::RemoveAddresses);
        }
        self.clear_timers();
        self.transition(State::Initialize, Reason::Shutdown);
    }

    /// Applies a changed configuration in place (a reload). Priority, preemption and the
    /// gratuitous schedule change live, without a transition: a master advertises its new
    /// priority at once. What identifies the router on the wire (VRID, version, interval,
    /// authentication) cannot change in place: the configuration is handed back.
    pub fn reconfigure(&mut self, now: Instant, config: RouterConfig) -> Result<(), RouterConfig> {
        if config.wire_identity() != self.config.wire_identity() {
            return Err(config);
        }
        let priority_changed = config.priority != self.config.priority;
        self.config = config;
        if priority_changed && self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
            self.advert_at = Some(now + self.config.advert_interval.as_duration());
        }
        Ok(())
    }

    /// Sets the sum of the weights of the trackers currently applied.
    pub fn set_adjustment(&mut self, now: Instant, adjustment: i32) {
        self.adjustment = adjustment;
        // A master advertises a changed priority at once, so that a better backup can preempt
        // without waiting for the next regular advert.
        if self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
            self.advert_at = Some(now + self.config.advert_interval.as_duration());
        }
    }

    /// Node maintenance (`halo node maintenance on`): a master resigns at once (a priority-0
    /// advert, its addresses removed, then BACKUP) and, on or off, the router never becomes
    /// master while it lasts — as with an effective priority of 0, which RFC 5798 reserves for a
    /// resigning master: no master-down timer, no preemption, not even as the address owner. Off,
    /// it is a backup again: its timer runs, and it preempts as configured.
    pub fn set_maintenance(&mut self, now: Instant, on: bool) {
        if self.maintenance == on {
            return;
        }
        self.maintenance = on;
        match (on, self.state) {
            (true, State::Master) => {
                self.actions.push_back(Action::SendAdvert { priority: 0 });
                self.actions.push_back(Action::RemoveAddresses);
                self.become_backup(now, Duration::ZERO, Reason::Maintenance);
                self.master_down_at = None;
            }
            (true, State::Backup) => {
                self.master_down_at = None;
                self.wants_master = false;
            }
            (false, State::Backup) => self.master_down_at = Some(now + self.master_down_interval()),
            _ => {}
        }
    }

    /// Whether the node is in maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance
    }

    /// Enters or leaves FAULT (this router's own fault: a tracker without weight, its link).
    pub fn set_fault(&mut self, now: Instant, faulted: bool) {
        if self.faulted == faulted {
            return;
        }
        self.faulted = faulted;
        let reason = if faulted { Reason::Fault } else { Reason::Recovered };
        self.apply_fault(now, reason);
    }

    /// Follows the combined fault (own or the group's) into or out of FAULT.
    pub(super) fn apply_fault(&mut self, now: Instant, reason: Reason) {
        let faulted = self.faulted || self.group_fault;
        match (faulted, self.state) {
            (true, State::Master) => {
                self.actions.push_back(Action::SendAdvert { priority: 0 });
                self.actions.push_back(Action::RemoveAddresses);
                self.clear_timers();
                self.transition(State::Fault, reason);
            }
            (true, State::Backup) => {
                self.clear_timers();
                self.transition(State::Fault, reason);
            }
            (false, State::Fault) if self.config.priority == Priority::OWNER => self.claim_mastership(now, reason),
            (false, State::Fault) => {
                let wait = self.master_down_interval();
                self.become_backup(now, wait, reason);
            }
            _ => {}
        }
    }

    /// Fires whatever timers are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.master_down_at.is_some_and(|t| t <= now) && self.state == State::Backup {
            self.claim_mastership(now, Reason::MasterDown);
        }
        if self.state != State::Master {
            return;
        }
        if self.advert_at.is_some_and(|t| t <= now) {
            self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
            self.advert_at = Some(now + self.config.advert_interval.as_duration());
        }
        if self.gratuitous_at.is_some_and(|t| t <= now) {
            self.actions.push_back(Action::SendGratuitous);
            self.gratuitous_at = self.config.gratuitous.refresh.map(|period| now + period);
        }
    }

    /// Becomes master, or, in a sync group, wants to: keepalived's vrrp_sync_can_goto_master
    /// keeps a member backup (its master-down timer re-armed) until every member wants it.
    fn claim_mastership(&mut self, now: Instant, reason: Reason) {
        if self.maintenance {
            let wait = self.master_down_interval();
            if self.state != State::Backup {
                self.become_backup(now, wait, Reason::Maintenance);
            }
            self.master_down_at = None;
            return;
        }
        if !self.grouped {
            self.become_master(now, reason);
            return;
        }
        let wait = self.master_down_interval();
        if self.state == State::Backup {
            self.master_down_at = Some(now + wait);
        } else {
            let reason = if reason == Reason::Owner { Reason::Start } else { reason };
            self.become_backup(now, wait, reason);
        }
        self.wants_master = true;
    }

    pub(super) fn become_master(&mut self, now: Instant, reason: Reason) {
        self.clear_timers();
        self.wants_master = false;
        self.master_adver_interval_cs = self.config.advert_interval.centiseconds();
        self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
        self.actions.push_back(Action::AddAddresses);
        self.actions.push_back(Action::SendGratuitous);
        self.advert_at = Some(now + self.config.advert_interval.as_duration());
        self.gratuitous_at = Some(now + self.config.gratuitous.delay);
        self.transition(State::Master, reason);
    }

    pub(super) fn become_backup(&mut self, now: Instant, wait: Duration, reason: Reason) {
        self.clear_timers();
        self.wants_master = false;
        // In maintenance a backup waits for no master: it never takes over.
        self.master_down_at = (!self.maintenance).then(|| now + wait);
        self.transition(State::Backup, reason);
    }

    pub(super) fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.advert_at = None;
        self.gratuitous_at = None;
    }

    pub(super) fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.actions.push_back(Action::StateChanged { from, to, reason, priority: self.effective_priority() });
    }

    /// The advert this router sends with `priority`.
    pub fn advertisement(&self, priority: u8, addresses: Vec<IpAddr>) -> Advertisement {
        self.config.advertisement(priority, addresses)
    }
}

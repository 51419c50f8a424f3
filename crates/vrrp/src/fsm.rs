//! The VRRP state machine of one virtual router (RFC 5798 §6, RFC 3768 §6 for version 2), pure:
//! it is told the time and the events, and answers with actions and its next deadline. It never
//! reads a clock or touches a socket; the driver does both.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::packet::{Advertisement, Auth};
use crate::types::{AdvertInterval, Priority, Version, Vrid};

mod group;
mod handover;

pub use handover::Handover;

/// What the router is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// Virtual router id.
    pub vrid: Vrid,
    /// Protocol version.
    pub version: Version,
    /// Base priority, before tracker adjustments.
    pub priority: Priority,
    /// Our advertisement interval.
    pub advert_interval: AdvertInterval,
    /// Take over from a lower-priority master.
    pub preempt: bool,
    /// After start, wait this long before preempting.
    pub preempt_delay: Duration,
    /// Start by listening for one advert interval (plus skew) instead of three.
    pub eager_start: bool,
    /// v2 authentication expected in and sent with adverts.
    pub auth: Auth,
    /// Gratuitous ARP / NA bursts while master.
    pub gratuitous: GratuitousSchedule,
}

/// What identifies a virtual router to its peers on the wire: what the adverts carry and what a
/// receiver checks them against. It cannot change while the router runs (a reload restarts the
/// router instead); everything else in [`RouterConfig`] can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireIdentity {
    /// Virtual router id.
    pub vrid: Vrid,
    /// Protocol version.
    pub version: Version,
    /// Advertisement interval.
    pub advert_interval: AdvertInterval,
    /// v2 authentication.
    pub auth: Auth,
}

impl RouterConfig {
    /// The part of the configuration peers see and check.
    pub fn wire_identity(&self) -> WireIdentity {
        WireIdentity { vrid: self.vrid, version: self.version, advert_interval: self.advert_interval, auth: self.auth }
    }

    /// The advert a router of this configuration sends with `priority`.
    pub fn advertisement(&self, priority: u8, addresses: Vec<IpAddr>) -> Advertisement {
        Advertisement {
            version: self.version,
            vrid: self.vrid,
            priority,
            interval_cs: self.advert_interval.centiseconds(),
            addresses,
            auth: self.auth,
        }
    }
}

/// When gratuitous ARP / unsolicited NA bursts are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GratuitousSchedule {
    /// Pause between the burst on becoming master and the second one.
    pub delay: Duration,
    /// Period of refresh bursts while master; `None` for none.
    pub refresh: Option<Duration>,
}

/// Protocol states (RFC 5798 §6.4), plus FAULT as keepalived has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Watching the master.
    Backup,
    /// Owning the addresses and advertising.
    Master,
    /// Unable to serve (a tracker without weight fails, or the interface is down).
    Fault,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        })
    }
}

/// Why a state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Started as backup.
    Start,
    /// Started as the address owner (priority 255).
    Owner,
    /// No advert from a master within Master_Down_Interval.
    MasterDown,
    /// An advert of higher priority (or equal priority from a higher address).
    HigherPriority,
    /// Stopped cleanly.
    Shutdown,
    /// A fault began.
    Fault,
    /// The fault cleared.
    Recovered,
    /// Its sync group moved it, following another member (see [`crate::sync`]).
    Group,
    /// Took the place of the same router in the process it replaces (`halo upgrade`): the state
    /// did not change on the wire.
    Handover,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0 announces a stop).
    SendAdvert {
        /// Priority to put in the packet.
        priority: u8,
    },
    /// Add the virtual addresses to the interface.
    AddAddresses,
    /// Remove them.
    RemoveAddresses,
    /// Send one burst of gratuitous ARP / unsolicited NA for every virtual address.
    SendGratuitous,
    /// The state changed (log it, run notify hooks, update status).
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
        /// Effective priority at the change.
        priority: u8,
    },
}

/// Why a received advert was not acted upon. Each has a stable name for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// For another virtual router.
    Vrid,
    /// Of another version.
    Version,
    /// v2 authentication does not match.
    Auth,
    /// v2 advert interval differs from ours (RFC 3768 §7.1: discard).
    Interval,
    /// Not listening (initialize or fault).
    NotListening,
    /// Lower priority than ours while we may preempt (or are master).
    LowerPriority,
}

impl Ignored {
    /// A short stable name, for counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::Vrid => "vrid",
            Ignored::Version => "version",
            Ignored::Auth => "auth",
            Ignored::Interval => "interval_mismatch",
            Ignored::NotListening => "not_listening",
            Ignored::LowerPriority => "lower_priority",
        }
    }
}

/// One virtual router.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    /// Our primary address on the interface: the tie-breaker between equal priorities.
    local_address: IpAddr,
    state: State,
    /// Sum of tracker weights currently applied.
    adjustment: i32,
    /// Active faults (trackers without weight, interface down).
    faulted: bool,
    /// The master's interval as learned from its adverts (v3), else ours.
    master_adver_interval_cs: u16,
    /// Backup: when the master is declared down.
    master_down_at: Option<Instant>,
    /// Master: next advert.
    advert_at: Option<Instant>,
    /// Master: next gratuitous burst.
    gratuitous_at: Option<Instant>,
    /// Preemption is allowed from this time on.
    preempt_after: Option<Instant>,
    /// A member of a sync group: it never becomes master on its own, its group decides.
    grouped: bool,
    /// Backup whose master-down timer ran out with no acceptable advert since (keepalived's
    /// `wantstate` MASTER): what a group waits for in every member before it takes over.
    wants_master: bool,
    /// Held in FAULT because another member of its sync group is faulted.
    group_fault: bool,
    actions: VecDeque<Action>,
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
    fn apply_fault(&mut self, now: Instant, reason: Reason) {
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

    /// Handles a received advert from `source` (already checked for TTL 255 and checksum).
    pub fn handle_advert(&mut self, now: Instant, source: IpAddr, advert: &Advertisement) -> Result<(), Ignored> {
        self.check(advert)?;
        match self.state {
            State::Initialize | State::Fault => Err(Ignored::NotListening),
            State::Backup => self.backup_receives(now, advert),
            State::Master => self.master_receives(now, source, advert),
        }
    }

    fn check(&mut self, advert: &Advertisement) -> Result<(), Ignored> {
        if advert.vrid != self.config.vrid {
            return Err(Ignored::Vrid);
        }
        if advert.version != self.config.version {
            return Err(Ignored::Version);
        }
        if self.config.version == Version::V2 {
            if advert.auth != self.config.auth {
                return Err(Ignored::Auth);
            }
            // RFC 3768 §7.1: the interval must match; keepalived drops the packet too.
            if advert.interval_cs != self.config.advert_interval.centiseconds() {
                return Err(Ignored::Interval);
            }
        }
        Ok(())
    }

    /// RFC 5798 §6.4.2.
    fn backup_receives(&mut self, now: Instant, advert: &Advertisement) -> Result<(), Ignored> {
        if advert.priority == 0 {
            self.master_down_at = Some(now + self.skew_time());
            return Ok(());
        }
        let may_preempt = self.config.preempt && self.preempt_after.is_none_or(|t| now >= t);
        if !may_preempt || advert.priority >= self.effective_priority() {
            // A master this router accepts: it no longer wants mastership (keepalived,
            // vrrp_state_backup: "we want to be in BACKUP state").
            self.wants_master = false;
            if self.config.version == Version::V3 {
                self.master_adver_interval_cs = advert.interval_cs;
            }
            self.master_down_at = Some(now + self.master_down_interval());
            return Ok(());
        }
        Err(Ignored::LowerPriority)
    }

    /// RFC 5798 §6.4.3.
    fn master_receives(&mut self, now: Instant, source: IpAddr, advert: &Advertisement) -> Result<(), Ignored> {
        if advert.priority == 0 {
            self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
            self.advert_at = Some(now + self.config.advert_interval.as_duration());
            return Ok(());
        }
        let ours = self.effective_priority();
        if advert.priority > ours || (advert.priority == ours && source > self.local_address) {
            if self.config.version == Version::V3 {
                self.master_adver_interval_cs = advert.interval_cs;
            }
            self.actions.push_back(Action::RemoveAddresses);
            let wait = self.master_down_interval();
            self.become_backup(now, wait, Reason::HigherPriority);
            return Ok(());
        }
        Err(Ignored::LowerPriority)
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

    fn become_master(&mut self, now: Instant, reason: Reason) {
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

    fn become_backup(&mut self, now: Instant, wait: Duration, reason: Reason) {
        self.clear_timers();
        self.wants_master = false;
        self.master_down_at = Some(now + wait);
        self.transition(State::Backup, reason);
    }

    fn clear_timers(&mut self) {
        self.master_down_at = None;
        self.advert_at = None;
        self.gratuitous_at = None;
    }

    fn transition(&mut self, to: State, reason: Reason) {
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

//! A router handed from one process to the next (`halo upgrade`): what the running router
//! hands over ([`Handover`], its state and timers relative to `now`, after one last advert) and how its successor takes
//! the same place ([`Router::adopt`]) without an election. A master stays master: its successor
//! advertises at once with its priority (never 0), keeps the addresses (it refreshes them rather
//! than adding them anew, and sends no gratuitous burst: no MAC changes), and no state changes
//! on the wire. A backup stays backup with the master-down time it had left.

use std::time::{Duration, Instant};

use super::action::Action;
use super::router::Router;
use super::state::{Reason, State};

/// The state of a running router, as its successor needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    /// Its state when it stopped.
    pub state: State,
    /// The master's advertisement interval it had learned (v3), in centiseconds.
    pub master_adver_interval_cs: u16,
    /// A backup: how long until it would have declared the master down.
    pub master_down_in: Option<Duration>,
    /// How long until it would have been allowed to preempt (zero once allowed).
    pub preempt_in: Duration,
}

impl Router {
    /// Hands this router over at `now`: a master sends one last advert now (queued as an
    /// action), so that the successor's first advert, sent as it adopts, comes well within an
    /// interval of it whatever the phase of the interval the handover fell in. Then the router
    /// stops without a word: no priority-0 advert, the addresses stay, its timers are cleared
    /// (the caller carries out the last advert and drives it no more). What it hands over.
    pub fn hand_over(&mut self, now: Instant) -> Handover {
        let handover = self.handover(now);
        if self.state == State::Master {
            self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
        }
        self.clear_timers();
        handover
    }

    /// What this router would hand over at `now` (it changes nothing).
    pub fn handover(&self, now: Instant) -> Handover {
        Handover {
            state: self.state,
            master_adver_interval_cs: self.master_adver_interval_cs,
            master_down_in: self.master_down_at.map(|t| t.saturating_duration_since(now)),
            preempt_in: self.preempt_after.map_or(Duration::ZERO, |t| t.saturating_duration_since(now)),
        }
    }

    /// Starts this router in the place of the one that handed `from` over (instead of
    /// [`Router::start`]): a master becomes master at once, advertising now with its effective
    /// priority and refreshing the addresses it already holds; a backup waits what the other one
    /// had left (at most a Master_Down_Interval); a router in FAULT or not started starts as
    /// usual. A master whose own trackers fault from the start gives the addresses up as a
    /// faulting master does (priority 0, addresses removed). Only from Initialize.
    pub fn adopt(&mut self, now: Instant, from: &Handover) {
        if self.state != State::Initialize {
            return;
        }
        self.preempt_after = Some(now + from.preempt_in);
        match from.state {
            State::Master if self.faulted || self.group_fault => {
                self.actions.push_back(Action::SendAdvert { priority: 0 });
                self.actions.push_back(Action::RemoveAddresses);
                self.transition(State::Fault, if self.faulted { Reason::Fault } else { Reason::Group });
            }
            State::Master => {
                self.clear_timers();
                self.wants_master = false;
                self.master_adver_interval_cs = self.config.advert_interval.centiseconds();
                self.actions.push_back(Action::SendAdvert { priority: self.effective_priority() });
                self.actions.push_back(Action::AddAddresses);
                self.advert_at = Some(now + self.config.advert_interval.as_duration());
                self.gratuitous_at = self.config.gratuitous.refresh.map(|period| now + period);
                self.transition(State::Master, Reason::Handover);
            }
            State::Backup if !(self.faulted || self.group_fault) => {
                if self.config.version == crate::Version::V3 && from.master_adver_interval_cs > 0 {
                    self.master_adver_interval_cs = from.master_adver_interval_cs;
                }
                let full = self.master_down_interval();
                let wait = from.master_down_in.map_or(full, |left| left.min(full));
                self.become_backup(now, wait, Reason::Handover);
            }
            State::Backup | State::Fault | State::Initialize => self.start(now),
        }
    }
}

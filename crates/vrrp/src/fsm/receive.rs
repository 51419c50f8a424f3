//! What a virtual router does with a received advert (RFC 5798 §6.4.2 and §6.4.3): check that it
//! is for this router, then follow it as a backup or answer it as the master.

use std::net::IpAddr;
use std::time::Instant;

use super::action::Action;
use super::ignored::Ignored;
use super::router::Router;
use super::state::{Reason, State};
use crate::packet::Advertisement;
use crate::types::Version;

impl Router {
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
        if self.maintenance {
            // Listening only: it learns the master's interval, and takes over from nobody.
            if advert.priority != 0 && self.config.version == Version::V3 {
                self.master_adver_interval_cs = advert.interval_cs;
            }
            return Ok(());
        }
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
        // Another router is master, with a lower priority: it took over while this one was not
        // heard (a pause, a partition), and the LAN may have learnt its MAC for the addresses.
        // keepalived (vrrp_state_master_rx) answers with an advert, which makes the other yield,
        // and a gratuitous announcement; so does this router, at most once an advert interval.
        if self.lower_master_answer_after.is_none_or(|after| now >= after) {
            self.actions.push_back(Action::SendAdvert { priority: ours });
            self.actions.push_back(Action::SendGratuitous);
            self.lower_master_answer_after = Some(now + self.config.advert_interval.as_duration());
        }
        Err(Ignored::LowerPriority)
    }
}

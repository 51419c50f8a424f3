//! What a virtual router is configured with ([`RouterConfig`]), the part of it its peers see on
//! the wire ([`WireIdentity`]), and when it sends gratuitous bursts ([`GratuitousSchedule`]).

use std::net::IpAddr;
use std::time::Duration;

use crate::packet::{Advertisement, Auth};
use crate::types::{AdvertInterval, Priority, Version, Vrid};

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

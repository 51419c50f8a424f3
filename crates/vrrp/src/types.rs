//! Newtypes for the protocol's numbers, each valid by construction (RFC 3768 §5.3, RFC 5798 §5.2).

use std::fmt;
use std::time::Duration;

/// A value outside the range the protocol allows, with the range to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {range}, got {got}")]
pub struct RangeError {
    /// What was being built ("virtual_router_id").
    pub what: &'static str,
    /// The allowed values, as text ("1..=255").
    pub range: &'static str,
    /// The rejected value, as text.
    pub got: String,
}

/// Virtual Router Identifier, 1..=255 (RFC 5798 §5.2.3). 0 is reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vrid(u8);

impl Vrid {
    /// Builds a VRID, rejecting 0 and anything above 255.
    pub fn new(value: i64) -> Result<Self, RangeError> {
        match u8::try_from(value) {
            Ok(v) if v >= 1 => Ok(Self(v)),
            _ => Err(RangeError { what: "virtual_router_id", range: "1..=255", got: value.to_string() }),
        }
    }

    /// The wire value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Vrid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Router priority, 1..=255 (RFC 5798 §5.2.4). 255 means "owns the addresses"; 0 is only ever
/// sent on the wire to announce a clean stop, so it is not a configurable priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    /// The address owner's priority.
    pub const OWNER: Priority = Priority(255);

    /// Builds a configured priority, 1..=255.
    pub fn new(value: i64) -> Result<Self, RangeError> {
        match u8::try_from(value) {
            Ok(v) if v >= 1 => Ok(Self(v)),
            _ => Err(RangeError { what: "priority", range: "1..=255", got: value.to_string() }),
        }
    }

    /// The wire value.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The protocol version an instance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, advert interval in whole seconds, optional PASS authentication.
    V2,
    /// RFC 5798: IPv4 and IPv6, advert interval in centiseconds, no authentication.
    V3,
}

impl Version {
    /// Builds a version from its number.
    pub fn new(value: i64) -> Result<Self, RangeError> {
        match value {
            2 => Ok(Self::V2),
            3 => Ok(Self::V3),
            _ => Err(RangeError { what: "version", range: "2 or 3", got: value.to_string() }),
        }
    }

    /// The version number as on the wire.
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.number().fmt(f)
    }
}

/// VRRPv3-over-IPv4 checksum coverage (RFC 5798 §5.2.8 includes an IPv4 pseudo-header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ChecksumMode {
    /// With the pseudo-header, as the RFC says and keepalived does by default.
    #[default]
    PseudoHeader,
    /// Over the VRRP message only, as version 2 does (some older implementations).
    AsV2,
}

/// The advertisement interval, stored in centiseconds, the finest unit either version carries.
///
/// Version 2 carries whole seconds in 8 bits (1..=255 s, RFC 3768 §5.3.7); version 3 carries
/// centiseconds in 12 bits (10 ms..=40.95 s, RFC 5798 §5.2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdvertInterval {
    centiseconds: u16,
}

impl AdvertInterval {
    /// Builds the interval a given version can carry, or says why it cannot.
    pub fn new(version: Version, interval: Duration) -> Result<Self, RangeError> {
        let got = || format!("{interval:?}");
        match version {
            Version::V2 => {
                let whole = interval.subsec_nanos() == 0;
                match u8::try_from(interval.as_secs()) {
                    Ok(s) if whole && s >= 1 => Ok(Self { centiseconds: u16::from(s) * 100 }),
                    _ => Err(RangeError { what: "a VRRPv2 advert_interval", range: "whole seconds, 1s..=255s", got: got() }),
                }
            }
            Version::V3 => {
                let nanos = interval.as_nanos();
                let whole_cs = nanos.is_multiple_of(10_000_000);
                let cs = nanos / 10_000_000;
                match u16::try_from(cs) {
                    Ok(c) if whole_cs && (1..=4095).contains(&c) => Ok(Self { centiseconds: c }),
                    _ => Err(RangeError { what: "a VRRPv3 advert_interval", range: "a multiple of 10ms, 10ms..=40950ms", got: got() }),
                }
            }
        }
    }

    /// The interval in centiseconds (the v3 wire unit).
    pub fn centiseconds(self) -> u16 {
        self.centiseconds
    }

    /// The interval as a duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(u64::from(self.centiseconds) * 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrid_and_priority_ranges() {
        assert!(Vrid::new(0).is_err());
        assert_eq!(Vrid::new(255).map(Vrid::get), Ok(255));
        assert!(Vrid::new(256).is_err());
        assert!(Priority::new(0).is_err());
        assert_eq!(Priority::new(1).map(Priority::get), Ok(1));
        assert!(Priority::new(-1).is_err());
        assert_eq!(Version::new(3), Ok(Version::V3));
        assert!(Version::new(4).is_err());
    }

    #[test]
    fn advert_interval_per_version() {
        let ms = Duration::from_millis;
        assert_eq!(AdvertInterval::new(Version::V2, ms(1000)).map(|i| i.centiseconds()), Ok(100));
        assert!(AdvertInterval::new(Version::V2, ms(1500)).is_err());
        assert!(AdvertInterval::new(Version::V2, ms(256_000)).is_err());
        assert!(AdvertInterval::new(Version::V2, ms(0)).is_err());
        assert_eq!(AdvertInterval::new(Version::V3, ms(100)).map(|i| i.centiseconds()), Ok(10));
        assert!(AdvertInterval::new(Version::V3, ms(105)).is_err());
        assert!(AdvertInterval::new(Version::V3, ms(5)).is_err());
        assert_eq!(AdvertInterval::new(Version::V3, ms(40_950)).map(|i| i.centiseconds()), Ok(4095));
        assert!(AdvertInterval::new(Version::V3, ms(40_960)).is_err());
    }
}

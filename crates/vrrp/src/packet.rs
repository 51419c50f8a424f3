//! VRRP advertisement wire format: decode and encode, checksums, PASS authentication.
//!
//! VRRPv2, RFC 3768 §5.1 (IPv4 only):
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Auth Type   |   Adver Int   |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         IP Address (1)                        |
//! |                            ...                                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                     Authentication Data (1)                   |
//! |                     Authentication Data (2)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! VRRPv3, RFC 5798 §5.1 (IPv4 and IPv6):
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPvX Address(es)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The v3 checksum covers an IPv4/IPv6 pseudo-header (RFC 5798 §5.2.8) unless the
//! [`ChecksumMode::AsV2`] compatibility mode is chosen. keepalived includes it by default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::{ChecksumMode, Version, Vrid};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (RFC 5798 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit every advert is sent with and must arrive with (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;

const HEADER: usize = 8;
const AUTH_DATA: usize = 8;
const ADVERTISEMENT: u8 = 1;

/// VRRPv2 authentication (RFC 3768 §5.3.6). Type 2 (AH) was removed from the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Type 0.
    None,
    /// Type 1: eight bytes of clear-text password, zero padded.
    Pass([u8; 8]),
}

impl Auth {
    /// PASS authentication from a password of at most 8 bytes (longer ones are cut, as keepalived).
    pub fn pass(password: &str) -> Self {
        let mut data = [0u8; 8];
        for (slot, byte) in data.iter_mut().zip(password.bytes()) {
            *slot = byte;
        }
        Self::Pass(data)
    }
}

/// One VRRP advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    /// Protocol version.
    pub version: Version,
    /// Virtual router.
    pub vrid: Vrid,
    /// Sender's priority; 0 announces that the master stops.
    pub priority: u8,
    /// Advert interval in centiseconds (v2 carries whole seconds: a multiple of 100).
    pub interval_cs: u16,
    /// Virtual addresses, all of the packet's family.
    pub addresses: Vec<IpAddr>,
    /// v2 authentication; always `Auth::None` for v3.
    pub auth: Auth,
}

/// Why a packet was rejected. Each has a stable name for counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header, the addresses and (v2) the authentication data.
    #[error("truncated: {got} bytes, need {need}")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the header announces.
        need: usize,
    },
    /// Version other than 2 or 3.
    #[error("unknown version {0}")]
    Version(u8),
    /// Type other than 1 (advertisement).
    #[error("unknown type {0}")]
    Type(u8),
    /// VRID 0.
    #[error("virtual router id 0")]
    Vrid,
    /// VRRPv2 over IPv6.
    #[error("VRRPv2 over IPv6")]
    V2OverIpv6,
    /// Checksum does not verify.
    #[error("bad checksum {got:#06x}")]
    Checksum {
        /// The checksum in the packet.
        got: u16,
    },
    /// Authentication type other than 0 or 1.
    #[error("unsupported authentication type {0}")]
    AuthType(u8),
    /// An advert interval of zero.
    #[error("advert interval 0")]
    Interval,
    /// Source and destination of different families.
    #[error("source and destination of different address families")]
    Family,
}

impl DecodeError {
    /// A short stable name, for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::Version(_) => "version",
            Self::Type(_) => "type",
            Self::Vrid => "vrid",
            Self::V2OverIpv6 => "v2_over_ipv6",
            Self::Checksum { .. } => "checksum",
            Self::AuthType(_) => "auth_type",
            Self::Interval => "interval",
            Self::Family => "family",
        }
    }
}

/// Why an advertisement cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More than 255 addresses.
    #[error("{0} addresses, at most 255 fit")]
    TooManyAddresses(usize),
    /// An address of another family than the packet's.
    #[error("address {0} is not of the packet's family")]
    Family(IpAddr),
    /// v2 with IPv6, or v3 auth.
    #[error("VRRPv{0} cannot carry this")]
    Version(u8),
    /// v2 interval not whole seconds in 1..=255, or v3 interval above 4095 cs, or zero.
    #[error("advert interval {0} cs cannot be carried")]
    Interval(u16),
}

/// RFC 1071 one's complement sum of 16-bit words, folded; `initial` carries a pseudo-header sum.
fn ones_complement_sum(initial: u32, data: &[u8]) -> u32 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The pseudo-header's contribution (RFC 5798 §5.2.8: source, destination, protocol, length).
fn pseudo_header_sum(src: IpAddr, dst: IpAddr, length: usize) -> u32 {
    let mut bytes = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
            bytes.extend_from_slice(&[0, PROTOCOL]);
            bytes.extend_from_slice(&(length as u16).to_be_bytes());
        }
        (s, d) => {
            let (s, d) = (v6(s), v6(d));
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
            bytes.extend_from_slice(&(length as u32).to_be_bytes());
            bytes.extend_from_slice(&[0, 0, 0, PROTOCOL]);
        }
    }
    ones_complement_sum(0, &bytes)
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The checksum of `message` (with its checksum field zero or included, see callers).
fn checksum(version: Version, message: &[u8], src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> u16 {
    let with_pseudo = version == Version::V3 && (src.is_ipv6() || mode == ChecksumMode::PseudoHeader);
    let initial = if with_pseudo { pseudo_header_sum(src, dst, message.len()) } else { 0 };
    !(ones_complement_sum(initial, message) as u16)
}

/// Decodes the VRRP message of an IP packet from `src` to `dst`. Never panics.
pub fn decode(bytes: &[u8], src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> Result<Advertisement, DecodeError> {
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(DecodeError::Family);
    }
    if bytes.len() < HEADER {
        return Err(DecodeError::Truncated { got: bytes.len(), need: HEADER });
    }
    let version = match bytes[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => return Err(DecodeError::Version(other)),
    };
    if bytes[0] & 0x0f != ADVERTISEMENT {
        return Err(DecodeError::Type(bytes[0] & 0x0f));
    }
    if version == Version::V2 && src.is_ipv6() {
        return Err(DecodeError::V2OverIpv6);
    }
    let vrid = Vrid::new(i64::from(bytes[1])).map_err(|_| DecodeError::Vrid)?;
    let count = usize::from(bytes[3]);
    let width = if src.is_ipv4() { 4 } else { 16 };
    let auth_len = if version == Version::V2 { AUTH_DATA } else { 0 };
    let need = HEADER + count * width + auth_len;
    if bytes.len() < need {
        return Err(DecodeError::Truncated { got: bytes.len(), need });
    }
    let message = &bytes[..need];
    if checksum(version, message, src, dst, mode) != 0 {
        return Err(DecodeError::Checksum { got: u16::from_be_bytes([bytes[6], bytes[7]]) });
    }
    let (interval_cs, auth) = match version {
        Version::V2 => {
            let auth = match bytes[4] {
                0 => Auth::None,
                1 => {
                    let mut data = [0u8; 8];
                    data.copy_from_slice(&message[need - AUTH_DATA..]);
                    Auth::Pass(data)
                }
                other => return Err(DecodeError::AuthType(other)),
            };
            (u16::from(bytes[5]) * 100, auth)
        }
        Version::V3 => (u16::from_be_bytes([bytes[4] & 0x0f, bytes[5]]), Auth::None),
    };
    if interval_cs == 0 {
        return Err(DecodeError::Interval);
    }
    let addresses = message[HEADER..HEADER + count * width]
        .chunks_exact(width)
        .map(|chunk| match <[u8; 4]>::try_from(chunk) {
            Ok(four) => IpAddr::from(four),
            Err(_) => {
                let mut sixteen = [0u8; 16];
                sixteen.copy_from_slice(chunk);
                IpAddr::from(sixteen)
            }
        })
        .collect();
    Ok(Advertisement { version, vrid, priority: bytes[2], interval_cs, addresses, auth })
}

/// Encodes an advertisement sent from `src` to `dst` (which the checksum covers in v3).
pub fn encode(adv: &Advertisement, src: IpAddr, dst: IpAddr, mode: ChecksumMode) -> Result<Vec<u8>, EncodeError> {
    let count = u8::try_from(adv.addresses.len()).map_err(|_| EncodeError::TooManyAddresses(adv.addresses.len()))?;
    if let Some(other) = adv.addresses.iter().find(|a| a.is_ipv4() != src.is_ipv4()) {
        return Err(EncodeError::Family(*other));
    }
    let mut out = vec![(adv.version.number() << 4) | ADVERTISEMENT, adv.vrid.get(), adv.priority, count];
    match adv.version {
        Version::V2 => {
            if src.is_ipv6() {
                return Err(EncodeError::Version(2));
            }
            let seconds = adv.interval_cs / 100;
            if !adv.interval_cs.is_multiple_of(100) || !(1..=255).contains(&seconds) {
                return Err(EncodeError::Interval(adv.interval_cs));
            }
            let auth_type = if matches!(adv.auth, Auth::Pass(_)) { 1 } else { 0 };
            out.extend_from_slice(&[auth_type, seconds as u8, 0, 0]);
        }
        Version::V3 => {
            if adv.auth != Auth::None {
                return Err(EncodeError::Version(3));
            }
            if !(1..=4095).contains(&adv.interval_cs) {
                return Err(EncodeError::Interval(adv.interval_cs));
            }
            out.extend_from_slice(&adv.interval_cs.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
    }
    for address in &adv.addresses {
        match address {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    if adv.version == Version::V2 {
        let data = match adv.auth {
            Auth::Pass(data) => data,
            Auth::None => [0; 8],
        };
        out.extend_from_slice(&data);
    }
    let sum = checksum(adv.version, &out, src, dst, mode);
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    Ok(out)
}

//! An interface's own IP settings (`net.ipv4.conf.IF.*`, IPv6 address generation) set over
//! rtnetlink (`RTM_SETLINK` with `IFLA_AF_SPEC`), which takes CAP_NET_ADMIN alone: a container's
//! /proc/sys is read-only, and so is a systemd unit's with `ProtectKernelTunables=yes`, while
//! the kernel takes the same settings from netlink. Values are read back from /proc/sys, which
//! stays readable everywhere.

use netlink_packet_core::{DefaultNla, NLA_F_NESTED};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, LinkAttribute, LinkMessage};

use crate::netlink_blocking::BlockingNetlink;
use crate::{Result, io, sysctl};

/// The IPv4 settings halo makes, by their kernel number (`IPV4_DEVCONF_*` of linux/ip.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Setting {
    /// `rp_filter`
    RpFilter = 8,
    /// `arp_filter`
    ArpFilter = 13,
    /// `arp_announce`
    ArpAnnounce = 18,
    /// `arp_ignore`
    ArpIgnore = 19,
    /// `promote_secondaries`
    PromoteSecondaries = 20,
}

impl Ipv4Setting {
    /// Its name under `net.ipv4.conf.IF`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RpFilter => "rp_filter",
            Self::ArpFilter => "arp_filter",
            Self::ArpAnnounce => "arp_announce",
            Self::ArpIgnore => "arp_ignore",
            Self::PromoteSecondaries => "promote_secondaries",
        }
    }
}

/// `IFLA_INET_CONF`, the IPv4 part of `IFLA_AF_SPEC`.
const IFLA_INET_CONF: u16 = 1;

/// The current value of `setting` on `interface` (`None` when the interface has none).
pub fn read(interface: &str, setting: Ipv4Setting) -> Result<Option<u32>> {
    let key = sysctl::ipv4_conf_key(interface, setting.name());
    match sysctl::read(&key)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| io(format!("reading {key}"))(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{text:?}: {e}")))),
    }
}

/// Sets IPv4 settings of `interface`, all in one request.
pub fn set(interface: &str, settings: &[(Ipv4Setting, u32)]) -> Result<()> {
    let what = || {
        let list: Vec<String> = settings.iter().map(|(s, v)| format!("{} = {v}", s.name())).collect();
        format!("setting {} of {interface}", list.join(", "))
    };
    // Each setting is an attribute of its own number holding a u32, nested in IFLA_INET_CONF.
    let mut nested = Vec::with_capacity(settings.len() * 8);
    for (setting, value) in settings {
        nested.extend_from_slice(&8u16.to_ne_bytes());
        nested.extend_from_slice(&(*setting as u16).to_ne_bytes());
        nested.extend_from_slice(&value.to_ne_bytes());
    }
    let conf = AfSpecInet::Other(DefaultNla::new(IFLA_INET_CONF | NLA_F_NESTED, nested));
    set_link(interface, AfSpecUnspec::Inet(vec![conf]), &what())
}

/// Turns IPv6 address generation off on `interface` (`addr_gen_mode = 1`): it gets no
/// link-local address of its own, and so sends nothing of IPv6 of its own accord.
pub fn no_ipv6_address_generation(interface: &str) -> Result<()> {
    let what = format!("turning IPv6 address generation off on {interface}");
    set_link(interface, AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]), &what)
}

fn set_link(interface: &str, spec: AfSpecUnspec, what: &str) -> Result<()> {
    let index = nix::net::if_::if_nametoindex(interface).map_err(|e| io(what.to_string())(std::io::Error::from(e)))?;
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.attributes.push(LinkAttribute::AfSpecUnspec(vec![spec]));
    let mut netlink = BlockingNetlink::open()?;
    match netlink.request(RouteNetlinkMessage::SetLink(message), what)? {
        0 => Ok(()),
        code => Err(io(what.to_string())(std::io::Error::from_raw_os_error(-code))),
    }
}

//! Validation of `[[announce]]` (addresses announced by BGP through FRR) and `[bgp]` (the
//! local speaker `halo render frr` configures).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use super::{interface_name, parse_virtual_address, unique_names};
use crate::diag::{Hint, Report};
use crate::model::{Announce, Bgp, BgpNeighbor};
use crate::raw::{Int, RawAnnounce, RawBgp, RawTracker, RawVrrp, Text};

pub(super) fn announcements(
    report: &mut Report<'_>,
    raw: &[RawAnnounce],
    vrrp: &[RawVrrp],
    trackers: &[RawTracker],
) -> Option<Vec<Announce>> {
    unique_names(report, "announce", raw.iter().map(|a| &a.name));
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut out = Some(Vec::new());
    for a in raw {
        let address = host_route(report, &a.address);
        if let Some(net) = address {
            if seen.contains(&net.addr()) {
                report.error(a.address.span(), format!("address {} is announced twice", net.addr()));
            }
            seen.push(net.addr());
            vrrp_overlap(report, &a.address, net, vrrp);
        }
        for t in a.track.iter().flatten() {
            if !trackers.iter().any(|r| r.name.get_ref() == t.get_ref()) {
                report.error(t.span(), format!("announce `{}` tracks unknown tracker `{}`", a.name.get_ref(), t.get_ref()));
            }
        }
        let interface = match &a.interface {
            Some(i) => interface_name(report, i, "announce interface").unwrap_or_default(),
            None => "lo".to_string(),
        };
        let track = a.track.iter().flatten().map(|t| t.get_ref().clone()).collect();
        out = out.zip(address).map(|(mut v, address)| {
            v.push(Announce { name: a.name.get_ref().clone(), address, interface, track });
            v
        });
    }
    out
}

/// A /32 or /128 (a bare address is one).
fn host_route(report: &mut Report<'_>, text: &Text) -> Option<IpNet> {
    let Some(net) = parse_virtual_address(text.get_ref()) else {
        report.error(text.span(), format!("`{}` is not an address", text.get_ref())).hint("like \"10.0.0.100/32\" or \"fd00::100/128\"");
        return None;
    };
    let ip = net.addr();
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || link_local {
        report.error(text.span(), format!("{ip} cannot be announced: it is not a routable unicast address"));
        return None;
    }
    if net.prefix_len() != net.max_prefix_len() {
        report.error(text.span(), format!("announce address {net} is not a host route")).hint(format!(
            "announce {}/{}: each balancer announces the address itself, and the fabric spreads over them",
            net.addr(),
            net.max_prefix_len()
        ));
        return None;
    }
    Some(net)
}

/// An address is announced by BGP or floated by VRRP, never both: two mechanisms would fight
/// over it.
fn vrrp_overlap(report: &mut Report<'_>, text: &Text, net: IpNet, vrrp: &[RawVrrp]) {
    for v in vrrp {
        let floats = v.virtual_addresses.get_ref().iter().chain(v.excluded_addresses.iter().flatten());
        if floats.filter_map(|a| parse_virtual_address(a.get_ref())).any(|a| a.addr() == net.addr()) {
            report
                .error(text.span(), format!("{} is announced and also a virtual address of vrrp `{}`", net.addr(), v.name.get_ref()))
                .hint("an address is floated by VRRP on a flat segment or announced by BGP, not both");
        }
    }
}

pub(super) fn bgp(report: &mut Report<'_>, raw: Option<&toml::Spanned<RawBgp>>, announce: &[RawAnnounce]) -> Option<Option<Bgp>> {
    let Some(raw) = raw else {
        if let Some(first) = announce.first() {
            report
                .warning(first.name.span(), "[[announce]] without [bgp]: `halo render frr` cannot write the BGP part and `halo host check` cannot check the sessions")
                .hint("add [bgp] with this host's AS and its [[bgp.neighbor]] routers (FRR's configuration may also be written by hand)");
        }
        return Some(None);
    };
    let b = raw.get_ref();
    let local_asn = asn(report, &b.asn, "bgp.asn");
    let router_id = match &b.router_id {
        Some(t) => match t.get_ref().parse::<Ipv4Addr>() {
            Ok(id) => Some(Some(id)),
            Err(_) => {
                report
                    .error(t.span(), format!("bgp.router_id `{}` is not an IPv4 address", t.get_ref()))
                    .hint("a router id is written as an IPv4 address");
                None
            }
        },
        None => Some(None),
    };
    if b.neighbor.is_empty() {
        report.warning(raw.span(), "[bgp] has no neighbor: nothing is announced to anyone").hint("add [[bgp.neighbor]] tables");
    }
    if announce.is_empty() {
        report.warning(raw.span(), "[bgp] without any [[announce]]: FRR would announce nothing of halo's");
    }
    let mut neighbors = Some(Vec::new());
    for n in &b.neighbor {
        let address = n.address.get_ref().parse::<IpAddr>().map_err(|_| {
            report.error(n.address.span(), format!("bgp.neighbor address `{}` is not an IP address", n.address.get_ref()));
        });
        let remote = asn(report, &n.asn, "bgp.neighbor.asn");
        neighbors = neighbors.zip(address.ok().zip(remote)).map(|(mut v, (address, asn))| {
            v.push(BgpNeighbor { address, asn, bfd: n.bfd.as_ref().is_none_or(|f| *f.get_ref()) });
            v
        });
    }
    Some(Some(Bgp { asn: local_asn?, router_id: router_id?, neighbors: neighbors? }))
}

/// 1..=4294967294 (0 and 4294967295 are reserved).
fn asn(report: &mut Report<'_>, value: &Int, key: &str) -> Option<u32> {
    match u32::try_from(*value.get_ref()) {
        Ok(n) if n != 0 && n != u32::MAX => Some(n),
        _ => {
            report
                .error(value.span(), format!("{key} must be 1..=4294967294, got {}", value.get_ref()))
                .hint("private ASNs are 64512..=65534 and 4200000000..=4294967294");
            None
        }
    }
}

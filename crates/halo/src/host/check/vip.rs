//! `halo host check` of the configured VIPs: each in the LAN's subnet, and held by no other host.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use halo_hostnet::bridge::{LinkFacts, Snapshot};
use halo_hostnet::netlink::Netlink;
use ipnet::IpNet;

use super::report::Report;
use crate::host::Target;
use crate::host::verdict::Verdict;

/// The link the VIPs live on: the bridge when it is one, else the NIC.
pub(super) fn lan_link<'s>(snapshot: &'s Snapshot, target: &Target) -> Option<&'s LinkFacts> {
    snapshot.link(&target.bridge).filter(|b| b.is_bridge).or_else(|| snapshot.link(&target.nic))
}

/// The subnets of the LAN: those of the LAN link's addresses and of the NIC's.
pub(super) fn lan_subnets(snapshot: &Snapshot, target: &Target, lan: &LinkFacts) -> Vec<IpNet> {
    snapshot
        .addresses_of(lan.index)
        .iter()
        .chain(snapshot.link(&target.nic).map(|n| snapshot.addresses_of(n.index)).unwrap_or_default().iter())
        .filter_map(|a| IpNet::new(a.address, a.prefix).ok())
        .collect()
}

/// A VIP must be an address of the LAN's subnet.
pub(super) fn vip_subnet_check(report: &mut Report, address: IpAddr, subnets: &[IpNet], lan: &str) {
    let check = format!("VIP {address}");
    if !subnets.iter().any(|net| net.contains(&address)) {
        let nets = subnets.iter().map(|n| n.trunc().to_string()).collect::<Vec<_>>().join(", ");
        report.add(check, Verdict::Fail, format!("not in the subnet of {lan} ({nets})"), "pick a free address of the LAN");
    } else {
        report.ok(check, format!("in the subnet of {lan}"));
    }
}

/// A VIP must not be held by another host: one ARP probe on the LAN, unless this host holds it
/// or it is IPv6.
pub(super) async fn vip_in_use_check(report: &mut Report, address: IpAddr, held: &[IpAddr], lan: &str, netlink: &Netlink) {
    let check = format!("VIP {address} in use");
    let v4 = match needs_probe(address, held) {
        Ok(v4) => v4,
        Err(why) => return report.ok(check, why),
    };
    let link = match netlink.link(lan).await {
        Ok(link) => link,
        Err(e) => return report.add(check, Verdict::Warn, format!("not probed: {e}"), ""),
    };
    match halo_hostnet::arp_probe::probe(&link, v4, Duration::from_secs(1)) {
        Ok(Some(mac)) => report.add(
            check,
            Verdict::Fail,
            format!("answered ARP from {} on {lan}", halo_config::render::mac_text(&mac)),
            "another host holds it: pick a free address, or stop whatever holds it",
        ),
        Ok(None) => report.ok(check, format!("no answer to an ARP probe on {lan} (1 s)")),
        Err(e) => report.add(check, Verdict::Warn, format!("not probed: {e}"), ""),
    }
}

/// The IPv4 address to probe, or why a VIP needs no probe.
fn needs_probe(address: IpAddr, held: &[IpAddr]) -> Result<Ipv4Addr, &'static str> {
    if held.contains(&address) {
        return Err("held by this host");
    }
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err("IPv6: not probed (duplicate address detection covers it)"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::host::check::report::only;

    fn subnets() -> Vec<IpNet> {
        vec!["10.9.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()]
    }

    #[test]
    fn a_vip_in_a_subnet_of_the_lan_is_ok() {
        let mut report = Report::default();
        vip_subnet_check(&mut report, "10.9.0.100".parse().unwrap(), &subnets(), "br0");
        assert_eq!(only(report), ("VIP 10.9.0.100".into(), Verdict::Ok, "in the subnet of br0".into(), String::new()));
    }

    #[test]
    fn a_vip_outside_the_lan_fails_and_lists_its_subnets() {
        let mut report = Report::default();
        vip_subnet_check(&mut report, "10.8.0.100".parse().unwrap(), &subnets(), "br0");
        let (check, status, found, fix) = only(report);
        assert_eq!((check.as_str(), status), ("VIP 10.8.0.100", Verdict::Fail));
        assert_eq!(found, "not in the subnet of br0 (10.9.0.0/24, fd00::/64)");
        assert_eq!(fix, "pick a free address of the LAN");
    }

    #[test]
    fn a_vip_held_by_this_host_is_not_probed() {
        let vip: IpAddr = "10.9.0.100".parse().unwrap();
        assert_eq!(needs_probe(vip, &[vip]), Err("held by this host"));
    }

    #[test]
    fn an_ipv6_vip_is_not_probed() {
        assert_eq!(needs_probe("fd00::100".parse().unwrap(), &[]), Err("IPv6: not probed (duplicate address detection covers it)"));
    }

    #[test]
    fn an_ipv4_vip_held_elsewhere_or_nowhere_is_probed() {
        let held = ["10.9.0.2".parse().unwrap()];
        assert_eq!(needs_probe("10.9.0.100".parse().unwrap(), &held), Ok(Ipv4Addr::new(10, 9, 0, 100)));
    }
}

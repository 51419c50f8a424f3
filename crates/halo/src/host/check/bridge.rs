//! `halo host check` of the bridge: it exists and is up, the NIC is its port, the host's address
//! and default route are on it, and its MAC is pinned to the NIC's.

use halo_hostnet::bridge::Snapshot;

use super::report::Report;
use crate::host::Target;
use crate::host::verdict::Verdict;

/// The checks of the bridge `target` names.
pub(super) fn bridge_checks(report: &mut Report, snapshot: &Snapshot, target: &Target) {
    let apply = "halo host apply (see the plan with --dry-run)";
    let Some(nic) = snapshot.link(&target.nic) else {
        report.add("LAN interface", Verdict::Fail, format!("no interface {}", target.nic), "name it with --interface");
        return;
    };
    let bridge = snapshot.link(&target.bridge);
    match bridge {
        None => report.add("bridge", Verdict::Fail, format!("{} does not exist", target.bridge), apply),
        Some(b) if !b.is_bridge => {
            report.add("bridge", Verdict::Fail, format!("{} exists but is not a bridge", b.name), "choose another name with --bridge")
        }
        Some(b) if !b.up => {
            report.add("bridge", Verdict::Fail, format!("{} exists but is down", b.name), format!("ip link set {} up", b.name))
        }
        Some(b) => report.ok("bridge", format!("{} exists and is up", b.name)),
    }
    let Some(bridge) = bridge.filter(|b| b.is_bridge) else { return };
    if nic.master == Some(bridge.index) {
        report.ok("LAN interface", format!("{} is a port of {}", nic.name, bridge.name));
    } else {
        report.add("LAN interface", Verdict::Fail, format!("{} is not a port of {}", nic.name, bridge.name), apply);
    }
    let on_nic = snapshot.addresses_of(nic.index);
    let on_bridge = snapshot.addresses_of(bridge.index);
    let list =
        |a: &[&halo_hostnet::bridge::AddressFacts]| a.iter().map(|a| format!("{}/{}", a.address, a.prefix)).collect::<Vec<_>>().join(", ");
    if !on_nic.is_empty() {
        report.add("host address", Verdict::Fail, format!("{} is on {}, not on {}", list(&on_nic), nic.name, bridge.name), apply);
    } else if on_bridge.is_empty() {
        report.add(
            "host address",
            Verdict::Fail,
            format!("neither {} nor {} has an address", nic.name, bridge.name),
            "give the bridge the host's address",
        );
    } else {
        report.ok("host address", format!("{} on {}", list(&on_bridge), bridge.name));
    }
    match snapshot.default_route() {
        Some(route) if route.index == bridge.index => {
            report.ok("default route", format!("via {} on {}", route.gateway.map_or("-".into(), |g| g.to_string()), bridge.name))
        }
        Some(route) => {
            let dev = snapshot.link_by_index(route.index).map_or("?".to_string(), |l| l.name.clone());
            report.add("default route", Verdict::Fail, format!("goes via {dev}, not {}", bridge.name), apply);
        }
        None => report.add("default route", Verdict::Warn, "there is no IPv4 default route", "add one via the bridge if the host needs it"),
    }
    if bridge.mac != nic.mac {
        report.add(
            "bridge MAC",
            Verdict::Warn,
            format!("{} has a MAC of its own, not {}'s", bridge.name, nic.name),
            "pin it (halo host apply): otherwise it changes as ports come and go, and ARP caches and DHCP leases go stale",
        );
    } else {
        report.ok("bridge MAC", format!("{} uses {}'s MAC", bridge.name, nic.name));
    }
}

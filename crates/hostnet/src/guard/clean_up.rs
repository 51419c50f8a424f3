//! What the guard does when the daemon is gone: the priority-0 adverts of every instance the
//! daemon was master of (peers take over after their skew time, as on a clean stop), then the
//! addresses it still held are removed, then the links it created. Blocking; each outcome is one
//! line for the guard to print.

use super::wire::Told;
use crate::netlink_blocking::BlockingNetlink;
use crate::vrrp_socket::send_once;

/// Cleans up after the daemon; returns one line per thing done or failed.
pub fn clean_up(told: &Told) -> Vec<String> {
    let mut said = Vec::new();
    // Priority 0 first, as a clean stop: peers start their takeover while the VIPs go.
    for (interface, source, destination, packet) in told.adverts.values().flatten() {
        said.push(match send_once(interface, packet, *source, *destination) {
            Ok(()) => format!("halo ended as master: sent its priority-0 advert to {destination} on {interface}"),
            Err(e) => format!("could not send the priority-0 advert on {interface}: {e}"),
        });
    }
    let mut netlink = match BlockingNetlink::open() {
        Ok(netlink) => netlink,
        Err(e) => {
            said.push(format!("cannot remove halo's addresses: {e}"));
            return said;
        }
    };
    for ((index, address), prefix) in &told.held {
        match netlink.remove_address(*index, *address, *prefix) {
            Ok(true) => said.push(format!("halo ended holding {address} (link {index}): removed it")),
            Ok(false) => {}
            Err(e) => said.push(format!("could not remove {address} (link {index}): {e}")),
        }
    }
    for name in &told.links {
        match netlink.delete_link(name) {
            Ok(true) => said.push(format!("removed halo's virtual-MAC interface {name}")),
            Ok(false) => {}
            Err(e) => said.push(format!("could not remove {name}: {e}")),
        }
    }
    said
}

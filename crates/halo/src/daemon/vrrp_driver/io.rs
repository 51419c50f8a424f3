//! An instance's I/O: the interface (or its virtual-MAC macvlan and the parent's ARP settings),
//! the raw sockets adverts come in and go out on, the announcer, and the VIPs with their kernel
//! lifetime (told to the guard).

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use halo_config::VrrpInstance;
use halo_hostnet::arp_isolation::ArpIsolation;
use halo_hostnet::gratuitous::Announcer;
use halo_hostnet::netlink::{Link, LinkStates, Netlink};
use halo_hostnet::virtual_mac;
use halo_hostnet::vrrp_socket::VrrpSocket;
use halo_vrrp::packet::{MULTICAST_V4, MULTICAST_V6};

use crate::daemon::vip;

/// I/O state of a running instance.
pub(super) struct Io {
    /// Where the VIPs live and announcements go out: the interface, or its virtual-MAC macvlan.
    pub(super) link: Link,
    /// The interface adverts leave from: the macvlan of a multicast virtual-MAC instance, else
    /// the instance's interface (unicast adverts leave from the parent, as keepalived's
    /// `vmac_xmit_base`). The guard sends a dead master's priority-0 advert from it too.
    pub(super) advert_interface: String,
    /// The macvlan carrying the virtual MAC (removed at stop), with its parent's ARP settings
    /// (restored when dropped).
    pub(super) vmac: Option<(Link, ArpIsolation)>,
    /// Where adverts come in (and go out, unless `sender`).
    pub(super) receiver: VrrpSocket,
    /// Where adverts go out when that is not `receiver`: the virtual MAC in multicast mode,
    /// through a socket that joins no group on it.
    pub(super) sender: Option<VrrpSocket>,
    pub(super) announcer: Announcer,
    pub(super) netlink: Netlink,
    pub(super) source: IpAddr,
    pub(super) destinations: Vec<IpAddr>,
    /// The virtual addresses: held while master and listed in adverts.
    pub(super) addresses: Vec<(IpAddr, u8)>,
    /// Held while master, never advertised (`excluded_addresses`).
    pub(super) excluded: Vec<(IpAddr, u8)>,
    pub(super) checksum: halo_vrrp::ChecksumMode,
    pub(super) repeat: u32,
    pub(super) guard: Option<Arc<crate::daemon::guard::Guard>>,
}

pub(super) async fn open(
    config: &VrrpInstance,
    netlink: &Netlink,
    guard: Option<Arc<crate::daemon::guard::Guard>>,
    links: &LinkStates,
) -> anyhow::Result<Io> {
    let link = netlink.link(&config.interface).await?;
    let ipv6 = config.virtual_addresses.first().is_some_and(|a| a.addr().is_ipv6());
    let addresses: Vec<(IpAddr, u8)> = config.virtual_addresses.iter().map(|a| (a.addr(), a.prefix_len())).collect();
    let source = match config.unicast_source {
        Some(source) => source,
        None => primary_address(netlink, &link, ipv6, !config.unicast_peers.is_empty(), &addresses).await?,
    };
    let parent_socket = || VrrpSocket::open(&link, ipv6).with_context(|| format!("instance {}", config.name));
    // Every held address is announced, the excluded ones of the other family included.
    let plain: Vec<IpAddr> = addresses.iter().chain(&held_only(config)).map(|(a, _)| *a).collect();
    let (vmac, receiver, sender, announcer) = if config.virtual_mac {
        let (vmac, arp) = open_virtual_mac(config, netlink, &link, guard.as_deref(), links).await?;
        let rest = (|| {
            let announcer = Announcer::open(&vmac, &plain)?;
            if !config.unicast_peers.is_empty() {
                // As keepalived's vmac_xmit_base, which it imposes on unicast: a unicast advert
                // from the macvlan would ask the peer's address by ARP from the virtual MAC,
                // which the peer's own macvlan takes and must not answer.
                return Ok::<_, anyhow::Error>((parent_socket()?, None, announcer));
            }
            // Multicast adverts are received on the parent, joined to the group there, and
            // those sent from the virtual MAC (a peer's, which the kernel hands to our macvlan
            // alone) on the macvlan, which joins nothing; they go out from the macvlan. See
            // halo_hostnet::virtual_mac.
            let receiver = VrrpSocket::open_with_virtual_mac(&link, &vmac).with_context(|| format!("instance {}", config.name))?;
            let sender = VrrpSocket::open_sender(&vmac, ipv6).with_context(|| format!("instance {}: virtual MAC socket", config.name))?;
            Ok((receiver, Some(sender), announcer))
        })();
        match rest {
            Ok((receiver, sender, announcer)) => (Some((vmac, arp)), receiver, sender, announcer),
            Err(e) => {
                // Nothing of a failed start stays behind: the macvlan goes, then (dropped) the
                // parent's ARP settings.
                remove_virtual_mac(netlink, &vmac, guard.as_deref()).await;
                return Err(e);
            }
        }
    } else {
        (None, parent_socket()?, None, Announcer::open(&link, &plain)?)
    };
    let announce_on = vmac.as_ref().map_or_else(|| link.clone(), |(vmac, _)| vmac.clone());
    let destinations = if config.unicast_peers.is_empty() {
        vec![if ipv6 { IpAddr::from(MULTICAST_V6) } else { IpAddr::from(MULTICAST_V4) }]
    } else {
        config.unicast_peers.clone()
    };
    Ok(Io {
        advert_interface: if config.unicast_peers.is_empty() { announce_on.name.clone() } else { link.name.clone() },
        link: announce_on,
        vmac,
        receiver,
        sender,
        announcer,
        netlink: netlink.clone(),
        source,
        destinations,
        addresses,
        excluded: held_only(config),
        checksum: config.checksum,
        repeat: config.gratuitous.repeat,
        guard,
    })
}

/// RFC 5798 §7.3: the virtual MAC 00-00-5E-00-01-{VRID} (00-00-5E-00-02-{VRID} for IPv6), on a
/// macvlan named like keepalived's, so the VIP keeps its MAC whichever router holds it; the
/// parent stops answering ARP for the VIP with its own MAC (keepalived's `use_vmac` settings).
/// The macvlan is created down and brought up only once it can send nothing of its own accord
/// (no IPv6 link-local address, no ARP answers for the parent's addresses): a backup's macvlan
/// must stay silent, or the switch moves the virtual MAC to the backup (see
/// halo_hostnet::virtual_mac). On an error nothing stays: the macvlan is removed, the parent's
/// settings restored.
async fn open_virtual_mac(
    config: &VrrpInstance,
    netlink: &Netlink,
    parent: &Link,
    guard: Option<&crate::daemon::guard::Guard>,
    links: &LinkStates,
) -> anyhow::Result<(Link, ArpIsolation)> {
    let ipv6 = config.virtual_addresses.first().is_some_and(|a| a.addr().is_ipv6());
    let mac = [0x00, 0x00, 0x5e, 0x00, if ipv6 { 0x02 } else { 0x01 }, config.virtual_router_id.get()];
    let name = format!("vrrp.{}", config.virtual_router_id.get());
    let arp = ArpIsolation::apply(&parent.name).with_context(|| format!("instance {}: ARP settings of {}", config.name, parent.name))?;
    let created = netlink.create_macvlan(parent, &name, mac).await?;
    // Should halo die, the guard removes it (a dead node's macvlan carries the virtual MAC).
    if let Some(guard) = guard {
        guard.own_link(&created.name);
    }
    // The link watcher sees the new macvlan down before it sees it up: the instance starts once
    // it has seen both, not with a "down" still to come (a FAULT for nothing).
    link_seen(links, &name, false).await;
    // Excluded addresses of IPv6 are held on the macvlan: IPv6 stays on for them.
    let ipv6_held = config.virtual_addresses.iter().chain(&config.excluded_addresses).any(|a| a.addr().is_ipv6());
    let quiet = virtual_mac::quiet(&created.name, ipv6_held).with_context(|| format!("instance {}: settings of {name}", config.name));
    let up = match quiet {
        Ok(()) => netlink.set_up(&created).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match up {
        Ok(vmac) => {
            link_seen(links, &name, true).await;
            Ok((vmac, arp))
        }
        Err(e) => {
            remove_virtual_mac(netlink, &created, guard).await;
            Err(e)
        }
    }
}

/// Waits (at most a second) until the link watcher sees interface `name` up, or down (or gone).
async fn link_seen(links: &LinkStates, name: &str, up: bool) {
    let mut links = links.clone();
    let seen = links.wait_for(|all| all.get(name).copied().unwrap_or(false) == up);
    if !matches!(tokio::time::timeout(std::time::Duration::from_secs(1), seen).await, Ok(Ok(_))) {
        tracing::debug!(interface = name, up, "the link watcher has not seen the interface's state");
    }
}

/// Deletes a virtual-MAC interface (at stop, or after a failed start); a failure is logged.
pub(super) async fn remove_virtual_mac(netlink: &Netlink, vmac: &Link, guard: Option<&crate::daemon::guard::Guard>) {
    if let Some(guard) = guard {
        guard.disown_link(&vmac.name);
    }
    if let Err(e) = netlink.delete_link(vmac).await {
        tracing::warn!(interface = %vmac.name, error = %e, "could not remove the virtual MAC interface");
    }
}

/// The interface address adverts come from: its first IPv4 address that is not a VIP, or its
/// IPv6 link-local address (RFC 5798 §5.1.2.1). Unicast IPv6 adverts come from its first global
/// address instead, the kind of address peers list in `unicast_peers` (and check the source
/// against), falling back to the link-local one.
async fn primary_address(netlink: &Netlink, link: &Link, ipv6: bool, unicast: bool, vips: &[(IpAddr, u8)]) -> anyhow::Result<IpAddr> {
    let all = netlink.addresses(link.index).await?;
    let candidates = all.iter().map(|(a, _)| *a).filter(|a| !vips.iter().any(|(v, _)| v == a));
    let link_local = |a: &IpAddr| matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    let found = if !ipv6 {
        candidates.clone().find(IpAddr::is_ipv4)
    } else if unicast {
        candidates.clone().find(|a| a.is_ipv6() && !link_local(a)).or_else(|| candidates.clone().find(link_local))
    } else {
        candidates.clone().find(link_local)
    };
    found.ok_or_else(|| {
        halo_hostnet::HostError::NoAddress { interface: link.name.clone(), family: if ipv6 { "IPv6 link-local" } else { "IPv4" } }.into()
    })
}

/// What a refresh of the VIPs did.
#[derive(Debug, Default)]
pub(super) struct Refreshed {
    /// Addresses that were not there any more and were added again (to be announced).
    pub(super) readded: Vec<IpAddr>,
    /// Addresses the kernel refused.
    pub(super) failed: Vec<IpAddr>,
}

/// Adds (or refreshes) every VIP with its short lifetime, and tells the guard.
pub(super) async fn refresh(io: &Io) -> Refreshed {
    let mut refreshed = Refreshed::default();
    for (address, prefix) in io.held() {
        match vip::hold(&io.netlink, io.guard.as_deref(), io.link.index, *address, *prefix).await {
            Ok(true) => refreshed.readded.push(*address),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(%address, error = %e, "could not add a virtual address");
                refreshed.failed.push(*address);
            }
        }
    }
    refreshed
}

impl Io {
    /// Every address held while master: the advertised ones, then the excluded ones.
    pub(super) fn held(&self) -> impl Iterator<Item = &(IpAddr, u8)> {
        self.addresses.iter().chain(&self.excluded)
    }

    /// The addresses a gratuitous ARP / unsolicited NA announces: every held one, each by its
    /// family's means (keepalived's vrrp_send_link_update walks `vip` and `evip` alike).
    pub(super) fn announced(&self) -> Vec<IpAddr> {
        self.held().map(|(a, _)| *a).collect()
    }

    /// Removes a VIP from the interface and tells the guard; whether it was there.
    pub(super) async fn remove_vip(&self, address: IpAddr) -> halo_hostnet::Result<bool> {
        vip::release(&self.netlink, self.guard.as_deref(), self.link.index, address).await
    }
}

/// The excluded addresses of an instance, as held.
pub(super) fn held_only(config: &VrrpInstance) -> Vec<(IpAddr, u8)> {
    config.excluded_addresses.iter().map(|a| (a.addr(), a.prefix_len())).collect()
}

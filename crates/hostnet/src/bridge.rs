//! The host's LAN side over rtnetlink, for `halo host`: a snapshot of links, addresses and routes
//! (the facts checks and plans are made from), and the primitive changes a plan is made of —
//! create a bridge with a given MAC, bring a link up, enslave a port, copy or delete an address,
//! point a route at another interface, delete a link. Each change has an exact inverse, so a
//! plan that fails half-way can be rolled back.

use std::net::IpAddr;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol};

use crate::Result;
use crate::netlink::{Netlink, nl};

/// One interface as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    /// Kernel index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address.
    pub mac: Vec<u8>,
    /// Administratively up.
    pub up: bool,
    /// The bridge (or bond) it is a port of.
    pub master: Option<u32>,
    /// A bridge itself.
    pub is_bridge: bool,
}

/// An address, with the message that recreates it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressFacts {
    /// The interface it is on.
    pub index: u32,
    /// The address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Has a finite lifetime (DHCP, SLAAC): whoever renews it must learn about the bridge.
    pub dynamic: bool,
    /// The kernel's message (for copying and deleting it).
    pub message: AddressMessage,
}

/// A route of the main table that someone added (not the kernel's prefix routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteFacts {
    /// Output interface.
    pub index: u32,
    /// Destination and prefix length (0.0.0.0/0 for the default route).
    pub destination: (IpAddr, u8),
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Metric.
    pub metric: Option<u32>,
    /// The kernel's message (for moving and restoring it).
    pub message: RouteMessage,
}

/// Links, addresses and user routes of this network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every link.
    pub links: Vec<LinkFacts>,
    /// Every address except IPv6 link-local ones (the kernel makes those per link).
    pub addresses: Vec<AddressFacts>,
    /// Routes of the main table other than the kernel's own.
    pub routes: Vec<RouteFacts>,
}

impl Snapshot {
    /// The link of that name.
    pub fn link(&self, name: &str) -> Option<&LinkFacts> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The link of that index.
    pub fn link_by_index(&self, index: u32) -> Option<&LinkFacts> {
        self.links.iter().find(|l| l.index == index)
    }

    /// Addresses on a link.
    pub fn addresses_of(&self, index: u32) -> Vec<&AddressFacts> {
        self.addresses.iter().filter(|a| a.index == index).collect()
    }

    /// Routes through a link.
    pub fn routes_of(&self, index: u32) -> Vec<&RouteFacts> {
        self.routes.iter().filter(|r| r.index == index).collect()
    }

    /// The IPv4 default route, if any.
    pub fn default_route(&self) -> Option<&RouteFacts> {
        self.routes.iter().find(|r| r.destination == (IpAddr::from([0, 0, 0, 0]), 0))
    }

    /// Addresses and routes in a comparable form (without kernel bookkeeping such as
    /// lifetimes counting down), to prove a rollback restored the state.
    pub fn essentials(&self) -> Vec<String> {
        let name = |i: u32| self.link_by_index(i).map_or_else(|| i.to_string(), |l| l.name.clone());
        let mut out: Vec<String> = self
            .links
            .iter()
            .map(|l| format!("link {} up={} master={:?} bridge={} mac={:02x?}", l.name, l.up, l.master.map(name), l.is_bridge, l.mac))
            .collect();
        out.extend(self.addresses.iter().map(|a| format!("address {}/{} on {}", a.address, a.prefix, name(a.index))));
        out.extend(self.routes.iter().map(|r| {
            format!("route {}/{} via {:?} dev {} metric {:?}", r.destination.0, r.destination.1, r.gateway, name(r.index), r.metric)
        }));
        out.sort();
        out
    }
}

fn link_facts(message: &LinkMessage) -> LinkFacts {
    let mut facts = LinkFacts {
        index: message.header.index,
        name: String::new(),
        mac: Vec::new(),
        up: message.header.flags.contains(LinkFlags::Up),
        master: None,
        is_bridge: false,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => facts.name = name.clone(),
            LinkAttribute::Address(mac) => facts.mac = mac.clone(),
            LinkAttribute::Controller(master) => facts.master = Some(*master),
            LinkAttribute::LinkInfo(infos) => {
                facts.is_bridge = infos.iter().any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
            }
            _ => {}
        }
    }
    facts
}

fn address_facts(message: &AddressMessage) -> Option<AddressFacts> {
    let mut address = None;
    let mut dynamic = false;
    for attribute in &message.attributes {
        match attribute {
            // IFA_LOCAL is the address itself on point-to-point links; IFA_ADDRESS otherwise.
            AddressAttribute::Local(a) => address = Some(*a),
            AddressAttribute::Address(a) if address.is_none() => address = Some(*a),
            AddressAttribute::CacheInfo(info) => dynamic = info.ifa_valid != u32::MAX,
            _ => {}
        }
    }
    let address = address?;
    if let IpAddr::V6(v6) = address
        && v6.is_unicast_link_local()
    {
        return None;
    }
    Some(AddressFacts { index: message.header.index, address, prefix: message.header.prefix_len, dynamic, message: message.clone() })
}

fn route_address(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_facts(message: &RouteMessage) -> Option<RouteFacts> {
    if message.header.table != RouteHeader::RT_TABLE_MAIN || message.header.protocol == RouteProtocol::Kernel {
        return None;
    }
    let unspecified = match message.header.address_family {
        AddressFamily::Inet => IpAddr::from([0, 0, 0, 0]),
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let (mut index, mut destination, mut gateway, mut metric) = (None, unspecified, None, None);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Oif(i) => index = Some(*i),
            RouteAttribute::Destination(d) => destination = route_address(d)?,
            RouteAttribute::Gateway(g) => gateway = route_address(g),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    // IPv6 multicast and link-local routes are the kernel's per link, whatever their protocol.
    if let IpAddr::V6(v6) = destination
        && (v6.is_multicast() || v6.is_unicast_link_local())
    {
        return None;
    }
    Some(RouteFacts {
        index: index?,
        destination: (destination, message.header.destination_prefix_length),
        gateway,
        metric,
        message: message.clone(),
    })
}

impl Netlink {
    /// Reads links, addresses and routes.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let links = self.dump("listing links", |handle| handle.link().get().execute()).await?;
        snapshot.links.extend(links.iter().map(link_facts));
        let addresses = self.dump("listing addresses", |handle| handle.address().get().execute()).await?;
        snapshot.addresses.extend(addresses.iter().flat_map(address_facts));
        for family in [
            rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let routes = self.dump("listing routes", |handle| handle.route().get(family.clone()).execute()).await?;
            snapshot.routes.extend(routes.iter().flat_map(route_facts));
        }
        Ok(snapshot)
    }

    /// `ip link add NAME address MAC type bridge stp_state 0 forward_delay 0`: with STP off
    /// ports forward at once, and the pinned MAC keeps ARP caches and DHCP leases valid (a bridge
    /// would otherwise take the lowest MAC of its ports, which changes as ports come and go).
    pub async fn create_bridge(&self, name: &str, mac: &[u8]) -> Result<u32> {
        use netlink_packet_route::link::BridgeStpState;
        let message =
            rtnetlink::LinkBridge::new(name).down().address(mac.to_vec()).stp_state(BridgeStpState::Disabled).forward_delay(0).build();
        self.handle().link().add(message).execute().await.map_err(nl(format!("creating bridge {name}")))?;
        Ok(self.link(name).await?.index)
    }

    /// `ip link set INDEX up|down`.
    pub async fn set_link_up(&self, index: u32, up: bool) -> Result<()> {
        let builder = rtnetlink::LinkUnspec::new_with_index(index);
        let message = if up { builder.up() } else { builder.down() }.build();
        self.handle().link().set(message).execute().await.map_err(nl(format!("setting link {index} {}", if up { "up" } else { "down" })))
    }

    /// `ip link set PORT master BRIDGE` (or `nomaster`).
    pub async fn set_master(&self, port: u32, master: Option<u32>) -> Result<()> {
        let builder = rtnetlink::LinkUnspec::new_with_index(port);
        let message = match master {
            Some(master) => builder.controller(master),
            None => builder.nocontroller(),
        }
        .build();
        self.handle().link().set(message).execute().await.map_err(nl(format!("setting the master of link {port}")))
    }

    /// `ip link set INDEX address MAC`.
    pub async fn set_mac(&self, index: u32, mac: &[u8]) -> Result<()> {
        let message = rtnetlink::LinkUnspec::new_with_index(index).address(mac.to_vec()).build();
        self.handle().link().set(message).execute().await.map_err(nl(format!("setting the MAC of link {index}")))
    }

    /// Deletes a link by index.
    pub async fn delete_link_index(&self, index: u32) -> Result<()> {
        self.handle().link().del(index).execute().await.map_err(nl(format!("deleting link {index}")))
    }

    /// Adds `address` (as the snapshot saw it, with its flags and remaining lifetimes) on the
    /// link `index`.
    pub async fn copy_address(&self, address: &AddressFacts, index: u32) -> Result<()> {
        let mut message = address.message.clone();
        message.header.index = index;
        // A label must start with its interface's name; the copy goes without one.
        message.attributes.retain(|a| !matches!(a, AddressAttribute::Label(_)));
        let mut request = self.handle().address().add(index, address.address, address.prefix);
        *request.message_mut() = message;
        request.execute().await.map_err(nl(format!("adding {}/{} to link {index}", address.address, address.prefix)))
    }

    /// Deletes `address` from link `index`.
    pub async fn delete_address(&self, address: &AddressFacts, index: u32) -> Result<()> {
        let mut message = address.message.clone();
        message.header.index = index;
        message.attributes.retain(|a| !matches!(a, AddressAttribute::Label(_) | AddressAttribute::CacheInfo(_)));
        self.handle()
            .address()
            .del(message)
            .execute()
            .await
            .map_err(nl(format!("deleting {}/{} from link {index}", address.address, address.prefix)))
    }

    /// `ip route replace` of `route` with its output interface set to `index` (the original
    /// route when `index` is its own).
    pub async fn point_route(&self, route: &RouteFacts, index: u32) -> Result<()> {
        let mut message = route.message.clone();
        message.header.flags = RouteFlags::empty();
        message.attributes.retain(|a| !matches!(a, RouteAttribute::CacheInfo(_) | RouteAttribute::Oif(_) | RouteAttribute::Expires(_)));
        message.attributes.push(RouteAttribute::Oif(index));
        let what = format!("pointing the route to {}/{} at link {index}", route.destination.0, route.destination.1);
        self.handle().route().add(message).replace().execute().await.map_err(nl(what))
    }

    /// Deletes a route.
    pub async fn delete_route(&self, route: &RouteFacts) -> Result<()> {
        let mut message = route.message.clone();
        message.attributes.retain(|a| !matches!(a, RouteAttribute::CacheInfo(_)));
        let what = format!("deleting the route to {}/{}", route.destination.0, route.destination.1);
        self.handle().route().del(message).execute().await.map_err(nl(what))
    }
}

//! Links and addresses over rtnetlink: interface lookup, the VIP added with a kernel lifetime
//! (refreshed while master, so a killed halo leaves no stale address), removal, listing.

use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};

use crate::{HostError, Result};

/// What halo needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Kernel index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// Hardware address (empty for links without one).
    pub mac: Vec<u8>,
    /// Administratively up, with carrier, and not reported down by its operational state
    /// (RFC 2863: down, lower layer down, not present, dormant).
    pub up: bool,
}

/// An open rtnetlink connection, shared by its clones (every VRRP instance of a daemon uses one).
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    /// The kernel runs one dump at a time on a netlink socket and refuses a second with EBUSY:
    /// every dump on this connection holds this lock until it has read the last message.
    dumps: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// How often a dump refused with EBUSY (by a dump this connection did not start) is retried.
const DUMP_ATTEMPTS: u32 = 5;

/// Wraps a netlink error with what was being done.
pub(crate) fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Netlink { what, source }
}

fn link_from(message: &LinkMessage) -> Link {
    let mut link = Link { index: message.header.index, name: String::new(), mac: Vec::new(), up: false };
    let mut operational = true;
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(mac) => link.mac = mac.clone(),
            // Up and unknown (what virtual links without a carrier notion report) both carry.
            LinkAttribute::OperState(state) => {
                operational = !matches!(state, State::Down | State::LowerLayerDown | State::NotPresent | State::Dormant);
            }
            _ => {}
        }
    }
    link.up = message.header.flags.contains(LinkFlags::Up) && message.header.flags.contains(LinkFlags::LowerUp) && operational;
    link
}

impl Netlink {
    /// Opens a connection; its I/O runs as a task on the current tokio runtime.
    pub fn open() -> Result<Self> {
        let (connection, handle, _messages) = rtnetlink::new_connection().map_err(crate::io("opening a netlink socket"))?;
        tokio::spawn(connection);
        Ok(Self { handle, dumps: std::sync::Arc::default() })
    }

    /// Runs the dump `start` makes to the end, one dump at a time on this connection; a dump the
    /// kernel refuses as busy is retried a few times, 10 ms apart.
    pub(crate) async fn dump<M, S>(&self, what: &str, start: impl Fn(&rtnetlink::Handle) -> S) -> Result<Vec<M>>
    where
        S: futures::Stream<Item = std::result::Result<M, rtnetlink::Error>> + Unpin,
    {
        let _one_at_a_time = self.dumps.lock().await;
        let mut attempt = 1;
        loop {
            let mut stream = start(&self.handle);
            let mut messages = Vec::new();
            let outcome = loop {
                match stream.try_next().await {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break Ok(messages),
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EBUSY && attempt < DUMP_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other.map_err(nl(what)),
            }
        }
    }

    /// The underlying handle, for the other netlink modules of this crate.
    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The interface of that name.
    pub async fn link(&self, name: &str) -> Result<Link> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(link_from(&message)),
            Ok(None) => Err(HostError::NoInterface(name.to_string())),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Err(HostError::NoInterface(name.to_string())),
            Err(e) => Err(nl(format!("looking up interface {name}"))(e)),
        }
    }

    /// Creates (or recreates, when an earlier run left it) the macvlan `name` on `base` with the
    /// MAC `mac`, in private mode, down: VRRP's virtual MAC lives on it, and it gets its settings
    /// before [`Netlink::set_up`] lets it send anything.
    pub async fn create_macvlan(&self, base: &Link, name: &str, mac: [u8; 6]) -> Result<Link> {
        use netlink_packet_route::link::MacVlanMode;
        if let Ok(stale) = self.link(name).await {
            self.handle.link().del(stale.index).execute().await.map_err(nl(format!("removing the stale interface {name}")))?;
        }
        let message = rtnetlink::LinkMacVlan::new(name, base.index, MacVlanMode::Private).address(mac.to_vec()).build();
        self.handle.link().add(message).execute().await.map_err(nl(format!("creating macvlan {name} on {}", base.name)))?;
        self.link(name).await
    }

    /// Brings an interface up; the interface as it is then.
    pub async fn set_up(&self, link: &Link) -> Result<Link> {
        let message = rtnetlink::LinkUnspec::new_with_index(link.index).up().build();
        self.handle.link().set(message).execute().await.map_err(nl(format!("bringing {} up", link.name)))?;
        self.link(&link.name).await
    }

    /// Deletes an interface.
    pub async fn delete_link(&self, link: &Link) -> Result<()> {
        self.handle.link().del(link.index).execute().await.map_err(nl(format!("deleting interface {}", link.name)))
    }

    /// Addresses on an interface, with prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let what = format!("listing addresses of interface {index}");
        let messages = self.dump(&what, |handle| handle.address().get().set_link_index_filter(index).execute()).await?;
        Ok(messages.iter().filter_map(|m| address_of(m).map(|a| (a, m.header.prefix_len))).collect())
    }

    /// Adds (or refreshes) an address. With a `lifetime` the kernel deletes it when the lifetime
    /// runs out unless it is refreshed; IPv6 addresses skip duplicate address detection, since
    /// VRRP already decided who owns them.
    pub async fn add_address(&self, index: u32, address: IpAddr, prefix: u8, lifetime: Option<Duration>) -> Result<()> {
        let request = address_request(self.handle.address().add(index, address, prefix).replace(), address, lifetime);
        request.execute().await.map_err(nl(format!("adding {address}/{prefix} to interface {index}")))
    }

    /// Adds the address, or refreshes it when it is there already; whether it was added (it was
    /// not there: it expired, or something removed it), for the caller to announce it again.
    pub async fn add_or_refresh_address(&self, index: u32, address: IpAddr, prefix: u8, lifetime: Option<Duration>) -> Result<bool> {
        let request = address_request(self.handle.address().add(index, address, prefix), address, lifetime);
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {
                self.add_address(index, address, prefix, lifetime).await.map(|()| false)
            }
            Err(e) => Err(nl(format!("adding {address}/{prefix} to interface {index}"))(e)),
        }
    }

    /// Makes the host accept packets for `address` on interface `index` without the address
    /// being assigned: a `local` route in the kernel's local table (protocol
    /// [`HALO_ROUTE_PROTOCOL`]). Announcing an address by BGP is then adding and removing the
    /// address itself, while established connections keep being delivered. Already present is
    /// not an error.
    pub async fn add_local_route(&self, index: u32, address: IpAddr) -> Result<()> {
        let message = local_route(index, address);
        match self.handle.route().add(message).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(nl(format!("adding a local route for {address}"))(e)),
        }
    }

    /// Removes the local route [`Netlink::add_local_route`] added; absent is not an error.
    pub async fn remove_local_route(&self, index: u32, address: IpAddr) -> Result<()> {
        match self.handle.route().del(local_route(index, address)).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ESRCH => Ok(()),
            Err(e) => Err(nl(format!("removing the local route for {address}"))(e)),
        }
    }

    /// Removes an address; absent is not an error.
    pub async fn remove_address(&self, index: u32, address: IpAddr) -> Result<bool> {
        let what = format!("removing {address} from interface {index}");
        let messages =
            self.dump(&what, |handle| handle.address().get().set_link_index_filter(index).set_address_filter(address).execute()).await?;
        let mut removed = false;
        for message in messages.into_iter().filter(|m| address_of(m) == Some(address)) {
            self.handle.address().del(message).execute().await.map_err(nl(what.clone()))?;
            removed = true;
        }
        Ok(removed)
    }
}

/// The routing protocol number of halo's routes (unassigned in iproute2's list): tells them
/// apart from the kernel's own local routes, which come and go with addresses.
pub const HALO_ROUTE_PROTOCOL: u8 = 250;

fn local_route(index: u32, address: IpAddr) -> netlink_packet_route::route::RouteMessage {
    use netlink_packet_route::route::{RouteProtocol, RouteScope, RouteType};
    // A host prefix of the address's own family: the builder cannot refuse it.
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    let builder = rtnetlink::RouteMessageBuilder::<IpAddr>::new();
    let builder = match builder.destination_prefix(address, prefix) {
        Ok(b) => b,
        Err(_) => rtnetlink::RouteMessageBuilder::<IpAddr>::new(),
    };
    builder
        .output_interface(index)
        .table_id(255)
        .protocol(RouteProtocol::Other(HALO_ROUTE_PROTOCOL))
        .scope(RouteScope::Host)
        .kind(RouteType::Local)
        .build()
}

/// Link state of every interface by name, kept current from the kernel's link notifications
/// (RTMGRP_LINK), so that a link going down is seen when it happens rather than at a poll.
pub type LinkStates = tokio::sync::watch::Receiver<std::collections::BTreeMap<String, bool>>;

/// Starts watching links: a dump of every interface, then every change as the kernel sends it.
pub async fn watch_links() -> Result<LinkStates> {
    use futures::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::AsyncSocket;
    let (mut connection, handle, mut messages) = rtnetlink::new_connection().map_err(crate::io("opening a netlink socket"))?;
    let groups = rtnetlink::sys::SocketAddr::new(0, rtnetlink::constants::RTMGRP_LINK);
    connection.socket_mut().socket_mut().bind(&groups).map_err(crate::io("subscribing to link notifications"))?;
    tokio::spawn(connection);
    let mut states = std::collections::BTreeMap::new();
    let mut dump = handle.link().get().execute();
    while let Some(message) = dump.try_next().await.map_err(nl("listing interfaces"))? {
        let link = link_from(&message);
        states.insert(link.name, link.up);
    }
    let (sender, receiver) = tokio::sync::watch::channel(states);
    tokio::spawn(async move {
        // Ends when nobody watches any more (every receiver dropped) or the socket closes.
        while let Some((message, _)) = messages.next().await {
            let change = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => Some(link_from(&m)),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => Some(Link { up: false, ..link_from(&m) }),
                _ => None,
            };
            if let Some(link) = change.filter(|l| !l.name.is_empty()) {
                sender.send_if_modified(|all| all.insert(link.name.clone(), link.up) != Some(link.up));
            }
            if sender.is_closed() {
                return;
            }
        }
    });
    Ok(receiver)
}

fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS otherwise.
    let local = message.attributes.iter().find_map(|a| if let AddressAttribute::Local(ip) = a { Some(*ip) } else { None });
    local.or_else(|| message.attributes.iter().find_map(|a| if let AddressAttribute::Address(ip) = a { Some(*ip) } else { None }))
}

/// The attributes of an address request: its lifetime, and no duplicate address detection for
/// IPv6 (VRRP decided who owns the address).
fn address_request(mut request: rtnetlink::AddressAddRequest, address: IpAddr, lifetime: Option<Duration>) -> rtnetlink::AddressAddRequest {
    let message = request.message_mut();
    if let Some(lifetime) = lifetime {
        let seconds = u32::try_from(lifetime.as_secs().max(1)).unwrap_or(u32::MAX);
        let mut info = CacheInfo::default();
        info.ifa_preferred = seconds;
        info.ifa_valid = seconds;
        message.attributes.push(AddressAttribute::CacheInfo(info));
    }
    if address.is_ipv6() {
        message.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    request
}

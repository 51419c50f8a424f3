//! Blocking rtnetlink requests without an async runtime, for the VIP guard: remove an address,
//! delete a link by name. Each request waits for the kernel's acknowledgement, so that its
//! outcome is known before the guard exits.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::{Result, io};

/// One rtnetlink socket, used for one request at a time.
pub struct BlockingNetlink {
    socket: Socket,
    sequence: u32,
}

impl BlockingNetlink {
    /// Opens and binds the socket.
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io("opening a netlink socket"))?;
        socket.bind_auto().map_err(io("binding the netlink socket"))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io("connecting the netlink socket"))?;
        Ok(Self { socket, sequence: 0 })
    }

    /// Removes `address`/`prefix` from link `index`: `Ok(false)` when it was not there.
    pub fn remove_address(&mut self, index: u32, address: IpAddr, prefix: u8) -> Result<bool> {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.header.prefix_len = prefix;
        message.header.family = if address.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        message.attributes.push(AddressAttribute::Local(address));
        if address.is_ipv6() {
            // IPv6 addresses are named by IFA_ADDRESS; IPv4 ones by IFA_LOCAL.
            message.attributes.push(AddressAttribute::Address(address));
        }
        let what = format!("removing {address} from interface {index}");
        match self.request(RouteNetlinkMessage::DelAddress(message), &what)? {
            0 => Ok(true),
            // Already gone (its lifetime ended, or someone removed it).
            code if code == -libc::EADDRNOTAVAIL || code == -libc::ENODEV || code == -libc::ESRCH => Ok(false),
            code => Err(io(what)(std::io::Error::from_raw_os_error(-code))),
        }
    }

    /// Deletes the link `name`: `Ok(false)` when there is none.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        let what = format!("deleting interface {name}");
        match self.request(RouteNetlinkMessage::DelLink(message), &what)? {
            0 => Ok(true),
            code if code == -libc::ENODEV => Ok(false),
            code => Err(io(what)(std::io::Error::from_raw_os_error(-code))),
        }
    }

    /// Sends one request and waits for its acknowledgement: 0, or the kernel's negative errno.
    pub(crate) fn request(&mut self, message: RouteNetlinkMessage, what: &str) -> Result<i32> {
        self.sequence += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buffer = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buffer);
        self.socket.send(&buffer, 0).map_err(io(what.to_string()))?;
        loop {
            let (reply, _from) = self.socket.recv_from_full().map_err(io(what.to_string()))?;
            let mut offset = 0;
            while offset < reply.len() {
                let Some(rest) = reply.get(offset..) else { break };
                let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io(what.to_string())(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))?;
                let length = parsed.header.length as usize;
                if parsed.header.sequence_number == self.sequence
                    && let NetlinkPayload::Error(error) = parsed.payload
                {
                    return Ok(error.code.map_or(0, |code| code.get()));
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

//! Telling the LAN where a virtual address now lives: gratuitous ARP for IPv4 (RFC 5227 ARP
//! announcement) and unsolicited neighbour advertisements for IPv6 (RFC 4861 §7.2.6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self, ControlMessage, MsgFlags, SockaddrIn6};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netlink::Link;
use crate::{Result, errno, io};

const ETH_P_ARP: u16 = 0x0806;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An ARP announcement: request with sender and target protocol address both the VIP.
pub fn arp_announcement(mac: &[u8], address: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    frame.extend_from_slice(&mac[..6.min(mac.len())]);
    frame.resize(14, 0);
    frame.extend_from_slice(&address.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&address.octets());
    frame
}

/// An unsolicited neighbour advertisement for `target` (Override set, with our link address).
pub fn neighbour_advertisement(mac: &[u8], target: Ipv6Addr) -> Vec<u8> {
    let mut message = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[2, 1]);
    message.extend_from_slice(&mac[..6.min(mac.len())]);
    message.resize(32, 0);
    message
}

/// Sends gratuitous ARP / unsolicited NA for addresses of one interface.
pub struct Announcer {
    link: Link,
    arp: Option<Socket>,
    icmp6: Option<Socket>,
}

impl Announcer {
    /// Opens the sockets needed for these addresses on `link`.
    pub fn open(link: &Link, addresses: &[IpAddr]) -> Result<Self> {
        let arp = if addresses.iter().any(IpAddr::is_ipv4) {
            let protocol = Protocol::from(i32::from(ETH_P_ARP.to_be()));
            Some(Socket::new(Domain::PACKET, Type::DGRAM, Some(protocol)).map_err(io(format!("packet socket on {}", link.name)))?)
        } else {
            None
        };
        let icmp6 = if addresses.iter().any(IpAddr::is_ipv6) {
            let socket =
                Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(io(format!("ICMPv6 socket on {}", link.name)))?;
            socket.bind_device(Some(link.name.as_bytes())).map_err(io("SO_BINDTODEVICE"))?;
            socket.set_multicast_hops_v6(255).map_err(io("multicast hops"))?;
            Some(socket)
        } else {
            None
        };
        Ok(Self { link: link.clone(), arp, icmp6 })
    }

    /// One announcement for each address.
    pub fn announce(&self, addresses: &[IpAddr]) -> Result<()> {
        for address in addresses {
            match (address, &self.arp, &self.icmp6) {
                (IpAddr::V4(v4), Some(arp), _) => {
                    let frame = arp_announcement(&self.link.mac, *v4);
                    crate::sys::send_broadcast(arp, self.link.index, ETH_P_ARP, &frame)
                        .map_err(io(format!("gratuitous ARP for {v4} on {}", self.link.name)))?;
                }
                (IpAddr::V6(v6), _, Some(icmp6)) => {
                    let message = neighbour_advertisement(&self.link.mac, *v6);
                    let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: v6.octets() }, ipi6_ifindex: self.link.index };
                    let to = SockaddrIn6::from(SocketAddrV6::new(ALL_NODES, 0, 0, self.link.index));
                    let iov = [std::io::IoSlice::new(&message)];
                    socket::sendmsg(icmp6.as_raw_fd(), &iov, &[ControlMessage::Ipv6PacketInfo(&info)], MsgFlags::empty(), Some(&to))
                        .map_err(errno(format!("neighbour advertisement for {v6} on {}", self.link.name)))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! Raw IP protocol 112 sockets: one per instance and family, bound to the interface, joined to
//! 224.0.0.18 or ff02::12, sending with TTL / hop limit 255 from a chosen source address and
//! reporting the received TTL so that the caller can apply RFC 5798 §7.1. With a virtual MAC,
//! adverts are received on the parent and, from the virtual MAC, on the macvlan below the IP
//! layer, and sent from the macvlan by a socket that joins nothing ([`crate::virtual_mac`]).

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use halo_vrrp::packet::{MULTICAST_V4, MULTICAST_V6, PROTOCOL, TTL};
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, sockopt};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use crate::netlink::Link;
use crate::{Result, errno, io};

/// One received VRRP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Sender.
    pub source: IpAddr,
    /// Destination (the multicast group, or our address in unicast mode).
    pub destination: IpAddr,
    /// TTL / hop limit on arrival.
    pub ttl: u8,
    /// The VRRP message.
    pub payload: Vec<u8>,
}

/// A raw VRRP socket on one interface.
pub struct VrrpSocket {
    socket: AsyncFd<Socket>,
    /// The packet socket on a virtual-MAC interface that receives the adverts sent from its MAC.
    own_mac: Option<AsyncFd<Socket>>,
    index: u32,
    ipv6: bool,
}

/// Registers a socket with the runtime.
fn registered(socket: Socket, what: String) -> Result<AsyncFd<Socket>> {
    // `AsyncFd::new` is deprecated for types that may not own their descriptor; `Socket`
    // owns it and is moved in, so the registration cannot outlive the descriptor.
    #[allow(deprecated)]
    AsyncFd::new(socket).map_err(io(what))
}

impl VrrpSocket {
    /// Opens an IPv4 or IPv6 socket on `link`, joined to the VRRP group.
    pub fn open(link: &Link, ipv6: bool) -> Result<Self> {
        let what = |step: &str| format!("VRRP socket on {}: {step}", link.name);
        let socket = sending_socket(&link.name, link.index, ipv6)?;
        if ipv6 {
            socket.join_multicast_v6(&MULTICAST_V6, link.index).map_err(io(what("join ff02::12")))?;
            socket.set_multicast_loop_v6(false).map_err(io(what("multicast loop")))?;
            socket::setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(errno(what("IPV6_RECVHOPLIMIT")))?;
            socket::setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(errno(what("IPV6_RECVPKTINFO")))?;
        } else {
            socket.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(link.index)).map_err(io(what("join 224.0.0.18")))?;
            socket.set_multicast_loop_v4(false).map_err(io(what("multicast loop")))?;
        }
        let socket = registered(socket, what("registering with the runtime"))?;
        Ok(Self { socket, own_mac: None, index: link.index, ipv6 })
    }

    /// Opens an IPv4 socket on `parent`, joined to the VRRP group there, that also receives the
    /// adverts arriving on the virtual-MAC macvlan `vmac` from its own MAC (a peer sending from
    /// the same virtual MAC: the kernel hands those to the macvlan alone). Nothing joins the group
    /// on the macvlan, so it sends no IGMP report. Sends on `parent`.
    pub fn open_with_virtual_mac(parent: &Link, vmac: &Link) -> Result<Self> {
        let mut socket = Self::open(parent, false)?;
        let own_mac = crate::virtual_mac::own_mac_receiver(vmac)?;
        socket.own_mac = Some(registered(own_mac, format!("packet socket on {}: registering with the runtime", vmac.name))?);
        Ok(socket)
    }

    /// Opens a socket that sends on `link` and joins no group there: no IGMP or MLD report
    /// leaves `link` on its account (a virtual-MAC macvlan's sender). Its own multicast is not
    /// looped back.
    pub fn open_sender(link: &Link, ipv6: bool) -> Result<Self> {
        let what = |step: &str| format!("VRRP sending socket on {}: {step}", link.name);
        let socket = sending_socket(&link.name, link.index, ipv6)?;
        if ipv6 {
            socket.set_multicast_loop_v6(false).map_err(io(what("multicast loop")))?;
        } else {
            socket.set_multicast_loop_v4(false).map_err(io(what("multicast loop")))?;
        }
        Ok(Self { socket: registered(socket, what("registering with the runtime"))?, own_mac: None, index: link.index, ipv6 })
    }

    /// Waits for the next packet (on either socket, with a virtual MAC).
    pub async fn recv(&self) -> Result<Received> {
        match &self.own_mac {
            None => receive(&self.socket, self.ipv6).await,
            Some(own_mac) => tokio::select! {
                received = receive(&self.socket, self.ipv6) => received,
                received = receive(own_mac, false) => received,
            },
        }
    }

    /// Sends a VRRP message from `source` (which must be an address of the interface) to
    /// `destination`.
    pub fn send(&self, payload: &[u8], source: IpAddr, destination: IpAddr) -> Result<()> {
        send_from(self.socket.get_ref(), self.index, payload, source, destination)
    }
}

/// Waits for the next packet on `socket`; cancelling the wait loses nothing (a packet is taken
/// only when it is returned).
async fn receive(socket: &AsyncFd<Socket>, ipv6: bool) -> Result<Received> {
    loop {
        let mut guard = socket.readable().await.map_err(io("waiting for VRRP packets"))?;
        let outcome = guard.try_io(|fd| {
            let received = if ipv6 { recv_v6(fd.get_ref()) } else { recv_v4(fd.get_ref()) };
            received.map_err(std::io::Error::from)
        });
        match outcome {
            Ok(Ok(Some(packet))) => return Ok(packet),
            Ok(Ok(None)) => continue,
            Ok(Err(e)) => return Err(io("receiving a VRRP packet")(e)),
            Err(_would_block) => continue,
        }
    }
}

/// Sends one VRRP message on `interface` from a socket opened for it alone, blocking, without a
/// runtime: the VIP guard's priority-0 advert for a daemon that died.
pub fn send_once(interface: &str, payload: &[u8], source: IpAddr, destination: IpAddr) -> Result<()> {
    let index = nix::net::if_::if_nametoindex(interface).map_err(|_| crate::HostError::NoInterface(interface.to_string()))?;
    let socket = sending_socket(interface, index, source.is_ipv6())?;
    send_from(&socket, index, payload, source, destination)
}

/// A raw VRRP socket bound to the interface, with the TTL / hop limit of RFC 5798 §5.1.1.3 on
/// everything it sends. Non-blocking: a send never waits.
fn sending_socket(interface: &str, index: u32, ipv6: bool) -> Result<Socket> {
    let what = |step: &str| format!("VRRP socket on {interface}: {step}");
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(PROTOCOL)))).map_err(io(what("socket(IPPROTO_VRRP)")))?;
    socket.set_nonblocking(true).map_err(io(what("non-blocking")))?;
    socket.bind_device(Some(interface.as_bytes())).map_err(io(what("SO_BINDTODEVICE")))?;
    if ipv6 {
        socket.set_multicast_hops_v6(u32::from(TTL)).map_err(io(what("multicast hops")))?;
        socket.set_unicast_hops_v6(u32::from(TTL)).map_err(io(what("unicast hops")))?;
        socket.set_multicast_if_v6(index).map_err(io(what("multicast interface")))?;
    } else {
        socket.set_multicast_ttl_v4(u32::from(TTL)).map_err(io(what("multicast TTL")))?;
        socket.set_ttl_v4(u32::from(TTL)).map_err(io(what("TTL")))?;
    }
    Ok(socket)
}

/// Sends `payload` from `source` to `destination` through interface `index`.
fn send_from(socket: &Socket, index: u32, payload: &[u8], source: IpAddr, destination: IpAddr) -> Result<()> {
    let what = format!("sending a VRRP advert from {source} to {destination}");
    let fd = socket.as_raw_fd();
    let iov = [std::io::IoSlice::new(payload)];
    match (source, destination) {
        (IpAddr::V4(source), IpAddr::V4(destination)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: index as i32,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from(source).to_be() },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let to = SockaddrIn::from(SocketAddrV4::new(destination, 0));
            socket::sendmsg(fd, &iov, &[ControlMessage::Ipv4PacketInfo(&info)], MsgFlags::empty(), Some(&to)).map_err(errno(what))?;
        }
        (IpAddr::V6(source), IpAddr::V6(destination)) => {
            let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: source.octets() }, ipi6_ifindex: index };
            let to = SockaddrIn6::from(SocketAddrV6::new(destination, 0, 0, index));
            socket::sendmsg(fd, &iov, &[ControlMessage::Ipv6PacketInfo(&info)], MsgFlags::empty(), Some(&to)).map_err(errno(what))?;
        }
        _ => return Err(io(what)(std::io::Error::new(std::io::ErrorKind::InvalidInput, "source and destination families differ"))),
    }
    Ok(())
}

/// Room for the largest advert: IPv6, 255 addresses of 16 bytes after an 8-byte header (4 088
/// bytes), or IPv4 with its header (at most 60 + 8 + 1 020 + 8); a longer datagram is cut, and
/// then fails to decode.
const MAX_PACKET: usize = 4096 + 64;

/// IPv4 raw sockets (and datagram packet sockets) deliver the IP header: take TTL and addresses
/// from it.
fn recv_v4(socket: &Socket) -> nix::Result<Option<Received>> {
    let mut buf = [0u8; MAX_PACKET];
    let n = socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    let packet = &buf[..n];
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return Ok(None);
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    if header < 20 || total < header {
        return Ok(None);
    }
    let source = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let destination = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok(Some(Received { source: source.into(), destination: destination.into(), ttl: packet[8], payload: packet[header..total].to_vec() }))
}

/// IPv6 raw sockets deliver the payload only: hop limit and destination come as control messages.
fn recv_v6(socket: &Socket) -> nix::Result<Option<Received>> {
    let mut buf = [0u8; MAX_PACKET];
    let mut control = nix::cmsg_space!(libc::c_int, libc::in6_pktinfo);
    let (source, ttl, destination, n) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let message = socket::recvmsg::<SockaddrIn6>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty())?;
        let (mut ttl, mut destination) = (None, None);
        for cmsg in message.cmsgs()? {
            match cmsg {
                ControlMessageOwned::Ipv6HopLimit(hops) => ttl = u8::try_from(hops).ok(),
                ControlMessageOwned::Ipv6PacketInfo(info) => destination = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                _ => {}
            }
        }
        (message.address.map(|a| a.ip()), ttl, destination, message.bytes)
    };
    match (source, ttl, destination) {
        (Some(source), Some(ttl), Some(destination)) => {
            Ok(Some(Received { source: source.into(), destination: destination.into(), ttl, payload: buf[..n].to_vec() }))
        }
        _ => Ok(None),
    }
}

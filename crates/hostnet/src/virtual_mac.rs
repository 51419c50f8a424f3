//! What keeps a virtual-MAC interface silent while its router is backup: the macvlan's own
//! kernel settings, and the packet socket that hears adverts arriving on it.
//!
//! Every router of a virtual router has a macvlan with the same MAC (RFC 5798 §7.3), and a
//! switch puts that MAC on the port of whatever frame carried it last: one frame from a backup's
//! macvlan sends the VIP's traffic to the backup, where it dies, until the master's next frame
//! takes the MAC back. So no frame may leave a backup's macvlan. keepalived's `use_vmac` goes
//! most of the way, and halo follows it:
//!
//! - keepalived creates the vmac in private mode (it receives only what is addressed to its MAC,
//!   and a multicast frame whose source is its own MAC is handed to it alone, never to the
//!   parent), and sets it up before bringing it up: `arp_ignore = 1` (it must not answer ARP for
//!   the parent's addresses, which it would do with the virtual MAC), `rp_filter = 0` (traffic
//!   for a VIP comes in on it while the route back to the sender leads through the parent),
//!   `promote_secondaries = 1` (removing one VIP of a subnet keeps the others). halo sets the same
//!   ([`quiet`]). keepalived also sets `accept_local = 1`, for its IP-level reception of adverts on
//!   the vmac; halo does not receive adverts at the IP level there (below), so it leaves it.
//! - IPv6: left alone, the kernel gives the macvlan a link-local address made from the virtual
//!   MAC, the same on every router: duplicate address detection fails on one of them, and the
//!   address brings DAD probes, MLD reports and router solicitations from the virtual MAC.
//!   keepalived turns address generation off on its vmacs (`IN6_ADDR_GEN_MODE_NONE`, set before
//!   the link goes up) and disables IPv6 on the vmac of an IPv4 instance that holds no IPv6
//!   address; halo does both (`addr_gen_mode = 1`, and `disable_ipv6 = 1` unless the instance
//!   holds excluded IPv6 addresses there).
//! - The parent answers ARP only for its own addresses: [`crate::arp_isolation`].
//! - Multicast: keepalived joins 224.0.0.18 on the vmac, since an advert sent from the virtual
//!   MAC reaches the vmac alone; that join sends IGMP reports from the virtual MAC, which
//!   keepalived stops only with firewall rules (it then joins on the base interface too and drops
//!   the vmac's reports) or by turning off reports for every link-local group of the host
//!   (`disable_local_igmp`). halo joins the group on the parent alone, whose reports carry the
//!   parent's MAC, and reads the adverts that arrive on the macvlan (those sent from the virtual
//!   MAC) with a packet socket ([`own_mac_receiver`]), which needs no membership.
//! - Sending: keepalived sends adverts from the vmac, as RFC 5798 asks, unless `vmac_xmit_base`
//!   sends them from the base interface (and receives them there too). It imposes
//!   `vmac_xmit_base` on unicast: a unicast advert from the vmac would ask the peer's address by
//!   ARP from the virtual MAC, a request the peer's own vmac takes (and must not answer). halo's
//!   master sends multicast adverts from the macvlan, through a socket that joins nothing, and
//!   unicast ones from the parent.
//!
//! A backup's macvlan then holds no address, joins no group, answers no ARP and sends no advert:
//! nothing leaves it. What halo sets on the macvlan goes with it; the parent's settings are
//! restored by [`crate::arp_isolation::ArpIsolation`].

use socket2::{Domain, SockFilter, Socket, Type};

use crate::netlink::Link;
use crate::{Result, devconf, io, sysctl};

/// Sets the macvlan `interface`'s own keys before it goes up (see the module's text), over
/// netlink ([`crate::devconf`]): a read-only /proc/sys (a container, a hardened unit) does not
/// stop it. IPv6 stays enabled, without an address of its own, when `ipv6_held` (IPv6
/// addresses will be held on it); otherwise it is disabled where /proc/sys may be written — the
/// one key netlink does not set — and, where it may not, it stays enabled without an address,
/// which keeps it silent all the same. A kernel without IPv6 has nothing of IPv6 to silence.
pub fn quiet(interface: &str, ipv6_held: bool) -> Result<()> {
    use crate::devconf::Ipv4Setting::{ArpIgnore, PromoteSecondaries, RpFilter};
    devconf::set(interface, &[(ArpIgnore, 1), (RpFilter, 0), (PromoteSecondaries, 1)])?;
    let disable = format!("net/ipv6/conf/{interface}/disable_ipv6");
    if sysctl::read(&disable)?.is_none() {
        return Ok(());
    }
    devconf::no_ipv6_address_generation(interface)?;
    if ipv6_held {
        return Ok(());
    }
    match sysctl::write(&disable, "1") {
        // Read-only (a container, a hardened unit) or not ours to write (a user namespace).
        Err(crate::HostError::Io { source, .. }) if matches!(source.raw_os_error(), Some(libc::EROFS | libc::EACCES | libc::EPERM)) => {
            tracing::info!(%interface, error = %source, "IPv6 stays enabled on the virtual-MAC interface, without an address of its own");
            Ok(())
        }
        other => other,
    }
}

/// EtherType of IPv4.
const ETH_P_IP: u16 = 0x0800;
/// `sll_pkttype` of a frame to a multicast address that is not our own outgoing one.
const PACKET_MULTICAST: u32 = 2;
/// Classic BPF opcodes (linux/filter.h): BPF_LD | BPF_W, BPF_H or BPF_B | BPF_ABS, BPF_JMP |
/// BPF_JEQ | BPF_K, and BPF_RET | BPF_K.
const LOAD_WORD: u16 = 0x20;
const LOAD_HALF: u16 = 0x28;
const LOAD_BYTE: u16 = 0x30;
const JUMP_IF_EQUAL: u16 = 0x15;
const RETURN: u16 = 0x06;
/// Where the kernel's filter reads the packet type, and the link-layer header.
const PACKET_TYPE: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PKTTYPE) as u32;
const LINK_LAYER: u32 = libc::SKF_LL_OFF as u32;

/// One classic BPF instruction: code, jump if true, jump if false, operand.
type Instruction = (u16, u8, u8, u32);

/// The kernel-side filter of [`own_mac_receiver`]: a multicast frame (not our own going out),
/// IP protocol 112 to 224.0.0.18, from the source MAC `mac`. Offsets count from the IP header
/// (a datagram packet socket), the link layer's from [`LINK_LAYER`]; every failed check jumps
/// to the last instruction, the refusal.
fn program(mac: [u8; 6]) -> [Instruction; 12] {
    let mac_high = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
    let mac_low = u32::from(u16::from_be_bytes([mac[4], mac[5]]));
    let check = |refusal_in: u8, value: u32| (JUMP_IF_EQUAL, 0, refusal_in, value);
    [
        (LOAD_WORD, 0, 0, PACKET_TYPE),
        check(9, PACKET_MULTICAST),
        (LOAD_BYTE, 0, 0, 9),
        check(7, u32::from(halo_vrrp::packet::PROTOCOL)),
        (LOAD_WORD, 0, 0, 16),
        check(5, u32::from(halo_vrrp::packet::MULTICAST_V4)),
        (LOAD_WORD, 0, 0, LINK_LAYER + 6),
        check(3, mac_high),
        (LOAD_HALF, 0, 0, LINK_LAYER + 10),
        check(1, mac_low),
        (RETURN, 0, 0, u32::MAX),
        (RETURN, 0, 0, 0),
    ]
}

/// A packet socket on the macvlan `vmac` receiving, as IPv4 packets from their header on, the
/// VRRP adverts sent to 224.0.0.18 from its own MAC: those of a peer with the same virtual MAC,
/// which the kernel hands to this macvlan alone. Everything else (a VIP's traffic included) is
/// left out by a filter in the kernel. Non-blocking.
pub(crate) fn own_mac_receiver(vmac: &Link) -> Result<Socket> {
    let what = |step: &str| format!("packet socket on {}: {step}", vmac.name);
    let mac: [u8; 6] = vmac.mac.as_slice().try_into().map_err(|_| {
        io(what("its MAC"))(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an Ethernet MAC: {:02x?}", vmac.mac)))
    })?;
    // Protocol 0 receives nothing until the filter is in place and the socket is bound.
    let socket = Socket::new(Domain::PACKET, Type::DGRAM, None).map_err(io(what("socket(AF_PACKET)")))?;
    socket.set_nonblocking(true).map_err(io(what("non-blocking")))?;
    socket.attach_filter(&program(mac).map(|(code, yes, no, k)| SockFilter::new(code, yes, no, k))).map_err(io(what("filter")))?;
    crate::sys::bind_packet(&socket, vmac.index, ETH_P_IP).map_err(io(what("bind")))?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failed_check_jumps_to_the_refusal_and_the_mac_is_read_whole() {
        let program = program([0, 0, 0x5e, 0, 1, 51]);
        let refusal = program.len() - 1;
        for (at, (code, yes, no, _)) in program.iter().enumerate() {
            if *code == JUMP_IF_EQUAL {
                assert_eq!((at + 1 + usize::from(*no), *yes), (refusal, 0), "instruction {at}");
            }
        }
        assert_eq!(program[refusal], (RETURN, 0, 0, 0));
        assert_eq!((program[7].3, program[9].3), (0x0000_5e00, 0x0133));
        assert_eq!(program[5].3, 0xe000_0012, "224.0.0.18");
    }
}

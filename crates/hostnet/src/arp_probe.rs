//! Is an IPv4 address already in use on the LAN? An ARP probe in the manner of RFC 5227 §2.1:
//! requests with sender address 0.0.0.0 for the target, three of them 200 ms apart, and any ARP
//! packet on the link whose sender is that address (a reply, or its holder's own traffic) means
//! it is taken.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::LinkAddr;
use socket2::{Domain, Protocol, Socket, Type};

use crate::netlink::Link;
use crate::{Result, io};

const ETH_P_ARP: u16 = 0x0806;

/// An ARP probe: a request for `target` from `mac` with sender address 0.0.0.0.
pub fn probe_frame(mac: &[u8], target: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    frame.extend_from_slice(&mac[..6.min(mac.len())]);
    frame.resize(14, 0);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// The sender (MAC, address) of an ARP packet for IPv4 over Ethernet.
pub fn sender(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    if frame.len() < 28 || frame[0..2] != [0, 1] || frame[2..4] != [0x08, 0x00] || frame[4] != 6 || frame[5] != 4 {
        return None;
    }
    let mac: [u8; 6] = frame[8..14].try_into().ok()?;
    let address: [u8; 4] = frame[14..18].try_into().ok()?;
    Some((mac, Ipv4Addr::from(address)))
}

/// Probes for `target` on `link` for `wait`; the MAC of whoever answered for it, if anyone.
pub fn probe(link: &Link, target: Ipv4Addr, wait: Duration) -> Result<Option<[u8; 6]>> {
    let protocol = Protocol::from(i32::from(ETH_P_ARP.to_be()));
    let socket = Socket::new(Domain::PACKET, Type::DGRAM, Some(protocol)).map_err(io(format!("packet socket on {}", link.name)))?;
    socket.set_read_timeout(Some(Duration::from_millis(50))).map_err(io("socket timeout"))?;
    let frame = probe_frame(&link.mac, target);
    let started = Instant::now();
    let mut sent = 0;
    let mut buffer = [0u8; 1500];
    while started.elapsed() < wait {
        if sent < 3 && started.elapsed() >= Duration::from_millis(200) * sent {
            crate::sys::send_broadcast(&socket, link.index, ETH_P_ARP, &frame)
                .map_err(io(format!("ARP probe for {target} on {}", link.name)))?;
            sent += 1;
        }
        match nix::sys::socket::recvfrom::<LinkAddr>(socket.as_raw_fd(), &mut buffer) {
            Ok((length, Some(from))) if from.ifindex() == link.index as usize => {
                if let Some((mac, address)) = sender(&buffer[..length])
                    && address == target
                    && mac[..] != link.mac[..]
                {
                    return Ok(Some(mac));
                }
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(crate::errno(format!("receiving ARP on {}", link.name))(e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_frames_have_no_sender_address_and_parse_back() {
        let mac = [2, 0, 0, 0, 0, 1];
        let frame = probe_frame(&mac, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(frame.len(), 28);
        assert_eq!(sender(&frame), Some((mac, Ipv4Addr::UNSPECIFIED)));
        assert_eq!(&frame[24..28], &[10, 0, 0, 5]);
        assert_eq!(sender(&frame[..20]), None);
        let mut not_ethernet = frame.clone();
        not_ethernet[1] = 6;
        assert_eq!(sender(&not_ethernet), None);
    }
}

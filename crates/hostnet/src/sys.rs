//! The one place with `unsafe`: sending a link-layer broadcast on an AF_PACKET socket needs a
//! `sockaddr_ll`, which neither socket2 nor nix can build safely. Everything here is a thin,
//! checked wrapper around `sendto(2)`.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Sends `payload` as one frame of EtherType `protocol` to the Ethernet broadcast address on
/// interface `index`, through a `SOCK_DGRAM` packet socket (the kernel adds the header).
pub(crate) fn send_broadcast(socket: &impl AsRawFd, index: u32, protocol: u16, payload: &[u8]) -> std::io::Result<()> {
    let mut address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: i32::try_from(index).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    // SAFETY: `address` is a fully initialised sockaddr_ll that outlives the call, its exact size
    // is passed, and `payload` is a valid slice for its whole length.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&raw mut address).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

//! The one place with `unsafe`, for what neither socket2 nor nix offers safely: sending a
//! link-layer broadcast on an AF_PACKET socket, and binding one to an interface, need a
//! `sockaddr_ll` (thin, checked wrappers around `sendto(2)` and `bind(2)`), taking
//! ownership of the descriptors `recvmsg(2)` installed from an SCM_RIGHTS message (nix hands
//! them over as bare numbers), and setting a child's groups between fork and exec (the
//! standard library's hook for it is `unsafe`).
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Owns the descriptors the kernel has just installed in this process for an SCM_RIGHTS message
/// that `recvmsg(2)` returned: they are closed when dropped.
pub(crate) fn own_received(received: Vec<RawFd>) -> Vec<OwnedFd> {
    received
        .into_iter()
        .filter(|fd| *fd >= 0)
        // SAFETY: each number comes from the SCM_RIGHTS control message of a successful
        // `recvmsg` on this thread, so it is an open descriptor the kernel created for this
        // process just now; nothing else knows it, so this is its only owner.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

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

/// Binds a packet socket to interface `index` for frames of EtherType `protocol`: from then on
/// (and not before: a packet socket opened with protocol 0 receives nothing) it receives them.
pub(crate) fn bind_packet(socket: &impl AsRawFd, index: u32, protocol: u16) -> std::io::Result<()> {
    let address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: i32::try_from(index).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `address` is a fully initialised sockaddr_ll that outlives the call, and its exact
    // size is passed.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Installs in `command` a hook that, in the child between fork and exec, sets the supplementary
/// `groups`, then `gid`, then `uid`. (The standard library's uid setting would drop the groups,
/// and its hooks run after it, when the child no longer may set them.)
pub(crate) fn drop_privileges_before_exec(
    command: &mut std::process::Command,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs in the forked child, where only async-signal-safe calls are allowed:
    // setgroups(2), setgid(2) and setuid(2) are bare system calls on `groups`, allocated before
    // the fork and moved into the hook; nothing in it allocates or takes a lock (an error becomes
    // an io::Error from its errno, without allocating).
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setgid(gid)?;
            nix::unistd::setuid(uid)?;
            Ok(())
        });
    }
}

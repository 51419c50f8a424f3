//! Descriptors passed between two processes over a unix socket (SCM_RIGHTS, `unix(7)`): one
//! message of bytes with its descriptors attached. A `SOCK_SEQPACKET` pair keeps the messages'
//! boundaries. Received descriptors are owned (closed when dropped), also those of a message that
//! turns out to be too long (it is refused whole).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use crate::{HostError, Result, errno};

/// At most this many descriptors in one message.
pub const MAX_FDS: usize = 64;
/// The most the kernel passes in one message (`SCM_MAX_FD`): the receive buffer has room for
/// them all, so that it never truncates the descriptors (it would install those that fit and set
/// MSG_CTRUNC, and nix then refuses to read them: they would leak). More than [`MAX_FDS`] are
/// refused once owned.
const KERNEL_MAX_FDS: usize = 253;

/// A connected pair of `SOCK_SEQPACKET` unix sockets, close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(errno("creating a unix socket pair"))
}

/// Makes receives on `socket` give up after `timeout` (`None`: wait for ever).
pub fn set_receive_timeout(socket: &OwnedFd, timeout: Option<Duration>) -> Result<()> {
    use nix::sys::socket::setsockopt;
    use nix::sys::socket::sockopt::ReceiveTimeout;
    let value = nix::sys::time::TimeVal::new(
        timeout.map_or(0, |t| t.as_secs() as nix::libc::time_t),
        timeout.map_or(0, |t| t.subsec_micros() as nix::libc::suseconds_t),
    );
    setsockopt(socket, ReceiveTimeout, &value).map_err(errno("setting a receive timeout"))
}

/// Sends `bytes` with `fds` attached, as one message.
pub fn send(socket: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    if fds.len() > MAX_FDS {
        return Err(HostError::Io {
            what: format!("passing {} descriptors (at most {MAX_FDS})", fds.len()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let control = if raw.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(&raw)] };
    let sent = sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(bytes)], &control, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(errno("sending on the handover socket"))?;
    if sent != bytes.len() {
        return Err(HostError::Io {
            what: format!("sending on the handover socket: {sent} of {} bytes sent", bytes.len()),
            source: std::io::Error::from(std::io::ErrorKind::WriteZero),
        });
    }
    Ok(())
}

/// What [`receive`] got.
#[derive(Debug)]
pub enum Received {
    /// A message and the descriptors that came with it.
    Message(Vec<u8>, Vec<OwnedFd>),
    /// The other end closed the socket.
    Closed,
}

/// Receives one message of at most `max` bytes and its descriptors (blocking, up to the
/// socket's receive timeout). A longer message, or one whose descriptors did not all fit, is an
/// error (its descriptors closed).
pub fn receive(socket: &OwnedFd, max: usize) -> Result<Received> {
    let mut buffer = vec![0u8; max];
    let mut control = nix::cmsg_space!([RawFd; KERNEL_MAX_FDS]);
    let (length, flags, raw) = {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(errno("receiving on the handover socket"))?;
        let mut raw = Vec::new();
        for cmsg in message.cmsgs().map_err(errno("reading the handover message's descriptors"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                raw.extend(fds);
            }
        }
        (message.bytes, message.flags, raw)
    };
    let fds = crate::sys::own_received(raw);
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || fds.len() > MAX_FDS {
        return Err(HostError::Io {
            what: format!("receiving on the handover socket: a message longer than {max} bytes or {MAX_FDS} descriptors"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
    }
    if length == 0 && fds.is_empty() {
        return Ok(Received::Closed);
    }
    buffer.truncate(length);
    Ok(Received::Message(buffer, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_and_still_works() {
        let (a, b) = pair().expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        send(&a, b"hello", &[listener.as_fd()]).expect("send");
        drop(listener);
        let Received::Message(bytes, mut fds) = receive(&b, 64).expect("receive") else { panic!("closed") };
        assert_eq!(bytes, b"hello");
        assert_eq!(fds.len(), 1);
        let received = std::net::TcpListener::from(fds.remove(0));
        assert_eq!(received.local_addr().expect("address"), address, "the same listening socket");
        std::net::TcpStream::connect(address).expect("connect to the passed listener");
        received.accept().expect("accepted through the passed descriptor");
    }

    /// How many of this process's descriptors are the socket `inode`.
    fn open_copies(inode: u64) -> usize {
        let wanted = format!("socket:[{inode}]");
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy() == wanted)
            .count()
    }

    #[test]
    fn more_descriptors_than_allowed_are_refused_and_every_one_closed() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = pair().expect("pair");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd())).expect("fd").ino();
        // A hostile or broken sender: more than MAX_FDS (send() refuses that), as many as the
        // kernel takes in one message (SCM_MAX_FD).
        let raw = vec![listener.as_raw_fd(); 253];
        sendmsg::<()>(a.as_raw_fd(), &[IoSlice::new(b"many")], &[ControlMessage::ScmRights(&raw)], MsgFlags::empty(), None)
            .expect("sendmsg");
        assert_eq!(open_copies(inode), 1, "in flight, only the sender's own");
        let refused = receive(&b, 64).expect_err("too many descriptors");
        assert!(refused.to_string().contains("descriptors"), "{refused}");
        assert_eq!(open_copies(inode), 1, "every descriptor received was closed: only the sender's own is left");
    }

    #[test]
    fn a_closed_peer_a_timeout_and_a_message_too_long_are_told_apart() {
        let (a, b) = pair().expect("pair");
        set_receive_timeout(&b, Some(Duration::from_millis(50))).expect("timeout");
        assert!(receive(&b, 64).is_err(), "nothing came: a timeout");
        send(&a, &[7u8; 100], &[]).expect("send");
        let too_long = receive(&b, 10).expect_err("longer than the buffer");
        assert!(too_long.to_string().contains("longer than 10 bytes"), "{too_long}");
        drop(a);
        assert!(matches!(receive(&b, 64).expect("receive"), Received::Closed));
    }
}

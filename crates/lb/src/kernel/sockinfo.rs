//! What the kernel knows of a TCP socket that a kernel-forwarded connection is measured by
//! (`TCP_INFO`, the send queue), and the nudge that makes a socket newly in the map hand over the
//! bytes it already holds (`SO_RCVLOWAT`). The only unsafe code of the balancer: three libc calls
//! with buffers of the sizes they are given.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// The fields of `struct tcp_info` read here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpInfo {
    /// Whether the connection is established both ways (no FIN received or sent).
    pub(crate) established: bool,
    /// Whether it is closed (TCP_CLOSE): after a reset, or after both FINs once the last one
    /// this side sent was acknowledged.
    pub(crate) closed: bool,
    /// Milliseconds since the socket last received data.
    pub(crate) last_data_recv_ms: u32,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub(crate) bytes_acked: u64,
    /// Bytes received (`tcpi_bytes_received`).
    pub(crate) bytes_received: u64,
}

/// `TCP_INFO` of `socket`. Taking it locks the socket, so whatever the kernel was doing with a
/// segment that had arrived (the verdict program included) is done when it returns.
pub(crate) fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a zeroed tcp_info of `len` bytes; the kernel writes at most `len`.
    let rc = unsafe { libc::getsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and partly written by the kernel: every bit pattern is valid.
    let info = unsafe { info.assume_init() };
    const ESTABLISHED: u8 = 1;
    const CLOSE: u8 = 7;
    Ok(TcpInfo {
        established: info.tcpi_state == ESTABLISHED,
        closed: info.tcpi_state == CLOSE,
        last_data_recv_ms: info.tcpi_last_data_recv,
        bytes_acked: info.tcpi_bytes_acked,
        bytes_received: info.tcpi_bytes_received,
    })
}

/// Whether the end `socket` just read is a reset rather than its peer's FIN, given whether this
/// side has sent its own FIN (`shut`): without it, only a reset closes a TCP connection.
pub(crate) fn was_reset(socket: &impl AsRawFd, shut: bool) -> bool {
    !shut && tcp_info(socket).is_ok_and(|info| info.closed)
}

/// Bytes written to `socket` so far: those its peer acknowledged and those still in its send
/// queue (a FIN sent counts one).
pub(crate) fn written(socket: &impl AsRawFd) -> io::Result<u64> {
    let acked = tcp_info(socket)?.bytes_acked;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(acked + queued.max(0) as u64)
}

/// Bytes received that nobody has read yet (`SIOCINQ`).
pub(crate) fn unread(socket: &impl AsRawFd) -> io::Result<u64> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCINQ writes one int.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut queued) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued.max(0) as u64)
}

/// Sets the receive low-water mark to one byte, which makes TCP look again at what the socket
/// holds and call its data-ready hook: for a socket just put in the map, the verdict program
/// then takes the bytes that arrived before.
pub(crate) fn nudge(socket: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: SO_RCVLOWAT reads one int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

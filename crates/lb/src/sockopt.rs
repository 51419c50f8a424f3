//! The options every proxied socket gets.

use socket2::{SockRef, TcpKeepalive};
use std::time::Duration;

/// The options of both sockets of a proxied connection: TCP keepalive (a peer that vanished
/// without a FIN is found in minutes, not never) and TCP_NODELAY (a small message, a request or
/// a PROXY header, leaves at once instead of waiting for the previous one's ACK). Set once on a
/// listener, they are inherited by every socket it accepts.
pub(crate) fn set_connection_options(socket: SockRef<'_>) -> std::io::Result<()> {
    let params = TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
    socket.set_tcp_keepalive(&params)?;
    socket.set_tcp_nodelay(true)
}

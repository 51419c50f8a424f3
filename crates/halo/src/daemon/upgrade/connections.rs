//! Established connections across `halo upgrade`: once the new process serves, the old one
//! pauses every relay where halo holds none of its bytes and sends both sockets of each
//! connection (SCM_RIGHTS, [`BATCH`] connections a message) with its counts; the new one relays
//! on. A connection that cannot pause in time (a peer that takes nothing while bytes wait for
//! it) stays with the old process, which drains it as before.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use halo_lb::established::Established;
use halo_lb::{Adopter, Balancer};

use super::message::{Channel, ConnectionJson, Message};

/// How long the old process waits for its connections to pause.
pub const PAUSE_WITHIN: Duration = Duration::from_secs(10);
/// How long one message may wait for room in the socket (the new process reads nothing).
const SEND_WITHIN: Duration = Duration::from_secs(5);
/// Connections a message: two descriptors each.
const BATCH: usize = halo_hostnet::fd_passing::MAX_FDS / 2;

/// What the handover of the connections came to.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Sent {
    /// Connections the new process has.
    pub(crate) handed: usize,
    /// Connections lost: paused, but the message did not go.
    pub(crate) lost: usize,
}

/// Pauses every connection of `balancer` (and those still to reach their relay) and sends each
/// one as it pauses, until none is open or [`PAUSE_WITHIN`] has passed; then the pause is called
/// off, and what had paused meanwhile is sent too (the rest relays on here, to be drained).
pub(crate) async fn send(balancer: &Balancer, channel: &Arc<Channel>) -> Sent {
    if let Err(e) = channel.limit_sends(SEND_WITHIN) {
        tracing::warn!(error = %e, "upgrade: sends to the new process cannot be bounded in time");
    }
    balancer.pause_connections();
    let deadline = Instant::now() + PAUSE_WITHIN;
    let mut sent = Sent::default();
    loop {
        let done = balancer.open_connections() == 0 || Instant::now() >= deadline;
        let paused = if done { balancer.call_off_pause() } else { balancer.take_paused() };
        send_all(paused, channel, &mut sent).await;
        if done {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `paused` in batches, counting what went and what was lost.
async fn send_all(mut paused: Vec<Established>, channel: &Arc<Channel>, sent: &mut Sent) {
    while !paused.is_empty() {
        let batch: Vec<Established> = paused.drain(..paused.len().min(BATCH)).collect();
        let count = batch.len();
        let channel = Arc::clone(channel);
        match tokio::task::spawn_blocking(move || send_batch(&channel, &batch)).await {
            Ok(Ok(())) => sent.handed += count,
            Ok(Err(e)) => {
                tracing::error!(connections = count, error = %e, "upgrade: connections could not be handed over: closed");
                sent.lost += count;
            }
            Err(e) => {
                tracing::error!(connections = count, error = %e, "upgrade: the handover of connections failed: closed");
                sent.lost += count;
            }
        }
    }
}

/// One message: the batch's counts, then its sockets (client, server, client, server, ...).
fn send_batch(channel: &Channel, batch: &[Established]) -> Result<(), super::message::ChannelError> {
    let connections = batch.iter().map(ConnectionJson::of).collect();
    let fds: Vec<BorrowedFd<'_>> = batch.iter().flat_map(|e| [e.client.as_fd(), e.server.as_fd()]).collect();
    channel.send(&Message::Connections { connections }, &fds)
}

/// Relays on the connections of one message (the new process); how many.
pub(crate) fn adopt(adopter: &Adopter, connections: Vec<ConnectionJson>, fds: Vec<OwnedFd>) -> usize {
    // The channel made sure that two descriptors came with each connection.
    let mut sockets = fds.into_iter();
    let mut adopted = 0;
    for connection in connections {
        if let (Some(client), Some(server)) = (sockets.next(), sockets.next()) {
            adopter.adopt(connection.with_sockets(client, server));
            adopted += 1;
        }
    }
    adopted
}

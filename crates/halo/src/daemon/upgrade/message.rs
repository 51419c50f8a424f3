//! The handover's messages and the channel they travel on: JSON, one message per
//! `SOCK_SEQPACKET` packet, descriptors attached (SCM_RIGHTS) to the offer only. Every message
//! is checked as it arrives (its kind, its fields, the number of descriptors it announces): a
//! broken one is an error, never a guess.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use halo_hostnet::fd_passing::{self, Received};
use serde::{Deserialize, Serialize};

pub use super::connection_json::ConnectionJson;

/// The version of this protocol: a process speaking another refuses the handover. 3: a bind's
/// listening sockets are a group, every one of them offered (2 offered one socket per bind; a
/// binary of protocol 2 taking a group would close the rest and reset their queued connections,
/// so it must refuse).
pub const PROTOCOL: u32 = 3;
/// The protocols this binary takes over from: 2 as well (one socket per bind is a group of one).
pub const TAKES_OVER_FROM: [u32; 2] = [2, 3];
/// The longest message: a few thousand servers' health.
pub const MAX_MESSAGE: usize = 1 << 20;

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Running → new: what there is to take over; the listening sockets of `listeners`, then the
    /// status endpoint's (TCP, then unix when `status_unix`), attached in that order.
    Offer(Offer),
    /// New → running: ready to take over; the VRRP instances it will adopt.
    Ready {
        /// Their names.
        adopt: Vec<String>,
    },
    /// Running → new: the adopted instances, stopped without a word, as they were.
    Frozen {
        /// One per instance of `Ready::adopt`.
        instances: Vec<FrozenInstance>,
    },
    /// New → running: it has taken over (VIPs held, its guard armed, accepting).
    Committed {
        /// Its pid.
        pid: u32,
    },
    /// Running → new: it stopped the instances not adopted, handed its announcements over and
    /// forgot its VIPs; the new process may start the rest. It still accepts, and resumes should
    /// the new process end before it says `serving`.
    Released {},
    /// New → running: it serves alone (its guard engaged, every instance and announcement
    /// started): the running daemon stops accepting, tells systemd, hands its established
    /// connections over, drains what it could not hand over and exits.
    Serving {},
    /// Running → new, after `serving`, as many as it takes: established connections, paused
    /// where halo holds none of their bytes; each one's client socket, then its server socket,
    /// attached in order.
    Connections {
        /// What is known of each.
        connections: Vec<ConnectionJson>,
    },
    /// Either way: giving up, and why.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Message {
    /// Its kind, for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Offer(_) => "offer",
            Message::Ready { .. } => "ready",
            Message::Frozen { .. } => "frozen",
            Message::Committed { .. } => "committed",
            Message::Released {} => "released",
            Message::Serving {} => "serving",
            Message::Connections { .. } => "connections",
            Message::Failed { .. } => "failed",
        }
    }
}

/// What the running daemon offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// [`PROTOCOL`].
    pub protocol: u32,
    /// The running daemon's pid.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// The addresses of the listening sockets attached, in order.
    pub listeners: Vec<SocketAddr>,
    /// Whether the status endpoint's unix socket is attached after its TCP one.
    pub status_unix: bool,
    /// What its checks knew of each server.
    pub health: Vec<ServerHealthJson>,
    /// Its VRRP instances.
    pub instances: Vec<InstanceOffer>,
    /// The layout of its kernel data path ([`halo_lb::kernel::LAYOUT`]) when that path's four
    /// maps are attached after the status endpoint's sockets.
    #[serde(default)]
    pub kernel: Option<u32>,
}

impl Offer {
    /// How many descriptors come with it.
    pub fn descriptors(&self) -> usize {
        self.listeners.len() + 1 + usize::from(self.status_unix) + if self.kernel.is_some() { 4 } else { 0 }
    }
}

/// One server's health, as [`halo_lb::ServerHealth`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerHealthJson {
    /// Its backend.
    pub backend: String,
    /// Its name.
    pub server: String,
    /// Its configured address.
    pub configured: String,
    /// Where its name resolved to.
    pub resolved: Option<SocketAddr>,
    /// Whether its checks decided.
    pub decided: bool,
    /// Whether it is up.
    pub up: bool,
    /// What an operator set: ready, drain or maint (ready from a process that knew no such thing).
    #[serde(default = "ready")]
    pub admin: String,
    /// The run-time weight an operator set.
    #[serde(default)]
    pub weight: Option<u32>,
}

fn ready() -> String {
    halo_lb::Admin::Ready.as_str().to_string()
}

impl From<halo_lb::ServerHealth> for ServerHealthJson {
    fn from(h: halo_lb::ServerHealth) -> Self {
        Self {
            backend: h.backend,
            server: h.server,
            configured: h.configured,
            resolved: h.resolved,
            decided: h.decided,
            up: h.up,
            admin: h.admin.as_str().to_string(),
            weight: h.weight,
        }
    }
}

impl From<ServerHealthJson> for halo_lb::ServerHealth {
    fn from(h: ServerHealthJson) -> Self {
        Self {
            backend: h.backend,
            server: h.server,
            configured: h.configured,
            resolved: h.resolved,
            decided: h.decided,
            up: h.up,
            admin: halo_lb::Admin::parse(&h.admin).unwrap_or_default(),
            weight: h.weight,
        }
    }
}

/// A running VRRP instance: what makes it the same router on the wire and on the host. The new
/// process adopts an instance only when its own of that name has the same place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceOffer {
    /// Its name.
    pub name: String,
    /// Where it runs and what identifies it.
    pub place: InstancePlace,
    /// Its sync group and the group's members, when in one.
    pub sync_group: Option<(String, Vec<String>)>,
}

/// What cannot change under a running VRRP instance (a reload restarts it when this changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancePlace {
    /// Its interface.
    pub interface: String,
    /// Its VRID.
    pub vrid: u8,
    /// VRRP version, 2 or 3.
    pub version: u8,
    /// Its advert interval, in centiseconds.
    pub interval_cs: u16,
    /// Whether its addresses are IPv6.
    pub ipv6: bool,
    /// Unicast source, when set.
    pub unicast_source: Option<IpAddr>,
    /// Unicast peers.
    pub unicast_peers: Vec<IpAddr>,
    /// A digest of its v2 password (the password itself never travels).
    pub auth_digest: u64,
    /// Whether it uses a virtual MAC (never adopted: the macvlan and its parent's ARP settings
    /// belong to the process that made them).
    pub virtual_mac: bool,
}

impl InstancePlace {
    /// The place of a configured instance.
    pub fn of(config: &halo_config::VrrpInstance) -> Self {
        use std::hash::{Hash, Hasher};
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        config.auth_password.hash(&mut digest);
        Self {
            interface: config.interface.clone(),
            vrid: config.virtual_router_id.get(),
            version: match config.version {
                halo_vrrp::Version::V2 => 2,
                halo_vrrp::Version::V3 => 3,
            },
            interval_cs: config.advert_interval.centiseconds(),
            ipv6: config.virtual_addresses.first().is_some_and(|a| a.addr().is_ipv6()),
            unicast_source: config.unicast_source,
            unicast_peers: config.unicast_peers.clone(),
            auth_digest: digest.finish(),
            virtual_mac: config.virtual_mac,
        }
    }
}

/// An adopted instance as the running daemon stopped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenInstance {
    /// Its name.
    pub name: String,
    /// MASTER, BACKUP, FAULT or INIT.
    pub state: String,
    /// The master's advert interval it had learned, centiseconds.
    pub master_adver_interval_cs: u16,
    /// A backup: milliseconds until it would have declared the master down.
    pub master_down_in_ms: Option<u64>,
    /// Milliseconds until it could have preempted.
    pub preempt_in_ms: u64,
    /// Why and when (Unix seconds) its state last changed.
    pub last_change: (String, u64),
}

/// Why a handover could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The socket failed (or a receive timed out).
    #[error(transparent)]
    Socket(#[from] halo_hostnet::HostError),
    /// The other process closed its end (it exited).
    #[error("the other process closed the handover socket")]
    Closed,
    /// Nothing came in time.
    #[error("no {expected} message within {waited:?}")]
    Timeout {
        /// What was awaited.
        expected: &'static str,
        /// How long.
        waited: Duration,
    },
    /// A message that is not one of this protocol.
    #[error("a broken handover message: {0}")]
    Broken(String),
    /// A message of the protocol, but not the one expected now.
    #[error("a {got} message where {expected} was expected")]
    Unexpected {
        /// What came.
        got: &'static str,
        /// What was expected.
        expected: &'static str,
    },
}

/// One end of the handover socket.
pub struct Channel(OwnedFd);

impl Channel {
    /// The end `socket`.
    pub fn new(socket: OwnedFd) -> Self {
        Self(socket)
    }

    /// Makes a send that waits longer than `limit` for room (a peer that reads nothing) fail.
    pub fn limit_sends(&self, limit: Duration) -> std::io::Result<()> {
        socket2::SockRef::from(&self.0).set_write_timeout(Some(limit))
    }

    /// Sends `message` with `fds` attached.
    pub fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(message).map_err(|e| ChannelError::Broken(e.to_string()))?;
        fd_passing::send(&self.0, &bytes, fds)?;
        Ok(())
    }

    /// Receives one message, waiting at most `timeout` (blocking: run it off the runtime's
    /// workers); `expected` names what is awaited, for errors.
    pub fn receive(&self, expected: &'static str, timeout: Option<Duration>) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        fd_passing::set_receive_timeout(&self.0, timeout)?;
        let received = match fd_passing::receive(&self.0, MAX_MESSAGE) {
            Ok(received) => received,
            Err(halo_hostnet::HostError::Io { source, .. })
                if matches!(source.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return Err(ChannelError::Timeout { expected, waited: timeout.unwrap_or_default() });
            }
            Err(halo_hostnet::HostError::Io { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(ChannelError::Closed);
            }
            Err(e) => return Err(e.into()),
        };
        let (bytes, fds) = match received {
            Received::Message(bytes, fds) => (bytes, fds),
            Received::Closed => return Err(ChannelError::Closed),
        };
        let message: Message = serde_json::from_slice(&bytes).map_err(|e| ChannelError::Broken(e.to_string()))?;
        let announced = match &message {
            Message::Offer(offer) => offer.descriptors(),
            Message::Connections { connections } => 2 * connections.len(),
            _ => 0,
        };
        if fds.len() != announced {
            return Err(ChannelError::Broken(format!("a {} message with {} descriptors, not {announced}", message.kind(), fds.len())));
        }
        Ok((message, fds))
    }

    /// The last word of a process giving up: `failed` with `reason`, then what the other side
    /// still sends is read (and dropped) until it answers `failed` too, closes, or `linger` has
    /// passed. A unix socket closed with unread messages makes the other side's next receive
    /// fail with ECONNRESET, losing the reason sent just before: hence the reading.
    pub fn farewell(&self, reason: String, linger: Duration) -> Result<(), ChannelError> {
        self.send(&Message::Failed { reason }, &[])?;
        let deadline = std::time::Instant::now() + linger;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.receive("failed", Some(left)) {
                Ok((Message::Failed { .. }, _)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Sends a raw packet (tests of broken messages).
    #[cfg(test)]
    fn send_raw(&self, bytes: &[u8]) -> Result<(), ChannelError> {
        fd_passing::send(&self.0, bytes, &[])?;
        Ok(())
    }
}

/// Both ends of a new handover socket: (the running daemon's, the new process's).
pub fn pair() -> Result<(Channel, OwnedFd), ChannelError> {
    let (ours, theirs) = fd_passing::pair()?;
    Ok((Channel(ours), theirs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn offer(listeners: Vec<SocketAddr>) -> Offer {
        Offer {
            protocol: PROTOCOL,
            pid: 42,
            version: "0.1.0".into(),
            listeners,
            status_unix: false,
            health: vec![],
            instances: vec![InstanceOffer {
                name: "VI_1".into(),
                place: InstancePlace {
                    interface: "eth0".into(),
                    vrid: 51,
                    version: 3,
                    interval_cs: 10,
                    ipv6: false,
                    unicast_source: None,
                    unicast_peers: vec![],
                    auth_digest: 0,
                    virtual_mac: false,
                },
                sync_group: None,
            }],
            kernel: None,
        }
    }

    #[test]
    fn an_offer_crosses_with_its_descriptors() {
        let (ours, theirs) = pair().expect("pair");
        let theirs = Channel::new(theirs);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let status = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let sent = Message::Offer(offer(vec![listener.local_addr().expect("address")]));
        ours.send(&sent, &[listener.as_fd(), status.as_fd()]).expect("send");
        let (got, fds) = theirs.receive("offer", Some(Duration::from_secs(1))).expect("receive");
        assert_eq!(got, sent);
        assert_eq!(fds.len(), 2);
        theirs.send(&Message::Ready { adopt: vec!["VI_1".into()] }, &[]).expect("send");
        assert_eq!(ours.receive("ready", None).expect("receive").0, Message::Ready { adopt: vec!["VI_1".into()] });
    }

    #[test]
    fn broken_messages_are_errors_with_what_was_wrong() {
        let (ours, theirs) = pair().expect("pair");
        let theirs = Channel::new(theirs);
        let wait = Some(Duration::from_millis(200));
        ours.send_raw(b"{\"kind\":\"offer\"").expect("send");
        assert!(matches!(theirs.receive("offer", wait), Err(ChannelError::Broken(_))), "truncated JSON");
        ours.send_raw(b"{\"kind\":\"launch\"}").expect("send");
        assert!(matches!(theirs.receive("offer", wait), Err(ChannelError::Broken(_))), "an unknown kind");
        ours.send_raw(b"{\"kind\":\"released\",\"extra\":1}").expect("send");
        assert!(matches!(theirs.receive("offer", wait), Err(ChannelError::Broken(_))), "an unknown field");
        // An offer announcing a listener whose descriptor is missing.
        ours.send(&Message::Offer(offer(vec!["127.0.0.1:1".parse().expect("address")])), &[]).expect("send");
        let missing = theirs.receive("offer", wait).expect_err("descriptors missing");
        assert!(missing.to_string().contains("with 0 descriptors, not 2"), "{missing}");
        assert!(matches!(theirs.receive("offer", wait), Err(ChannelError::Timeout { .. })));
        drop(ours);
        assert!(matches!(theirs.receive("offer", wait), Err(ChannelError::Closed)));
    }
}

//! What an established connection is (a server chosen, both sockets open) as it is relayed, as
//! it is handed to the process that replaces this one (`halo upgrade`), and the handover's state
//! shared by a balancer's frontends. The relaying itself is in [`crate::carry`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::lock::lock;
use crate::proxy::Pause;
use crate::server::ServerRuntime;

/// A connection whose server is chosen, ready to be relayed.
pub(crate) struct Connection {
    pub(crate) client: TcpStream,
    pub(crate) upstream: TcpStream,
    /// Its server (`None`: adopted for a server the new configuration no longer has).
    pub(crate) server: Option<Arc<ServerRuntime>>,
    pub(crate) address: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted: Instant,
    pub(crate) queued: Duration,
    pub(crate) connecting: Duration,
    /// Bytes relayed up and down before (by the process this one took it over from).
    pub(crate) before: (u64, u64),
    /// In the kernel path already (handed over so by the process this one took it over from).
    pub(crate) kernel: Option<crate::kernel::Joined>,
}

/// A connection paused for the process that replaces this one: both sockets, and what is known
/// of it.
#[derive(Debug)]
pub struct Established {
    /// The client's socket.
    pub client: std::net::TcpStream,
    /// The server's socket.
    pub server: std::net::TcpStream,
    /// Its frontend, by name.
    pub frontend: String,
    /// Its backend, by name.
    pub backend: String,
    /// Its server, by name.
    pub server_name: String,
    /// The server's address.
    pub server_address: SocketAddr,
    /// The client's address.
    pub peer: SocketAddr,
    /// How long ago it was accepted.
    pub age: Duration,
    /// Bytes relayed so far, client to server.
    pub bytes_up: u64,
    /// Bytes relayed so far, server to client.
    pub bytes_down: u64,
    /// In the kernel data path (its sockets are in the maps handed over with the listeners).
    pub kernel: Option<crate::kernel::Joined>,
}

/// Pausing a balancer's relays and keeping what they hand over (one, shared by its frontends).
#[derive(Debug)]
pub(crate) struct Handover {
    pause: watch::Sender<bool>,
    /// The connections paused and not taken yet; `None` while nothing is taken (a relay that
    /// pauses then relays on).
    paused: Mutex<Option<Vec<Established>>>,
}

impl Handover {
    pub(crate) fn new() -> Self {
        Self { pause: watch::Sender::new(false), paused: Mutex::new(None) }
    }

    /// What relays watch.
    pub(crate) fn pause(&self) -> Pause {
        self.pause.subscribe()
    }

    /// Asks every relay, now and to come, to pause, and keeps those that do.
    pub(crate) fn ask(&self) {
        lock(&self.paused).get_or_insert_with(Vec::new);
        self.pause.send_replace(true);
    }

    /// Calls the pause off: relays at rest, and those that pause from now on, relay on. What
    /// was paused before is returned.
    pub(crate) fn call_off(&self) -> Vec<Established> {
        let kept = lock(&self.paused).take().unwrap_or_default();
        self.pause.send_replace(false);
        kept
    }

    /// The list a paused connection joins, `None` while no handover takes them; held locked
    /// while one joins, so that the handover is not called off in between.
    pub(crate) fn kept(&self) -> std::sync::MutexGuard<'_, Option<Vec<Established>>> {
        lock(&self.paused)
    }

    /// The connections paused since the last call.
    pub(crate) fn take(&self) -> Vec<Established> {
        lock(&self.paused).as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// What is known of a connection being carried.
pub(crate) struct About<'a> {
    pub(crate) backend: &'a crate::backend::BackendRuntime,
    pub(crate) server_name: &'a str,
    pub(crate) address: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) accepted: Instant,
}

/// The log's word for how a relay ended (a pause is no end).
pub(crate) fn outcome(ended: crate::proxy::Ended) -> crate::connlog::Outcome {
    use crate::connlog::Outcome;
    use crate::proxy::Ended;
    match ended {
        Ended::Closed => Outcome::Closed,
        Ended::Idle => Outcome::Idle,
        Ended::Error | Ended::Paused => Outcome::Error,
    }
}

//! The balancer's frontends at run time: a connection cap and a bounded wait, admission, the
//! serving of a connection, counters (backends are in [`crate::backend`]). Shared state is
//! atomics, and settings swapped whole by a reload: a connection takes no lock on its way to a
//! server, and never waits on a health check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use halo_config::Frontend;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::connlog::{ConnectionLog, Outcome, Record};
use crate::established::{Connection, Handover};
use crate::lock::lock;
pub use crate::server::{CHECK_LATENCY_BUCKETS, ServerRuntime, ServerStats};
use crate::silent::Silent;
use crate::slots::{Slot, Slots};

pub use crate::backend::BackendRuntime;

/// Counters of one frontend.
#[derive(Debug, Default)]
pub struct FrontendStats {
    /// Connections open now.
    pub current: AtomicU64,
    /// Connections accepted.
    pub total: AtomicU64,
    /// Connections closed after waiting `queue_timeout` for a slot.
    pub queue_drops: AtomicU64,
    /// Connections closed because no server could take them.
    pub no_server: AtomicU64,
    /// Connections closed unserved because they sent nothing within `first_byte_timeout`.
    pub first_byte_timeouts: AtomicU64,
    /// Connections closed at accept: their source is not in the frontend's `allow` list.
    pub refused: AtomicU64,
    /// Connections whose bytes the kernel forwarded (`[balancer] forwarding`).
    pub kernel_forwarded: AtomicU64,
}

/// One frontend at run time. Its settings and backend are swapped by a reload while
/// connections are being served.
pub struct FrontendRuntime {
    /// Name (stable across reloads).
    pub name: String,
    /// Read by every connection without a lock; swapped whole by a reload.
    settings: ArcSwap<Frontend>,
    backend: ArcSwap<BackendRuntime>,
    pub(crate) slots: Slots,
    /// Places of accepted connections that are not served yet (waiting for their first byte,
    /// then for a slot), as many as slots: the accept loop takes one before it accepts, so a
    /// flood waits in the kernel's backlog instead of holding halo's descriptors.
    waiting: Slots,
    /// Accepted connections that have not spoken yet, closed oldest first to make room.
    pub(crate) silent: Silent,
    /// Listeners accepting now.
    listening: AtomicU64,
    /// Counters.
    pub stats: FrontendStats,
    /// The connection log (shared by all frontends).
    pub(crate) log: Arc<ConnectionLog>,
    /// Pausing relays for an upgrade (shared by all frontends).
    pub(crate) handover: Arc<Handover>,
    /// The kernel data path, when `[balancer] forwarding` uses it (shared by all frontends).
    pub(crate) kernel: Option<Arc<crate::kernel::KernelPath>>,
    /// When a refused client was last logged, and how many were refused since.
    refused_logged: Mutex<(Option<Instant>, u64)>,
}

/// What a balancer's frontends share.
pub(crate) struct Shared {
    pub(crate) log: Arc<ConnectionLog>,
    pub(crate) handover: Arc<Handover>,
    pub(crate) kernel: Option<Arc<crate::kernel::KernelPath>>,
}

impl FrontendRuntime {
    pub(crate) fn new(config: &Frontend, backend: Arc<BackendRuntime>, shared: Shared) -> Self {
        let Shared { log, handover, kernel } = shared;
        Self {
            log,
            handover,
            kernel,
            name: config.name.clone(),
            settings: ArcSwap::from_pointee(config.clone()),
            backend: ArcSwap::new(backend),
            slots: Slots::new(config.max_connections as usize),
            waiting: Slots::new(config.max_connections as usize),
            silent: Silent::default(),
            listening: AtomicU64::new(0),
            stats: FrontendStats::default(),
            refused_logged: Mutex::new((None, 0)),
        }
    }

    /// The backend connections go to now.
    pub fn backend(&self) -> Arc<BackendRuntime> {
        self.backend.load_full()
    }

    /// Whether a client from `peer` may connect: its address is in the `allow` list, or the
    /// list is empty. An IPv4 address mapped into IPv6 counts as the IPv4 one.
    pub(crate) fn allows(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        let settings = self.settings.load();
        settings.allow.is_empty() || settings.allow.iter().any(|net| net.contains(&peer))
    }

    /// A client its source refused: counted, and logged at most once a second (with how many
    /// were refused since the last line), so that a flood of them writes no flood of lines.
    pub(crate) fn refuse(&self, peer: SocketAddr) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        let mut logged = lock(&self.refused_logged);
        logged.1 += 1;
        if logged.0.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(frontend = %self.name, %peer, refused = logged.1, "connection refused: its source is not in the frontend's allow list");
            *logged = (Some(Instant::now()), 0);
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Frontend {
        Frontend::clone(&self.settings.load())
    }

    /// Applies new settings and backend; the connection cap grows or shrinks by the difference.
    pub(crate) fn update(&self, config: &Frontend, backend: Arc<BackendRuntime>) {
        let old = self.settings.swap(Arc::new(config.clone()));
        self.backend.store(backend);
        let (before, after) = (old.max_connections as usize, config.max_connections as usize);
        self.waiting.resize(before, after);
        let owed = self.slots.resize(before, after);
        if owed > 0 {
            tracing::info!(frontend = %self.name, owed, "connection cap lowered below current use: slots go as their connections end");
        }
    }

    /// Accept loops serving this frontend now (one per listening socket).
    #[cfg(test)]
    pub(crate) fn accept_loops(&self) -> u64 {
        self.listening.load(Ordering::Relaxed)
    }

    /// True while at least one bind accepts connections.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn listener_started(&self) {
        self.listening.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn listener_stopped(&self) {
        self.listening.fetch_sub(1, Ordering::Relaxed);
    }

    /// A place for one more accepted connection ([`FrontendRuntime::waiting`]), however long
    /// it takes; `None` when the frontend is gone.
    pub(crate) async fn admission(&self) -> Option<Slot> {
        self.waiting.acquire_waiting().await
    }

    /// Serves one accepted connection, admitted with `place`: its first byte (within
    /// `first_byte_timeout`), a slot (within `queue_timeout`), a server, then the relay.
    pub(crate) async fn serve(self: Arc<Self>, client: TcpStream, peer: SocketAddr, place: Slot) {
        let accepted = Instant::now();
        let backend = self.backend();
        let Some(slot) = self.admit(&client, &backend, peer, accepted).await else { return };
        drop(place);
        let queued = accepted.elapsed();
        let Some((server, address, mut upstream)) = backend.connect().await else {
            // Closed at once: the client sees a reset, not a hang.
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            self.log_refused(&backend, peer, accepted, queued, Outcome::NoServer);
            return;
        };
        let connecting = accepted.elapsed() - queued;
        if let Some(version) = backend.config.send_proxy {
            let header = crate::proxy_protocol::header(version, peer, client.local_addr().ok());
            if let Err(e) = upstream.write_all(&header).await {
                tracing::debug!(frontend = %self.name, server = %server.config.name, error = %e, "PROXY header not sent");
                return;
            }
        }
        server.stats.total.fetch_add(1, Ordering::Relaxed);
        let connection = Connection {
            client,
            upstream,
            server: Some(server),
            address,
            peer,
            accepted,
            queued,
            connecting,
            before: (0, 0),
            kernel: None,
        };
        self.carry(&backend, connection, Some(slot)).await;
    }

    /// What a connection needs before a server connection is spent on it: a server that can take
    /// it (else it is closed at once), its first byte, then a slot. `None` when it ends here
    /// (closed, counted and logged).
    async fn admit(&self, client: &TcpStream, backend: &BackendRuntime, peer: SocketAddr, accepted: Instant) -> Option<Slot> {
        if backend.healthy_servers() == 0 {
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            self.log_refused(backend, peer, accepted, Duration::ZERO, Outcome::NoServer);
            return None;
        }
        if !self.first_byte(client, backend, peer, accepted).await {
            return None;
        }
        let slot = self.slot().await;
        if slot.is_none() {
            self.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
            self.log_refused(backend, peer, accepted, accepted.elapsed(), Outcome::QueueTimeout);
        }
        slot
    }

    /// Waits (up to `first_byte_timeout`; not at all when zero) for the client to speak before a
    /// server connection is spent on it: a silent client is closed, counted and logged, sooner
    /// when it is the oldest silent one and others wait in the backlog ([`crate::silent`]). False
    /// when the connection ends here (silent, or closed before a byte).
    async fn first_byte(&self, client: &TcpStream, backend: &BackendRuntime, peer: SocketAddr, accepted: Instant) -> bool {
        let wait = self.settings.load().first_byte_timeout;
        if wait.is_zero() {
            return true;
        }
        let mut byte = [0u8; 1];
        let waiting = self.silent.register();
        // `None`: silent too long, or closed to make room for connections waiting in the backlog
        // (counted alike).
        let spoke = tokio::select! {
            // A connection that spoke is never closed to make room.
            biased;
            spoke = tokio::time::timeout(wait, client.peek(&mut byte)) => spoke.ok(),
            () = waiting.evicted.notified() => None,
        };
        match spoke {
            Some(Ok(n)) => n > 0,
            Some(Err(e)) => {
                tracing::debug!(frontend = %self.name, error = %e, "client failed before its first byte");
                false
            }
            None => {
                self.stats.first_byte_timeouts.fetch_add(1, Ordering::Relaxed);
                self.log_refused(backend, peer, accepted, accepted.elapsed(), Outcome::FirstByteTimeout);
                false
            }
        }
    }

    /// A connection slot ([`Slots::acquire`]) under the queue timeout in force.
    async fn slot(&self) -> Option<Slot> {
        let queue_timeout = self.settings.load().queue_timeout;
        self.slots.acquire(queue_timeout).await
    }

    /// The connection-log line of a connection no server took.
    fn log_refused(&self, backend: &BackendRuntime, peer: SocketAddr, accepted: Instant, queued: Duration, outcome: Outcome) {
        if self.log.enabled() {
            self.log.write(&Record {
                client: peer,
                frontend: &self.name,
                backend: &backend.config.name,
                server: None,
                queued,
                connecting: accepted.elapsed().saturating_sub(queued),
                total: accepted.elapsed(),
                bytes_up: 0,
                bytes_down: 0,
                outcome,
            });
        }
    }
}

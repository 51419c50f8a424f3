//! The balancer at run time: frontends with a connection cap and a bounded wait, backends with
//! server choice, connect with retries and redispatch, one health-check task per server (and
//! one resolver task per server given by name), counters, and a drain on shutdown. Shared state is atomics and short mutexes; the hot path never waits on a
//! health check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use halo_config::{Backend, CheckKind, Frontend};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::LbError;
use crate::connlog::{ConnectionLog, Outcome, Record};
use crate::established::{Connection, Handover};
use crate::lock::lock;
use crate::probe::{Failure, probe, short};
use crate::select::{Candidate, pick};
pub use crate::server::{CHECK_LATENCY_BUCKETS, ServerRuntime, ServerStats};
use crate::silent::Silent;
use crate::slots::{Slot, Slots};

/// One backend at run time.
pub struct BackendRuntime {
    /// Its configuration.
    pub config: Backend,
    /// Its servers, in configuration order.
    pub servers: Vec<Arc<ServerRuntime>>,
    selection: Mutex<Vec<Candidate>>,
    tls: Option<TlsConnector>,
    /// Set when a reload replaces this backend: its check tasks end.
    stop_checks: watch::Sender<bool>,
}

impl BackendRuntime {
    /// A backend for `config`, keeping the run-time state (health, counters) of the servers of
    /// `previous` that have the same name and address.
    pub(crate) fn new(config: &Backend, previous: Option<&BackendRuntime>) -> Result<Self, LbError> {
        let tls = match config.health.kind {
            CheckKind::None | CheckKind::Tcp | CheckKind::Http => None,
            CheckKind::Tls | CheckKind::Https => Some(TlsConnector::from(
                crate::tls::client_config(&config.health).map_err(|e| LbError::Tls { backend: config.name.clone(), source: e })?,
            )),
        };
        let servers: Vec<Arc<ServerRuntime>> = config
            .servers
            .iter()
            .map(|s| {
                let kept = previous.and_then(|p| p.servers.iter().find(|o| o.config.name == s.name && o.config.address == s.address));
                // The runtime holds the check's kind and thresholds: kept whole only when they
                // are unchanged too.
                let same_check = previous.is_some_and(|p| crate::server::same_server_check(&p.config.health, &config.health));
                match kept {
                    Some(old) if old.config == *s && same_check => Arc::clone(old),
                    Some(old) => {
                        // Same server, new weight, flags or check: keep its health and
                        // resolved address, take the new settings.
                        let server = ServerRuntime::new(s, &config.health);
                        server.inherit(old, &config.health);
                        Arc::new(server)
                    }
                    None => Arc::new(ServerRuntime::new(s, &config.health)),
                }
            })
            .collect();
        let selection =
            servers.iter().map(|s| Candidate::new(s.config.weight, s.config.backup, s.config.disabled, s.is_healthy())).collect();
        Ok(Self { config: config.clone(), servers, selection: Mutex::new(selection), tls, stop_checks: watch::Sender::new(false) })
    }

    /// Stops this backend's health checks (a reload replaced it).
    pub(crate) fn stop_checks(&self) {
        self.stop_checks.send_replace(true);
    }

    /// Whether every enabled server's health is decided (UP, or DOWN after `fall` failures):
    /// until then the health of the backend is unknown, not bad.
    pub fn checked(&self) -> bool {
        self.servers.iter().filter(|s| !s.config.disabled && !s.in_maint()).all(|s| s.is_decided())
    }

    /// Checks every server now (no sooner than its fast interval after its last check): what
    /// the servers' health says may be stale (this host's links were down).
    pub fn check_all_now(&self) {
        for server in &self.servers {
            server.check_now.notify_one();
        }
    }

    /// Whether every enabled server's health rests on checks that started at `since` or later
    /// and is settled ([`ServerRuntime::settled_since`]).
    pub fn settled_since(&self, since: std::time::Instant) -> bool {
        self.servers.iter().filter(|s| !s.config.disabled && !s.in_maint()).all(|s| s.settled_since(since))
    }

    /// Healthy servers that take new connections (not disabled, drained or in MAINT).
    pub fn healthy_servers(&self) -> usize {
        self.servers.iter().filter(|s| s.is_healthy() && !s.config.disabled && s.takes_new_connections()).count()
    }

    fn choose(&self, exclude: &[usize]) -> Option<usize> {
        let mut candidates = lock(&self.selection);
        for (candidate, server) in candidates.iter_mut().zip(&self.servers) {
            candidate.healthy = server.is_healthy() && server.address().is_some();
            candidate.disabled = server.config.disabled || !server.takes_new_connections();
            candidate.weight = server.weight().max(1);
            candidate.active = server.stats.current.load(Ordering::Relaxed).min(u64::from(u32::MAX)) as u32;
        }
        pick(self.config.balance, &mut candidates, exclude)
    }

    /// A connected server. A refused (or otherwise failed) connect is retried on the same server
    /// up to `retries` times, since it may pass (an API server restarting); a connect that timed
    /// out says the path is gone, so the client goes to the next server at once (with
    /// `redispatch`). Either makes the server's check run soon. A local error goes to the next
    /// server (local ports run out per destination), except running out of descriptors, which
    /// no other server would escape: that ends the attempt.
    async fn connect(&self) -> Option<(Arc<ServerRuntime>, SocketAddr, TcpStream)> {
        let mut tried = Vec::new();
        while let Some(index) = self.choose(&tried) {
            let server = &self.servers[index];
            let Some(address) = server.address() else {
                tried.push(index);
                continue;
            };
            for attempt in 0..=self.config.retries {
                if attempt > 0 {
                    server.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
                match tokio::time::timeout(self.config.connect_timeout, connect_to(address)).await {
                    Ok(Ok(stream)) => return Some((Arc::clone(server), address, stream)),
                    Ok(Err(e)) => {
                        let failure = Failure::of_connect(&e);
                        server.connect_failed(&self.config.name, &failure);
                        if crate::probe::out_of_descriptors(&e) {
                            return None;
                        }
                        if failure.local {
                            // Local ports run out per destination: another server may do.
                            break;
                        }
                    }
                    Err(_) => {
                        let failure = Failure::from(format!("connect: timeout after {}", short(self.config.connect_timeout)));
                        server.connect_failed(&self.config.name, &failure);
                        break;
                    }
                }
            }
            if !self.config.redispatch {
                return None;
            }
            server.stats.redispatches.fetch_add(1, Ordering::Relaxed);
            tried.push(index);
        }
        None
    }

    /// Probes one server for as long as the backend lives: at its health's interval, sooner
    /// when a client's connect failed. A server that is never probed (`kind = "none"`) has no
    /// loop; a server whose name has not resolved is reported DOWN with the DNS reason.
    pub(crate) async fn check_loop(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let server = Arc::clone(&self.servers[index]);
        if server.config.disabled || self.config.health.kind == CheckKind::None {
            return;
        }
        let mut replaced = self.stop_checks.subscribe();
        let mut address_changes = server.address_watch();
        let mut admin_changes = server.admin.watch();
        loop {
            // MAINT: no checks until an operator says otherwise.
            while server.in_maint() {
                tokio::select! {
                    _ = admin_changes.changed() => {}
                    _ = shutdown.changed() => return,
                    _ = replaced.changed() => return,
                }
            }
            let started = tokio::time::Instant::now();
            let Some(address) = server.address() else {
                // Not resolved yet: a failed lookup counts as a failed check; else wait for one.
                if let Some(error) = server.dns_error() {
                    server.record(&self.config.name, Err(Failure::from(error)));
                }
                tokio::select! {
                    _ = address_changes.changed() => continue,
                    _ = shutdown.changed() => return,
                    _ = replaced.changed() => return,
                }
            };
            let name = server.config.address.host_name();
            let result = probe(&self.config.health, self.tls.as_ref(), address, name, self.config.send_proxy).await;
            if let Ok(latency) = &result {
                server.stats.record_check_latency(*latency);
            }
            server.check_completed(started.into_std());
            server.record(&self.config.name, result.map(drop));
            let wait = lock(&server.health).next_interval();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // An operator's order: the next check comes sooner, never closer than the fast
                // interval to the last (a burst of orders makes no burst of checks).
                _ = admin_changes.changed() => {
                    let earliest = started + self.config.health.fast_interval;
                    tokio::select! {
                        () = tokio::time::sleep_until(earliest) => {}
                        _ = shutdown.changed() => return,
                        _ = replaced.changed() => return,
                    }
                }
                () = server.check_now.notified() => {
                    // A failed connect asks for a check now; checks still start no closer
                    // together than the fast interval, so failing clients cannot make a storm.
                    let earliest = started + self.config.health.fast_interval;
                    tokio::select! {
                        () = tokio::time::sleep_until(earliest) => {}
                        _ = shutdown.changed() => return,
                        _ = replaced.changed() => return,
                    }
                }
                _ = shutdown.changed() => return,
                _ = replaced.changed() => return,
            }
        }
    }

    /// Resolves a server given by name at start and every `resolve_interval` while the backend
    /// lives; nothing for a server given by address.
    pub(crate) async fn resolve_loop(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let server = Arc::clone(&self.servers[index]);
        let Some(host) = server.config.address.host_name().map(str::to_string) else {
            return;
        };
        let port = server.config.address.port();
        let mut replaced = self.stop_checks.subscribe();
        loop {
            let result = crate::resolve::resolve(&host, port, self.config.resolve_prefer).await;
            server.resolved(&self.config.name, result);
            tokio::select! {
                () = tokio::time::sleep(self.config.resolve_interval) => {}
                _ = shutdown.changed() => return,
                _ = replaced.changed() => return,
            }
        }
    }
}

/// A connection to a server, with the connection options set on the socket before the connect.
async fn connect_to(address: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if let Err(e) = set_connection_options(SockRef::from(&socket)) {
        tracing::debug!(error = %e, "connection options not set on a server socket");
    }
    socket.connect(address).await
}

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
    settings: RwLock<Frontend>,
    backend: RwLock<Arc<BackendRuntime>>,
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
            settings: RwLock::new(config.clone()),
            backend: RwLock::new(backend),
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
        Arc::clone(&self.backend.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether a client from `peer` may connect: its address is in the `allow` list, or the
    /// list is empty. An IPv4 address mapped into IPv6 counts as the IPv4 one.
    pub(crate) fn allows(&self, peer: std::net::IpAddr) -> bool {
        let peer = peer.to_canonical();
        let settings = self.settings.read().unwrap_or_else(PoisonError::into_inner);
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
        self.settings.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies new settings and backend; the connection cap grows or shrinks by the difference.
    pub(crate) fn update(&self, config: &Frontend, backend: Arc<BackendRuntime>) {
        let old = std::mem::replace(&mut *self.settings.write().unwrap_or_else(PoisonError::into_inner), config.clone());
        *self.backend.write().unwrap_or_else(PoisonError::into_inner) = backend;
        let (before, after) = (old.max_connections as usize, config.max_connections as usize);
        self.waiting.resize(before, after);
        let owed = self.slots.resize(before, after);
        if owed > 0 {
            tracing::info!(frontend = %self.name, owed, "connection cap lowered below current use: slots go as their connections end");
        }
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
        let wait = self.settings.read().unwrap_or_else(PoisonError::into_inner).first_byte_timeout;
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
        let queue_timeout = self.settings.read().unwrap_or_else(PoisonError::into_inner).queue_timeout;
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

/// The options of both sockets of a proxied connection: TCP keepalive (a peer that vanished
/// without a FIN is found in minutes, not never) and TCP_NODELAY (a small message, a request or
/// a PROXY header, leaves at once instead of waiting for the previous one's ACK). Set once on a
/// listener, they are inherited by every socket it accepts.
pub(crate) fn set_connection_options(socket: SockRef<'_>) -> std::io::Result<()> {
    let params = TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
    socket.set_tcp_keepalive(&params)?;
    socket.set_tcp_nodelay(true)
}

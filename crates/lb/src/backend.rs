//! One backend at run time: its servers and their health-check (and resolver) tasks, server
//! choice, and the connect with retries and redispatch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use halo_config::{Backend, CheckKind};
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::LbError;
use crate::lock::lock;
use crate::probe::{Failure, probe, short};
use crate::select::{Candidate, Schedule};
use crate::server::{SelectionKey, ServerRuntime};
use crate::sockopt::set_connection_options;

/// One backend at run time.
pub struct BackendRuntime {
    /// Its configuration.
    pub config: Backend,
    /// Its servers, in configuration order.
    pub servers: Vec<Arc<ServerRuntime>>,
    /// Server choice: the schedule of the servers' current states, swapped whole when one
    /// changes, and the round-robin turn. Read by every connection without a lock.
    selection: ArcSwap<Selection>,
    /// Set while one thread rebuilds the schedule: the others choose from the one they have.
    rebuilding: AtomicBool,
    turn: AtomicUsize,
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
        let selection = ArcSwap::from_pointee(Selection::of(&servers));
        Ok(Self {
            config: config.clone(),
            servers,
            selection,
            rebuilding: AtomicBool::new(false),
            turn: AtomicUsize::new(0),
            tls,
            stop_checks: watch::Sender::new(false),
        })
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

    /// The next server for a client, skipping those already tried, with the address to
    /// connect to. No lock: the schedule is rebuilt (and swapped in) only when a server's state
    /// differs from the one it was built from.
    fn choose(&self, exclude: &[usize]) -> Option<(usize, SocketAddr)> {
        let mut selection = self.selection.load();
        // One thread rebuilds a stale schedule; the others go on with it meanwhile (a server it
        // names that cannot take the connection fails the connect, and the next is tried).
        if !selection.is_current(&self.servers) && !self.rebuilding.swap(true, Ordering::Acquire) {
            self.selection.store(Arc::new(Selection::of(&self.servers)));
            self.rebuilding.store(false, Ordering::Release);
            selection = self.selection.load();
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let active = |i: usize| self.servers[i].stats.current.load(Ordering::Relaxed).min(u64::from(u32::MAX)) as u32;
        let index = selection.schedule.pick(self.config.balance, turn, active, exclude)?;
        // A usable server has an address: the schedule was built from it.
        selection.addresses[index].map(|address| (index, address))
    }

    /// A connected server. A refused (or otherwise failed) connect is retried on the same server
    /// up to `retries` times, since it may pass (an API server restarting); a connect that timed
    /// out says the path is gone, so the client goes to the next server at once (with
    /// `redispatch`). Either makes the server's check run soon. A local error goes to the next
    /// server (local ports run out per destination), except running out of descriptors, which
    /// no other server would escape: that ends the attempt.
    pub(crate) async fn connect(&self) -> Option<(Arc<ServerRuntime>, SocketAddr, TcpStream)> {
        let mut tried = Vec::new();
        while let Some((index, address)) = self.choose(&tried) {
            let server = &self.servers[index];
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

/// The servers' states a schedule was built from, the schedule, and the addresses then.
struct Selection {
    keys: Vec<SelectionKey>,
    addresses: Vec<Option<SocketAddr>>,
    schedule: Schedule,
}

impl Selection {
    /// The selection of the servers as they are now.
    fn of(servers: &[Arc<ServerRuntime>]) -> Self {
        // Built from the keys alone (and the addresses read with them): a change after the
        // reading gives a key that differs, and the next choice rebuilds.
        let (keys, addresses): (Vec<SelectionKey>, Vec<Option<SocketAddr>>) = servers.iter().map(|s| s.selection_state()).unzip();
        let candidates: Vec<Candidate> = servers
            .iter()
            .zip(keys.iter().zip(&addresses))
            .map(|(s, (key, address))| {
                let usable = key.takes_connections() && address.is_some() && !s.config.disabled;
                Candidate::new(key.weight(), s.config.backup, usable)
            })
            .collect();
        Self { keys, addresses, schedule: Schedule::build(&candidates) }
    }

    /// Whether every server is still in the state this was built from.
    fn is_current(&self, servers: &[Arc<ServerRuntime>]) -> bool {
        self.keys.iter().zip(servers).all(|(key, server)| *key == server.selection_key())
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

//! The balancer at run time: listeners with a connection cap and a bounded wait, server choice,
//! connect with retries and redispatch, one health-check task per server, counters, and a
//! drain on shutdown. Shared state is atomics and short mutexes; the hot path never waits on a
//! health check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use halo_config::{Backend, CheckKind, Config, Frontend, Server};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsConnector;

use crate::LbError;
use crate::health::Health;
use crate::probe::{connect_reason, probe, short};
use crate::proxy::{Ended, relay};
use crate::select::{Candidate, pick};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the data path down with it: the state stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub current: AtomicU64,
    /// Connections served.
    pub total: AtomicU64,
    /// Bytes client to server.
    pub bytes_up: AtomicU64,
    /// Bytes server to client.
    pub bytes_down: AtomicU64,
    /// Failed or timed-out connects.
    pub connect_errors: AtomicU64,
    /// Connect attempts repeated on this server.
    pub retries: AtomicU64,
    /// Clients sent elsewhere after this server failed them.
    pub redispatches: AtomicU64,
    /// Health flips.
    pub flips: AtomicU64,
    /// Latency of the last passing check, microseconds.
    pub check_latency_us: AtomicU64,
}

/// One server at run time.
#[derive(Debug)]
pub struct ServerRuntime {
    /// Its configuration.
    pub config: Server,
    /// Read by the data path on every choice; written on health flips only.
    healthy: AtomicBool,
    /// Rise/fall state, fed by probes and by failed connects.
    health: Mutex<Health>,
    /// Why the last check failed (or "ok").
    reason: Mutex<String>,
    /// Counters.
    pub stats: ServerStats,
}

impl ServerRuntime {
    /// Whether it takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The reason of the last result.
    pub fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// Feeds a result; logs one line when the server flips.
    fn record(&self, backend: &str, result: Result<(), String>) {
        let ok = result.is_ok();
        let flipped = lock(&self.health).record(ok);
        *lock(&self.reason) = result.clone().err().unwrap_or_else(|| "ok".to_string());
        if let Some(up) = flipped {
            self.healthy.store(up, Ordering::Relaxed);
            self.stats.flips.fetch_add(1, Ordering::Relaxed);
            let reason = result.err().unwrap_or_else(|| "check passed".to_string());
            if up {
                tracing::info!(backend, server = %self.config.name, address = %self.config.address, %reason, "server UP");
            } else {
                tracing::warn!(backend, server = %self.config.name, address = %self.config.address, %reason, "server DOWN");
            }
        }
    }
}

/// One backend at run time.
pub struct BackendRuntime {
    /// Its configuration.
    pub config: Backend,
    /// Its servers, in configuration order.
    pub servers: Vec<Arc<ServerRuntime>>,
    selection: Mutex<Vec<Candidate>>,
    tls: Option<TlsConnector>,
}

impl BackendRuntime {
    fn new(config: &Backend) -> Result<Self, LbError> {
        let tls = match config.health.kind {
            CheckKind::Tcp => None,
            _ => Some(TlsConnector::from(
                crate::tls::client_config(&config.health).map_err(|e| LbError::Tls { backend: config.name.clone(), source: e })?,
            )),
        };
        let h = &config.health;
        let servers: Vec<Arc<ServerRuntime>> = config
            .servers
            .iter()
            .map(|s| {
                Arc::new(ServerRuntime {
                    config: s.clone(),
                    healthy: AtomicBool::new(false),
                    health: Mutex::new(Health::new(h.fall, h.rise, h.interval, h.fast_interval)),
                    reason: Mutex::new("not checked yet".to_string()),
                    stats: ServerStats::default(),
                })
            })
            .collect();
        let selection = config.servers.iter().map(|s| Candidate::new(s.weight, s.backup, s.disabled, false)).collect();
        Ok(Self { config: config.clone(), servers, selection: Mutex::new(selection), tls })
    }

    /// Healthy servers that take traffic.
    pub fn healthy_servers(&self) -> usize {
        self.servers.iter().filter(|s| s.is_healthy() && !s.config.disabled).count()
    }

    fn choose(&self, exclude: &[usize]) -> Option<usize> {
        let mut candidates = lock(&self.selection);
        for (candidate, server) in candidates.iter_mut().zip(&self.servers) {
            candidate.healthy = server.is_healthy();
            candidate.active = server.stats.current.load(Ordering::Relaxed).min(u64::from(u32::MAX)) as u32;
        }
        pick(self.config.balance, &mut candidates, exclude)
    }

    /// A connected server: retries on the same server, then (with redispatch) the next one.
    async fn connect(&self) -> Option<(Arc<ServerRuntime>, TcpStream)> {
        let mut tried = Vec::new();
        while let Some(index) = self.choose(&tried) {
            let server = &self.servers[index];
            for attempt in 0..=self.config.retries {
                if attempt > 0 {
                    server.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
                match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(server.config.address)).await {
                    Ok(Ok(stream)) => return Some((Arc::clone(server), stream)),
                    Ok(Err(e)) => {
                        server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        server.record(&self.config.name, Err(connect_reason(&e)));
                    }
                    Err(_) => {
                        server.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        server.record(&self.config.name, Err(format!("connect: timeout after {}", short(self.config.connect_timeout))));
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

    async fn check_loop(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let server = Arc::clone(&self.servers[index]);
        if server.config.disabled {
            return;
        }
        loop {
            let result = probe(&self.config.health, self.tls.as_ref(), server.config.address).await;
            if let Ok(latency) = &result {
                server.stats.check_latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
            }
            server.record(&self.config.name, result.map(drop));
            let wait = lock(&server.health).next_interval();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
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
}

/// One frontend at run time.
pub struct FrontendRuntime {
    /// Its configuration.
    pub config: Frontend,
    /// Its backend.
    pub backend: Arc<BackendRuntime>,
    slots: Arc<Semaphore>,
    listening: AtomicBool,
    /// Counters.
    pub stats: FrontendStats,
}

impl FrontendRuntime {
    /// True while every bind accepts connections.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Relaxed)
    }

    async fn serve(self: Arc<Self>, client: TcpStream) {
        let slot = match tokio::time::timeout(self.config.queue_timeout, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                self.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some((server, upstream)) = self.backend.connect().await else {
            // Closed at once: the client sees a reset, not a hang.
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            return;
        };
        keepalive(&client);
        keepalive(&upstream);
        server.stats.current.fetch_add(1, Ordering::Relaxed);
        server.stats.total.fetch_add(1, Ordering::Relaxed);
        let ended = relay(
            client,
            upstream,
            self.backend.config.idle_timeout,
            &server.stats.bytes_up,
            &server.stats.bytes_down,
            crate::proxy::Mode::Splice,
        )
        .await;
        server.stats.current.fetch_sub(1, Ordering::Relaxed);
        if ended == Ended::Idle {
            tracing::debug!(frontend = %self.config.name, server = %server.config.name, "closed after the idle timeout");
        }
        drop(slot);
    }
}

fn keepalive(stream: &TcpStream) {
    let params = TcpKeepalive::new().with_time(Duration::from_secs(60)).with_interval(Duration::from_secs(10));
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&params) {
        tracing::debug!(error = %e, "TCP keepalive not set");
    }
}

/// A listening socket: SO_REUSEADDR, IP_FREEBIND (a bind on a VIP works before the VIP is here,
/// so a backup is ready the instant it becomes master), IPv6-only for IPv6 binds.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Accept errors that mean "out of a resource": back off instead of spinning.
fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM))
}

mod libc_codes {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

/// The running balancer.
pub struct Balancer {
    /// Frontends, in configuration order.
    pub frontends: Vec<Arc<FrontendRuntime>>,
    /// Backends, in configuration order.
    pub backends: Vec<Arc<BackendRuntime>>,
    tasks: tokio::task::JoinSet<()>,
    in_flight: Arc<AtomicU64>,
}

impl Balancer {
    /// Binds every listener (all or nothing) and starts the health checks and accept loops.
    pub fn start(config: &Config, shutdown: watch::Receiver<bool>) -> Result<Self, LbError> {
        let mut backends = Vec::new();
        for b in &config.backends {
            backends.push(Arc::new(BackendRuntime::new(b)?));
        }
        let mut listeners = Vec::new();
        let mut frontends = Vec::new();
        for f in &config.frontends {
            let backend =
                backends.iter().find(|b| b.config.name == f.backend).cloned().ok_or_else(|| LbError::UnknownBackend(f.backend.clone()))?;
            let frontend = Arc::new(FrontendRuntime {
                config: f.clone(),
                backend,
                slots: Arc::new(Semaphore::new(f.max_connections as usize)),
                listening: AtomicBool::new(true),
                stats: FrontendStats::default(),
            });
            for address in &f.binds {
                let listener = bind(*address).map_err(|source| LbError::Bind { address: *address, source })?;
                listeners.push((Arc::clone(&frontend), listener));
            }
            frontends.push(frontend);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for backend in &backends {
            for index in 0..backend.servers.len() {
                tasks.spawn(Arc::clone(backend).check_loop(index, shutdown.clone()));
            }
        }
        let in_flight = Arc::new(AtomicU64::new(0));
        for (frontend, listener) in listeners {
            tasks.spawn(accept_loop(frontend, listener, shutdown.clone(), Arc::clone(&in_flight)));
        }
        Ok(Self { frontends, backends, tasks, in_flight })
    }

    /// The frontend of that name.
    pub fn frontend(&self, name: &str) -> Option<&Arc<FrontendRuntime>> {
        self.frontends.iter().find(|f| f.config.name == name)
    }

    /// After shutdown: waits for the accept loops, then up to `drain` for open connections.
    pub async fn drain(mut self, drain: Duration) -> u64 {
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + drain;
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight.load(Ordering::Relaxed)
    }
}

async fn accept_loop(
    frontend: Arc<FrontendRuntime>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    in_flight: Arc<AtomicU64>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((client, _peer)) => {
                frontend.stats.total.fetch_add(1, Ordering::Relaxed);
                frontend.stats.current.fetch_add(1, Ordering::Relaxed);
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (frontend, in_flight) = (Arc::clone(&frontend), Arc::clone(&in_flight));
                tokio::spawn(async move {
                    Arc::clone(&frontend).serve(client).await;
                    frontend.stats.current.fetch_sub(1, Ordering::Relaxed);
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) if exhausted(&e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(frontend = %frontend.config.name, error = %e, "cannot accept: out of resources; backing off");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => tracing::debug!(frontend = %frontend.config.name, error = %e, "accept failed"),
        }
    }
    frontend.listening.store(false, Ordering::Relaxed);
}

//! The balancer at run time: listeners with a connection cap and a bounded wait, server choice,
//! connect with retries and redispatch, one health-check task per server, counters, and a
//! drain on shutdown. Shared state is atomics and short mutexes; the hot path never waits on a
//! health check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use halo_config::{Backend, CheckKind, Frontend, Server};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsConnector;

use crate::LbError;
use crate::health::Health;
use crate::probe::{Failure, probe, short};
use crate::proxy::{Ended, Mode, relay};
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
    /// Connects and checks that failed for halo's own reasons (descriptors, ports): not counted
    /// against the server.
    pub local_errors: AtomicU64,
    /// Connect attempts repeated on this server.
    pub retries: AtomicU64,
    /// Clients sent elsewhere after this server failed them.
    pub redispatches: AtomicU64,
    /// Health flips.
    pub flips: AtomicU64,
    /// Latency of the last passing check, microseconds.
    pub check_latency_us: AtomicU64,
    /// Passing checks by latency: counts per bucket of [`CHECK_LATENCY_BUCKETS`] (cumulative
    /// counts are made when exposed), the last one for slower checks.
    pub check_latency_buckets: [AtomicU64; CHECK_LATENCY_BUCKETS.len() + 1],
    /// Sum of passing check latencies, microseconds.
    pub check_latency_sum_us: AtomicU64,
}

/// Upper bounds of the check-latency histogram, seconds.
pub const CHECK_LATENCY_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

impl ServerStats {
    fn record_check_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = CHECK_LATENCY_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(CHECK_LATENCY_BUCKETS.len());
        self.check_latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.check_latency_sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.check_latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
    }
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
    /// Set when a reload removes the server: its connections get `drain_timeout` to finish.
    retired: watch::Sender<bool>,
    /// Wakes the server's check loop for a check now (a failed connect on the data path).
    check_now: tokio::sync::Notify,
    /// When a local error was last logged (at most one line a minute per server).
    local_logged: Mutex<Option<Instant>>,
}

impl ServerRuntime {
    fn new(config: &Server, check: &halo_config::HealthCheck) -> Self {
        Self {
            config: config.clone(),
            healthy: AtomicBool::new(false),
            health: Mutex::new(Health::new(check.fall, check.rise, check.interval, check.fast_interval)),
            reason: Mutex::new("not checked yet".to_string()),
            stats: ServerStats::default(),
            retired: watch::Sender::new(false),
            check_now: tokio::sync::Notify::new(),
            local_logged: Mutex::new(None),
        }
    }

    /// Removes the server from service: open connections drain.
    pub(crate) fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Whether it takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The reason of the last result.
    pub fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// Feeds a check's result; logs one line when the server flips, and the first decided state
    /// (a server DOWN from the start never flips). A local failure is counted and logged, never
    /// fed to the health.
    fn record(&self, backend: &str, result: Result<(), Failure>) {
        if let Err(failure) = &result
            && failure.local
        {
            self.local_failure(backend, &failure.reason);
            return;
        }
        let ok = result.is_ok();
        let (was_decided, flipped, decided) = {
            let mut health = lock(&self.health);
            let was_decided = health.is_decided();
            let flipped = health.record(ok);
            (was_decided, flipped, health.is_decided())
        };
        let reason = result.err().map_or_else(|| "check passed".to_string(), |f| f.reason);
        *lock(&self.reason) = if ok { "ok".to_string() } else { reason.clone() };
        if let Some(up) = flipped {
            self.healthy.store(up, Ordering::Relaxed);
            self.stats.flips.fetch_add(1, Ordering::Relaxed);
            if up {
                tracing::info!(backend, server = %self.config.name, address = %self.config.address, %reason, "server UP");
            } else {
                tracing::warn!(backend, server = %self.config.name, address = %self.config.address, %reason, "server DOWN");
            }
        } else if decided && !was_decided {
            tracing::warn!(backend, server = %self.config.name, address = %self.config.address, %reason, "server DOWN (since the start)");
        }
    }

    /// Counts (and logs, rate-limited) a failure that is halo's own.
    fn local_failure(&self, backend: &str, reason: &str) {
        self.stats.local_errors.fetch_add(1, Ordering::Relaxed);
        let mut logged = lock(&self.local_logged);
        if logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *logged = Some(Instant::now());
            tracing::warn!(backend, server = %self.config.name, %reason, "local error (not the server's): not counted against it");
        }
    }

    /// A client's connect failed: the server's check runs now (haproxy's `on-error fastinter`),
    /// and the check decides its health, so that one client's retries alone never mark it down.
    fn connect_failed(&self, backend: &str, failure: &Failure) {
        if failure.local {
            self.local_failure(backend, &failure.reason);
            return;
        }
        self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.check_now.notify_one();
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
    /// Set when a reload replaces this backend: its check tasks end.
    stop_checks: watch::Sender<bool>,
}

impl BackendRuntime {
    /// A backend for `config`, keeping the run-time state (health, counters) of the servers of
    /// `previous` that have the same name and address.
    pub(crate) fn new(config: &Backend, previous: Option<&BackendRuntime>) -> Result<Self, LbError> {
        let tls = match config.health.kind {
            CheckKind::Tcp => None,
            _ => Some(TlsConnector::from(
                crate::tls::client_config(&config.health).map_err(|e| LbError::Tls { backend: config.name.clone(), source: e })?,
            )),
        };
        let servers: Vec<Arc<ServerRuntime>> = config
            .servers
            .iter()
            .map(|s| {
                let kept = previous.and_then(|p| p.servers.iter().find(|o| o.config.name == s.name && o.config.address == s.address));
                match kept {
                    Some(old) if old.config == *s => Arc::clone(old),
                    Some(old) => {
                        // Same server, new weight or flags: keep its health, take the new settings.
                        let server = ServerRuntime::new(s, &config.health);
                        *lock(&server.health) = lock(&old.health).clone();
                        server.healthy.store(old.is_healthy(), Ordering::Relaxed);
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
        self.servers.iter().filter(|s| !s.config.disabled).all(|s| lock(&s.health).is_decided())
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

    /// A connected server. A refused (or otherwise failed) connect is retried on the same server
    /// up to `retries` times, since it may pass (an API server restarting); a connect that timed
    /// out says the path is gone, so the client goes to the next server at once (with
    /// `redispatch`). Either makes the server's check run soon. A local error goes to the next
    /// server (local ports run out per destination), except running out of descriptors, which
    /// no other server would escape: that ends the attempt.
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

    pub(crate) async fn check_loop(self: Arc<Self>, index: usize, mut shutdown: watch::Receiver<bool>) {
        let server = Arc::clone(&self.servers[index]);
        if server.config.disabled {
            return;
        }
        let mut replaced = self.stop_checks.subscribe();
        loop {
            let started = tokio::time::Instant::now();
            let result = probe(&self.config.health, self.tls.as_ref(), server.config.address).await;
            if let Ok(latency) = &result {
                server.stats.record_check_latency(*latency);
            }
            server.record(&self.config.name, result.map(drop));
            let wait = lock(&server.health).next_interval();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
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

/// One frontend at run time. Its settings and backend are swapped by a reload while
/// connections are being served.
pub struct FrontendRuntime {
    /// Name (stable across reloads).
    pub name: String,
    settings: RwLock<Frontend>,
    backend: RwLock<Arc<BackendRuntime>>,
    slots: Arc<Semaphore>,
    /// Listeners accepting now.
    listening: AtomicU64,
    /// Counters.
    pub stats: FrontendStats,
}

impl FrontendRuntime {
    pub(crate) fn new(config: &Frontend, backend: Arc<BackendRuntime>) -> Self {
        Self {
            name: config.name.clone(),
            settings: RwLock::new(config.clone()),
            backend: RwLock::new(backend),
            slots: Arc::new(Semaphore::new(config.max_connections as usize)),
            listening: AtomicU64::new(0),
            stats: FrontendStats::default(),
        }
    }

    /// The backend connections go to now.
    pub fn backend(&self) -> Arc<BackendRuntime> {
        Arc::clone(&self.backend.read().unwrap_or_else(PoisonError::into_inner))
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
        if after > before {
            self.slots.add_permits(after - before);
        } else if before > after {
            // Only free slots can be withdrawn now; busy ones are not given back as they end.
            let withdrawn = self.slots.forget_permits(before - after);
            if withdrawn < before - after {
                tracing::info!(frontend = %self.name, busy = before - after - withdrawn, "connection cap lowered below current use");
            }
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

    pub(crate) async fn serve(self: Arc<Self>, client: TcpStream) {
        let queue_timeout = self.settings().queue_timeout;
        let slot = match tokio::time::timeout(queue_timeout, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                self.stats.queue_drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let backend = self.backend();
        let Some((server, upstream)) = backend.connect().await else {
            // Closed at once: the client sees a reset, not a hang.
            self.stats.no_server.fetch_add(1, Ordering::Relaxed);
            return;
        };
        keepalive(&client);
        keepalive(&upstream);
        server.stats.current.fetch_add(1, Ordering::Relaxed);
        server.stats.total.fetch_add(1, Ordering::Relaxed);
        let mut retired = server.retired.subscribe();
        let drain = backend.config.drain_timeout;
        let relaying = relay(client, upstream, backend.config.idle_timeout, &server.stats.bytes_up, &server.stats.bytes_down, Mode::Splice);
        let ended = tokio::select! {
            ended = relaying => Some(ended),
            () = async {
                if retired.wait_for(|r| *r).await.is_ok() {
                    tokio::time::sleep(drain).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => None,
        };
        server.stats.current.fetch_sub(1, Ordering::Relaxed);
        match ended {
            Some(Ended::Idle) => tracing::debug!(frontend = %self.name, server = %server.config.name, "closed after the idle timeout"),
            None => tracing::debug!(frontend = %self.name, server = %server.config.name, "closed: removed server's drain timeout"),
            _ => {}
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

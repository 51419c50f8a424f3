//! The status endpoint: `/healthz` (halo itself), `/status` (JSON) and `/metrics` (Prometheus
//! text) over HTTP/1.1, loopback by default, with an optional bearer token. It reads the
//! balancer's counters and the VRRP instances' published state; it never blocks either.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use halo_lb::runtime::FrontendRuntime;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What one VRRP instance publishes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceStatus {
    /// INIT, BACKUP, MASTER or FAULT.
    pub state: String,
    /// Effective priority.
    pub priority: u8,
    /// Interface.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Why the last transition happened, and when (seconds since the Unix epoch).
    pub last_change: String,
    /// Time of the last transition.
    pub last_change_unix: u64,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Adverts accepted for this router (of its VRID and version, authenticated).
    pub adverts_received: u64,
    /// Accepted adverts whose address list differs from ours (acted upon all the same).
    pub address_mismatch: u64,
    /// Packets dropped or ignored, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Notify hooks that failed.
    pub hook_failures: u64,
    /// The last notify hook: what ran, for which state, how it ended, when (empty: none yet).
    pub last_hook: String,
    /// The sync group the instance belongs to, if any.
    pub sync_group: Option<String>,
}

/// What one sync group publishes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    /// INIT, BACKUP, MASTER or FAULT: the state its members share.
    pub state: String,
    /// Its member instances.
    pub instances: Vec<String>,
    /// The member whose event last moved the group ("start" before any).
    pub last_change: String,
    /// Time of the last change (seconds since the Unix epoch).
    pub last_change_unix: u64,
    /// The group's notify hooks that failed.
    pub hook_failures: u64,
    /// The group's last notify hook (empty: none yet).
    pub last_hook: String,
}

/// Everything the endpoint reads, shared with the daemon.
#[derive(Default)]
pub struct Shared {
    /// The balancer's frontends (each leads to its backend), replaced on reload.
    pub frontends: RwLock<Vec<Arc<FrontendRuntime>>>,
    /// VRRP instances by name.
    pub vrrp: Mutex<BTreeMap<String, InstanceStatus>>,
    /// Sync groups by name.
    pub sync_groups: Mutex<BTreeMap<String, GroupStatus>>,
    /// BGP announcements by name.
    pub announce: Mutex<BTreeMap<String, super::announce::AnnounceStatus>>,
    /// Set when a part of the daemon failed: /healthz answers 503 with it until halo exits.
    failure: Mutex<Option<String>>,
    /// The outcome of the last reload, for `halo reload` to confirm.
    reload: Mutex<Option<ReloadJson>>,
    /// Which generation of the daemon answers (set at start).
    generation: Mutex<Option<super::generation::Generation>>,
    /// The outcome of the last upgrade this process tried, for `halo upgrade` to confirm.
    upgrade: Mutex<Option<UpgradeJson>>,
}

/// The outcome of the last upgrade (SIGUSR2, `halo upgrade`) a daemon tried: a daemon that
/// handed over answers no more, so what it says is a refusal (its successor answers instead).
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeJson {
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Whether the new process took over.
    pub handed_over: bool,
    /// What happened, or why it did not.
    pub message: String,
}

/// The outcome of the last reload (SIGHUP).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadJson {
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Whether the new file is in force.
    pub applied: bool,
    /// "applied", or why it was refused.
    pub message: String,
}

impl Shared {
    /// Records the outcome of a reload.
    pub fn set_reload(&self, applied: bool, message: String) {
        let at_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        *self.reload.lock().unwrap_or_else(PoisonError::into_inner) = Some(ReloadJson { at_unix_ms, applied, message });
    }

    /// Records which generation this process is.
    pub fn set_generation(&self, generation: super::generation::Generation) {
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner) = Some(generation);
    }

    /// Records (or, `None`, clears) the process this one took over from, while it drains.
    pub fn set_previous(&self, previous: Option<super::generation::Previous>) {
        if let Some(generation) = self.generation.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            generation.previous = previous;
        }
    }

    /// Records the outcome of an upgrade.
    pub fn set_upgrade(&self, handed_over: bool, message: String) {
        let at_unix_ms = super::generation::unix_ms();
        *self.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(UpgradeJson { at_unix_ms, handed_over, message });
    }

    /// Marks the daemon as failing (it is about to exit): /healthz says so.
    pub fn fail(&self, why: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// Publishes an instance's state.
    pub fn set_instance(&self, name: &str, status: InstanceStatus) {
        self.vrrp.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), status);
    }

    /// Forgets an instance (stopped or removed by a reload).
    pub fn remove_instance(&self, name: &str) {
        self.vrrp.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Publishes a sync group's state.
    pub fn set_group(&self, name: &str, status: GroupStatus) {
        self.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), status);
    }

    /// Forgets a sync group (stopped, or restarted by a reload).
    pub fn remove_group(&self, name: &str) {
        self.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Points at the balancer's current frontends and backends.
    pub fn set_balancer(&self, balancer: &halo_lb::Balancer) {
        *self.frontends.write().unwrap_or_else(PoisonError::into_inner) = balancer.frontends.clone();
    }
}

#[derive(Serialize)]
pub(super) struct ServerJson {
    pub(super) name: String,
    /// As configured: `ip:port` or `name:port`.
    pub(super) address: String,
    /// The address connections go to now (what a name resolved to); none before it resolves.
    pub(super) resolved: Option<String>,
    /// Why the name did not resolve the last time, while it does not.
    pub(super) dns_error: Option<String>,
    pub(super) healthy: bool,
    pub(super) reason: String,
    pub(super) connections: u64,
    pub(super) total: u64,
    pub(super) bytes_up: u64,
    pub(super) bytes_down: u64,
    pub(super) connect_errors: u64,
    pub(super) local_errors: u64,
    pub(super) retries: u64,
    pub(super) redispatches: u64,
    pub(super) flips: u64,
    pub(super) check_latency_seconds: f64,
    /// Cumulative counts per bucket upper bound (the last is +Inf), and the sum in seconds.
    pub(super) check_latency_histogram: Vec<(String, u64)>,
    pub(super) check_latency_sum_seconds: f64,
}

#[derive(Serialize)]
pub(super) struct FrontendJson {
    pub(super) name: String,
    pub(super) backend: String,
    pub(super) listening: bool,
    pub(super) connections: u64,
    pub(super) total: u64,
    pub(super) queue_drops: u64,
    pub(super) no_server: u64,
    pub(super) servers: Vec<ServerJson>,
}

#[derive(Serialize)]
pub(super) struct StatusJson {
    /// The daemon's process id (`halo reload` checks it is asking the daemon it signalled).
    pub(super) pid: u32,
    pub(super) vrrp: BTreeMap<String, InstanceStatus>,
    pub(super) sync_groups: BTreeMap<String, GroupStatus>,
    pub(super) announce: BTreeMap<String, super::announce::AnnounceStatus>,
    pub(super) frontends: Vec<FrontendJson>,
    pub(super) last_reload: Option<ReloadJson>,
    /// Which generation answers: version, binary, pid, start, and the previous one while it drains.
    pub(super) generation: Option<super::generation::Generation>,
    /// The last upgrade this process tried.
    pub(super) last_upgrade: Option<UpgradeJson>,
}

pub(super) fn snapshot(shared: &Shared) -> StatusJson {
    let frontends = shared.frontends.read().unwrap_or_else(PoisonError::into_inner).clone();
    let frontends = frontends
        .iter()
        .map(|f| {
            let backend = f.backend();
            let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
            FrontendJson {
                name: f.name.clone(),
                backend: backend.config.name.clone(),
                listening: f.is_listening(),
                connections: load(&f.stats.current),
                total: load(&f.stats.total),
                queue_drops: load(&f.stats.queue_drops),
                no_server: load(&f.stats.no_server),
                servers: backend
                    .servers
                    .iter()
                    .map(|s| ServerJson {
                        name: s.config.name.clone(),
                        address: s.config.address.to_string(),
                        resolved: s.address().map(|a| a.to_string()),
                        dns_error: s.dns_error(),
                        healthy: s.is_healthy(),
                        reason: s.reason(),
                        connections: load(&s.stats.current),
                        total: load(&s.stats.total),
                        bytes_up: load(&s.stats.bytes_up),
                        bytes_down: load(&s.stats.bytes_down),
                        connect_errors: load(&s.stats.connect_errors),
                        local_errors: load(&s.stats.local_errors),
                        retries: load(&s.stats.retries),
                        redispatches: load(&s.stats.redispatches),
                        flips: load(&s.stats.flips),
                        check_latency_seconds: load(&s.stats.check_latency_us) as f64 / 1e6,
                        check_latency_histogram: {
                            let bounds = halo_lb::runtime::CHECK_LATENCY_BUCKETS
                                .iter()
                                .map(|b| b.to_string())
                                .chain(std::iter::once("+Inf".to_string()));
                            let mut running = 0;
                            bounds
                                .zip(s.stats.check_latency_buckets.iter())
                                .map(|(bound, count)| {
                                    running += load(count);
                                    (bound, running)
                                })
                                .collect()
                        },
                        check_latency_sum_seconds: load(&s.stats.check_latency_sum_us) as f64 / 1e6,
                    })
                    .collect(),
            }
        })
        .collect();
    StatusJson {
        pid: std::process::id(),
        vrrp: shared.vrrp.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        sync_groups: shared.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        announce: shared.announce.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        frontends,
        last_reload: shared.reload.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        generation: shared.generation.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        last_upgrade: shared.upgrade.lock().unwrap_or_else(PoisonError::into_inner).clone(),
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The token of an `Authorization: Bearer TOKEN` header; the scheme is case-insensitive
/// (RFC 7235 §2.1), the token is not.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii()).filter(|t| !t.is_empty())
}

/// Compares a presented secret with the expected one in time that depends only on their
/// lengths, so the answer's timing tells nothing about how much of it was right.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(presented.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        difference |= byte ^ presented.get(i).copied().unwrap_or(!byte);
    }
    difference == 0
}

fn handle(shared: &Shared, token: Option<&str>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    // /healthz says nothing about the cluster: it stays open, so probes need no secret.
    if let Some(token) = token.filter(|_| request.uri().path() != "/healthz") {
        let presented = request.headers().get(hyper::header::AUTHORIZATION).and_then(|v| bearer_token(v.as_bytes()));
        if !presented.is_some_and(|p| same_secret(p, token.as_bytes())) {
            return respond(StatusCode::UNAUTHORIZED, "text/plain", "a bearer token is required\n".to_string());
        }
    }
    match request.uri().path() {
        "/healthz" => match shared.failure.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            None => respond(StatusCode::OK, "text/plain", "ok\n".to_string()),
            Some(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        "/status" => match serde_json::to_string_pretty(&snapshot(shared)) {
            Ok(json) => respond(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", super::metrics::metrics(shared)),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "/healthz, /status, /metrics\n".to_string()),
    }
}

/// A bound endpoint: the TCP address and, when configured, the unix socket.
pub enum Listener {
    /// `status.listen`.
    Tcp(TcpListener),
    /// `status.socket`.
    Unix(tokio::net::UnixListener),
}

/// At most this many connections to a listener of the endpoint at once: a scraper, `halo status`
/// and a probe or two need a handful. Past it a connection is closed at once, so that a flood
/// holds no descriptor the balancer needs. The unix socket (root only) has slots of its own.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection must send its request headers within this, or it is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection serves one request (no keep-alive) and lives no longer than this: a slot is
/// never held long, whatever the client does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// What a listener of the endpoint needs: the token, its connection slots, and the connections
/// that hold a slot without having sent a request yet, oldest first: when every slot is taken,
/// the oldest of those makes room for the newcomer, so that idle connections (a flood, or
/// clients that never ask) cannot keep a probe of /healthz out.
pub struct Guarded {
    token: Option<Arc<str>>,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Guarded {
    /// The token required (when there is one) and [`MAX_CONNECTIONS`] slots.
    pub fn new(token: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            token: token.map(Arc::from),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            waiting: Mutex::new(std::collections::VecDeque::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A slot for a new connection: a free one, or the one of the oldest connection that has
    /// not asked anything yet (it is closed); `None` when every slot is serving a request.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            return Some(slot);
        }
        let evicted = self.waiting.lock().unwrap_or_else(PoisonError::into_inner).pop_front();
        let (_, close) = evicted?;
        // The evicted connection's task drops its slot as soon as it runs.
        let _closed = close.send(());
        tokio::time::timeout(Duration::from_millis(200), Arc::clone(&self.slots).acquire_owned()).await.ok()?.ok()
    }

    /// Registers a connection as waiting for its request; its id, and what closes it.
    fn wait(&self) -> (u64, tokio::sync::oneshot::Receiver<()>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = tokio::sync::oneshot::channel();
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).push_back((id, close));
        (id, closed)
    }

    /// The connection `id` has sent its request: it can no longer be evicted.
    fn asked(&self, id: u64) {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner).retain(|(other, _)| *other != id);
    }
}

/// Serves until shutdown.
pub async fn serve(listener: Listener, shared: Arc<Shared>, guarded: Arc<Guarded>, mut shutdown: watch::Receiver<bool>) {
    let mut refused_logged: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
                }
            } => accepted,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                // Out of descriptors or memory: do not spin.
                tracing::debug!(error = %e, "status endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = guarded.slot().await else {
            if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(max = MAX_CONNECTIONS, "status endpoint: too many connections; closing new ones");
                refused_logged = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let (id, evicted) = guarded.wait();
        let (shared, guarded) = (Arc::clone(&shared), Arc::clone(&guarded));
        tokio::spawn(async move {
            let served = async {
                match stream {
                    Stream::Tcp(s) => serve_connection(s, shared, &guarded, id).await,
                    Stream::Unix(s) => serve_connection(s, shared, &guarded, id).await,
                }
            };
            // Evicted only by an explicit close; a dropped sender (the request came) is not one.
            let close = async {
                if evicted.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                outcome = tokio::time::timeout(CONNECTION_LIFETIME, served) => {
                    if outcome.is_err() {
                        tracing::debug!("status connection closed at the end of its lifetime");
                    }
                }
                () = close => tracing::debug!("status connection closed to make room"),
            }
            guarded.asked(id);
            drop(slot);
        });
    }
}

/// An accepted connection of either kind.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>, guarded: &Arc<Guarded>, id: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let token = guarded.token.clone();
    let marker = Arc::clone(guarded);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        marker.asked(id);
        let response = handle(&shared, token.as_deref(), &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "status connection ended with an error");
    }
}

/// Binds the unix socket, replacing a stale one left by a crashed daemon, readable by root only.
pub fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("cannot listen on {} for the status endpoint", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(listener)
}

/// Binds the endpoint's address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} for the status endpoint"))
}

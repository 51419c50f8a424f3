//! The status endpoint: `/healthz` (halo itself), `/status` (JSON) and `/metrics` (Prometheus
//! text) over HTTP/1.1, on a TCP address (loopback by default) and, when configured, a unix
//! socket, both behind the bearer token when one is set; and the operators' commands (`POST
//! /servers/...`, see `commands`). It reads the daemon's shared state ([`super::state`]) and
//! never blocks its writers; commands go to the run loop by a channel. Only the run loop (and an
//! upgrade's new process) starts it, and no part of the daemon reads from it.

mod auth;
pub mod commands;
mod metrics;
mod page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::snapshot::snapshot;
use super::state::Shared;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn handle(shared: &Shared, guarded: &Guarded, peer: &commands::Peer, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let token = guarded.token();
    let token = token.as_deref();
    // /healthz says nothing about the cluster: it stays open, so probes need no secret.
    if let Some(token) = token.filter(|_| request.uri().path() != "/healthz")
        && !auth::authorized(&request, token)
    {
        return respond(StatusCode::UNAUTHORIZED, "text/plain", "a bearer token is required\n".to_string());
    }
    let path = request.uri().path();
    let command = path.starts_with("/servers/") || path == "/node/maintenance";
    match (request.method(), command) {
        (&Method::POST, true) if path == "/node/maintenance" => {
            return commands::maintenance_command(request, peer, token.is_some(), &guarded.commands).await;
        }
        (&Method::POST, true) => return commands::server_command(request, peer, token.is_some(), &guarded.commands).await,
        (&Method::GET | &Method::HEAD, false) => {}
        _ => {
            let allowed = if command { "POST" } else { "GET, HEAD" };
            let mut refused = respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", format!("only {allowed}\n"));
            refused.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static(if command { "POST" } else { "GET, HEAD" }));
            return refused;
        }
    }
    read(shared, &request)
}

/// The GET and HEAD requests: halo's health, its state as JSON or Prometheus text.
fn read(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/healthz" => match shared.failure() {
            None => respond(StatusCode::OK, "text/plain", "ok\n".to_string()),
            Some(why) => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{why}\n")),
        },
        "/status" => match serde_json::to_string_pretty(&snapshot(shared)) {
            Ok(json) => respond(StatusCode::OK, "application/json", json + "\n"),
            Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
        },
        "/metrics" => respond(StatusCode::OK, "text/plain; version=0.0.4", metrics::metrics(shared)),
        // A browser (it asks for HTML) gets the status page; anything else the index.
        "/" if accepts_html(request) => {
            let mut page = respond(StatusCode::OK, "text/html; charset=utf-8", page::page(&snapshot(shared)));
            // Nothing on the page may load or run anything, whatever a name holds.
            page.headers_mut().insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
            );
            page.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            page.headers_mut().insert(hyper::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            page
        }
        "/" => respond(StatusCode::OK, "text/plain", "/ (HTML, for a browser), /healthz, /status, /metrics\n".to_string()),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "/healthz, /status, /metrics\n".to_string()),
    }
}

/// Whether the request's Accept names HTML (content negotiation: a browser's does).
fn accepts_html(request: &Request<Incoming>) -> bool {
    request.headers().get_all(hyper::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("text/html"))
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
    /// Replaced by a reload that re-reads the token file (a rotation needs no restart).
    token: std::sync::RwLock<Option<Arc<str>>>,
    commands: commands::Commands,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Guarded {
    /// The token required (when there is one), where commands go, and [`MAX_CONNECTIONS`] slots.
    pub fn new(token: Option<String>, commands: commands::Commands) -> Arc<Self> {
        Arc::new(Self {
            token: std::sync::RwLock::new(token.map(Arc::from)),
            commands,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
            waiting: Mutex::new(std::collections::VecDeque::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The token required now.
    fn token(&self) -> Option<Arc<str>> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Requires `token` from now on (`None`: none).
    pub fn set_token(&self, token: Option<String>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token.map(Arc::from);
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
                    Stream::Tcp(s) => serve_connection(s, commands::Peer::Tcp, shared, &guarded, id).await,
                    Stream::Unix(s) => {
                        let uid = s.peer_cred().ok().map(|c| c.uid());
                        serve_connection(s, commands::Peer::Unix(uid), shared, &guarded, id).await
                    }
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

async fn serve_connection<S>(stream: S, peer: commands::Peer, shared: Arc<Shared>, guarded: &Arc<Guarded>, id: u64)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let marker = Arc::clone(guarded);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        marker.asked(id);
        let (shared, guarded, peer) = (Arc::clone(&shared), Arc::clone(&marker), peer.clone());
        async move { Ok::<_, Infallible>(handle(&shared, &guarded, &peer, request).await) }
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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener = bind_private(path).with_context(|| format!("cannot listen on {} for the status endpoint", path.display()))?;
    crate::daemon::test_hooks::status_socket_bound();
    listener.set_nonblocking(true).context("the status endpoint's unix socket")?;
    tokio::net::UnixListener::from_std(listener).context("the status endpoint's unix socket")
}

/// Binds a unix socket at `path` with mode 0600 from its creation: on a thread of its own whose
/// umask, unshared from the process's, lets nobody but the owner in. (A chmod after the bind
/// leaves a moment in which anyone may connect; the process's umask is everyone's.)
fn bind_private(path: &std::path::Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
                nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
                std::os::unix::net::UnixListener::bind(path)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the thread binding the socket panicked")))
    })
}

/// Binds the endpoint's address.
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address} for the status endpoint"))
}

//! The running balancer: builds frontends, backends and listeners from a config, and applies a
//! new config in place (reload) without closing established connections: listeners whose
//! address is unchanged keep their sockets, servers that stay keep their health and counters,
//! removed servers drain, and nothing changes when the new config cannot be applied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo_config::Config;
use std::net::TcpListener;
use tokio::sync::watch;

use crate::LbError;
use crate::adopter::Adopter;
use crate::connlog::ConnectionLog;
use crate::established::{Established, Handover};
use crate::listener::{Listener, Start};
use crate::runtime::{BackendRuntime, FrontendRuntime, ServerRuntime};

/// What a reload changed, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Listeners kept with their sockets.
    pub listeners_kept: usize,
    /// Listeners opened.
    pub listeners_added: usize,
    /// Listeners closed.
    pub listeners_removed: usize,
    /// Listeners kept with their sockets but now serving another frontend.
    pub listeners_moved: usize,
    /// Servers that kept their health state.
    pub servers_kept: usize,
    /// Servers removed (their connections drain).
    pub servers_removed: usize,
}

/// The running balancer.
pub struct Balancer {
    /// Frontends, in configuration order.
    pub frontends: Vec<Arc<FrontendRuntime>>,
    /// Backends, in configuration order.
    pub backends: Vec<Arc<BackendRuntime>>,
    pub(crate) listeners: Vec<Listener>,
    tasks: tokio::task::JoinSet<()>,
    in_flight: Arc<AtomicU64>,
    shutdown: watch::Receiver<bool>,
    /// The connection log, switched by `[log] connections`.
    pub connection_log: Arc<ConnectionLog>,
    /// Listening sockets handed over by the process this one replaces, taken by the binds
    /// of their addresses instead of new sockets (`halo upgrade`).
    inherited: Vec<(SocketAddr, TcpListener)>,
    /// Accept loops accept only while this is true (false until a new process takes over).
    accepting: watch::Receiver<bool>,
    /// Pauses the relays for an upgrade and keeps what they hand over.
    handover: Arc<Handover>,
    /// The kernel data path, chosen at start by `[balancer] forwarding`.
    kernel: Option<Arc<crate::kernel::KernelPath>>,
    forwarding: halo_config::Forwarding,
}

/// What a balancer that takes over from a running one starts with (`halo upgrade`).
pub struct Inherited {
    /// The listening sockets handed over; a bind on one of their addresses uses it.
    pub listeners: Vec<TcpListener>,
    /// Accept loops wait until this becomes true (the moment the new process takes over).
    pub accepting: watch::Receiver<bool>,
    /// The kernel data path's maps, with the connections in them.
    pub kernel: Option<crate::kernel::InheritedPath>,
}

impl Balancer {
    /// The kernel data path, when this balancer has one (its maps go to the process that
    /// replaces this one).
    pub fn kernel_path(&self) -> Option<&Arc<crate::kernel::KernelPath>> {
        self.kernel.as_ref()
    }

    /// Binds every listener (all or nothing) and starts the health checks and accept loops.
    pub fn start(config: &Config, shutdown: watch::Receiver<bool>) -> Result<Self, LbError> {
        let accepting = watch::Sender::new(true).subscribe();
        Self::start_inheriting(config, shutdown, Inherited { listeners: Vec::new(), accepting, kernel: None })
    }

    /// As [`Balancer::start`], taking over the listening sockets of `inherited` for the binds of
    /// their addresses (the others are bound anew; inherited ones no bind wants are closed), and
    /// accepting only once `inherited.accepting` is true.
    pub fn start_inheriting(config: &Config, shutdown: watch::Receiver<bool>, inherited: Inherited) -> Result<Self, LbError> {
        let mut pool = Vec::new();
        for listener in inherited.listeners {
            let address = listener.local_addr().map_err(LbError::Inherited)?;
            pool.push((address, listener));
        }
        let mut balancer = Self {
            frontends: Vec::new(),
            backends: Vec::new(),
            listeners: Vec::new(),
            tasks: tokio::task::JoinSet::new(),
            in_flight: Arc::new(AtomicU64::new(0)),
            shutdown,
            connection_log: Arc::new(ConnectionLog::new(config.log.connections)),
            inherited: pool,
            accepting: inherited.accepting,
            handover: Arc::new(Handover::new()),
            kernel: crate::kernel::choose(config.balancer.forwarding, inherited.kernel)?,
            forwarding: config.balancer.forwarding,
        };
        balancer.reload(config)?;
        for (address, _) in std::mem::take(&mut balancer.inherited) {
            tracing::info!(%address, "a listening socket handed over is bound by no frontend any more: closed");
        }
        balancer.tasks.spawn(report_connection_log_losses(Arc::clone(&balancer.connection_log), balancer.shutdown.clone()));
        Ok(balancer)
    }

    /// The frontend of that name.
    pub fn frontend(&self, name: &str) -> Option<&Arc<FrontendRuntime>> {
        self.frontends.iter().find(|f| f.name == name)
    }

    /// Applies `config`. Everything that can fail (TLS settings, an unknown backend, binding new
    /// addresses) is done first; on failure the running balancer is left exactly as it was. A
    /// reload ends with every configured bind served: an address already bound keeps its socket
    /// whichever frontend it now belongs to.
    pub fn reload(&mut self, config: &Config) -> Result<Changes, LbError> {
        let mut changes = Changes::default();
        let backends = self.build_backends(config)?;
        if let Some(f) = config.frontends.iter().find(|f| !backends.iter().any(|b| b.config.name == f.backend)) {
            return Err(LbError::UnknownBackend(f.backend.clone()));
        }
        let wanted = wanted_binds(config);
        let fresh = self.bind_new_addresses(&wanted)?;
        // From here on nothing fails.
        if config.balancer.forwarding != self.forwarding {
            tracing::warn!(
                now = ?self.forwarding,
                asked = ?config.balancer.forwarding,
                "[balancer] forwarding changes at the next start or `halo upgrade`, not on reload"
            );
        }
        self.connection_log.set_enabled(config.log.connections);
        if let Some(path) = &self.kernel {
            path.set_join_after(config.balancer.kernel_after);
        }
        self.close_unwanted_listeners(&wanted, &mut changes);
        self.frontends = self.update_frontends(config, &backends);
        self.replace_backends(backends, &mut changes);
        self.retarget_moved_listeners(&wanted, &mut changes);
        self.start_listeners(fresh, &mut changes);
        Ok(changes)
    }

    /// New backends, reusing the servers that stay.
    fn build_backends(&self, config: &Config) -> Result<Vec<Arc<BackendRuntime>>, LbError> {
        let mut backends = Vec::new();
        for b in &config.backends {
            let previous = self.backends.iter().find(|o| o.config.name == b.name);
            backends.push(Arc::new(BackendRuntime::new(b, previous.map(|p| p.as_ref()))?));
        }
        Ok(backends)
    }

    /// Binds the addresses no current listener has, a group of sockets each
    /// ([`crate::listener::shards`]): the sockets handed over for that address when there are
    /// some, as many as the old process had (a socket added here would take its share of new
    /// connections before this process accepts, and reset them should the upgrade be called
    /// off), else new ones.
    fn bind_new_addresses(&mut self, wanted: &[(String, SocketAddr)]) -> Result<Vec<Opened>, LbError> {
        let open = self.listeners.iter().map(|l| l.sockets.len()).sum::<usize>() + self.inherited.len();
        let new_binds = wanted.iter().filter(|(_, a)| !self.listeners.iter().any(|l| l.address == *a)).count();
        let shards = crate::listener::shards(new_binds, open);
        let mut fresh = Vec::new();
        for (frontend, address) in wanted {
            if !self.listeners.iter().any(|l| l.address == *address) {
                let group = self.take_inherited(*address).unwrap_or_else(|| crate::listener::bind_group(*address, shards));
                let group = group.map_err(|source| LbError::Bind { address: *address, source })?;
                fresh.push((frontend.clone(), *address, group));
            }
        }
        Ok(fresh)
    }

    /// Every socket handed over for `address`, ready to accept on; `None` when none was.
    fn take_inherited(&mut self, address: SocketAddr) -> Option<std::io::Result<Vec<TcpListener>>> {
        let (taken, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inherited).into_iter().partition(|(a, _)| *a == address);
        self.inherited = rest;
        if taken.is_empty() {
            return None;
        }
        Some(taken.into_iter().map(|(_, listener)| listener.set_nonblocking(true).map(|()| listener)).collect())
    }

    /// Stops the listeners of addresses no longer bound by any frontend, keeps the others.
    fn close_unwanted_listeners(&mut self, wanted: &[(String, SocketAddr)], changes: &mut Changes) {
        let (keep, close): (Vec<Listener>, Vec<Listener>) =
            std::mem::take(&mut self.listeners).into_iter().partition(|l| wanted.iter().any(|(_, a)| *a == l.address));
        changes.listeners_removed = close.len();
        for listener in &close {
            listener.stop.send_replace(true);
        }
        changes.listeners_kept = keep.len();
        self.listeners = keep;
    }

    /// Points the kept listeners whose address now belongs to another frontend at it.
    fn retarget_moved_listeners(&mut self, wanted: &[(String, SocketAddr)], changes: &mut Changes) {
        for listener in &mut self.listeners {
            let Some((name, _)) = wanted.iter().find(|(_, a)| *a == listener.address) else { continue };
            let Some(frontend) = self.frontends.iter().find(|f| f.name == *name) else { continue };
            let previous = listener.target.borrow().clone();
            if Arc::ptr_eq(&previous, frontend) {
                continue;
            }
            // One accept loop per socket, each counted where it serves.
            for _ in &listener.sockets {
                frontend.listener_started();
                previous.listener_stopped();
            }
            listener.target.send_replace(Arc::clone(frontend));
            tracing::info!(address = %listener.address, from = %previous.name, to = %frontend.name, "bind moved to another frontend, socket kept");
            listener.frontend = name.clone();
            changes.listeners_moved += 1;
        }
    }

    /// Frontends: updated in place or created, each pointed at its new backend.
    /// Every frontend's backend is among `backends` (checked by `reload` before any change).
    fn update_frontends(&self, config: &Config, backends: &[Arc<BackendRuntime>]) -> Vec<Arc<FrontendRuntime>> {
        let mut frontends = Vec::new();
        for f in &config.frontends {
            let Some(backend) = backends.iter().find(|b| b.config.name == f.backend).cloned() else { continue };
            match self.frontends.iter().find(|o| o.name == f.name) {
                Some(existing) => {
                    existing.update(f, backend);
                    frontends.push(Arc::clone(existing));
                }
                None => frontends.push(Arc::new(FrontendRuntime::new(
                    f,
                    backend,
                    crate::runtime::Shared {
                        log: Arc::clone(&self.connection_log),
                        handover: Arc::clone(&self.handover),
                        kernel: self.kernel.clone(),
                    },
                ))),
            }
        }
        frontends
    }

    /// Retires the servers that left; replaces the backends and their check tasks.
    fn replace_backends(&mut self, backends: Vec<Arc<BackendRuntime>>, changes: &mut Changes) {
        for old in &self.backends {
            for server in &old.servers {
                if server_stays(&backends, old, server) {
                    changes.servers_kept += 1;
                } else {
                    server.retire();
                    changes.servers_removed += 1;
                }
            }
            old.stop_checks();
        }
        for backend in &backends {
            for index in 0..backend.servers.len() {
                self.tasks.spawn(Arc::clone(backend).check_loop(index, self.shutdown.clone()));
                self.tasks.spawn(Arc::clone(backend).resolve_loop(index, self.shutdown.clone()));
            }
        }
        self.backends = backends;
    }

    /// Starts the accept loops of the new listeners.
    fn start_listeners(&mut self, fresh: Vec<Opened>, changes: &mut Changes) {
        changes.listeners_added = fresh.len();
        let start = Start { shutdown: self.shutdown.clone(), accepting: self.accepting.clone(), in_flight: Arc::clone(&self.in_flight) };
        for (name, address, group) in fresh {
            let Some(frontend) = self.frontend(&name).cloned() else { continue };
            if let Some(listener) = Listener::start(name, address, group, &frontend, &start, &mut self.tasks) {
                self.listeners.push(listener);
            }
        }
    }

    /// Asks every established connection to pause where halo holds none of its bytes (`halo
    /// upgrade`): each one that does is kept for [`Balancer::take_paused`]. Connections accepted
    /// but not relaying yet pause as soon as they relay.
    pub fn pause_connections(&self) {
        if let Some(path) = &self.kernel {
            path.handing_over(true);
        }
        self.handover.ask();
    }

    /// The connections paused since the last call, their sockets and what is known of them.
    pub fn take_paused(&self) -> Vec<Established> {
        self.handover.take()
    }

    /// Calls the pause off (the handover is over): connections at rest, and those still to
    /// pause, relay on here. The connections paused and not taken yet are returned.
    pub fn call_off_pause(&self) -> Vec<Established> {
        // The kernel path's ring stays with the new process (see `pause_connections`).
        self.handover.call_off()
    }

    /// Connections open now (accepted, not yet ended or handed over).
    pub fn open_connections(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What adopts the connections the process this one replaces hands over.
    pub fn adopter(&self) -> Adopter {
        Adopter { frontends: self.frontends.clone(), in_flight: Arc::clone(&self.in_flight) }
    }

    /// After shutdown: waits for the accept loops and checks, then up to `drain` for open
    /// connections; returns how many were still open.
    pub async fn drain(mut self, drain: Duration) -> u64 {
        // The duplicates kept for a handover go too: the sockets close with the accept loops.
        self.listeners.clear();
        while self.tasks.join_next().await.is_some() {}
        let deadline = Instant::now() + drain;
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// Once a second, reports the lines the connection log's rate limit dropped in the second that
/// ended, so that the count of a flood's last second comes out with no further connection.
async fn report_connection_log_losses(log: Arc<ConnectionLog>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => log.tick(),
            _ = shutdown.changed() => return,
        }
    }
}

/// The sockets bound for a frontend's bind, not yet accepting: (frontend, address, sockets).
type Opened = (String, SocketAddr, Vec<TcpListener>);

/// Every (frontend, address) the config binds.
fn wanted_binds(config: &Config) -> Vec<(String, SocketAddr)> {
    config.frontends.iter().flat_map(|f| f.binds.iter().map(move |a| (f.name.clone(), *a))).collect()
}

/// Whether a server of `old` is among the new backends: the same runtime, or the same name and
/// address in the backend of the same name.
fn server_stays(backends: &[Arc<BackendRuntime>], old: &BackendRuntime, server: &Arc<ServerRuntime>) -> bool {
    backends.iter().any(|b| {
        b.servers.iter().any(|s| {
            Arc::ptr_eq(s, server)
                || (s.config.name == server.config.name && s.config.address == server.config.address && b.config.name == old.config.name)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port").port()
    }

    /// Two frontends' binds and a backend whose one server is never checked (up at once).
    fn config(a: &[u16], b: &[u16], max_connections: u32, server: u16) -> Config {
        let binds = |ports: &[u16]| ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "[[frontend]]\nname = \"a\"\nbind = [{}]\nbackend = \"api\"\nmax_connections = {max_connections}\n\n\
             [[frontend]]\nname = \"b\"\nbind = [{}]\nbackend = \"api\"\n\n\
             [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"none\"\n[[backend.server]]\nname = \"s\"\naddress = \"127.0.0.1:{server}\"\n",
            binds(a),
            binds(b)
        );
        halo_config::load_str("t.toml", &text).expect("valid").config
    }

    /// Waits (bounded) until `frontend` has `loops` accept loops.
    async fn loops_become(balancer: &Balancer, frontend: &str, loops: u64) {
        let runtime = Arc::clone(balancer.frontend(frontend).expect("the frontend"));
        for _ in 0..200 {
            if runtime.accept_loops() == loops {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("frontend {frontend}: {} accept loops, not {loops}", runtime.accept_loops());
    }

    /// Each socket of a bind is an accept loop counted by the frontend it serves, through a move
    /// to another frontend and the bind's removal (a miscount makes `is_listening` lie, and the
    /// balancer tracker fail a frontend that serves, or pass one that does not).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accept_loops_are_counted_where_they_serve_through_a_move() {
        let (p1, p2, p3) = (port(), port(), port());
        let (_stop, stopped) = watch::channel(false);
        let mut balancer = Balancer::start(&config(&[p1], &[p2], 100, 9), stopped).expect("start");
        loops_become(&balancer, "a", 2).await;
        loops_become(&balancer, "b", 2).await;
        balancer.reload(&config(&[p3], &[p2, p1], 100, 9)).expect("p1 moves to b");
        loops_become(&balancer, "a", 2).await;
        loops_become(&balancer, "b", 4).await;
        balancer.reload(&config(&[p3], &[p2], 100, 9)).expect("p1 removed");
        loops_become(&balancer, "b", 2).await;
        loops_become(&balancer, "a", 2).await;
    }

    /// A frontend capped at one connection, with two accept loops: each client in turn is
    /// served, whichever socket of the group the kernel gives it to (a loop holding the only
    /// place for its empty queue would leave the other loop's client waiting for ever).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cap_below_the_accept_loops_still_serves_every_client() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("echo");
        let server = echo.local_addr().expect("its address").port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).await.is_ok() && stream.write_all(&byte).await.is_ok() {}
                });
            }
        });
        let front = port();
        let (_stop, stopped) = watch::channel(false);
        let balancer = Balancer::start(&config(&[front], &[port()], 1, server), stopped).expect("start");
        loops_become(&balancer, "a", 2).await;
        for client in 0..16 {
            let exchange = async {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", front)).await?;
                stream.write_all(b"x").await?;
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await?;
                Ok::<_, std::io::Error>(byte)
            };
            let answer = tokio::time::timeout(Duration::from_secs(5), exchange).await;
            assert!(matches!(answer, Ok(Ok(b))if &b == b"x"), "client {client} not served: {answer:?}");
        }
    }
}

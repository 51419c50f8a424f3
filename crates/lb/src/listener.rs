//! A frontend's bind at run time: its listening sockets — a `SO_REUSEPORT` group, one socket and
//! one accept loop per worker thread of the runtime, so that accepting scales with the threads
//! and the kernel spreads new connections over the loops — and the accept loop itself.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use std::net::TcpListener;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::probe::local_error;
use crate::runtime::FrontendRuntime;

/// The most listening sockets a balancer opens over all its binds: `halo upgrade` hands them
/// over in one message (with the status sockets and the kernel path's maps), which carries at
/// most 64 descriptors. Binds past it get fewer sockets each (at least one).
pub const MAX_LISTENING_SOCKETS: usize = 48;

/// How many sockets each of `binds` new binds gets, `open` sockets being open already: one per
/// worker thread of the current runtime, within [`MAX_LISTENING_SOCKETS`] over all of them
/// (at least one each).
pub(crate) fn shards(binds: usize, open: usize) -> usize {
    let threads = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
    threads.min(MAX_LISTENING_SOCKETS.saturating_sub(open) / binds.max(1)).max(1)
}

/// A listening socket: SO_REUSEADDR, IP_FREEBIND (a bind on a VIP works before the VIP is here,
/// so a backup is ready the instant it becomes master), IPv6-only for IPv6 binds, and the
/// proxied connections' options, which accepted sockets inherit (no system call per client).
/// `SO_REUSEPORT` is set after the bind: a socket some other program listens on with
/// `SO_REUSEPORT` is refused (address in use) rather than silently shared with it, and the
/// group's other sockets can still join.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket(address)?;
    socket.bind(&address.into())?;
    socket.set_reuse_port(true)?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// `count` listening sockets on `address` in one `SO_REUSEPORT` group (all or none): the first
/// bound as [`bind`] does, the others joining it.
pub fn bind_group(address: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    let first = bind(address)?;
    // Port 0 binds the group on the port the first socket got.
    let address = first.local_addr()?;
    let mut group = vec![first];
    while group.len() < count {
        let socket = socket(address)?;
        socket.set_reuse_port(true)?;
        socket.bind(&address.into())?;
        socket.listen(4096)?;
        group.push(socket.into());
    }
    Ok(group)
}

fn socket(address: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    crate::sockopt::set_connection_options(socket2::SockRef::from(&socket))?;
    Ok(socket)
}

/// A bind's accept loops, stoppable on their own (reload) or with everything (shutdown). The
/// frontend they serve can change under them: a bind that moves to another (or a renamed)
/// frontend keeps its sockets, so no connection is refused and no rebind can fail.
pub(crate) struct Listener {
    pub(crate) frontend: String,
    pub(crate) address: SocketAddr,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) target: watch::Sender<Arc<FrontendRuntime>>,
    /// The listening sockets themselves (each accept loop has a duplicate of its own): what
    /// `halo upgrade` hands to the next process. Closed together: closing a socket of a
    /// `SO_REUSEPORT` group resets the connections waiting in its queue (the one exception: a
    /// socket that cannot be duplicated, out of descriptors, is closed at start).
    pub(crate) sockets: Vec<OwnedFd>,
}

/// What an accept loop is started with besides its socket.
pub(crate) struct Start {
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) accepting: watch::Receiver<bool>,
    pub(crate) in_flight: Arc<AtomicU64>,
}

impl Listener {
    /// Starts one accept loop per socket of `group` for `frontend`. A socket that cannot be
    /// duplicated for a handover (out of descriptors) is not served; `None` when none is.
    pub(crate) fn start(
        name: String,
        address: SocketAddr,
        group: Vec<TcpListener>,
        frontend: &Arc<FrontendRuntime>,
        start: &Start,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Option<Self> {
        let (stop, stopped) = watch::channel(false);
        let (target, targeted) = watch::channel(Arc::clone(frontend));
        let mut sockets = Vec::new();
        for listener in group {
            // A duplicate of the socket for a handover; without one an upgrade could not take it
            // over, and the socket is closed before it accepts anything.
            match listener.as_fd().try_clone_to_owned() {
                Ok(socket) => sockets.push(socket),
                Err(e) => {
                    tracing::error!(%address, error = %e, "cannot duplicate a listening socket: not served");
                    continue;
                }
            }
            frontend.listener_started();
            let gates = Gates { shutdown: start.shutdown.clone(), stop: stopped.clone(), accepting: start.accepting.clone() };
            tasks.spawn(accept_loop(targeted.clone(), listener, gates, Arc::clone(&start.in_flight)));
        }
        (!sockets.is_empty()).then_some(Self { frontend: name, address, stop, target, sockets })
    }
}

/// What ends or holds an accept loop: the balancer's shutdown, the listener's own stop (a
/// reload), and whether this process accepts yet.
struct Gates {
    shutdown: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    accepting: watch::Receiver<bool>,
}

/// The listener registered with the runtime for readiness; accepting through mio takes the
/// connection non-blocking with its peer's address in one system call (accept4).
#[allow(unsafe_code)]
fn watched(listener: TcpListener) -> std::io::Result<AsyncFd<mio::net::TcpListener>> {
    let listener = mio::net::TcpListener::from_std(listener);
    // SAFETY: the AsyncFd owns the listener, whose descriptor stays open and the same until the
    // AsyncFd drops it (nothing here takes it out or closes it).
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(std::io::Error::from)
}

/// Accepts on one socket of a group until stopped. A loop waits until a connection is in its
/// socket's queue before it takes a place, then accepts: the loops of a bind hold no place for
/// queues that are empty (with a cap below the number of loops, a loop holding the last place
/// for an empty queue would leave another loop's client unserved).
async fn accept_loop(mut target: watch::Receiver<Arc<FrontendRuntime>>, listener: TcpListener, gates: Gates, in_flight: Arc<AtomicU64>) {
    let Gates { mut shutdown, mut stop, mut accepting } = gates;
    let listener = match watched(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(frontend = %target.borrow().name, error = %e, "a listening socket cannot be watched: not served");
            target.borrow().listener_stopped();
            return;
        }
    };
    // A process taking over accepts only from the moment it does: until then the running one
    // accepts on the same socket, and a connection accepted here would die with a failed start.
    tokio::select! {
        open = accepting.wait_for(|open| *open) => if open.is_err() { target.borrow().listener_stopped(); return },
        _ = shutdown.changed() => { target.borrow().listener_stopped(); return },
        _ = stop.changed() => { target.borrow().listener_stopped(); return },
    }
    let mut last_warning: Option<Instant> = None;
    loop {
        // A connection waiting first, then a place: while every place is taken, new
        // connections wait in the kernel's backlog, not in halo's descriptors. Not biased:
        // under a flood that never leaves the accept queue empty, a shutdown or a reload
        // closing this listener must still be seen.
        let mut ready = tokio::select! {
            ready = listener.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::error!(frontend = %target.borrow().name, error = %e, "a listening socket failed: no longer served");
                    break;
                }
            },
            _ = shutdown.changed() => break,
            _ = stop.changed() => break,
        };
        let frontend = target.borrow().clone();
        let place = tokio::select! {
            biased;
            place = frontend.admission() => match place {
                Some(place) => place,
                None => break,
            },
            // Every place taken and connections waiting in the backlog: the connection silent
            // the longest is closed, and its place comes free (waited for, so that one closes
            // for each connection accepted).
            () = frontend.silent.make_room(listener.get_ref()) => match frontend.admission().await {
                Some(place) => place,
                None => break,
            },
            // A reload gave this listener to another frontend: its places, then.
            Ok(()) = target.changed() => continue,
            _ = shutdown.changed() => break,
            _ = stop.changed() => break,
        };
        // The client may have gone meanwhile (then the place goes back, and the loop waits).
        let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) else { continue };
        let accepted = accepted.and_then(|(client, peer)| Ok((tokio::net::TcpStream::from_std(client.into())?, peer)));
        hand_off(&frontend, accepted, place, &in_flight, &mut last_warning).await;
    }
    target.borrow().listener_stopped();
}

/// What becomes of one accept: a client its source refuses is closed at once (nothing read, no
/// server asked, its place free again); another is served on a task of its own; out of
/// resources, the loop backs off (one warning per 10 s).
async fn hand_off(
    frontend: &Arc<FrontendRuntime>,
    accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
    place: crate::slots::Slot,
    in_flight: &Arc<AtomicU64>,
    last_warning: &mut Option<Instant>,
) {
    match accepted {
        Ok((client, peer)) if !frontend.allows(peer.ip()) => {
            frontend.refuse(peer);
            drop((client, place));
        }
        Ok((client, peer)) => {
            frontend.stats.total.fetch_add(1, Ordering::Relaxed);
            frontend.stats.current.fetch_add(1, Ordering::Relaxed);
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (frontend, in_flight) = (Arc::clone(frontend), Arc::clone(in_flight));
            tokio::spawn(async move {
                Arc::clone(&frontend).serve(client, peer, place).await;
                frontend.stats.current.fetch_sub(1, Ordering::Relaxed);
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Err(e) if local_error(&e) => {
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(frontend = %frontend.name, error = %e, "cannot accept: out of resources; backing off");
                *last_warning = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(e) => tracing::debug!(frontend = %frontend.name, error = %e, "accept failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxied connections' options are set once on the listener: the kernel must hand them
    /// to every accepted socket, or clients would go without keepalive and TCP_NODELAY.
    #[tokio::test]
    async fn accepted_sockets_inherit_keepalive_and_nodelay() {
        let listener = tokio::net::TcpListener::from_std(bind("127.0.0.1:0".parse().expect("an address")).expect("bind")).expect("tokio");
        let address = listener.local_addr().expect("its address");
        let client = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let socket = socket2::SockRef::from(&accepted);
        assert!(socket.tcp_nodelay().expect("TCP_NODELAY"), "TCP_NODELAY not inherited");
        assert!(socket.keepalive().expect("SO_KEEPALIVE"), "SO_KEEPALIVE not inherited");
        assert_eq!(socket.tcp_keepalive_time().expect("TCP_KEEPIDLE"), Duration::from_secs(60));
        assert_eq!(socket.tcp_keepalive_interval().expect("TCP_KEEPINTVL"), Duration::from_secs(10));
        drop(client);
    }

    /// One socket per worker thread, in one group: the kernel spreads new connections over
    /// them, and each is accepted on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bind_is_one_socket_per_worker_and_the_kernel_spreads_connections_over_them() {
        assert_eq!(shards(1, 0), 2);
        assert_eq!(shards(MAX_LISTENING_SOCKETS, 0), 1, "binds share the sockets one message can hand over");
        assert_eq!(shards(MAX_LISTENING_SOCKETS * 2, 0), 1, "and each bind has one at least");
        assert_eq!(shards(1, MAX_LISTENING_SOCKETS - 1), 1, "sockets open already count");
        assert_eq!(shards(1, MAX_LISTENING_SOCKETS + 5), 1);
        let group = bind_group("127.0.0.1:0".parse().expect("an address"), shards(1, 0)).expect("bind");
        let group: Vec<tokio::net::TcpListener> = group.into_iter().map(|l| tokio::net::TcpListener::from_std(l).expect("tokio")).collect();
        let address = group[0].local_addr().expect("its address");
        assert!(group.iter().all(|l| l.local_addr().ok() == Some(address)));
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(tokio::net::TcpStream::connect(address).await.expect("connect"));
        }
        let mut accepted = [0usize; 2];
        for (at, listener) in group.iter().enumerate() {
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await {
                accepted[at] += 1;
            }
        }
        assert_eq!(accepted[0] + accepted[1], 64, "a connection was lost: {accepted:?}");
        assert!(accepted[0] > 0 && accepted[1] > 0, "one socket took every connection: {accepted:?}");
    }

    /// Another program listening with SO_REUSEPORT on the port would otherwise share halo's
    /// connections without a word: the bind is refused instead, as any port in use.
    #[tokio::test]
    async fn a_port_another_program_listens_on_with_reuse_port_is_refused() {
        let other = socket("127.0.0.1:0".parse().expect("an address")).expect("socket");
        other.set_reuse_port(true).expect("SO_REUSEPORT");
        other.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("an address").into()).expect("bind");
        other.listen(16).expect("listen");
        let address = other.local_addr().expect("its address").as_socket().expect("inet");
        let error = bind_group(address, 2).expect_err("a port in use was shared");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}

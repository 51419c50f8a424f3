//! What wakes a kernel-forwarded connection: its sockets' hang-ups and errors (one epoll set for
//! every such socket, asking for nothing else, so the bytes the kernel forwards wake nobody) and
//! the verdict program's word that a direction is held (its ring). One task reads both and
//! signals the connection concerned.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::flows::FlowKey;
use crate::lock::lock;

/// The side of a connection a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client's socket (its direction: client to server).
    Client = 0,
    /// The server's socket (its direction: server to client).
    Server = 1,
}

/// Event bits of one connection, per side: hang-up (the peer's FIN), error, held.
pub(crate) const HANGUP: u32 = 1;
pub(crate) const ERROR: u32 = 2;
pub(crate) const HELD: u32 = 4;

/// The bit of `event` for `side`.
pub(crate) fn bit(event: u32, side: Side) -> u32 {
    event << (side as u32 * 4)
}

/// What one connection is told.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) events: AtomicU32,
    pub(crate) notify: Notify,
}

impl Signals {
    fn raise(&self, bits: u32) {
        self.events.fetch_or(bits, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Wakes the connection to look at everything (the program's state included).
    pub(crate) fn raise_all(&self) {
        self.notify.notify_one();
    }
}

/// The epoll set as a file tokio can wait on.
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// The sockets and keys being watched.
#[derive(Default)]
struct Registry {
    by_token: HashMap<u64, (Arc<Signals>, Side)>,
    by_key: HashMap<FlowKey, (Arc<Signals>, Side)>,
}

/// The watcher of one balancer's kernel-forwarded connections.
pub(crate) struct Watch {
    epoll: Epoll,
    registry: Mutex<Registry>,
    next: AtomicU64,
    /// Whether this process reads the ring: not while it hands its path over (`halo upgrade`),
    /// so that the new process, which reads the same ring, misses none of its connections'
    /// words. What stays here is looked at now and then instead.
    reading: std::sync::atomic::AtomicBool,
}

impl Watch {
    /// A watcher reading `held` (the program's ring), its task spawned on the current runtime.
    pub(crate) fn start(held: RingBuf<MapData>) -> std::io::Result<Arc<Self>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Both own their descriptors, which live as long as their registration: the I/O-safety
        // concern of `AsyncFd::new` (a borrowed descriptor closed while registered) is not theirs.
        #[allow(deprecated)]
        let waiting = AsyncFd::new(EpollFd(Epoll(epoll.0.try_clone()?)))?;
        #[allow(deprecated)]
        let ring = AsyncFd::new(held)?;
        let watch = Arc::new(Self {
            epoll,
            registry: Mutex::new(Registry::default()),
            next: AtomicU64::new(1),
            reading: std::sync::atomic::AtomicBool::new(true),
        });
        tokio::spawn(run(Arc::downgrade(&watch), waiting, ring));
        Ok(watch)
    }

    /// Watches `socket` (known by `key` to the program) for `signals` as `side`; the token to
    /// forget it by.
    pub(crate) fn add(&self, socket: &impl AsFd, key: FlowKey, side: Side, signals: &Arc<Signals>) -> std::io::Result<u64> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut registry = lock(&self.registry);
            registry.by_token.insert(token, (Arc::clone(signals), side));
            registry.by_key.insert(key, (Arc::clone(signals), side));
        }
        let interest = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        if let Err(e) = self.epoll.add(socket, EpollEvent::new(interest, token)) {
            self.forget(token, key);
            return Err(e.into());
        }
        Ok(token)
    }

    /// Stops watching (a closed socket leaves the epoll set by itself).
    pub(crate) fn forget(&self, token: u64, key: FlowKey) {
        let mut registry = lock(&self.registry);
        registry.by_token.remove(&token);
        registry.by_key.remove(&key);
    }

    /// Stops or resumes reading the ring (see `reading`).
    pub(crate) fn set_reading(&self, reading: bool) {
        self.reading.store(reading, Ordering::Relaxed);
    }

    fn hang_ups(&self) {
        let mut events = [EpollEvent::empty(); 64];
        while let Ok(n) = self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            let registry = lock(&self.registry);
            for event in &events[..n] {
                let Some((signals, side)) = registry.by_token.get(&event.data()) else { continue };
                let flags = event.events();
                let mut bits = 0;
                if flags.intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
                    bits |= bit(HANGUP, *side);
                }
                if flags.contains(EpollFlags::EPOLLERR) {
                    bits |= bit(ERROR, *side);
                }
                signals.raise(bits);
            }
            if n < events.len() {
                return;
            }
        }
    }

    fn held(&self, key: &[u8]) {
        let Some(key) = FlowKey::from_bytes(key) else { return };
        if let Some((signals, side)) = lock(&self.registry).by_key.get(&key) {
            signals.raise(bit(HELD, *side));
        }
    }
}

/// The watcher's task: until the balancer's path is gone.
async fn run(watch: std::sync::Weak<Watch>, waiting: AsyncFd<EpollFd>, mut ring: AsyncFd<RingBuf<MapData>>) {
    loop {
        tokio::select! {
            ready = waiting.readable() => {
                let Ok(mut guard) = ready else { return };
                let Some(watch) = watch.upgrade() else { return };
                watch.hang_ups();
                guard.clear_ready();
            }
            ready = ring.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                let Some(watch) = watch.upgrade() else { return };
                if watch.reading.load(Ordering::Relaxed) {
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        watch.held(&item);
                    }
                }
                guard.clear_ready();
            }
        }
    }
}

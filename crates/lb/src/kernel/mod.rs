//! The kernel data path (`[balancer] forwarding`): established connections whose bytes the
//! kernel moves from one socket to its partner (a BPF `sk_skb` verdict program on a SOCKHASH
//! map, bpf/forward.c) without waking halo. What is loaded once per balancer, how a connection
//! joins it, and what it falls back to. The relaying of one connection is in [`relay`].
//!
//! A connection joins right after its server connection is up, before halo has read a byte of
//! it: the client's first bytes (which `first_byte_timeout` waited for) are still in its socket,
//! and a nudge makes the program take them. So there is no moment where some bytes are in user
//! space and later ones in the kernel, and nothing can overtake anything.
//!
//! The kernel keeps no account of bytes redirected to a partner that cannot take them: a reader
//! that stops would let its writer fill the host's memory. The program holds such a direction
//! (see bpf/forward.c) and the relay takes it over in user space, once the partner has taken
//! every byte the program sent it: memory stays bounded by the sockets' own buffers.

pub(crate) mod carry;
pub(crate) mod flows;
pub(crate) mod relay;
pub(crate) mod sockinfo;
pub(crate) mod watch;

use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, IterableMap, Map, MapData, RingBuf, SockHash};
use aya::programs::SkSkb;
use aya::{Ebpf, EbpfLoader};

use self::flows::{FlowKey, FlowState};
use self::watch::{Side, Signals, Watch};
use crate::lock::lock;

/// The program, built from bpf/forward.c by build.rs.
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/forward.o"));

/// Sockets the map holds (two a connection) unless a test asks for fewer.
const CAPACITY: u32 = 65_536;

/// Why the kernel data path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Loading or attaching the program, or making its maps, was refused.
    #[error(
        "the kernel refused the forwarding program (needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or root; Linux 5.13 or later with BTF): {0}"
    )]
    Refused(String),
    /// The watcher could not start.
    #[error("the kernel forwarding watcher could not start")]
    Watch(#[source] std::io::Error),
}

/// The kernel data path `forwarding` asks for: `None` for user space (asked, or `auto` where
/// the kernel refuses, said once here); an error only when `kernel` was asked and refused.
pub(crate) fn choose(
    forwarding: halo_config::Forwarding,
    inherited: Option<InheritedPath>,
) -> Result<Option<Arc<KernelPath>>, crate::LbError> {
    use halo_config::Forwarding;
    if let Some(inherited) = inherited {
        // The maps of the process this one replaces, with its connections in them: kept for
        // them whatever this configuration says; new connections join only if it asks. Should
        // they be unusable here, the upgrade is refused: the connections in them can only go on
        // in a process that has them.
        let path = KernelPath::inherit(inherited, forwarding != Forwarding::User).map_err(crate::LbError::Kernel)?;
        tracing::info!("the kernel data path and its connections are taken over");
        return Ok(Some(path));
    }
    if forwarding == Forwarding::User {
        return Ok(None);
    }
    match KernelPath::load(test_capacity()) {
        Ok(path) => {
            tracing::info!(capacity = path.capacity / 2, "established connections are forwarded in the kernel");
            Ok(Some(path))
        }
        Err(e) if forwarding == Forwarding::Auto => {
            tracing::warn!(error = %e, "established connections are relayed in user space: the kernel data path is unavailable");
            Ok(None)
        }
        Err(e) => Err(crate::LbError::Kernel(e)),
    }
}

/// The map's size a test asks for (`HALO_TEST_KERNEL_SOCKETS`), in test builds only.
fn test_capacity() -> Option<u32> {
    #[cfg(feature = "test-hooks")]
    return std::env::var("HALO_TEST_KERNEL_SOCKETS").ok().and_then(|v| v.parse().ok());
    #[cfg(not(feature = "test-hooks"))]
    None
}

/// The path's maps: the sockets, the states, the counts user space wrote, the ring.
type Maps = (SockHash<MapData, FlowKey>, BpfHashMap<MapData, FlowKey, FlowState>, BpfHashMap<MapData, FlowKey, u64>, RingBuf<MapData>);

/// The program loaded and attached, its maps, and the watcher of its connections.
pub struct KernelPath {
    flows: Mutex<SockHash<MapData, FlowKey>>,
    states: Mutex<BpfHashMap<MapData, FlowKey, FlowState>>,
    copied: Mutex<BpfHashMap<MapData, FlowKey, u64>>,
    watch: Arc<Watch>,
    joined: AtomicUsize,
    capacity: usize,
    /// Whether new connections join (else the path serves only connections taken over).
    open: bool,
    /// How long a new connection stays in user space first (`[balancer] kernel_after`), in
    /// milliseconds (a reload changes it).
    join_after_ms: AtomicU64,
    /// The maps' descriptors, for the process that replaces this one.
    handover: [OwnedFd; 4],
    /// The program as loaded here (`None` when the path was taken over: the program the first
    /// process attached stays attached to the map for as long as the map lives).
    _program: Option<Ebpf>,
}

/// The layout of the maps and of the program's keys and states: a process hands its path over
/// only to one of the same layout.
pub const LAYOUT: u32 = 1;

/// The maps handed over by the process this one replaces: the sockets, the states, the counts
/// written by user space, the ring (in that order), of [`LAYOUT`].
#[derive(Debug)]
pub struct InheritedPath {
    /// The four descriptors.
    pub maps: [OwnedFd; 4],
}

/// What a connection in the kernel path carries to the process that replaces this one: the bytes
/// written to each socket and read from each before it joined, client then server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Bytes written to each socket before it joined.
    pub written_before: [u64; 2],
    /// Bytes each socket had received and user space read before it joined.
    pub read_before: [u64; 2],
    /// Bytes written to each socket since it joined that are counted already.
    pub counted: [u64; 2],
    /// Bytes of each direction (client's, server's) user space wrote on while the program held it.
    pub copied: [u64; 2],
}

impl std::fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPath").field("joined", &self.joined.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl KernelPath {
    /// Loads the program and makes its maps, room for `capacity` sockets (two a connection);
    /// must run on the balancer's runtime (the watcher's task is spawned there).
    pub fn load(capacity: Option<u32>) -> Result<Arc<Self>, KernelError> {
        let refused = |e: &dyn std::fmt::Display| KernelError::Refused(e.to_string());
        let capacity = capacity.unwrap_or(CAPACITY).max(2);
        let mut program = EbpfLoader::new()
            .map_max_entries("halo_flows", capacity)
            .map_max_entries("halo_flow_state", capacity)
            .map_max_entries("halo_flow_copied", capacity)
            .load(PROGRAM)
            .map_err(|e| refused(&e))?;
        let take = |program: &mut Ebpf, name: &str| program.take_map(name).ok_or_else(|| KernelError::Refused(format!("no map {name}")));
        let flows: SockHash<MapData, FlowKey> = SockHash::try_from(take(&mut program, "halo_flows")?).map_err(|e| refused(&e))?;
        let states = BpfHashMap::try_from(take(&mut program, "halo_flow_state")?).map_err(|e| refused(&e))?;
        let copied = BpfHashMap::try_from(take(&mut program, "halo_flow_copied")?).map_err(|e| refused(&e))?;
        let held = RingBuf::try_from(take(&mut program, "halo_held")?).map_err(|e| refused(&e))?;
        let map_fd = flows.fd().try_clone().map_err(|e| refused(&e))?;
        let verdict: &mut SkSkb = program
            .program_mut("halo_forward")
            .ok_or_else(|| KernelError::Refused("no program halo_forward".into()))?
            .try_into()
            .map_err(|e| refused(&e))?;
        verdict.load().map_err(|e| refused(&e))?;
        let link = verdict.attach(&map_fd).map_err(|e| refused(&e))?;
        // Never detached: the program stays attached to the map for as long as the map lives,
        // in this process or in the one it is handed to (`halo upgrade`).
        std::mem::forget(verdict.take_link(link).map_err(|e| refused(&e))?);
        Self::assemble((flows, states, copied, held), capacity as usize, true, Some(program))
    }

    /// The path of the process this one replaces, from its maps' descriptors; `open`: whether
    /// new connections join it.
    fn inherit(inherited: InheritedPath, open: bool) -> Result<Arc<Self>, KernelError> {
        let refused = |e: &dyn std::fmt::Display| KernelError::Refused(e.to_string());
        let [flows, states, copied, held] = inherited.maps.map(|fd| MapData::from_fd(fd).map_err(|e| refused(&e)));
        let flows: SockHash<MapData, FlowKey> = SockHash::try_from(Map::SockHash(flows?)).map_err(|e| refused(&e))?;
        let capacity = test_capacity().unwrap_or(CAPACITY) as usize;
        let states = BpfHashMap::try_from(Map::HashMap(states?)).map_err(|e| refused(&e))?;
        let copied = BpfHashMap::try_from(Map::HashMap(copied?)).map_err(|e| refused(&e))?;
        let held = RingBuf::try_from(Map::RingBuf(held?)).map_err(|e| refused(&e))?;
        Self::assemble((flows, states, copied, held), capacity, open, None)
    }

    fn assemble((flows, states, copied, held): Maps, capacity: usize, open: bool, program: Option<Ebpf>) -> Result<Arc<Self>, KernelError> {
        let dup = |fd: BorrowedFd<'_>| fd.try_clone_to_owned().map_err(KernelError::Watch);
        let handover = [dup(flows.fd().as_fd())?, dup(states.map().fd().as_fd())?, dup(copied.map().fd().as_fd())?, dup(held.as_fd())?];
        let watch = Watch::start(held).map_err(KernelError::Watch)?;
        Ok(Arc::new(Self {
            flows: Mutex::new(flows),
            states: Mutex::new(states),
            copied: Mutex::new(copied),
            watch,
            joined: AtomicUsize::new(0),
            capacity,
            open,
            join_after_ms: AtomicU64::new(halo_config::KERNEL_AFTER.as_millis() as u64),
            handover,
            _program: program,
        }))
    }

    /// When a connection accepted at `accepted` joins the path, `None` when it takes no new ones.
    pub(crate) fn join_at(&self, accepted: std::time::Instant) -> Option<tokio::time::Instant> {
        let after = std::time::Duration::from_millis(self.join_after_ms.load(Ordering::Relaxed));
        self.open.then(|| tokio::time::Instant::from_std(accepted + after))
    }

    /// While this process hands its path over, the new one reads the program's ring alone.
    pub(crate) fn handing_over(&self, handing: bool) {
        self.watch.set_reading(!handing);
    }

    /// The maps' descriptors for the process that replaces this one (see [`InheritedPath`]).
    pub fn handover_fds(&self) -> [BorrowedFd<'_>; 4] {
        [self.handover[0].as_fd(), self.handover[1].as_fd(), self.handover[2].as_fd(), self.handover[3].as_fd()]
    }

    /// Sets how long a new connection stays in user space before it joins (`kernel_after`, on
    /// start and reload).
    pub(crate) fn set_join_after(&self, after: std::time::Duration) {
        self.join_after_ms.store(u64::try_from(after.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Puts a connection's sockets in the map: from now on the kernel moves its bytes. Refused
    /// (the connection stays in user space, nothing of it changed) when the map is full or a
    /// socket cannot join.
    pub(crate) fn join(self: &Arc<Self>, client: &TcpStream, server: &TcpStream) -> std::io::Result<Flow> {
        if !self.open {
            return Err(std::io::Error::other("[balancer] forwarding = \"user\": only connections taken over are in the kernel path"));
        }
        let keys = [FlowKey::new(client.local_addr()?, client.peer_addr()?), FlowKey::new(server.local_addr()?, server.peer_addr()?)];
        let base = [sockinfo::written(client)?, sockinfo::written(server)?];
        let consumed = [consumed_before(client)?, consumed_before(server)?];
        if self.joined.fetch_add(2, Ordering::AcqRel) + 2 > self.capacity {
            self.joined.fetch_sub(2, Ordering::AcqRel);
            return Err(std::io::Error::other("the kernel forwarding map is full"));
        }
        // From here on, dropping the flow undoes what was done.
        let mut flow = Flow {
            path: Arc::clone(self),
            keys,
            tokens: [None, None],
            signals: Arc::new(Signals::default()),
            base,
            consumed,
            in_map: [false; 2],
            released: false,
            counted: [AtomicU64::new(0), AtomicU64::new(0)],
            shut: Default::default(),
            user_copied: Default::default(),
        };
        {
            let (mut states, mut copied) = (lock(&self.states), lock(&self.copied));
            for key in &flow.keys {
                states.insert(key, FlowState::default(), 0).map_err(std::io::Error::other)?;
                copied.insert(key, 0, 0).map_err(std::io::Error::other)?;
            }
        }
        for (side, socket) in [(Side::Client, client), (Side::Server, server)] {
            flow.tokens[side as usize] = Some(self.watch.add(socket, flow.keys[side as usize], side, &flow.signals)?);
        }
        // Each socket goes in under its partner's key, the client's first. A socket that has
        // had its FIN cannot join (the kernel takes established sockets only): the connection
        // then stays in user space.
        if !(sockinfo::tcp_info(client)?.established && sockinfo::tcp_info(server)?.established) {
            return Err(std::io::Error::other("a side has finished already"));
        }
        let mut flows = lock(&self.flows);
        flows.insert(flow.keys[Side::Server as usize], client.as_raw_fd(), 0).map_err(std::io::Error::other)?;
        flow.in_map[Side::Client as usize] = true;
        // Should the server's fail (its FIN just came), the client's socket is in the map with
        // no partner: the program holds its direction at its first byte, and the relay moves
        // both directions in user space, reading the client's socket the way the map requires.
        // Nothing is lost.
        match flows.insert(flow.keys[Side::Client as usize], server.as_raw_fd(), 0) {
            Ok(()) => flow.in_map[Side::Server as usize] = true,
            Err(e) => tracing::debug!(error = %e, "a server socket could not join the kernel path: relayed in user space"),
        }
        drop(flows);
        for socket in [client, server] {
            if let Err(e) = sockinfo::nudge(socket) {
                tracing::debug!(error = %e, "the kernel path could not be nudged");
            }
        }
        Ok(flow)
    }

    /// A connection the process this one replaces had in the same maps: its sockets are in the
    /// map already; this watches them.
    pub(crate) fn rejoin(self: &Arc<Self>, client: &TcpStream, server: &TcpStream, joined: Joined) -> std::io::Result<Flow> {
        let keys = [FlowKey::new(client.local_addr()?, client.peer_addr()?), FlowKey::new(server.local_addr()?, server.peer_addr()?)];
        self.joined.fetch_add(2, Ordering::AcqRel);
        let mut flow = Flow {
            path: Arc::clone(self),
            keys,
            tokens: [None, None],
            signals: Arc::new(Signals::default()),
            base: joined.written_before,
            consumed: joined.read_before,
            in_map: [true; 2],
            released: false,
            counted: joined.counted.map(AtomicU64::new),
            shut: Default::default(),
            user_copied: joined.copied.map(AtomicU64::new),
        };
        for (side, socket) in [(Side::Client, client), (Side::Server, server)] {
            match self.watch.add(socket, flow.keys[side as usize], side, &flow.signals) {
                Ok(token) => flow.tokens[side as usize] = Some(token),
                Err(e) => {
                    // Closed by the caller; its map entries go with its sockets' close.
                    flow.released = true;
                    return Err(e);
                }
            }
        }
        // A hang-up, a held direction or an error while nobody watched is looked for now.
        flow.signals.raise_all();
        Ok(flow)
    }

    fn state(&self, key: &FlowKey) -> FlowState {
        lock(&self.states).get(key, 0).unwrap_or_default()
    }
}

/// A connection in the kernel data path: its keys, what wakes it, and the bytes written to each
/// socket before it joined (a PROXY header to the server).
pub(crate) struct Flow {
    path: Arc<KernelPath>,
    keys: [FlowKey; 2],
    tokens: [Option<u64>; 2],
    pub(crate) signals: Arc<Signals>,
    base: [u64; 2],
    /// Bytes each socket had received and user space had read before it joined.
    consumed: [u64; 2],
    /// Which sockets are in the map.
    in_map: [bool; 2],
    /// Handed to the process that replaces this one: its entries in the maps stay.
    released: bool,
    /// Bytes written to each socket since it joined that are counted (client, server).
    pub(crate) counted: [AtomicU64; 2],
    /// Whether each socket has been sent its FIN.
    pub(crate) shut: [std::sync::atomic::AtomicBool; 2],
    /// Bytes of each direction user space has written on.
    user_copied: [AtomicU64; 2],
}

impl Flow {
    /// The state of the direction whose bytes arrive on `side`.
    pub(crate) fn state(&self, side: Side) -> FlowState {
        self.path.state(&self.keys[side as usize])
    }

    /// Whether both sockets joined (else the joined one's direction is held from the start).
    pub(crate) fn complete(&self) -> bool {
        self.in_map == [true; 2]
    }

    /// Whether user space has read every byte of `side`'s direction the program left with its
    /// socket, `copied` so far, once its FIN came: a read finds the end while the kernel's worker
    /// may still be moving the last bytes to where reads take them.
    pub(crate) fn all_read(&self, side: Side, socket: &TcpStream, copied: u64) -> std::io::Result<bool> {
        // The FIN counts one.
        let received = sockinfo::tcp_info(socket)?.bytes_received.saturating_sub(self.consumed[side as usize] + 1);
        Ok(self.state(side).redirected + copied >= received)
    }

    /// What the process that replaces this one needs to go on with it.
    pub(crate) fn joined(&self) -> Joined {
        Joined {
            written_before: self.base,
            read_before: self.consumed,
            counted: self.counted.each_ref().map(|c| c.load(Ordering::Relaxed)),
            copied: self.user_copied.each_ref().map(|c| c.load(Ordering::Acquire)),
        }
    }

    /// Lets go of the connection for the process that replaces this one: its entries in the maps
    /// stay there.
    pub(crate) fn release(mut self) {
        self.released = true;
    }

    /// Tells the program how many bytes of `side`'s direction user space has written on (all
    /// its tasks together).
    pub(crate) fn set_copied(&self, side: Side, bytes: u64) -> std::io::Result<()> {
        self.user_copied[side as usize].store(bytes, Ordering::Release);
        lock(&self.path.copied).insert(self.keys[side as usize], bytes, 0).map_err(std::io::Error::other)
    }

    /// Bytes of `side`'s direction user space has written on so far.
    pub(crate) fn copied(&self, side: Side) -> u64 {
        self.user_copied[side as usize].load(Ordering::Acquire)
    }

    /// Bytes written to `side`'s socket since the connection joined.
    pub(crate) fn written_since(&self, side: Side, socket: &TcpStream) -> std::io::Result<u64> {
        Ok(sockinfo::written(socket)?.saturating_sub(self.base[side as usize]))
    }
}

/// Bytes `socket` received that were read before it joined (by the process that handed it over).
fn consumed_before(socket: &TcpStream) -> std::io::Result<u64> {
    let received = sockinfo::tcp_info(socket)?.bytes_received;
    Ok(received.saturating_sub(sockinfo::unread(socket)?))
}

impl Drop for Flow {
    fn drop(&mut self) {
        for (token, key) in self.tokens.iter().zip(&self.keys) {
            if let Some(token) = token {
                self.path.watch.forget(*token, *key);
            }
        }
        self.path.joined.fetch_sub(2, Ordering::AcqRel);
        if self.released {
            return;
        }
        let (mut states, mut copied) = (lock(&self.path.states), lock(&self.path.copied));
        for key in &self.keys {
            let _ = states.remove(key);
            let _ = copied.remove(key);
        }
    }
}

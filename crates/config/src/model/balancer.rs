//! The balancer: how it forwards established connections (`[balancer]`), frontends
//! (`[[frontend]]`) listening, backends (`[[backend]]`) with their servers, how a server is chosen
//! and addressed, and the PROXY header sent to it. Their health checks are in `health_check`.

use std::net::SocketAddr;
use std::time::Duration;

use super::health_check::HealthCheck;

/// `[balancer]`: settings of the whole balancer, beside its frontends and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balancer {
    /// How the bytes of an established connection go from one side to the other.
    pub forwarding: Forwarding,
    /// How long a connection is relayed in user space before it joins the kernel path (`0s`: at
    /// once). Joining costs a few dozen system calls: a short connection (a request, a health
    /// probe) would pay more for it than it saves.
    pub kernel_after: Duration,
}

/// The default `kernel_after`.
pub const KERNEL_AFTER: Duration = Duration::from_secs(1);

impl Default for Balancer {
    fn default() -> Self {
        Self { forwarding: Forwarding::default(), kernel_after: KERNEL_AFTER }
    }
}

/// How the bytes of an established (proxied) connection are forwarded between the client and
/// the server. Accepting, choosing a server, connecting, the PROXY header and the connection log
/// are halo's in every mode. The default is `Auto` (docs/config.md tells the defect that made it
/// `User` for a while, and how it was mended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// In the kernel when this host allows it: once established, a flow is forwarded by a BPF
    /// sk_skb program on a SOCKHASH map, without waking halo. When BPF is unavailable here
    /// (capabilities, kernel), halo falls back to user space and logs why, once.
    #[default]
    Auto,
    /// As `Auto`, but halo refuses to start when BPF is unavailable, rather than fall back.
    Kernel,
    /// Every byte through halo's user-space relay (splice), never BPF.
    User,
}

/// A listening side of the balancer.
#[derive(Debug, Clone, PartialEq)]
pub struct Frontend {
    /// Name in logs and status.
    pub name: String,
    /// Addresses to listen on. IPv6 listeners are IPv6-only, so `0.0.0.0:p` and `[::]:p` coexist.
    pub binds: Vec<SocketAddr>,
    /// The backend connections go to.
    pub backend: String,
    /// Connections served at once; more wait in the queue.
    pub max_connections: u32,
    /// How long an excess connection may wait for a slot before it is closed.
    pub queue_timeout: Duration,
    /// How long a new connection may stay silent before it is closed, unserved (TLS clients
    /// speak first); zero waits for nothing, for protocols where the server speaks first.
    pub first_byte_timeout: Duration,
    /// The client networks accepted; empty: every client. Others are closed at accept.
    pub allow: Vec<ipnet::IpNet>,
}

/// A pool of servers.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// Name referenced by frontends.
    pub name: String,
    /// How a server is chosen.
    pub balance: Balance,
    /// The servers.
    pub servers: Vec<Server>,
    /// Active health check of every server.
    pub health: HealthCheck,
    /// Connect attempts to the same server after a failure, before redispatching.
    pub retries: u32,
    /// After the retries, try another healthy server.
    pub redispatch: bool,
    /// Limit for establishing a connection to a server.
    pub connect_timeout: Duration,
    /// A connection with no traffic either way for this long is closed.
    ///
    /// The API server streams: `kubectl logs -f`, `exec`, `port-forward` and every watch hold a
    /// connection open that may be silent for many minutes (watches last 30–60 min by default).
    /// The guide's 20 s client/server timeouts cut them, so clients see resets and re-list;
    /// halo's default is one hour.
    pub idle_timeout: Duration,
    /// How long connections to a removed server (reload) or of a stopping halo may finish.
    pub drain_timeout: Duration,
    /// How often servers given by name are resolved again.
    pub resolve_interval: Duration,
    /// The family used when a name has records of both.
    pub resolve_prefer: AddressFamily,
    /// A PROXY protocol header sent to the server before the client's bytes, so that a server
    /// behind halo sees the client's address (haproxy's `send-proxy`). Off by default: the
    /// Kubernetes API server does not accept it; services such as ingress controllers do.
    pub send_proxy: Option<ProxyProtocol>,
}

/// PROXY protocol version (haproxy's specification, used by haproxy, nginx, Envoy, Traefik).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header: `PROXY TCP4 client server cport sport\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// Server selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// Fewest current connections (weighted).
    LeastConn,
    /// The first healthy server in order.
    First,
}

/// One server of a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Name in logs and status.
    pub name: String,
    /// Where the server listens: an IP address, or a name the system resolver turns into one
    /// (see [`ServerAddress`]).
    pub address: ServerAddress,
    /// Relative share of connections, 1..=256.
    pub weight: u32,
    /// Used only when no non-backup server is healthy.
    pub backup: bool,
    /// Configured but never sent traffic (maintenance).
    pub disabled: bool,
}

/// A server's address as written: `ip:port`, or `name:port`.
///
/// A name is resolved through the system resolver (getaddrinfo: `/etc/hosts`, nsswitch, DNS) at
/// start and every `resolve_interval` of its backend. A name that has never resolved leaves the
/// server DOWN (reason `DNS: ...`); a later failure keeps the last address, so that a DNS outage
/// never takes a server down. Of several records the first of the backend's `resolve_prefer`
/// family is used, the other family only when the preferred one has none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    /// A fixed address.
    Ip(SocketAddr),
    /// A name resolved at run time.
    Name {
        /// The host name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl ServerAddress {
    /// The fixed address, when it is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Self::Ip(addr) => Some(*addr),
            Self::Name { .. } => None,
        }
    }

    /// The host name, when it is one.
    pub fn host_name(&self) -> Option<&str> {
        match self {
            Self::Ip(_) => None,
            Self::Name { host, .. } => Some(host),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            Self::Ip(addr) => addr.port(),
            Self::Name { port, .. } => *port,
        }
    }
}

impl From<SocketAddr> for ServerAddress {
    fn from(addr: SocketAddr) -> Self {
        Self::Ip(addr)
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(addr) => addr.fmt(f),
            Self::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// An address family, for choosing among a name's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    /// IPv4 (the default: most clusters' API servers listen on IPv4).
    #[default]
    Ipv4,
    /// IPv6.
    Ipv6,
}

//! The typed configuration: what `halo.toml` means once validated. Every consumer (daemon,
//! `halo check`, importers, renderers) works from these types and never from raw TOML.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};
use ipnet::IpNet;

/// The whole configuration of one halo host.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This host.
    pub node: Node,
    /// The status and metrics endpoint.
    pub status: Status,
    /// Logging.
    pub log: Log,
    /// VRRP instances, each floating one set of virtual addresses.
    pub vrrp: Vec<VrrpInstance>,
    /// Health inputs that adjust VRRP priority.
    pub trackers: Vec<Tracker>,
    /// Listening sides of the balancer.
    pub frontends: Vec<Frontend>,
    /// Server pools the frontends send connections to.
    pub backends: Vec<Backend>,
    /// VRRP instances that change state together.
    pub sync_groups: Vec<SyncGroup>,
    /// Addresses announced by BGP through FRR while their trackers pass (beside, or instead of,
    /// VRRP): active-active across routed networks.
    pub announce: Vec<Announce>,
    /// This host's BGP speaker (FRR) as `halo render frr` writes it and `halo host check`
    /// verifies it; halo itself never speaks BGP.
    pub bgp: Option<Bgp>,
}

/// This host's identity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// Name in logs and status; the host name when unset.
    pub name: Option<String>,
    /// Interface used by VRRP instances that do not name their own.
    pub interface: Option<String>,
    /// The user tracker scripts and notify hooks run as (keepalived's `script_user`); root when
    /// unset. A command that anyone else could modify (the file or a directory above it) is
    /// refused, as keepalived's `enable_script_security` does.
    pub script_user: Option<String>,
    /// Threads of the daemon's runtime (the balancer, checks, VRRP); one per available core
    /// when unset.
    pub worker_threads: Option<u32>,
}

/// Where halo reports its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Address of the HTTP endpoint (`/status`, `/metrics`, `/healthz`).
    pub listen: SocketAddr,
    /// File holding a bearer token the endpoint requires; none means no token.
    pub token_file: Option<PathBuf>,
    /// A unix socket serving the same endpoint as well (mode 0600, for local tools that should
    /// not need a TCP port or for hosts with many network namespaces); none by default.
    pub socket: Option<PathBuf>,
}

impl Status {
    /// The bearer token from `token_file` (trimmed), when there is one.
    pub fn token(&self) -> std::io::Result<Option<String>> {
        self.token_file.as_ref().map(|file| std::fs::read_to_string(file).map(|t| t.trim().to_string())).transpose()
    }
}

/// The status endpoint's default address: loopback only, so that nothing is exposed by default.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:9470";

impl Default for Status {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9470)), token_file: None, socket: None }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Log {
    /// The most verbose level written.
    pub level: LogLevel,
    /// Line format.
    pub format: LogFormat,
    /// One line per proxied connection when it ends (haproxy's `option tcplog`): client,
    /// frontend, server, waits, bytes each way, duration, how it ended. Rate-limited: beyond
    /// [`CONNECTION_LOG_RATE`] lines a second the rest are counted, and the count is logged.
    pub connections: bool,
}

/// Connection-log lines written per second at most; the excess is counted, never queued.
pub const CONNECTION_LOG_RATE: u32 = 1000;

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// State changes (the default): one line each.
    #[default]
    Info,
    /// Decisions and their inputs.
    Debug,
    /// Every packet and probe.
    Trace,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable `key=value` lines (journald-friendly).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One VRRP virtual router on one interface.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpInstance {
    /// Name in logs, status and notify hooks.
    pub name: String,
    /// Interface the adverts go out on and the addresses are added to.
    pub interface: String,
    /// Virtual router id, shared by all routers of this instance.
    pub virtual_router_id: Vrid,
    /// Base priority before tracker weights.
    pub priority: Priority,
    /// Protocol version.
    pub version: Version,
    /// How often the master advertises.
    pub advert_interval: AdvertInterval,
    /// Whether a higher-priority backup takes over from a live master.
    pub preempt: bool,
    /// How long a higher-priority router waits after start before preempting.
    pub preempt_delay: Duration,
    /// The state asked for at start (see [`InitialState`]).
    pub initial_state: InitialState,
    /// The floating addresses, all of one family, with their prefix lengths.
    pub virtual_addresses: Vec<IpNet>,
    /// Addresses held with the virtual addresses while master but not listed in adverts
    /// (keepalived's `virtual_ipaddress_excluded`), of either family; for peers that compare
    /// address lists, and for more addresses than an advert carries.
    pub excluded_addresses: Vec<IpNet>,
    /// Version 2 PASS password (clear text on the wire); `None` for no authentication.
    pub auth_password: Option<String>,
    /// Unicast mode: this router's source address; `None` uses the interface's primary address.
    pub unicast_source: Option<IpAddr>,
    /// Unicast mode: the other routers; empty means multicast.
    pub unicast_peers: Vec<IpAddr>,
    /// Gratuitous ARP / unsolicited neighbour advertisement schedule.
    pub gratuitous: Gratuitous,
    /// VRRPv3-over-IPv4 checksum coverage.
    pub checksum: ChecksumMode,
    /// Use the virtual MAC 00-00-5E-00-01-{VRID} on a macvlan instead of the interface's MAC.
    pub virtual_mac: bool,
    /// Accept packets addressed to the virtual addresses while master (needed by the balancer).
    pub accept: bool,
    /// Names of the trackers that adjust this instance's priority.
    pub track: Vec<String>,
    /// Commands run on state changes.
    pub notify: Notify,
}

/// What an instance does at start. Like keepalived, halo never claims mastership without the
/// protocol's consent: `Master` only shortens the first wait, it does not skip the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialState {
    /// Start as backup and wait for the master-down timer (the RFC's behaviour).
    #[default]
    Backup,
    /// Ask to become master as soon as the protocol allows.
    Master,
}

pub use halo_vrrp::ChecksumMode;

/// Gratuitous ARP / unsolicited NA sending when becoming master.
#[derive(Debug, Clone, PartialEq)]
pub struct Gratuitous {
    /// Pause before the second burst after becoming master.
    pub delay: Duration,
    /// Packets per burst.
    pub repeat: u32,
    /// Period of refresh bursts while master; `None` for none.
    pub refresh: Option<Duration>,
    /// Packets per refresh burst.
    pub refresh_repeat: u32,
}

impl Default for Gratuitous {
    fn default() -> Self {
        Self { delay: Duration::from_secs(5), repeat: 5, refresh: None, refresh_repeat: 1 }
    }
}

/// Commands run on state changes, each as an argument vector (no shell).
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    /// Run on becoming master.
    pub master: Option<Vec<String>>,
    /// Run on becoming backup.
    pub backup: Option<Vec<String>>,
    /// Run on entering fault.
    pub fault: Option<Vec<String>>,
    /// Run when the instance stops.
    pub stop: Option<Vec<String>>,
    /// Run on every change, with keepalived's `INSTANCE <name> <state> <priority>` appended
    /// (state `MASTER`, `BACKUP`, `FAULT` or `STOP`).
    pub change: Option<Vec<String>>,
    /// A hook still running after this is killed (and counted as failed).
    pub timeout: Duration,
}

impl Default for Notify {
    fn default() -> Self {
        Self { master: None, backup: None, fault: None, stop: None, change: None, timeout: Duration::from_secs(10) }
    }
}

/// A health input that changes VRRP priority (or puts an instance into fault).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    /// Name referenced by `vrrp.track`.
    pub name: String,
    /// keepalived's semantics: negative applies after `fall` failures, positive after `rise`
    /// successes; `None` puts the instance into FAULT while the tracker fails.
    pub weight: Option<i32>,
    /// Consecutive failures before the tracker counts as failed.
    pub fall: u32,
    /// Consecutive successes before it counts as good again.
    pub rise: u32,
    /// What is checked.
    pub kind: TrackerKind,
}

/// What a tracker checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackerKind {
    /// The local balancer: the frontend is listening and enough of its servers are healthy.
    Balancer {
        /// The frontend whose health is tracked.
        frontend: String,
        /// Servers of its backend that must be healthy.
        min_healthy: u32,
        /// How often it is evaluated.
        interval: Duration,
    },
    /// An external command (like keepalived's vrrp_script): exit 0 is success.
    Script {
        /// Argument vector, run without a shell.
        command: Vec<String>,
        /// Period between runs.
        interval: Duration,
        /// A run still going after this is killed and counts as failed.
        timeout: Duration,
    },
    /// A network interface's link state.
    Interface {
        /// The interface.
        interface: String,
    },
    /// A number read from a file, multiplied by the weight (keepalived's track_file).
    File {
        /// The file.
        path: PathBuf,
    },
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

/// An active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: CheckKind,
    /// HTTP path for `http` and `https` checks.
    pub path: String,
    /// HTTP status a healthy server answers.
    pub expect_status: u16,
    /// How the server's certificate is verified (`tls` and `https`).
    pub verify: TlsVerify,
    /// Client certificate for clusters with anonymous auth off.
    pub client_cert: Option<ClientCert>,
    /// Period between probes of a stable server.
    pub interval: Duration,
    /// Period while a server is changing state (between its first opposite result and the flip).
    pub fast_interval: Duration,
    /// A probe not done after this fails.
    pub timeout: Duration,
    /// Consecutive failures that mark a server down.
    pub fall: u32,
    /// Consecutive successes that mark it up.
    pub rise: u32,
}

/// Kind of health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// No probe: every enabled server takes traffic (haproxy's `server` line without `check`),
    /// for services a probe would disturb. A failed connect still goes to the next server.
    None,
    /// TCP connect.
    Tcp,
    /// Plain HTTP: `GET <path>`, expecting `expect_status`.
    Http,
    /// TCP connect and a full TLS handshake.
    Tls,
    /// TLS, then `GET <path>`, expecting `expect_status`.
    Https,
}

/// Server certificate verification for checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsVerify {
    /// Accept any certificate. The probe then proves liveness, not identity; proxied traffic is
    /// unaffected (TLS runs end to end between client and API server).
    None,
    /// Verify against a CA bundle (the cluster CA, `/etc/kubernetes/pki/ca.crt`).
    Ca {
        /// PEM bundle.
        ca_file: PathBuf,
        /// Name expected in the certificate; when unset, the server's name if it is given by
        /// name, its IP address otherwise.
        server_name: Option<String>,
    },
}

/// A client certificate and its key, PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

impl Config {
    /// The backend of that name.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The frontend of that name.
    pub fn frontend(&self, name: &str) -> Option<&Frontend> {
        self.frontends.iter().find(|f| f.name == name)
    }

    /// The tracker of that name.
    pub fn tracker(&self, name: &str) -> Option<&Tracker> {
        self.trackers.iter().find(|t| t.name == name)
    }
}

/// A sync group (keepalived's `vrrp_sync_group`): VRRP instances of this host that change state
/// together. One member in FAULT takes every member to FAULT until none has a fault of its own;
/// the members become master only when every one of them may (none accepts a live master), and
/// all at once; one losing mastership to a higher priority takes the others to backup. The
/// rules and their keepalived sources are in `halo_vrrp::sync`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncGroup {
    /// Name in logs, status and the group's notify hooks.
    pub name: String,
    /// The member instances, by name; each instance belongs to one group at most.
    pub instances: Vec<String>,
    /// Trackers applied to every member, weights included (keepalived's `track_script`,
    /// `track_interface` and `track_file` of a sync group).
    pub track: Vec<String>,
    /// Whether the members' own weighted trackers are allowed (keepalived's
    /// `sync_group_tracking_weight`). Off, a weighted tracker in a member's `track` is refused:
    /// a weight moving one member alone cannot move the group (the peer's group still sees a
    /// live master on the other members), so the priorities would drift apart for nothing.
    pub tracking_weight: bool,
    /// Commands run when the group changes state: `master`, `backup`, `fault`, `stop`, and
    /// `change` with keepalived's `GROUP <name> <state> 0` appended.
    pub notify: Notify,
}

impl Config {
    /// The sync group an instance belongs to, if any.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroup> {
        self.sync_groups.iter().find(|g| g.instances.iter().any(|i| i == instance))
    }
}

/// An address this host announces by BGP (through FRR) while every tracker it lists passes.
///
/// halo installs a `local` route for the address at start, so the host accepts its packets
/// whatever is announced; it announces by adding the address to `interface` (with the VRRP
/// addresses' short lifetime, refreshed, and held by the guard), which FRR sees as a connected
/// route and redistributes through the route-map `halo render frr` writes; it withdraws by
/// removing the address. A killed halo's guard removes it at once, a hung halo's expires; a
/// clean stop withdraws first and then drains (connections keep working over the local route).
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    /// Name in logs and status.
    pub name: String,
    /// The host route announced: a /32 or a /128.
    pub address: IpNet,
    /// Where the address is added when announced (`lo` by default).
    pub interface: String,
    /// Trackers that must all pass for the address to be announced (weights do not matter here).
    pub track: Vec<String>,
}

/// The local BGP speaker's settings, for `halo render frr` and `halo host check`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bgp {
    /// This host's autonomous system number.
    pub asn: u32,
    /// The BGP router id; FRR chooses one when unset.
    pub router_id: Option<std::net::Ipv4Addr>,
    /// The routers the addresses are announced to.
    pub neighbors: Vec<BgpNeighbor>,
}

/// One BGP neighbour (an upstream router).
#[derive(Debug, Clone, PartialEq)]
pub struct BgpNeighbor {
    /// Its address.
    pub address: IpAddr,
    /// Its autonomous system number.
    pub asn: u32,
    /// BFD on the session (100 ms x 3): a dead balancer is noticed in 300 ms, not in the
    /// BGP hold time.
    pub bfd: bool,
}

impl Config {
    /// The announcement of that name.
    pub fn announcement(&self, name: &str) -> Option<&Announce> {
        self.announce.iter().find(|a| a.name == name)
    }
}

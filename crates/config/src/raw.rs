//! The raw form of `halo.toml`: serde structs that mirror the file key for key, every value
//! still carrying its byte span so that validation can point at it. Nothing here is checked
//! beyond TOML types; `validate` turns these into the typed model.

use serde::Deserialize;
use toml::Spanned;

/// A string value with its place in the file.
pub type Text = Spanned<String>;
/// An integer with its place (kept wide so that range errors are ours, with a location).
pub type Int = Spanned<i64>;
/// A boolean with its place.
pub type Flag = Spanned<bool>;

/// `[node]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Host name override.
    pub name: Option<Text>,
    /// Default interface for VRRP instances.
    pub interface: Option<Text>,
    /// The user tracker scripts and notify hooks run as.
    pub script_user: Option<Text>,
    /// Threads of the daemon's runtime.
    pub worker_threads: Option<Int>,
    /// Where state that outlives a restart is kept.
    pub state_directory: Option<Text>,
}

/// `[status]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStatus {
    /// `ip:port` of the endpoint.
    pub listen: Option<Text>,
    /// Bearer token file.
    pub token_file: Option<Text>,
    /// Unix socket path served as well.
    pub socket: Option<Text>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// error | warn | info | debug | trace
    pub level: Option<Text>,
    /// text | json
    pub format: Option<Text>,
    /// One line per proxied connection.
    pub connections: Option<Flag>,
    /// stderr | syslog
    pub target: Option<Text>,
    /// syslog: daemon | local0..local7
    pub facility: Option<Text>,
    /// syslog: the socket.
    pub syslog_socket: Option<Text>,
}

/// `[balancer]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancer {
    /// auto | kernel | user
    pub forwarding: Option<Text>,
    /// A duration: user space first, then the kernel path.
    pub kernel_after: Option<Text>,
}

/// `[[vrrp]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrp {
    /// Instance name.
    pub name: Text,
    /// Interface; `node.interface` when absent.
    pub interface: Option<Text>,
    /// 1..=255
    pub virtual_router_id: Int,
    /// 1..=255
    pub priority: Int,
    /// 2 or 3
    pub version: Option<Int>,
    /// Duration string.
    pub advert_interval: Option<Text>,
    /// Preempt a lower-priority master.
    pub preempt: Option<Flag>,
    /// Duration string.
    pub preempt_delay: Option<Text>,
    /// backup | master
    pub initial_state: Option<Text>,
    /// Addresses with optional prefix.
    pub virtual_addresses: Spanned<Vec<Text>>,
    /// Held, not advertised.
    pub excluded_addresses: Option<Vec<Text>>,
    /// v2 PASS password.
    pub auth_password: Option<Text>,
    /// Unicast source address.
    pub unicast_source: Option<Text>,
    /// Unicast peers.
    pub unicast_peers: Option<Vec<Text>>,
    /// pseudo-header | as-v2
    pub checksum: Option<Text>,
    /// Virtual MAC on a macvlan.
    pub virtual_mac: Option<Flag>,
    /// Accept mode.
    pub accept: Option<Flag>,
    /// Tracker names.
    pub track: Option<Vec<Text>>,
    /// `[vrrp.gratuitous]`
    pub gratuitous: Option<RawGratuitous>,
    /// `[vrrp.notify]`
    pub notify: Option<RawNotify>,
}

/// `[vrrp.gratuitous]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGratuitous {
    /// Duration string.
    pub delay: Option<Text>,
    /// Packets per burst.
    pub repeat: Option<Int>,
    /// Duration string; "0s" for none.
    pub refresh: Option<Text>,
    /// Packets per refresh burst.
    pub refresh_repeat: Option<Int>,
}

/// `[vrrp.notify]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// argv
    pub master: Option<Spanned<Vec<Text>>>,
    /// argv
    pub backup: Option<Spanned<Vec<Text>>>,
    /// argv
    pub fault: Option<Spanned<Vec<Text>>>,
    /// argv
    pub stop: Option<Spanned<Vec<Text>>>,
    /// argv, instance/state/priority appended
    pub change: Option<Spanned<Vec<Text>>>,
    /// Duration string.
    pub timeout: Option<Text>,
}

/// `[[tracker]]`: one flat table for every kind, so that each key keeps its span; validation
/// says which keys a kind takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracker {
    /// Tracker name.
    pub name: Text,
    /// balancer | script | interface | file
    pub kind: Text,
    /// Priority change; absent means FAULT on failure.
    pub weight: Option<Int>,
    /// Consecutive failures.
    pub fall: Option<Int>,
    /// Consecutive successes.
    pub rise: Option<Int>,
    /// balancer: frontend name.
    pub frontend: Option<Text>,
    /// balancer: healthy servers needed.
    pub min_healthy: Option<Int>,
    /// balancer, script: period.
    pub interval: Option<Text>,
    /// script: argv.
    pub command: Option<Spanned<Vec<Text>>>,
    /// script: kill after.
    pub timeout: Option<Text>,
    /// interface: name.
    pub interface: Option<Text>,
    /// file: path.
    pub path: Option<Text>,
}

/// `[[frontend]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    /// Frontend name.
    pub name: Text,
    /// `ip:port` list.
    pub bind: Spanned<Vec<Text>>,
    /// Backend name.
    pub backend: Text,
    /// Concurrent connections.
    pub max_connections: Option<Int>,
    /// Duration string.
    pub queue_timeout: Option<Text>,
    /// Duration string; "0s" disables it.
    pub first_byte_timeout: Option<Text>,
    /// Client networks accepted (CIDR or address).
    pub allow: Option<Vec<Text>>,
}

/// `[[backend]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    /// Backend name.
    pub name: Text,
    /// roundrobin | leastconn | first
    pub balance: Option<Text>,
    /// Connect retries on one server.
    pub retries: Option<Int>,
    /// Try another server after the retries.
    pub redispatch: Option<Flag>,
    /// Duration string.
    pub connect_timeout: Option<Text>,
    /// Duration string.
    pub idle_timeout: Option<Text>,
    /// Duration string.
    pub drain_timeout: Option<Text>,
    /// Duration string.
    pub resolve_interval: Option<Text>,
    /// ipv4 | ipv6
    pub resolve_prefer: Option<Text>,
    /// v1 | v2
    pub send_proxy: Option<Text>,
    /// `[backend.health]`
    pub health: Option<Spanned<RawHealth>>,
    /// `[[backend.server]]`; none is allowed (a template a tool fills later), with a warning.
    #[serde(default = "no_servers")]
    pub server: Spanned<Vec<Spanned<RawServer>>>,
}

fn no_servers() -> Spanned<Vec<Spanned<RawServer>>> {
    Spanned::new(0..0, Vec::new())
}

/// `[backend.health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// none | tcp | http | tls | https
    pub kind: Option<Text>,
    /// HTTP path.
    pub path: Option<Text>,
    /// HTTP status.
    pub expect_status: Option<Int>,
    /// CA bundle; verification is off without it.
    pub ca_file: Option<Text>,
    /// Name expected in the certificate.
    pub server_name: Option<Text>,
    /// Client certificate file.
    pub client_cert: Option<Text>,
    /// Client key file.
    pub client_key: Option<Text>,
    /// Duration string.
    pub interval: Option<Text>,
    /// Duration string.
    pub fast_interval: Option<Text>,
    /// Duration string.
    pub timeout: Option<Text>,
    /// Consecutive failures.
    pub fall: Option<Int>,
    /// Consecutive successes.
    pub rise: Option<Int>,
}

/// `[[backend.server]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Server name.
    pub name: Text,
    /// `ip:port` or `name:port`
    pub address: Text,
    /// 1..=256
    pub weight: Option<Int>,
    /// Backup server.
    pub backup: Option<Flag>,
    /// Maintenance.
    pub disabled: Option<Flag>,
}

/// The whole file, each section parsed on its own so that problems in one do not hide others.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// `[node]`
    pub node: RawNode,
    /// `[status]`
    pub status: RawStatus,
    /// `[log]`
    pub log: RawLog,
    /// `[balancer]`
    pub balancer: RawBalancer,
    /// `[[vrrp]]`
    pub vrrp: Vec<RawVrrp>,
    /// `[[tracker]]`
    pub tracker: Vec<RawTracker>,
    /// `[[frontend]]`
    pub frontend: Vec<RawFrontend>,
    /// `[[backend]]`
    pub backend: Vec<RawBackend>,
    /// `[[sync_group]]`
    pub sync_group: Vec<RawSyncGroup>,
    /// `[[announce]]`
    pub announce: Vec<RawAnnounce>,
    /// `[bgp]`
    pub bgp: Option<Spanned<RawBgp>>,
}

/// `[[sync_group]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncGroup {
    /// Group name.
    pub name: Text,
    /// Member instance names.
    pub instances: Spanned<Vec<Text>>,
    /// Trackers applied to every member.
    pub track: Option<Vec<Text>>,
    /// Allow the members' own weighted trackers.
    pub tracking_weight: Option<Flag>,
    /// `[sync_group.notify]`
    pub notify: Option<RawNotify>,
}

/// `[[announce]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnnounce {
    /// Name.
    pub name: Text,
    /// Host route.
    pub address: Text,
    /// Interface; `lo` when absent.
    pub interface: Option<Text>,
    /// Tracker names.
    pub track: Option<Vec<Text>>,
}

/// `[bgp]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    /// Local AS.
    pub asn: Int,
    /// Router id.
    pub router_id: Option<Text>,
    /// `[[bgp.neighbor]]`
    #[serde(default)]
    pub neighbor: Vec<RawBgpNeighbor>,
}

/// `[[bgp.neighbor]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgpNeighbor {
    /// Address.
    pub address: Text,
    /// Remote AS.
    pub asn: Int,
    /// BFD on the session.
    pub bfd: Option<Flag>,
}

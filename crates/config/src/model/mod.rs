//! The typed configuration: what `halo.toml` means once validated. Every consumer (daemon,
//! `halo check`, importers, renderers) works from these types and never from raw TOML. Here the
//! whole [`Config`] and its look-ups by name; each part is a module of its own, its types
//! re-exported here.

mod announce;
mod balancer;
mod health_check;
mod host;
mod tracker;
mod vrrp;

use std::time::Duration;

pub use self::announce::{Announce, Bgp, BgpNeighbor};
pub use self::balancer::{
    AddressFamily, Backend, Balance, Balancer, Forwarding, Frontend, KERNEL_AFTER, ProxyProtocol, Server, ServerAddress,
};
pub use self::health_check::{CheckKind, ClientCert, HealthCheck, TlsVerify};
pub use self::host::{
    CONNECTION_LOG_RATE, DEFAULT_STATUS_LISTEN, FACILITIES, Log, LogFormat, LogLevel, LogTarget, Node, SYSLOG_SOCKET, Status,
};
pub use self::tracker::{Tracker, TrackerKind};
pub use self::vrrp::{ChecksumMode, Gratuitous, InitialState, Notify, SyncGroup, VrrpInstance};

/// The longest duration halo.toml accepts, for any key: longer ones are typos
/// (`"300000000000y"`), and bounded durations keep every deadline computed from them in range.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The whole configuration of one halo host.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This host.
    pub node: Node,
    /// The status and metrics endpoint.
    pub status: Status,
    /// Logging.
    pub log: Log,
    /// How the balancer forwards established connections (`[balancer]`).
    pub balancer: Balancer,
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

    /// The sync group an instance belongs to, if any.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroup> {
        self.sync_groups.iter().find(|g| g.instances.iter().any(|i| i == instance))
    }

    /// The announcement of that name.
    pub fn announcement(&self, name: &str) -> Option<&Announce> {
        self.announce.iter().find(|a| a.name == name)
    }
}

//! BGP announcements (`[[announce]]`) and the local BGP speaker they go through (`[bgp]`).

use std::net::IpAddr;

use ipnet::IpNet;

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

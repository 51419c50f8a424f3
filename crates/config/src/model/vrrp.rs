//! The VRRP part: an instance (`[[vrrp]]`) with its start state, gratuitous ARP / NA schedule
//! and notify hooks, and the sync groups that make instances change state together.

use std::net::IpAddr;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};
use ipnet::IpNet;

/// VRRPv3-over-IPv4 checksum coverage, as the protocol crate defines it.
pub use halo_vrrp::ChecksumMode;

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

//! What the running daemon knows and publishes: the VRRP instances', sync groups' and BGP
//! announcements' states, the balancer's frontends, the outcomes of the last reload and upgrade,
//! and whether the daemon is failing. Written by the VRRP driver, the sync groups, the
//! announcer and the run loop; read by the status endpoint and its metrics. Every lock is taken
//! for one copy, never across an await.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use halo_lb::runtime::FrontendRuntime;
use serde::Serialize;

/// What one VRRP instance publishes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceStatus {
    /// INIT, BACKUP, MASTER or FAULT.
    pub state: String,
    /// Effective priority.
    pub priority: u8,
    /// Interface.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// Why the last transition happened, and when (seconds since the Unix epoch).
    pub last_change: String,
    /// Time of the last transition.
    pub last_change_unix: u64,
    /// Adverts sent.
    pub adverts_sent: u64,
    /// Adverts accepted for this router (of its VRID and version, authenticated).
    pub adverts_received: u64,
    /// Accepted adverts whose address list differs from ours (acted upon all the same).
    pub address_mismatch: u64,
    /// VIP additions and refreshes the kernel refused.
    pub vip_refresh_failures: u64,
    /// Packets dropped or ignored, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Notify hooks that failed.
    pub hook_failures: u64,
    /// The last notify hook: what ran, for which state, how it ended, when (empty: none yet).
    pub last_hook: String,
    /// The sync group the instance belongs to, if any.
    pub sync_group: Option<String>,
}

/// What one sync group publishes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    /// INIT, BACKUP, MASTER or FAULT: the state its members share.
    pub state: String,
    /// Its member instances.
    pub instances: Vec<String>,
    /// The member whose event last moved the group ("start" before any).
    pub last_change: String,
    /// Time of the last change (seconds since the Unix epoch).
    pub last_change_unix: u64,
    /// The group's notify hooks that failed.
    pub hook_failures: u64,
    /// The group's last notify hook (empty: none yet).
    pub last_hook: String,
}

/// Everything the endpoint reads, shared with the daemon.
#[derive(Default)]
pub struct Shared {
    /// The balancer's frontends (each leads to its backend), replaced on reload.
    pub frontends: RwLock<Vec<Arc<FrontendRuntime>>>,
    /// VRRP instances by name.
    pub vrrp: Mutex<BTreeMap<String, InstanceStatus>>,
    /// Sync groups by name.
    pub sync_groups: Mutex<BTreeMap<String, GroupStatus>>,
    /// BGP announcements by name.
    pub announce: Mutex<BTreeMap<String, AnnounceStatus>>,
    /// Set when a part of the daemon failed: /healthz answers 503 with it until halo exits.
    failure: Mutex<Option<String>>,
    /// The outcome of the last reload, for `halo reload` to confirm.
    reload: Mutex<Option<ReloadJson>>,
    /// Which generation of the daemon answers (set at start).
    generation: Mutex<Option<super::generation::Generation>>,
    /// The outcome of the last upgrade this process tried, for `halo upgrade` to confirm.
    upgrade: Mutex<Option<UpgradeJson>>,
    /// Node maintenance (`halo node maintenance`).
    maintenance: std::sync::atomic::AtomicBool,
}

/// The outcome of the last upgrade (SIGUSR2, `halo upgrade`) a daemon tried: a daemon that
/// handed over answers no more, so what it says is a refusal (its successor answers instead).
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeJson {
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Whether the new process took over.
    pub handed_over: bool,
    /// What happened, or why it did not.
    pub message: String,
}

/// The outcome of the last reload (SIGHUP).
#[derive(Debug, Clone, Serialize)]
pub struct ReloadJson {
    /// When it ended, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Whether the new file is in force.
    pub applied: bool,
    /// "applied", or why it was refused.
    pub message: String,
}

impl Shared {
    /// Records whether the node is in maintenance.
    pub fn set_maintenance(&self, on: bool) {
        self.maintenance.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the node is in maintenance.
    pub fn maintenance(&self) -> bool {
        self.maintenance.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records the outcome of a reload.
    pub fn set_reload(&self, applied: bool, message: String) {
        let at_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        *self.reload.lock().unwrap_or_else(PoisonError::into_inner) = Some(ReloadJson { at_unix_ms, applied, message });
    }

    /// Records which generation this process is.
    pub fn set_generation(&self, generation: super::generation::Generation) {
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner) = Some(generation);
    }

    /// Records (or, `None`, clears) the process this one took over from, while it drains.
    pub fn set_previous(&self, previous: Option<super::generation::Previous>) {
        if let Some(generation) = self.generation.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            generation.previous = previous;
        }
    }

    /// Records the outcome of an upgrade.
    pub fn set_upgrade(&self, handed_over: bool, message: String) {
        let at_unix_ms = super::generation::unix_ms();
        *self.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(UpgradeJson { at_unix_ms, handed_over, message });
    }

    /// Marks the daemon as failing (it is about to exit): /healthz says so.
    pub fn fail(&self, why: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    /// Publishes an instance's state.
    pub fn set_instance(&self, name: &str, status: InstanceStatus) {
        self.vrrp.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), status);
    }

    /// Forgets an instance (stopped or removed by a reload).
    pub fn remove_instance(&self, name: &str) {
        self.vrrp.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Publishes a sync group's state.
    pub fn set_group(&self, name: &str, status: GroupStatus) {
        self.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), status);
    }

    /// Forgets a sync group (stopped, or restarted by a reload).
    pub fn remove_group(&self, name: &str) {
        self.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Points at the balancer's current frontends and backends.
    pub fn set_balancer(&self, balancer: &halo_lb::Balancer) {
        *self.frontends.write().unwrap_or_else(PoisonError::into_inner) = balancer.frontends.clone();
    }

    /// Why the daemon is failing, once it is (it is about to exit).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The outcome of the last reload, if there was one.
    pub fn last_reload(&self) -> Option<ReloadJson> {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Which generation this process is (none before it is set at start).
    pub fn generation(&self) -> Option<super::generation::Generation> {
        self.generation.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The outcome of the last upgrade this process tried, if any.
    pub fn last_upgrade(&self) -> Option<UpgradeJson> {
        self.upgrade.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// One announcement as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnnounceStatus {
    /// The address.
    pub address: String,
    /// Whether it is announced now.
    pub announced: bool,
    /// Why: "every tracker passes", "tracker X fails", ...
    pub reason: String,
    /// Since when, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
}

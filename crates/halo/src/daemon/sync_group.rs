//! The sync groups of the running daemon: each group's members share one `halo_vrrp` sync group
//! (the rules are there), behind a lock that their tasks take for one call at a time. A group's
//! change of state is logged once (by the member whose event caused it), published for the
//! status endpoint and runs the group's notify hooks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use halo_config::{SyncGroup as GroupConfig, VrrpInstance};
use halo_vrrp::fsm::{Router, State};
use halo_vrrp::sync::{GroupChange, SyncGroup};
use tokio::sync::Notify;

use super::notify::{HookRecord, keepalived_state};
use super::state::{GroupStatus, Shared};

/// One sync group: its configuration and the state machines of its members.
pub struct Group {
    /// The group as configured (members in member order, trackers, hooks).
    pub config: GroupConfig,
    /// The members' routers, moved together.
    core: Mutex<SyncGroup>,
    /// One per member: wakes its task when the group gave it actions.
    pub(super) kicks: Vec<Notify>,
    /// What the group's hooks did.
    hooks: Arc<HookRecord>,
}

impl Group {
    /// A group of `members` (the configured instances, in the group's member order), published
    /// as INIT until its members run.
    pub fn new(config: GroupConfig, members: &[VrrpInstance], status: &Shared) -> Arc<Self> {
        let routers = members.iter().map(|i| Router::new(super::router_config::router_config(i), unspecified(i))).collect();
        let kicks = members.iter().map(|_| Notify::new()).collect();
        let group = Self { config, core: Mutex::new(SyncGroup::new(routers)), kicks, hooks: Arc::default() };
        group.publish(status, "INIT", "start");
        Arc::new(group)
    }

    /// The member index of an instance.
    pub fn member(&self, instance: &str) -> Option<usize> {
        self.config.instances.iter().position(|i| i == instance)
    }

    /// The shared state machines, for one call.
    pub(super) fn lock(&self) -> MutexGuard<'_, SyncGroup> {
        // The state is consistent between calls: a lock poisoned by a panicking member (which
        // brings the daemon down anyway) is still usable meanwhile.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change of the group's state: one log line, the status, the group's hooks (their tasks).
    pub(super) fn announce(&self, change: GroupChange, status: &Shared) -> Vec<tokio::task::JoinHandle<()>> {
        let member = self.config.instances.get(change.member).map_or("?", String::as_str);
        // keepalived's names; a group that has not run yet is INIT, one that stopped is STOP.
        let from = if change.from == State::Initialize { "INIT" } else { keepalived_state(change.from) };
        let to = keepalived_state(change.to);
        tracing::info!(group = %self.config.name, from = %from, to = %to, member = %member, "sync group changed");
        if change.to == State::Initialize {
            status.remove_group(&self.config.name);
        } else {
            self.publish(status, to, member);
        }
        super::notify::spawn_group(&self.config, change.to, Arc::clone(&self.hooks))
    }

    fn publish(&self, status: &Shared, state: &str, cause: &str) {
        let last_change_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        status.set_group(
            &self.config.name,
            GroupStatus {
                state: state.to_string(),
                instances: self.config.instances.clone(),
                last_change: cause.to_string(),
                last_change_unix,
                hook_failures: self.hooks.failures.load(std::sync::atomic::Ordering::Relaxed),
                last_hook: self.hooks.last(),
            },
        );
    }
}

/// The unspecified address of an instance's family: a placeholder until the member's driver
/// knows its interface's address and joins with its own router.
fn unspecified(instance: &VrrpInstance) -> std::net::IpAddr {
    match instance.virtual_addresses.first().map(|a| a.addr()) {
        Some(std::net::IpAddr::V6(_)) => std::net::IpAddr::from([0u16; 8]),
        _ => std::net::IpAddr::from([0u8; 4]),
    }
}

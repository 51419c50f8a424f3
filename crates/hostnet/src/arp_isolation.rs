//! The ARP settings a virtual-MAC parent needs: as keepalived sets them for `use_vmac`, the
//! parent answers ARP only for addresses on itself (`arp_ignore = 1`) and only where the route
//! to the asker leads (`arp_filter = 1`), so that a VIP on the macvlan is answered with the
//! virtual MAC alone; and its own ARP requests name its own address, never the VIP
//! (`arp_announce = 2`): a reply from the VIP leaves through the parent (the parent's connected
//! route comes first), and without it the parent's request would teach the client the VIP at
//! the parent's MAC (seen in the tests). Counted per parent (several instances may share one)
//! and restored to the values found when the last user goes.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::Result;
use crate::devconf::{self, Ipv4Setting};

/// The keys set on the parent (over netlink: see [`crate::devconf`]), with the value halo needs.
const SETTINGS: [(Ipv4Setting, u32); 3] = [(Ipv4Setting::ArpIgnore, 1), (Ipv4Setting::ArpFilter, 1), (Ipv4Setting::ArpAnnounce, 2)];

/// One parent's users, and the settings found before the first.
struct Parent {
    users: usize,
    found: Vec<(Ipv4Setting, u32)>,
}

/// The parents in use, by interface name.
static PARENTS: Mutex<BTreeMap<String, Parent>> = Mutex::new(BTreeMap::new());

/// The parent's ARP settings held for one virtual-MAC instance; restored on drop by the last.
#[derive(Debug)]
pub struct ArpIsolation {
    interface: String,
}

impl ArpIsolation {
    /// Sets the parent's keys (the first user records what they were).
    pub fn apply(interface: &str) -> Result<Self> {
        let mut parents = PARENTS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(parent) = parents.get_mut(interface) {
            parent.users += 1;
            return Ok(Self { interface: interface.to_string() });
        }
        let mut found = Vec::new();
        for (setting, _) in SETTINGS {
            if let Some(before) = devconf::read(interface, setting)? {
                found.push((setting, before));
            }
        }
        devconf::set(interface, &SETTINGS)?;
        parents.insert(interface.to_string(), Parent { users: 1, found });
        Ok(Self { interface: interface.to_string() })
    }
}

impl Drop for ArpIsolation {
    fn drop(&mut self) {
        let mut parents = PARENTS.lock().unwrap_or_else(PoisonError::into_inner);
        let last = parents.get_mut(&self.interface).is_some_and(|parent| {
            parent.users -= 1;
            parent.users == 0
        });
        if last && let Some(parent) = parents.remove(&self.interface) {
            restore(&self.interface, &parent.found);
        }
    }
}

fn restore(interface: &str, found: &[(Ipv4Setting, u32)]) {
    if let Err(e) = devconf::set(interface, found) {
        tracing::warn!(%interface, error = %e, "could not restore the ARP settings of a virtual-MAC parent");
    }
}

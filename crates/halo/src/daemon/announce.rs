//! Announcements by BGP through FRR (`[[announce]]`): per address, a `local` route so the host
//! accepts its packets whatever is announced, and the address itself on its interface (with the
//! VRRP addresses' kernel lifetime, refreshed, held by the guard) exactly while every tracker it
//! lists passes. FRR redistributes the address as a connected route; removing it withdraws.
//! A killed halo's guard removes the address at once; a hung halo's expires (2 s).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halo_config::Announce;
use halo_hostnet::netlink::Netlink;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::guard::Guard;
use super::status::Shared;
use super::tracker::{Verdict, Verdicts};
use super::vrrp_driver::{VIP_LIFETIME, VIP_REFRESH};

/// How long a stopping halo keeps accepting after its withdrawals, for the routers to send new
/// connections elsewhere before its listeners close.
pub const WITHDRAW_SETTLE: Duration = Duration::from_secs(1);

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

/// The running announcements, by name.
pub struct Announcers {
    running: BTreeMap<String, Running>,
    netlink: Netlink,
    guard: Option<Arc<Guard>>,
    status: Arc<Shared>,
}

struct Running {
    config: Announce,
    stop: watch::Sender<bool>,
    /// `None` once awaited.
    task: Option<JoinHandle<()>>,
}

impl Announcers {
    /// Starts one task per announcement.
    pub fn start(announce: &[Announce], netlink: Netlink, guard: Option<Arc<Guard>>, status: Arc<Shared>, verdicts: &Verdicts) -> Self {
        let mut set = Self { running: BTreeMap::new(), netlink, guard, status };
        for a in announce {
            set.spawn(a, verdicts);
        }
        set
    }

    fn spawn(&mut self, config: &Announce, verdicts: &Verdicts) {
        let (stop, stopped) = watch::channel(false);
        let driver = Driver {
            config: config.clone(),
            netlink: self.netlink.clone(),
            guard: self.guard.clone(),
            status: Arc::clone(&self.status),
            announced: false,
            interface: None,
        };
        let task = tokio::spawn(driver.run(verdicts.clone(), stopped));
        self.running.insert(config.name.clone(), Running { config: config.clone(), stop, task: Some(task) });
    }

    /// A reload: a changed or removed announcement withdraws (and its local route goes); a new
    /// or changed one starts. Unchanged ones go on untouched.
    pub async fn reload(&mut self, announce: &[Announce], verdicts: &Verdicts) {
        let changed: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| !announce.iter().any(|a| &a.name == *name && *a == r.config))
            .map(|(n, _)| n.clone())
            .collect();
        for name in changed {
            if let Some(running) = self.running.remove(&name) {
                finish(running, &self.netlink).await;
                self.status.announce.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
            }
        }
        let new: Vec<&Announce> = announce.iter().filter(|a| !self.running.contains_key(&a.name)).collect();
        for a in new {
            self.spawn(a, verdicts);
        }
    }

    /// A stopping halo: every address withdrawn (the routers send new connections elsewhere);
    /// the local routes stay, so that open connections drain.
    pub async fn withdraw_all(&mut self) -> bool {
        let any = !self.running.is_empty();
        for running in self.running.values() {
            running.stop.send_replace(true);
        }
        for running in self.running.values_mut() {
            if let Some(task) = running.task.take()
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, "an announcement task failed");
            }
        }
        any
    }

    /// The end: the local routes go.
    pub async fn remove_routes(self) {
        for running in self.running.into_values() {
            finish(running, &self.netlink).await;
        }
    }
}

/// Stops an announcement's task (it withdraws) and removes its local route.
async fn finish(running: Running, netlink: &Netlink) {
    running.stop.send_replace(true);
    if let Some(task) = running.task
        && let Err(e) = task.await
    {
        tracing::error!(error = %e, "an announcement task failed");
    }
    if let Ok(link) = netlink.link(&running.config.interface).await
        && let Err(e) = netlink.remove_local_route(link.index, running.config.address.addr()).await
    {
        tracing::warn!(announce = %running.config.name, error = %e, "local route not removed");
    }
}

/// Whether every tracker listed passes (with a settled result), and if not, the first that
/// does not, said for the log and status.
pub fn wanted(track: &[String], verdicts: &BTreeMap<String, Verdict>) -> (bool, String) {
    for name in track {
        match verdicts.get(name) {
            Some(v) if v.settled && v.passing => {}
            Some(v) if v.settled => return (false, format!("tracker {name} fails")),
            _ => return (false, format!("tracker {name} has no result yet")),
        }
    }
    let reason = if track.is_empty() { "no trackers: announced while halo runs" } else { "every tracker passes" };
    (true, reason.to_string())
}

/// One announcement's task.
struct Driver {
    config: Announce,
    netlink: Netlink,
    guard: Option<Arc<Guard>>,
    status: Arc<Shared>,
    announced: bool,
    /// The interface's index, once found.
    interface: Option<u32>,
}

impl Driver {
    async fn run(mut self, mut verdicts: Verdicts, mut stop: watch::Receiver<bool>) {
        let address = self.config.address.addr();
        loop {
            if self.interface.is_none() {
                self.interface = self.prepare(address).await;
            }
            let (want, reason) = wanted(&self.config.track, &verdicts.borrow());
            let want = want && self.interface.is_some();
            let reason = if self.interface.is_none() { format!("interface {} not found", self.config.interface) } else { reason };
            if want != self.announced {
                self.set(want, &reason).await;
            } else if self.announced {
                self.refresh(address).await;
            }
            self.publish(&reason, false);
            tokio::select! {
                _ = verdicts.changed() => {}
                () = tokio::time::sleep(VIP_REFRESH) => {}
                _ = stop.changed() => break,
            }
        }
        if self.announced {
            self.set(false, "halo is stopping").await;
            self.publish("halo is stopping", false);
        }
    }

    /// Finds the interface, installs the local route, and removes the address if an earlier
    /// run left it (this run decides anew whether it is announced).
    async fn prepare(&self, address: IpAddr) -> Option<u32> {
        let link = match self.netlink.link(&self.config.interface).await {
            Ok(link) => link,
            Err(e) => {
                tracing::error!(announce = %self.config.name, interface = %self.config.interface, error = %e, "cannot announce: no such interface");
                return None;
            }
        };
        if let Err(e) = self.netlink.add_local_route(link.index, address).await {
            tracing::error!(announce = %self.config.name, error = %e, "local route not added: this host may not accept the address's packets");
        }
        if let Ok(true) = self.netlink.remove_address(link.index, address).await {
            tracing::warn!(announce = %self.config.name, %address, "removed an address left by an earlier run");
        }
        Some(link.index)
    }

    /// Announces (adds the address) or withdraws (removes it); one log line.
    async fn set(&mut self, announce: bool, reason: &str) {
        let Some(index) = self.interface else { return };
        let (address, prefix) = (self.config.address.addr(), self.config.address.prefix_len());
        let result = if announce {
            self.netlink.add_address(index, address, prefix, Some(VIP_LIFETIME)).await.map(|()| {
                if let Some(guard) = &self.guard {
                    guard.hold(index, address, prefix);
                }
            })
        } else {
            let removed = self.netlink.remove_address(index, address).await.map(drop);
            if let Some(guard) = &self.guard {
                guard.release(index, address);
            }
            removed
        };
        match result {
            Ok(()) => {
                self.announced = announce;
                self.publish(reason, true);
                if announce {
                    tracing::info!(announce = %self.config.name, %address, reason, "announced");
                } else {
                    tracing::warn!(announce = %self.config.name, %address, reason, "withdrawn");
                }
            }
            Err(e) => tracing::error!(announce = %self.config.name, %address, error = %e, "cannot change the announcement"),
        }
    }

    /// Renews the address's lifetime.
    async fn refresh(&self, address: IpAddr) {
        let Some(index) = self.interface else { return };
        if let Err(e) = self.netlink.add_address(index, address, self.config.address.prefix_len(), Some(VIP_LIFETIME)).await {
            tracing::error!(announce = %self.config.name, %address, error = %e, "announced address not refreshed");
        }
    }

    /// The status entry; `since` moves only when the state changed.
    fn publish(&self, reason: &str, changed: bool) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut all = self.status.announce.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = all.get(&self.config.name).filter(|_| !changed).map_or(now, |s| s.since_unix_ms);
        let entry = AnnounceStatus {
            address: self.config.address.to_string(),
            announced: self.announced,
            reason: reason.to_string(),
            since_unix_ms: since,
        };
        all.insert(self.config.name.clone(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(passing: bool, settled: bool) -> Verdict {
        Verdict { passing, settled, value: 0 }
    }

    #[test]
    fn announced_only_while_every_tracker_passes_with_a_result() {
        let track = vec!["a".to_string(), "b".to_string()];
        let mut v = BTreeMap::new();
        v.insert("a".to_string(), verdict(true, true));
        assert_eq!(wanted(&track, &v), (false, "tracker b has no result yet".to_string()));
        v.insert("b".to_string(), verdict(true, false));
        assert!(!wanted(&track, &v).0);
        v.insert("b".to_string(), verdict(false, true));
        assert_eq!(wanted(&track, &v), (false, "tracker b fails".to_string()));
        v.insert("b".to_string(), verdict(true, true));
        assert_eq!(wanted(&track, &v), (true, "every tracker passes".to_string()));
        assert!(wanted(&[], &BTreeMap::new()).0);
    }
}

//! Announcements by BGP through FRR (`[[announce]]`): per address, a `local` route so the host
//! accepts its packets whatever is announced, and the address itself on its interface (with the
//! VRRP addresses' kernel lifetime, refreshed, held by the guard) exactly while every tracker it
//! lists passes. FRR redistributes the address as a connected route; removing it withdraws.
//! A killed halo's guard removes the address at once; a hung halo's expires (2 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use halo_config::{Announce, Tracker, TrackerKind};
use halo_hostnet::netlink::Netlink;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::guard::Guard;
use super::state::{AnnounceStatus, Shared};
use super::tracker::{Verdict, Verdicts};
use super::vip::{self, VIP_REFRESH};

/// How long a stopping halo keeps accepting after its withdrawals, for the routers to send new
/// connections elsewhere before its listeners close.
pub const WITHDRAW_SETTLE: Duration = Duration::from_secs(1);

/// Why an announcement's task ends when `halo upgrade` hands it over: the address stays (the
/// new process keeps announcing it), nothing is withdrawn.
const HANDED_OVER: &str = "handed over to the new process";

/// The running announcements, by name.
pub struct Announcers {
    running: BTreeMap<String, Running>,
    netlink: Netlink,
    /// The VRRP side's runtime (its own thread), where the announcements run.
    runtime: Handle,
    guard: Option<Arc<Guard>>,
    status: Arc<Shared>,
    /// Node maintenance: every announcement withdrawn while it lasts.
    maintenance: watch::Receiver<bool>,
}

struct Running {
    config: Announce,
    /// Live changes that keep the address and interface (name, trackers).
    updates: watch::Sender<Announce>,
    /// The trackers' settings (a file tracker's value decides, not its verdict).
    trackers: watch::Sender<Vec<Tracker>>,
    /// Set to the reason when the announcement must end.
    stop: watch::Sender<Option<&'static str>>,
    /// `None` once awaited.
    task: Option<JoinHandle<()>>,
}

impl Announcers {
    /// Starts one task per announcement on `runtime` (the VRRP side's, now and at reloads).
    pub fn start(
        announce: &[Announce],
        trackers: &[Tracker],
        netlink: Netlink,
        runtime: &Handle,
        (guard, status, maintenance): (Option<Arc<Guard>>, Arc<Shared>, watch::Receiver<bool>),
        verdicts: &Verdicts,
    ) -> Self {
        Self::start_as(announce, trackers, (netlink, runtime.clone(), guard, status), (verdicts, maintenance), false)
    }

    /// Starts the announcements of a process taking over (`halo upgrade`): an address the
    /// previous process announced is found on its interface and kept (never withdrawn and added
    /// again), then decided by the trackers as usual.
    pub fn start_adopting(
        announce: &[Announce],
        trackers: &[Tracker],
        netlink: Netlink,
        runtime: &Handle,
        (guard, status, maintenance): (Option<Arc<Guard>>, Arc<Shared>, watch::Receiver<bool>),
        verdicts: &Verdicts,
    ) -> Self {
        Self::start_as(announce, trackers, (netlink, runtime.clone(), guard, status), (verdicts, maintenance), true)
    }

    fn start_as(
        announce: &[Announce],
        trackers: &[Tracker],
        (netlink, runtime, guard, status): (Netlink, Handle, Option<Arc<Guard>>, Arc<Shared>),
        (verdicts, maintenance): (&Verdicts, watch::Receiver<bool>),
        adopting: bool,
    ) -> Self {
        let mut set = Self { running: BTreeMap::new(), netlink, runtime, guard, status, maintenance };
        for a in announce {
            set.spawn(a, trackers, verdicts, adopting);
        }
        set
    }

    /// Hands every announcement over to a new process (`halo upgrade`): the tasks end, the
    /// addresses and local routes stay as they are.
    pub async fn hand_over(&mut self) {
        for running in std::mem::take(&mut self.running).into_values() {
            running.stop.send_replace(Some(HANDED_OVER));
            if let Some(task) = running.task
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, "an announcement task failed");
            }
        }
    }

    /// Takes the announcements back after a new process that took them over ended before it
    /// said it served (`halo upgrade`): as a process taking over, nothing withdrawn first.
    pub fn resume(&mut self, announce: &[Announce], trackers: &[Tracker], verdicts: &Verdicts) {
        for a in announce {
            self.spawn(a, trackers, verdicts, true);
        }
    }

    fn spawn(&mut self, config: &Announce, trackers: &[Tracker], verdicts: &Verdicts, adopting: bool) {
        let (stop, stopped) = watch::channel(None);
        let (updates, updated) = watch::channel(config.clone());
        let (tracker_updates, trackers_updated) = watch::channel(trackers.to_vec());
        let driver = Driver {
            config: config.clone(),
            netlink: self.netlink.clone(),
            guard: self.guard.clone(),
            status: Arc::clone(&self.status),
            announced: false,
            interface: None,
            missing_logged: false,
            adopting,
        };
        let task = self.runtime.spawn(driver.run(
            Inputs { verdicts: verdicts.clone(), config: updated, trackers: trackers_updated, maintenance: self.maintenance.clone() },
            stopped,
        ));
        let running = Running { config: config.clone(), updates, trackers: tracker_updates, stop, task: Some(task) };
        self.running.insert(config.name.clone(), running);
    }

    /// A reload. An announcement that keeps its address and interface takes its new name and
    /// trackers live (no withdrawal, so the routers rehash nothing); one whose address or
    /// interface changed, or that is gone, withdraws and its local route goes; new ones start.
    pub async fn reload(&mut self, announce: &[Announce], trackers: &[Tracker], verdicts: &Verdicts) {
        let same_place = |a: &Announce, b: &Announce| a.address == b.address && a.interface == b.interface;
        let old: Vec<Running> = std::mem::take(&mut self.running).into_values().collect();
        let mut kept = BTreeMap::new();
        for running in old {
            match announce.iter().find(|a| same_place(a, &running.config)) {
                Some(new) => {
                    running.updates.send_replace(new.clone());
                    running.trackers.send_replace(trackers.to_vec());
                    if new.name != running.config.name {
                        self.status.announce.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&running.config.name);
                    }
                    kept.insert(new.name.clone(), Running { config: new.clone(), ..running });
                }
                None => {
                    let name = running.config.name.clone();
                    finish(running, &self.netlink, "removed by a reload").await;
                    self.status.announce.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&name);
                }
            }
        }
        self.running = kept;
        let new: Vec<&Announce> = announce.iter().filter(|a| !self.running.contains_key(&a.name)).collect();
        for a in new {
            self.spawn(a, trackers, verdicts, false);
        }
    }

    /// A stopping halo: every address withdrawn (the routers send new connections elsewhere);
    /// the local routes stay, so that open connections drain. True when something was
    /// announced (the routers then need a moment).
    pub async fn withdraw_all(&mut self) -> bool {
        let any = self.status.announce.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().any(|a| a.announced);
        for running in self.running.values() {
            running.stop.send_replace(Some("halo is stopping"));
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
            finish(running, &self.netlink, "halo is stopping").await;
        }
    }
}

/// Stops an announcement's task (it withdraws, saying `why`) and removes its local route.
async fn finish(running: Running, netlink: &Netlink, why: &'static str) {
    running.stop.send_replace(Some(why));
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

/// Whether every tracker listed passes, and if not, the first that does not, said for the log
/// and status. A tracker without a result yet holds the state: a starting announcement waits
/// for it, an announced one (a reload added the tracker) stays until it decides. A file tracker
/// fails while its file holds a number other than 0 (the maintenance-file habit: VRRP puts an
/// unweighted one into FAULT then).
pub fn wanted(track: &[String], trackers: &[Tracker], verdicts: &BTreeMap<String, Verdict>, announced: bool) -> (bool, String) {
    for name in track {
        let is_file = trackers.iter().any(|t| &t.name == name && matches!(t.kind, TrackerKind::File { .. }));
        match verdicts.get(name) {
            Some(v) if v.settled && is_file && v.value != 0 => return (false, format!("tracker {name} reads {}", v.value)),
            Some(v) if v.settled && v.passing => {}
            Some(v) if v.settled => return (false, format!("tracker {name} fails")),
            _ if announced => {}
            _ => return (false, format!("tracker {name} has no result yet")),
        }
    }
    let reason = if track.is_empty() { "no trackers: announced while halo runs" } else { "every tracker passes" };
    (true, reason.to_string())
}

/// What a driver watches besides its stop signal.
struct Inputs {
    verdicts: Verdicts,
    config: watch::Receiver<Announce>,
    trackers: watch::Receiver<Vec<Tracker>>,
    maintenance: watch::Receiver<bool>,
}

/// One announcement's task.
struct Driver {
    config: Announce,
    netlink: Netlink,
    guard: Option<Arc<Guard>>,
    status: Arc<Shared>,
    announced: bool,
    /// The interface's index, once found (forgotten when it goes away).
    interface: Option<u32>,
    /// A missing interface is logged once, not at every retry.
    missing_logged: bool,
    /// Taking over from a previous process: an address found on the interface is kept.
    adopting: bool,
}

impl Driver {
    async fn run(mut self, mut inputs: Inputs, mut stop: watch::Receiver<Option<&'static str>>) {
        loop {
            self.config = inputs.config.borrow_and_update().clone();
            if self.interface.is_none() {
                self.interface = self.prepare().await;
            }
            let (want, reason) = match self.interface {
                _ if *inputs.maintenance.borrow_and_update() => (false, "node maintenance (halo node maintenance off ends it)".to_string()),
                Some(_) => wanted(&self.config.track, &inputs.trackers.borrow(), &inputs.verdicts.borrow(), self.announced),
                None => (false, format!("interface {} not found", self.config.interface)),
            };
            if want != self.announced {
                self.set(want, &reason).await;
            } else if self.announced {
                self.refresh(&reason).await;
            } else {
                self.publish(&reason, false);
            }
            tokio::select! {
                changed = inputs.verdicts.changed() => if changed.is_err() { break },
                _ = inputs.config.changed() => {}
                _ = inputs.trackers.changed() => {}
                _ = inputs.maintenance.changed() => {}
                () = tokio::time::sleep(VIP_REFRESH) => {}
                _ = stop.changed() => break,
            }
        }
        let why = stop.borrow().unwrap_or("halo is stopping");
        if why == HANDED_OVER {
            tracing::info!(announce = %self.config.name, announced = self.announced, "handed over");
        } else if self.announced {
            self.set(false, why).await;
        }
    }

    /// Finds the interface, removes the address if an earlier run left it (this run decides anew
    /// whether it is announced), and installs the local route.
    async fn prepare(&mut self) -> Option<u32> {
        let address = self.config.address.addr();
        let link = match self.netlink.link(&self.config.interface).await {
            Ok(link) => link,
            Err(e) => {
                if !self.missing_logged {
                    tracing::error!(announce = %self.config.name, interface = %self.config.interface, error = %e, "cannot announce: no such interface");
                    self.missing_logged = true;
                }
                return None;
            }
        };
        self.missing_logged = false;
        if std::mem::take(&mut self.adopting) {
            let held = self.netlink.addresses(link.index).await.is_ok_and(|all| all.iter().any(|(a, _)| *a == address));
            if held {
                self.announced = true;
                if let Some(guard) = &self.guard {
                    guard.hold(link.index, address, self.config.address.prefix_len());
                }
                tracing::info!(announce = %self.config.name, %address, "taken over announced from the previous process");
            }
        } else if let Ok(true) = self.netlink.remove_address(link.index, address).await {
            tracing::warn!(announce = %self.config.name, %address, "removed an address left by an earlier run");
        }
        if let Err(e) = self.netlink.add_local_route(link.index, address).await {
            tracing::error!(announce = %self.config.name, error = %e, "local route not added: this host may not accept the address's packets");
        }
        Some(link.index)
    }

    /// Announces (adds the address) or withdraws (removes it); one log line.
    async fn set(&mut self, announce: bool, reason: &str) {
        let Some(index) = self.interface else { return };
        let (address, prefix) = (self.config.address.addr(), self.config.address.prefix_len());
        let result = if announce {
            vip::hold(&self.netlink, self.guard.as_deref(), index, address, prefix).await.map(drop)
        } else {
            vip::release(&self.netlink, self.guard.as_deref(), index, address).await.map(drop)
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
            Err(e) => {
                tracing::error!(announce = %self.config.name, %address, error = %e, "cannot change the announcement");
                self.publish(&format!("{reason}, but: {e}"), false);
                self.lost_interface().await;
            }
        }
    }

    /// Renews the address's lifetime (and the local route, which goes with a vanished device).
    async fn refresh(&mut self, reason: &str) {
        let Some(index) = self.interface else { return };
        let (address, prefix) = (self.config.address.addr(), self.config.address.prefix_len());
        match self.netlink.add_address(index, address, prefix, Some(vip::VIP_LIFETIME)).await {
            Ok(()) => {
                if let Err(e) = self.netlink.add_local_route(index, address).await {
                    tracing::debug!(announce = %self.config.name, error = %e, "local route not renewed");
                }
                self.publish(reason, false);
            }
            Err(e) => {
                tracing::error!(announce = %self.config.name, %address, error = %e, "announced address not refreshed: looking for the interface again");
                self.lost_interface().await;
            }
        }
    }

    /// The interface went away (or refused the address): nothing is announced until it is
    /// found again.
    async fn lost_interface(&mut self) {
        if let (Some(index), Some(guard)) = (self.interface, &self.guard) {
            guard.release(index, self.config.address.addr());
        }
        if self.announced {
            self.announced = false;
            self.publish("the interface is gone", true);
            tracing::warn!(announce = %self.config.name, address = %self.config.address.addr(), "withdrawn: the interface is gone");
        }
        self.interface = None;
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
        Verdict { passing, settled, value: 0, fresh_from: None }
    }

    #[test]
    fn announced_only_while_every_tracker_passes_with_a_result() {
        let track = vec!["a".to_string(), "b".to_string()];
        let mut v = BTreeMap::new();
        v.insert("a".to_string(), verdict(true, true));
        assert_eq!(wanted(&track, &[], &v, false), (false, "tracker b has no result yet".to_string()));
        v.insert("b".to_string(), verdict(true, false));
        assert!(!wanted(&track, &[], &v, false).0);
        // Already announced, a tracker a reload added holds the state until it decides.
        assert!(wanted(&track, &[], &v, true).0);
        v.insert("b".to_string(), verdict(false, true));
        assert_eq!(wanted(&track, &[], &v, true), (false, "tracker b fails".to_string()));
        v.insert("b".to_string(), verdict(true, true));
        assert_eq!(wanted(&track, &[], &v, false), (true, "every tracker passes".to_string()));
        assert!(wanted(&[], &[], &BTreeMap::new(), false).0);
    }

    #[test]
    fn a_file_tracker_withdraws_while_its_file_holds_a_number() {
        let file = Tracker {
            name: "maintenance".to_string(),
            weight: None,
            fall: 1,
            rise: 1,
            kind: TrackerKind::File { path: "/etc/halo/maintenance".into() },
        };
        let track = vec!["maintenance".to_string()];
        let mut v = BTreeMap::new();
        v.insert("maintenance".to_string(), Verdict { passing: true, settled: true, value: 1, fresh_from: None });
        assert_eq!(wanted(&track, std::slice::from_ref(&file), &v, true), (false, "tracker maintenance reads 1".to_string()));
        v.insert("maintenance".to_string(), Verdict { passing: true, settled: true, value: 0, fresh_from: None });
        assert!(wanted(&track, &[file], &v, false).0);
    }
}

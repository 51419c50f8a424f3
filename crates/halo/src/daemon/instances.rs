//! The running VRRP instances: started, updated in place or restarted on a reload, stopped
//! cleanly; an instance that ends on its own is reported to the run loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use halo_config::{Tracker, VrrpInstance};
use halo_hostnet::netlink::Netlink;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::tracker::TrackerSet;

/// An instance task that ended: which start of which instance, and how.
pub struct Exit {
    /// The instance's name.
    pub name: String,
    /// Which start of it.
    pub generation: u64,
    /// Its outcome.
    pub outcome: anyhow::Result<()>,
}

/// One running VRRP instance and the levers on it.
pub struct Running {
    pub config: VrrpInstance,
    stop: watch::Sender<bool>,
    pub updates: watch::Sender<(VrrpInstance, Vec<Tracker>)>,
    /// Which start of the instance this is: a restarted instance keeps its name, and the exit of
    /// the one it replaced must not be taken for its own.
    pub generation: u64,
    handle: tokio::task::JoinHandle<()>,
}

/// The running VRRP instances, reported to the main loop when one ends on its own.
pub struct Instances {
    pub running: BTreeMap<String, Running>,
    pub netlink: Netlink,
    pub links: halo_hostnet::netlink::LinkStates,
    pub status: Arc<super::status::Shared>,
    pub exits: mpsc::UnboundedSender<Exit>,
    /// The generation the next start gets.
    pub next_generation: u64,
    pub guard: Option<Arc<super::guard::Guard>>,
}

impl Instances {
    /// Starts one instance's task.
    pub fn start(&mut self, instance: &VrrpInstance, trackers: &[Tracker], set: &TrackerSet) {
        let (stop, stopped) = watch::channel(false);
        let (updates, receiver) = watch::channel((instance.clone(), trackers.to_vec()));
        let span = tracing::info_span!("vrrp", instance = %instance.name, vrid = instance.virtual_router_id.get());
        let driver = super::vrrp_driver::run(super::vrrp_driver::Instance {
            config: instance.clone(),
            trackers: trackers.to_vec(),
            verdicts: set.verdicts(),
            shutdown: stopped,
            updates: receiver,
            netlink: self.netlink.clone(),
            links: self.links.clone(),
            status: Arc::clone(&self.status),
            guard: self.guard.clone(),
        });
        let (exits, name, status) = (self.exits.clone(), instance.name.clone(), Arc::clone(&self.status));
        let generation = self.next_generation;
        self.next_generation += 1;
        let handle = tokio::spawn(
            async move {
                // The driver runs as a task of its own, so that a panic in it is an outcome here:
                // the daemon then fails loudly (not ok on /healthz, logged, exit non-zero) instead
                // of serving on without VRRP.
                let outcome = match tokio::spawn(driver.in_current_span()).await {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        let why = panic_message(e);
                        status.fail(format!("VRRP instance {name} failed: {why}"));
                        Err(anyhow::anyhow!("VRRP instance {name} panicked: {why}"))
                    }
                };
                if exits.send(Exit { name, generation, outcome }).is_err() {
                    tracing::debug!("daemon gone before the instance");
                }
            }
            .instrument(span),
        );
        self.running.insert(instance.name.clone(), Running { config: instance.clone(), stop, updates, generation, handle });
    }

    /// Takes the instance out if `exit` is the end of its current start (not of one that a
    /// reload replaced): it ended on its own. Its outcome as an error.
    pub fn ended_on_its_own(&mut self, exit: Exit) -> Option<anyhow::Error> {
        let current = self.running.get(&exit.name).is_some_and(|r| r.generation == exit.generation);
        if !current {
            return None;
        }
        self.running.remove(&exit.name);
        Some(exit.outcome.err().unwrap_or_else(|| anyhow::anyhow!("VRRP instance {} stopped on its own", exit.name)))
    }

    /// Stops one instance cleanly (priority 0, VIPs removed) and waits for it.
    pub async fn stop(&mut self, name: &str) {
        if let Some(running) = self.running.remove(name) {
            running.stop.send_replace(true);
            if let Err(e) = running.handle.await {
                tracing::error!(instance = name, error = %e, "instance task failed");
            }
        }
    }

    /// Stops every instance, masters first handing over.
    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for running in self.running.values() {
            running.stop.send_replace(true);
        }
        for name in names {
            self.stop(&name).await;
        }
    }
}

/// What a task's panic said, as text.
fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(e) => e.to_string(),
    }
}

/// Whether a changed instance must be restarted (what identifies it on the wire or where it
/// runs) rather than updated in place.
pub fn needs_restart(old: &VrrpInstance, new: &VrrpInstance) -> bool {
    let identity = |i: &VrrpInstance| super::vrrp_driver::router_config(i).wire_identity();
    let placement = |i: &VrrpInstance| {
        let family = i.virtual_addresses.first().map(|a| a.addr().is_ipv4());
        (i.interface.clone(), i.unicast_source, i.unicast_peers.clone(), i.checksum, i.virtual_mac, i.accept, family)
    };
    identity(old) != identity(new) || placement(old) != placement(new)
}

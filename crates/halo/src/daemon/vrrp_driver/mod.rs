//! Drives one VRRP instance: the pure state machine of `halo-vrrp` fed with packets from the
//! raw socket, the clock and tracker verdicts; its actions carried out through `halo-hostnet`
//! (adverts, the VIP with a kernel lifetime refreshed while master, gratuitous ARP / NA, notify
//! hooks). A crashed or hung halo loses its VIPs when the lifetime runs out.

use std::collections::BTreeMap;
use std::sync::Arc;

use halo_config::{Tracker, VrrpInstance};
use halo_hostnet::netlink::Netlink;
use tokio::sync::{mpsc, oneshot, watch};

use super::tracker::{Recheck, TRACKER_SETTLE, Verdict};

mod actions;
mod counters;
mod driver;
mod holding;
mod io;
mod machine;
mod receive;
mod stalls;

use actions::publish_waiting;
pub use driver::Frozen;
use driver::{Driver, Inputs, drive, tracked};

use super::state::Shared;
use io::{Io, open, remove_virtual_mac};

use super::sync_group::Group;

/// Everything one instance needs.
pub struct Instance {
    /// Its configuration.
    pub config: VrrpInstance,
    /// All trackers (the instance picks the ones it lists).
    pub trackers: Vec<Tracker>,
    /// Tracker verdicts.
    pub verdicts: watch::Receiver<BTreeMap<String, Verdict>>,
    /// Where it asks its trackers to check again (its link came back).
    pub recheck: Recheck,
    /// Becomes true when halo stops (or a reload replaces the instance).
    pub shutdown: watch::Receiver<bool>,
    /// Live changes from a reload: priority, preemption, addresses, trackers, hooks.
    pub updates: watch::Receiver<(VrrpInstance, Vec<Tracker>)>,
    /// Netlink connection.
    pub netlink: Netlink,
    /// Link states from the kernel's notifications (own interface down means FAULT).
    pub links: halo_hostnet::netlink::LinkStates,
    /// Where the instance publishes its state for the status endpoint.
    pub status: Arc<super::state::Shared>,
    /// Told which VIPs are held, to remove them if halo is killed.
    pub guard: Option<Arc<super::guard::Guard>>,
    /// The sync group the instance is a member of, and its index there.
    pub group: Option<(Arc<Group>, usize)>,
    /// How it starts: afresh, or in the place of the same instance of another process.
    pub start: Start,
    /// Asks the instance to hand itself over (`halo upgrade`): it answers with what it was
    /// and ends without a word.
    pub freeze: mpsc::UnboundedReceiver<oneshot::Sender<Frozen>>,
    /// Node maintenance: on, the instance never is master.
    pub maintenance: watch::Receiver<bool>,
}

/// How an instance starts.
pub enum Start {
    /// As a router that just came up: addresses an earlier run left are removed, the trackers'
    /// first results awaited, then an election.
    Fresh,
    /// In the place of the same instance of another process (`halo upgrade`): nothing is
    /// removed, nothing awaited; the state handed over is taken as it is.
    Adopt(Adoption),
}

/// The steps of an adoption, each told to whoever drives the takeover.
pub struct Adoption {
    /// Told once the instance's sockets are open (dropped: they could not be opened).
    pub opened: oneshot::Sender<()>,
    /// The state to take (dropped: the takeover was abandoned; the instance ends without a word).
    pub handover: oneshot::Receiver<Frozen>,
    /// Told once the first actions of the adopted state are carried out: a master's advert sent,
    /// its VIPs refreshed and its guard armed.
    pub adopted: oneshot::Sender<()>,
}

/// Runs until shutdown; returns after a master has announced priority 0 and removed its VIPs.
pub async fn run(instance: Instance) -> anyhow::Result<()> {
    let Instance {
        config,
        trackers,
        mut verdicts,
        recheck,
        shutdown,
        updates,
        netlink,
        links,
        status,
        guard,
        group,
        start,
        freeze,
        mut maintenance,
    } = instance;
    let io = open(&config, &netlink, guard, &links).await?;
    let Some((adopted, told_adopted)) = begin(start, &io, &config, group.as_ref(), &status, &mut verdicts).await? else {
        return Ok(());
    };
    let current = verdicts.borrow().clone();
    let name = config.name.clone();
    let in_maintenance = *maintenance.borrow_and_update();
    let driver = Driver::start(config, trackers, io, (status, recheck), &current, group, (adopted, in_maintenance));
    super::test_hooks::instance_started(&name);
    drive(driver, told_adopted, Inputs { verdicts, shutdown, updates, links, freeze, maintenance }).await;
    Ok(())
}

/// The first step of a fresh instance (leftover addresses removed, the trackers' first results
/// awaited) or of an adopted one (the handed-over state received): what it takes over, and who
/// waits to hear it did; `None` when the takeover was abandoned before it began.
#[allow(clippy::type_complexity)]
async fn begin(
    start: Start,
    io: &Io,
    config: &VrrpInstance,
    group: Option<&(Arc<Group>, usize)>,
    status: &Shared,
    verdicts: &mut watch::Receiver<BTreeMap<String, Verdict>>,
) -> anyhow::Result<Option<(Option<Frozen>, Option<oneshot::Sender<()>>)>> {
    match start {
        Start::Fresh => {
            if let Err(e) = remove_leftovers(io).await {
                if let Some((vmac, _)) = &io.vmac {
                    remove_virtual_mac(&io.netlink, vmac, io.guard.as_deref()).await;
                }
                return Err(e);
            }
            publish_waiting(status, config, io, group.map(|(g, _)| g.config.name.as_str()));
            settle(&tracked(config, group.map(|(g, _)| g.as_ref())), verdicts).await;
            Ok(Some((None, None)))
        }
        Start::Adopt(adoption) => {
            // A resumed instance has nobody waiting for this step.
            if adoption.opened.send(()).is_err() {
                tracing::debug!("nobody waits for the sockets to open");
            }
            match adoption.handover.await {
                Ok(frozen) => Ok(Some((Some(frozen), Some(adoption.adopted)))),
                // Abandoned before it began: the process is giving the takeover up.
                Err(_) => Ok(None),
            }
        }
    }
}

/// A previous halo killed while master may have left addresses behind: we start as backup, so
/// none of ours belongs on the interface yet.
async fn remove_leftovers(io: &Io) -> anyhow::Result<()> {
    for (address, _) in io.held() {
        if io.remove_vip(*address).await? {
            tracing::warn!(%address, "removed a virtual address left by an earlier run");
        }
    }
    Ok(())
}

/// Waits for the first result of every tracker the instance folds: an instance that started
/// before its trackers know anything would claim (or give away) the VIP on a guess. Bounded: a
/// tracker that never settles is logged.
async fn settle(names: &[String], verdicts: &mut watch::Receiver<BTreeMap<String, Verdict>>) {
    let settle = async {
        let tracked = |all: &BTreeMap<String, Verdict>| names.iter().all(|t| all.get(t).is_none_or(|v| v.settled));
        while !tracked(&verdicts.borrow_and_update()) {
            if verdicts.changed().await.is_err() {
                return;
            }
        }
    };
    if tokio::time::timeout(TRACKER_SETTLE, settle).await.is_err() {
        tracing::warn!(waited = ?TRACKER_SETTLE, "starting before every tracker has a first result");
    }
}

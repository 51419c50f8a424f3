//! The running VRRP instances: started, updated in place or restarted on a reload, stopped
//! cleanly; an instance that ends on its own is reported to the run loop. Members of a sync
//! group share their group; a reload that changes a group, or restarts one of its members,
//! restarts all of them with a new group (the group's state is one for all members).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use halo_config::{Config, Tracker, VrrpInstance};
use halo_hostnet::netlink::Netlink;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use super::sync_group::Group;
use super::tracker::TrackerSet;
use super::vrrp_driver::{Frozen, Start};

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
    /// Asks the instance to hand itself over (`halo upgrade`).
    freeze: mpsc::UnboundedSender<oneshot::Sender<Frozen>>,
    /// Which start of the instance this is: a restarted instance keeps its name, and the exit of
    /// the one it replaced must not be taken for its own.
    pub generation: u64,
    handle: tokio::task::JoinHandle<()>,
}

/// The running VRRP instances, reported to the main loop when one ends on its own.
pub struct Instances {
    pub running: BTreeMap<String, Running>,
    pub netlink: Netlink,
    /// The VRRP side's runtime (its own thread): every instance runs there.
    pub runtime: Handle,
    pub links: halo_hostnet::netlink::LinkStates,
    pub status: Arc<super::state::Shared>,
    pub exits: mpsc::UnboundedSender<Exit>,
    /// The generation the next start gets.
    pub next_generation: u64,
    pub guard: Option<Arc<super::guard::Guard>>,
    /// The sync groups, by name: their members start into them.
    pub groups: BTreeMap<String, Arc<Group>>,
    /// Node maintenance, followed by every instance.
    pub maintenance: watch::Receiver<bool>,
}

impl Instances {
    /// No instance running yet; they will run on `runtime`, `guard` is told what they hold, and
    /// `config`'s sync groups are set up for them to start into.
    pub fn new(
        config: &halo_config::Config,
        netlink: Netlink,
        links: halo_hostnet::netlink::LinkStates,
        runtime: &Handle,
        status: Arc<super::state::Shared>,
        exits: mpsc::UnboundedSender<Exit>,
        (guard, maintenance): (Option<Arc<super::guard::Guard>>, watch::Receiver<bool>),
    ) -> Self {
        let (running, groups, runtime) = (BTreeMap::new(), BTreeMap::new(), runtime.clone());
        let mut instances = Self { running, netlink, runtime, links, status, exits, next_generation: 0, guard, groups, maintenance };
        instances.regroup(config);
        instances
    }

    /// Starts one instance's task.
    pub fn start(&mut self, instance: &VrrpInstance, trackers: &[Tracker], set: &TrackerSet) {
        self.start_as(instance, trackers, set, Start::Fresh);
    }

    /// Starts one instance's task on the VRRP side's runtime, afresh or adopting a state handed
    /// over.
    pub fn start_as(&mut self, instance: &VrrpInstance, trackers: &[Tracker], set: &TrackerSet, start: Start) {
        let (stop, stopped) = watch::channel(false);
        let (freeze, frozen) = mpsc::unbounded_channel();
        let (updates, receiver) = watch::channel((instance.clone(), trackers.to_vec()));
        let span = tracing::info_span!("vrrp", instance = %instance.name, vrid = instance.virtual_router_id.get());
        let group = self.groups.values().find_map(|g| g.member(&instance.name).map(|index| (Arc::clone(g), index)));
        let driver = super::vrrp_driver::run(super::vrrp_driver::Instance {
            config: instance.clone(),
            trackers: trackers.to_vec(),
            verdicts: set.verdicts(),
            recheck: set.rechecker(),
            shutdown: stopped,
            updates: receiver,
            netlink: self.netlink.clone(),
            links: self.links.clone(),
            status: Arc::clone(&self.status),
            guard: self.guard.clone(),
            group,
            start,
            freeze: frozen,
            maintenance: self.maintenance.clone(),
        });
        let driver = async move {
            tracing::info!(thread = %std::thread::current().name().unwrap_or("unnamed"), "VRRP driver running");
            driver.await
        };
        let (exits, name, status) = (self.exits.clone(), instance.name.clone(), Arc::clone(&self.status));
        let generation = self.next_generation;
        self.next_generation += 1;
        let runtime = self.runtime.clone();
        let handle = self.runtime.spawn(
            async move {
                // The driver runs as a task of its own, so that a panic in it is an outcome here:
                // the daemon then fails loudly (not ok on /healthz, logged, exit non-zero) instead
                // of serving on without VRRP.
                let outcome = match runtime.spawn(driver.in_current_span()).await {
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
        self.running.insert(instance.name.clone(), Running { config: instance.clone(), stop, updates, freeze, generation, handle });
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

    /// Hands the instances `names` over (`halo upgrade`): each stops without a word (a master's
    /// last advert goes out, its VIPs stay) and says what it was. All or nothing: when one
    /// cannot, those already stopped are in the error, to be started again in their place.
    pub async fn hand_over(&mut self, names: &[String]) -> Result<Vec<(VrrpInstance, Frozen)>, (String, Vec<(VrrpInstance, Frozen)>)> {
        let mut frozen = Vec::new();
        for name in names {
            let Some(running) = self.running.remove(name) else {
                return Err((format!("instance {name} is not running"), frozen));
            };
            let (reply, answer) = oneshot::channel();
            let asked = running.freeze.send(reply).is_ok();
            let answer = if asked { answer.await.ok() } else { None };
            if let Err(e) = running.handle.await {
                tracing::error!(instance = %name, error = %e, "instance task failed");
            }
            match answer {
                Some(state) => frozen.push((running.config, state)),
                None => return Err((format!("instance {name} ended before it could hand over"), frozen)),
            }
        }
        Ok(frozen)
    }

    /// After a reload stopped what it restarts: a new group for every group of `new` none of
    /// whose members runs any more (new, changed, or restarted), the others kept.
    pub fn regroup(&mut self, new: &Config) {
        self.groups.retain(|name, _| new.sync_groups.iter().any(|g| &g.name == name));
        for group in &new.sync_groups {
            if !group.instances.iter().any(|i| self.running.contains_key(i)) {
                let members: Vec<VrrpInstance> =
                    group.instances.iter().filter_map(|n| new.vrrp.iter().find(|v| &v.name == n).cloned()).collect();
                self.groups.insert(group.name.clone(), Group::new(group.clone(), &members, &self.status));
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

/// The running instances a reload from `current` to `new` restarts: those removed or changed on
/// the wire ([`needs_restart`]), the members (before and after) of every sync group that
/// changed, and, with any of those, every member of its group.
pub fn restarts(current: &Config, new: &Config) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = current
        .vrrp
        .iter()
        .filter(|old| new.vrrp.iter().find(|n| n.name == old.name).is_none_or(|n| needs_restart(old, n)))
        .map(|old| old.name.clone())
        .collect();
    let group_names: BTreeSet<&String> = current.sync_groups.iter().chain(&new.sync_groups).map(|g| &g.name).collect();
    for name in group_names {
        let (before, after) = (current.sync_groups.iter().find(|g| &g.name == name), new.sync_groups.iter().find(|g| &g.name == name));
        if before != after {
            names.extend(before.into_iter().chain(after).flat_map(|g| g.instances.iter().cloned()));
        }
    }
    // A restarted member takes its whole group along (closed under membership, both sides).
    loop {
        let more: BTreeSet<String> = names
            .iter()
            .flat_map(|n| [current.sync_group_of(n), new.sync_group_of(n)])
            .flatten()
            .flat_map(|g| g.instances.iter().cloned())
            .filter(|m| !names.contains(m))
            .collect();
        if more.is_empty() {
            break;
        }
        names.extend(more);
    }
    names.retain(|n| current.vrrp.iter().any(|v| &v.name == n));
    names
}

/// Whether a changed instance must be restarted (what identifies it on the wire or where it
/// runs) rather than updated in place.
pub fn needs_restart(old: &VrrpInstance, new: &VrrpInstance) -> bool {
    let identity = |i: &VrrpInstance| super::router_config::router_config(i).wire_identity();
    let placement = |i: &VrrpInstance| {
        let family = i.virtual_addresses.first().map(|a| a.addr().is_ipv4());
        (i.interface.clone(), i.unicast_source, i.unicast_peers.clone(), i.checksum, i.virtual_mac, i.accept, family)
    };
    identity(old) != identity(new) || placement(old) != placement(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(groups: &str, vi_2_vrid: u8, vi_1_priority: u8) -> Config {
        let instance = |name: &str, vrid: u8, priority: u8| {
            format!(
                "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\npriority = {priority}\nvirtual_addresses = [\"10.0.0.{vrid}/24\"]\n\n"
            )
        };
        let text =
            format!("{}{}{}{groups}", instance("VI_1", 1, vi_1_priority), instance("VI_2", vi_2_vrid, 100), instance("VI_3", 3, 100));
        halo_config::load_str("t.toml", &text).expect("valid").config
    }

    const G12: &str = "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n";

    fn names(set: BTreeSet<String>) -> Vec<String> {
        set.into_iter().collect()
    }

    #[test]
    fn a_live_change_of_a_member_restarts_nothing() {
        assert!(restarts(&config(G12, 2, 100), &config(G12, 2, 150)).is_empty());
    }

    #[test]
    fn a_member_changed_on_the_wire_restarts_its_whole_group_only() {
        assert_eq!(names(restarts(&config(G12, 2, 100), &config(G12, 22, 100))), ["VI_1", "VI_2"]);
    }

    #[test]
    fn a_changed_group_restarts_its_members_before_and_after() {
        let g13 = "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_3\"]\n";
        assert_eq!(names(restarts(&config(G12, 2, 100), &config(g13, 2, 100))), ["VI_1", "VI_2", "VI_3"]);
        assert_eq!(names(restarts(&config("", 2, 100), &config(G12, 2, 100))), ["VI_1", "VI_2"], "a new group");
        assert_eq!(names(restarts(&config(G12, 2, 100), &config("", 2, 100))), ["VI_1", "VI_2"], "a removed group");
        let hooked = format!("{G12}\n[sync_group.notify]\nmaster = [\"/bin/true\"]\n");
        assert_eq!(names(restarts(&config(G12, 2, 100), &config(&hooked, 2, 100))), ["VI_1", "VI_2"], "new hooks");
    }
}

//! Drives one VRRP instance: the pure state machine of `halo-vrrp` fed with packets from the
//! raw socket, the clock and tracker verdicts; its actions carried out through `halo-hostnet`
//! (adverts, the VIP with a kernel lifetime refreshed while master, gratuitous ARP / NA, notify
//! hooks). A crashed or hung halo loses its VIPs when the lifetime runs out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halo_config::{Tracker, VrrpInstance};
use halo_hostnet::netlink::Netlink;
use halo_vrrp::fsm::{Action, GratuitousSchedule, Handover, Reason, Router, RouterConfig, State};
use halo_vrrp::packet::{self, Auth};
use tokio::sync::{mpsc, oneshot, watch};

use super::tracker::{Verdict, fold};

mod io;
mod machine;
mod receive;

use io::{Io, open, refresh, remove_virtual_mac};
use machine::Machine;
use receive::receive;

use super::sync_group::Group;

/// Lifetime of a VIP in the kernel: it is deleted this long after the last refresh.
pub const VIP_LIFETIME: Duration = Duration::from_secs(2);
/// How long an instance waits at start for its trackers' first results.
pub const TRACKER_SETTLE: Duration = Duration::from_secs(10);
/// How long a stopping instance waits for its notify hooks, all together.
const HOOKS_AT_STOP: Duration = Duration::from_secs(20);
/// How often a master refreshes its VIPs' lifetime.
pub const VIP_REFRESH: Duration = Duration::from_millis(500);

/// Everything one instance needs.
pub struct Instance {
    /// Its configuration.
    pub config: VrrpInstance,
    /// All trackers (the instance picks the ones it lists).
    pub trackers: Vec<Tracker>,
    /// Tracker verdicts.
    pub verdicts: watch::Receiver<BTreeMap<String, Verdict>>,
    /// Becomes true when halo stops (or a reload replaces the instance).
    pub shutdown: watch::Receiver<bool>,
    /// Live changes from a reload: priority, preemption, addresses, trackers, hooks.
    pub updates: watch::Receiver<(VrrpInstance, Vec<Tracker>)>,
    /// Netlink connection.
    pub netlink: Netlink,
    /// Link states from the kernel's notifications (own interface down means FAULT).
    pub links: halo_hostnet::netlink::LinkStates,
    /// Where the instance publishes its state for the status endpoint.
    pub status: Arc<super::status::Shared>,
    /// Told which VIPs are held, to remove them if halo is killed.
    pub guard: Option<Arc<super::guard::Guard>>,
    /// The sync group the instance is a member of, and its index there.
    pub group: Option<(Arc<Group>, usize)>,
    /// How it starts: afresh, or in the place of the same instance of another process.
    pub start: Start,
    /// Asks the instance to hand itself over (`halo upgrade`): it answers with what it was
    /// and ends without a word.
    pub freeze: mpsc::UnboundedReceiver<oneshot::Sender<Frozen>>,
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

/// What an instance handed over is.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// Its state and timers.
    pub handover: Handover,
    /// Why and when (Unix seconds) its state last changed.
    pub last_change: (String, u64),
}

/// What an instance counts: adverts each way, packets dropped or ignored by reason, failed
/// notify hooks. Logged when the instance stops (the status endpoint will expose them).
#[derive(Debug, Default)]
struct Counters {
    sent: u64,
    received: u64,
    address_mismatch: u64,
    /// When an address mismatch was last logged (at most one line a minute).
    mismatch_logged: Option<Instant>,
    dropped: BTreeMap<&'static str, u64>,
    hooks: Arc<super::notify::HookRecord>,
}

impl Counters {
    fn drop_one(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }
}

/// Runs until shutdown; returns after a master has announced priority 0 and removed its VIPs.
pub async fn run(instance: Instance) -> anyhow::Result<()> {
    let Instance { config, trackers, mut verdicts, mut shutdown, mut updates, netlink, mut links, status, guard, group, start, mut freeze } =
        instance;
    let io = open(&config, &netlink, guard).await?;
    let (adopted, mut told_adopted) = match start {
        Start::Fresh => {
            if let Err(e) = remove_leftovers(&io).await {
                if let Some((vmac, _)) = &io.vmac {
                    remove_virtual_mac(&io.netlink, vmac, io.guard.as_deref()).await;
                }
                return Err(e);
            }
            settle(&tracked(&config, group.as_ref().map(|(g, _)| g.as_ref())), &mut verdicts).await;
            (None, None)
        }
        Start::Adopt(adoption) => {
            // A resumed instance has nobody waiting for this step.
            if adoption.opened.send(()).is_err() {
                tracing::debug!("nobody waits for the sockets to open");
            }
            match adoption.handover.await {
                Ok(frozen) => (Some(frozen), Some(adoption.adopted)),
                // Abandoned before it began: the process is giving the takeover up.
                Err(_) => return Ok(()),
            }
        }
    };
    let current = verdicts.borrow().clone();
    let mut driver = Driver::start(config, trackers, io, status, &current, group, adopted);
    // A fault the tests inject to prove that a failing instance brings the daemon down loudly.
    if std::env::var_os("HALO_TEST_PANIC_INSTANCE").is_some_and(|name| name == driver.config.name.as_str()) {
        panic!("injected by HALO_TEST_PANIC_INSTANCE");
    }
    loop {
        driver.carry_out_actions().await;
        if let Some(adopted) = told_adopted.take()
            && adopted.send(()).is_err()
        {
            tracing::debug!("nobody waits for the adoption any more");
        }
        let deadline = driver.deadline();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = driver.io.receiver.recv() => match received {
                Ok(packet) => receive(&mut driver.machine, &driver.io, &driver.config, packet, &mut driver.counters),
                Err(e) => tracing::warn!(error = %e, "receive failed"),
            },
            // The group moved this member: its actions are carried out at the top of the loop.
            () = driver.machine.kicked() => {}
            () = sleep => driver.on_timeout().await,
            Ok(()) = verdicts.changed() => {
                driver.apply_trackers(&verdicts.borrow());
                tracing::info!(priority = driver.machine.effective_priority(), fault = driver.tracker_fault, "trackers changed");
            }
            Ok(()) = links.changed() => {
                let up = links.borrow_and_update().get(&driver.io.link.name).copied().unwrap_or(false);
                driver.on_link(up);
            }
            Ok(()) = updates.changed() => {
                let (new, new_trackers) = updates.borrow_and_update().clone();
                let current = verdicts.borrow().clone();
                driver.on_update(new, new_trackers, &current).await;
            }
            _ = shutdown.changed() => {
                driver.stop().await;
                return Ok(());
            }
            Some(reply) = freeze.recv() => {
                let frozen = driver.hand_over().await;
                if reply.send(frozen).is_err() {
                    tracing::warn!("handed over to nobody: the upgrade gave up while this instance stopped");
                }
                return Ok(());
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

/// The trackers an instance folds: its own, then its sync group's.
fn tracked(config: &VrrpInstance, group: Option<&Group>) -> Vec<String> {
    let mut names = config.track.clone();
    for name in group.iter().flat_map(|g| &g.config.track) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
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

/// One running instance: the state machine, its I/O and what it has seen.
struct Driver {
    /// Its router, alone or in its sync group.
    machine: Machine,
    io: Io,
    config: VrrpInstance,
    trackers: Vec<Tracker>,
    /// A tracker without weight fails.
    tracker_fault: bool,
    link_up: bool,
    /// When a master next refreshes its VIPs' lifetime.
    refresh_at: Option<Instant>,
    counters: Counters,
    /// Why and when (unix seconds) the state last changed.
    last_change: (String, u64),
    /// Notify hooks started and maybe still running.
    hooks: Vec<tokio::task::JoinHandle<()>>,
    status: Arc<super::status::Shared>,
}

impl Driver {
    /// Starts the state machine with the trackers' and the link's current verdicts.
    fn start(
        config: VrrpInstance,
        trackers: Vec<Tracker>,
        io: Io,
        status: Arc<super::status::Shared>,
        verdicts: &BTreeMap<String, Verdict>,
        group: Option<(Arc<Group>, usize)>,
        adopted: Option<Frozen>,
    ) -> Self {
        let router = Router::new(router_config(&config), io.source);
        let machine = match group {
            Some((group, index)) => Machine::member(group, index, router),
            None => Machine::Alone(router),
        };
        let link_up = io.link.up;
        let mut driver = Self {
            machine,
            io,
            config,
            trackers,
            tracker_fault: false,
            link_up,
            refresh_at: None,
            counters: Counters::default(),
            last_change: (String::from("start"), unix_now()),
            hooks: Vec::new(),
            status,
        };
        driver.apply_trackers(verdicts);
        let group = driver.machine.group().map(|g| g.config.name.clone());
        match adopted {
            Some(frozen) => {
                driver.machine.adopt(Instant::now(), &frozen.handover);
                driver.last_change = frozen.last_change;
                tracing::info!(interface = %driver.io.link.name, source = %driver.io.source, priority = driver.machine.effective_priority(), group, state = %frozen.handover.state, "taken over from the previous process");
            }
            None => {
                driver.machine.start(Instant::now());
                tracing::info!(interface = %driver.io.link.name, source = %driver.io.source, priority = driver.machine.effective_priority(), group, "started");
            }
        }
        driver
    }

    /// Hands the instance over (`halo upgrade`): a master's last advert goes out, then nothing
    /// more: no priority 0, the VIPs stay (the guard keeps them until the new process has taken
    /// over), no hook runs. What it was.
    async fn hand_over(&mut self) -> Frozen {
        let handover = self.machine.hand_over(Instant::now());
        let wire = router_config(&self.config);
        for action in self.machine.take_actions() {
            let hooks = perform(&self.io, &wire, &self.config, action, &mut self.refresh_at, &mut self.counters).await;
            self.hooks.extend(hooks);
        }
        tracing::info!(state = %handover.state, sent = self.counters.sent, received = self.counters.received, "handed over");
        Frozen { handover, last_change: self.last_change.clone() }
    }

    /// Carries out what the state machine asked for (and announces its group's changes), then
    /// publishes the state.
    async fn carry_out_actions(&mut self) {
        let wire = router_config(&self.config);
        for action in self.machine.take_actions() {
            if let Action::StateChanged { reason, .. } = &action {
                self.last_change = (format!("{reason:?}"), unix_now());
            }
            let hooks = perform(&self.io, &wire, &self.config, action, &mut self.refresh_at, &mut self.counters).await;
            self.hooks.retain(|h| !h.is_finished());
            self.hooks.extend(hooks);
        }
        self.announce_group_changes();
        publish(&self.status, &self.config, &self.io, &self.machine, &self.counters, &self.last_change);
    }

    /// Logs the group changes this member's events caused and starts the group's hooks.
    fn announce_group_changes(&mut self) {
        let changes = self.machine.take_changes();
        if let Some(group) = self.machine.group() {
            for change in changes {
                let hooks = group.announce(change, &self.status);
                self.hooks.extend(hooks);
            }
        }
    }

    /// The next time something is due: a protocol timer or the VIP refresh.
    fn deadline(&self) -> Option<Instant> {
        [self.machine.poll_timeout(), self.refresh_at].into_iter().flatten().min()
    }

    async fn on_timeout(&mut self) {
        let now = Instant::now();
        self.machine.handle_timeout(now);
        if self.refresh_at.is_some_and(|t| t <= now) && self.machine.state() == State::Master {
            refresh(&self.io).await;
            self.refresh_at = Some(now + VIP_REFRESH);
        }
    }

    /// Folds the verdicts of the trackers listed (by the instance and its group) into the
    /// priority and the fault.
    fn apply_trackers(&mut self, verdicts: &BTreeMap<String, Verdict>) {
        let names = tracked(&self.config, self.machine.group().map(Arc::as_ref));
        let (adjustment, fault) = fold(&self.trackers, &names, verdicts);
        self.tracker_fault = fault;
        let now = Instant::now();
        self.machine.set_adjustment(now, adjustment);
        self.machine.set_fault(now, self.tracker_fault || !self.link_up);
    }

    fn on_link(&mut self, up: bool) {
        if up != self.link_up {
            self.link_up = up;
            tracing::info!(interface = %self.io.link.name, up, "interface changed");
            self.machine.set_fault(Instant::now(), self.tracker_fault || !self.link_up);
        }
    }

    async fn on_update(&mut self, new: VrrpInstance, trackers: Vec<Tracker>, verdicts: &BTreeMap<String, Verdict>) {
        if let Err(e) = update(&mut self.machine, &mut self.io, &new).await {
            tracing::error!(error = %e, "reload not applied to this instance");
            return;
        }
        self.config = new;
        self.trackers = trackers;
        self.apply_trackers(verdicts);
        tracing::info!(priority = self.machine.effective_priority(), "reloaded");
    }

    /// Stops cleanly: a master announces priority 0 and removes its VIPs; the virtual-MAC
    /// interface goes.
    async fn stop(&mut self) {
        self.machine.shutdown(Instant::now());
        let wire = router_config(&self.config);
        for action in self.machine.take_actions() {
            let hooks = perform(&self.io, &wire, &self.config, action, &mut self.refresh_at, &mut self.counters).await;
            self.hooks.extend(hooks);
        }
        self.announce_group_changes();
        // Hooks still running (the stop and change hooks of this stop among them) finish, each
        // within its timeout, before the instance (and then halo) ends; all together within
        // HOOKS_AT_STOP, so that a stop (or a reload restarting the instance) never waits longer.
        let hooks: Vec<_> = self.hooks.drain(..).collect();
        let all = async {
            for hook in hooks {
                if let Err(e) = hook.await {
                    tracing::warn!(error = %e, "a notify hook task failed");
                }
            }
        };
        if tokio::time::timeout(HOOKS_AT_STOP, all).await.is_err() {
            tracing::warn!(waited = ?HOOKS_AT_STOP, "notify hooks still running at stop are abandoned");
        }
        if let Some((vmac, _)) = &self.io.vmac {
            remove_virtual_mac(&self.io.netlink, vmac, self.io.guard.as_deref()).await;
        }
        self.status.remove_instance(&self.config.name);
        let counters = &self.counters;
        let hook_failures = counters.hooks.failures.load(Ordering::Relaxed);
        tracing::info!(sent = counters.sent, received = counters.received, dropped = ?counters.dropped, hook_failures, "stopped");
    }
}

/// The state machine's configuration for an instance.
pub fn router_config(config: &VrrpInstance) -> RouterConfig {
    RouterConfig {
        vrid: config.virtual_router_id,
        version: config.version,
        priority: config.priority,
        advert_interval: config.advert_interval,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        eager_start: config.initial_state == halo_config::InitialState::Master,
        auth: config.auth_password.as_deref().map_or(Auth::None, Auth::pass),
        gratuitous: GratuitousSchedule { delay: config.gratuitous.delay, refresh: config.gratuitous.refresh },
    }
}

/// Carries out one action; the notify hooks it started, if any.
async fn perform(
    io: &Io,
    wire: &RouterConfig,
    config: &VrrpInstance,
    action: Action,
    refresh_at: &mut Option<Instant>,
    counters: &mut Counters,
) -> Vec<tokio::task::JoinHandle<()>> {
    match action {
        Action::SendAdvert { priority } => {
            for (destination, encoded) in adverts(io, wire, priority) {
                let sent = encoded.and_then(|bytes| Ok(io.sender.as_ref().unwrap_or(&io.receiver).send(&bytes, io.source, destination)?));
                match sent {
                    Ok(()) => counters.sent += 1,
                    Err(e) => tracing::warn!(%destination, error = %e, "advert not sent"),
                }
            }
        }
        Action::AddAddresses => {
            refresh(io).await;
            *refresh_at = Some(Instant::now() + VIP_REFRESH);
            arm_guard(io, wire);
        }
        Action::RemoveAddresses => {
            *refresh_at = None;
            if let Some(guard) = &io.guard {
                guard.disarm(&guard_key(io, wire));
            }
            for (address, _) in io.held() {
                if let Err(e) = io.remove_vip(*address).await {
                    tracing::error!(%address, error = %e, "could not remove a virtual address");
                }
            }
        }
        Action::SendGratuitous => {
            let plain = io.announced();
            for _ in 0..io.repeat {
                if let Err(e) = io.announcer.announce(&plain) {
                    tracing::warn!(error = %e, "gratuitous announcement failed");
                    break;
                }
            }
        }
        // A handover changes nothing on the wire: the hooks ran when the state was reached.
        Action::StateChanged { to, reason: Reason::Handover, priority, .. } => {
            tracing::info!(state = %to, priority, "state taken over, no hook runs");
        }
        Action::StateChanged { from, to, reason, priority } => {
            tracing::info!(%from, %to, ?reason, priority, "state changed");
            return super::notify::spawn(config, to, priority, Arc::clone(&counters.hooks));
        }
    }
    Vec::new()
}

/// The advert of `priority` for each destination (the v3 checksum covers the destination
/// address: encoded per destination).
fn adverts(io: &Io, wire: &RouterConfig, priority: u8) -> Vec<(IpAddr, anyhow::Result<Vec<u8>>)> {
    let advert = wire.advertisement(priority, io.addresses.iter().map(|(a, _)| *a).collect());
    io.destinations.iter().map(|d| (*d, packet::encode(&advert, io.source, *d, io.checksum).map_err(anyhow::Error::from))).collect()
}

/// How the guard knows this instance: link, VRID and family.
fn guard_key(io: &Io, wire: &RouterConfig) -> String {
    format!("{}-{}-{}", io.link.index, wire.vrid.get(), if io.source.is_ipv4() { 4 } else { 6 })
}

/// A master tells the guard the priority-0 adverts of a clean stop (RFC 5798 §6.4.3), for it to
/// send if halo dies without sending them: peers then take over after their skew time instead of
/// a whole Master_Down_Interval.
fn arm_guard(io: &Io, wire: &RouterConfig) {
    let Some(guard) = &io.guard else { return };
    let shutdown: Vec<(IpAddr, Vec<u8>)> = adverts(io, wire, 0).into_iter().filter_map(|(d, bytes)| Some((d, bytes.ok()?))).collect();
    guard.arm(&guard_key(io, wire), &io.link.name, io.source, &shutdown);
}

/// Applies a reloaded configuration in place: new base priority and preemption, and the
/// address list (a master adds the new VIPs, announces them, and removes the dropped ones).
async fn update(machine: &mut Machine, io: &mut Io, new: &VrrpInstance) -> anyhow::Result<()> {
    let wire = router_config(new);
    if let Err(rejected) = machine.reconfigure(Instant::now(), wire.clone()) {
        anyhow::bail!("virtual router {} cannot change its wire identity in place", rejected.vrid);
    }
    let addresses: Vec<(IpAddr, u8)> = new.virtual_addresses.iter().map(|a| (a.addr(), a.prefix_len())).collect();
    let excluded = io::held_only(new);
    let wanted: Vec<&(IpAddr, u8)> = addresses.iter().chain(&excluded).collect();
    let removed: Vec<IpAddr> = io.held().filter(|a| !wanted.contains(a)).map(|(a, _)| *a).collect();
    let added: Vec<IpAddr> = wanted.iter().filter(|a| !io.held().any(|h| h == **a)).map(|(a, _)| *a).collect();
    let families = |held: &mut dyn Iterator<Item = &(IpAddr, u8)>| {
        held.fold((false, false), |(v4, v6), (a, _)| (v4 || a.is_ipv4(), v6 || a.is_ipv6()))
    };
    let new_family = families(&mut wanted.iter().copied()) != families(&mut io.held());
    io.addresses = addresses;
    io.excluded = excluded;
    if new_family {
        // The announcer has a socket per family it was opened for.
        io.announcer = halo_hostnet::announce::Announcer::open(&io.link, &io.announced())?;
    }
    io.repeat = new.gratuitous.repeat;
    if machine.state() == State::Master {
        arm_guard(io, &wire);
        for address in &removed {
            io.remove_vip(*address).await?;
        }
        refresh(io).await;
        if !added.is_empty() {
            io.announcer.announce(&added)?;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Publishes the instance's state and counters for the status endpoint.
fn publish(
    status: &super::status::Shared,
    config: &VrrpInstance,
    io: &Io,
    machine: &Machine,
    counters: &Counters,
    last_change: &(String, u64),
) {
    status.set_instance(
        &config.name,
        super::status::InstanceStatus {
            state: machine.state().to_string(),
            priority: machine.effective_priority(),
            interface: io.link.name.clone(),
            vrid: config.virtual_router_id.get(),
            last_change: last_change.0.clone(),
            last_change_unix: last_change.1,
            adverts_sent: counters.sent,
            adverts_received: counters.received,
            address_mismatch: counters.address_mismatch,
            dropped: counters.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            hook_failures: counters.hooks.failures.load(Ordering::Relaxed),
            last_hook: counters.hooks.last(),
            sync_group: machine.group().map(|g| g.config.name.clone()),
        },
    );
}

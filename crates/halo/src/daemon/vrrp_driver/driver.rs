//! One running instance: its state machine (alone or in its sync group), its I/O, its
//! configuration and trackers, and what it does on each event: start or adoption, timers, tracker
//! verdicts, link changes, reloads, a clean stop and a handover.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halo_config::{Tracker, TrackerKind, VrrpInstance};
use halo_vrrp::fsm::{Action, Handover, Router, State};
use tokio::sync::{mpsc, oneshot, watch};

use super::actions::{announce, perform, publish, unix_now, update};
use super::counters::Counters;
use super::holding::{GIVE_UP_FOR, Holding};
use super::io::{Io, refresh, remove_virtual_mac};
use super::machine::Machine;
use super::receive::receive;
use super::stalls;
use crate::daemon::router_config::router_config;
use crate::daemon::state::Shared;
use crate::daemon::sync_group::Group;
use crate::daemon::tracker::{Recheck, TRACKER_SETTLE, Verdict, fold};
use crate::daemon::vip::VIP_REFRESH;

/// How long a stopping instance waits for its notify hooks, all together.
const HOOKS_AT_STOP: Duration = Duration::from_secs(20);

/// What an instance handed over is.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// Its state and timers.
    pub handover: Handover,
    /// Why and when (Unix seconds) its state last changed.
    pub last_change: (String, u64),
}

/// What a running instance listens to besides its socket and its timers.
pub(super) struct Inputs {
    pub(super) verdicts: watch::Receiver<BTreeMap<String, Verdict>>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) updates: watch::Receiver<(VrrpInstance, Vec<Tracker>)>,
    pub(super) links: halo_hostnet::netlink::LinkStates,
    pub(super) freeze: mpsc::UnboundedReceiver<oneshot::Sender<Frozen>>,
    /// Node maintenance (`halo node maintenance on|off`).
    pub(super) maintenance: watch::Receiver<bool>,
}

/// The instance's life: actions carried out, then the next packet, timer, tracker verdict,
/// link change or reload, until it stops or is handed over.
pub(super) async fn drive(mut driver: Driver, mut told_adopted: Option<oneshot::Sender<()>>, inputs: Inputs) {
    let Inputs { mut verdicts, mut shutdown, mut updates, mut links, mut freeze, mut maintenance } = inputs;
    stalls::watch();
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
                Ok(packet) => {
                    // What it knew may be stale: a pause is noticed before the packet is judged.
                    driver.notice_pause(Instant::now());
                    receive(&mut driver.machine, &driver.io, &driver.config, packet, &mut driver.counters);
                }
                Err(e) => tracing::warn!(error = %e, "receive failed"),
            },
            // The group moved this member: its actions are carried out at the top of the loop.
            () = driver.machine.kicked() => {}
            () = sleep => driver.on_timeout().await,
            Ok(()) = verdicts.changed() => {
                driver.apply_trackers(&verdicts.borrow());
                tracing::info!(priority = driver.machine.effective_priority(), fault = driver.tracker_fault, "trackers changed");
            }
            Ok(()) = maintenance.changed() => {
                let on = *maintenance.borrow_and_update();
                driver.machine.set_maintenance(Instant::now(), on);
                tracing::info!(maintenance = on, state = %driver.machine.state(), "node maintenance");
            }
            Ok(()) = links.changed() => {
                let up = links.borrow_and_update().get(&driver.io.link.name).copied().unwrap_or(false);
                driver.on_link(up, &verdicts.borrow());
            }
            Ok(()) = updates.changed() => {
                let (new, new_trackers) = updates.borrow_and_update().clone();
                let current = verdicts.borrow().clone();
                driver.on_update(new, new_trackers, &current).await;
            }
            _ = shutdown.changed() => return driver.stop().await,
            Some(reply) = freeze.recv() => {
                let frozen = driver.hand_over().await;
                if reply.send(frozen).is_err() {
                    tracing::warn!("handed over to nobody: the upgrade gave up while this instance stopped");
                }
                return;
            }
        }
    }
}

/// The trackers an instance folds: its own, then its sync group's.
pub(super) fn tracked(config: &VrrpInstance, group: Option<&Group>) -> Vec<String> {
    let mut names = config.track.clone();
    for name in group.iter().flat_map(|g| &g.config.track) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// One running instance: the state machine, its I/O and what it has seen.
pub(super) struct Driver {
    /// Its router, alone or in its sync group.
    machine: Machine,
    io: Io,
    config: VrrpInstance,
    trackers: Vec<Tracker>,
    /// A tracker without weight fails.
    tracker_fault: bool,
    link_up: bool,
    /// Whether its addresses could be refreshed lately.
    holding: Holding,
    /// When a master next refreshes its VIPs' lifetime.
    refresh_at: Option<Instant>,
    counters: Counters,
    /// Why and when (unix seconds) the state last changed.
    last_change: (String, u64),
    /// Notify hooks started and maybe still running.
    hooks: Vec<tokio::task::JoinHandle<()>>,
    status: Arc<Shared>,
    /// Where it asks its trackers to check again when its link comes back.
    recheck: Recheck,
    /// Since its link came back (asked then), and until when at most: it stays in FAULT until
    /// the trackers that check something have answered with fresh verdicts.
    awaiting_fresh: Option<(Instant, Instant)>,
}

impl Driver {
    /// Starts the state machine with the trackers' and the link's current verdicts.
    pub(super) fn start(
        config: VrrpInstance,
        trackers: Vec<Tracker>,
        io: Io,
        (status, recheck): (Arc<Shared>, Recheck),
        verdicts: &BTreeMap<String, Verdict>,
        group: Option<(Arc<Group>, usize)>,
        (adopted, maintenance): (Option<Frozen>, bool),
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
            holding: Holding::default(),
            refresh_at: None,
            counters: Counters::default(),
            last_change: (String::from("start"), unix_now()),
            hooks: Vec::new(),
            status,
            recheck,
            awaiting_fresh: None,
        };
        driver.apply_trackers(verdicts);
        let group = driver.machine.group().map(|g| g.config.name.clone());
        match adopted {
            Some(frozen) => {
                driver.machine.adopt(Instant::now(), &frozen.handover);
                // A master handed over into a node now in maintenance resigns at once.
                driver.machine.set_maintenance(Instant::now(), maintenance);
                driver.last_change = frozen.last_change;
                tracing::info!(interface = %driver.io.link.name, source = %driver.io.source, priority = driver.machine.effective_priority(), group, state = %frozen.handover.state, "taken over from the previous process");
            }
            None => {
                // Before the start: a node in maintenance never claims, even as the owner.
                driver.machine.set_maintenance(Instant::now(), maintenance);
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
            if let Action::StateChanged { reason, to, .. } = &action {
                self.last_change = (format!("{reason:?}"), unix_now());
                if *to != State::Master {
                    // Refreshes failed in a past mastership say nothing of the next one.
                    self.holding.forget_failures();
                }
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

    /// The next time something is due: a protocol timer, the VIP refresh, the end of giving the
    /// addresses up.
    fn deadline(&self) -> Option<Instant> {
        let awaiting_until = self.awaiting_fresh.map(|(_, until)| until);
        [self.machine.poll_timeout(), self.refresh_at, self.holding.until(), awaiting_until].into_iter().flatten().min()
    }

    /// When the protocol is due next: a timer of the state machine or a master's VIP refresh
    /// (not the instance's own waits, whose end is no protocol event).
    fn protocol_deadline(&self) -> Option<Instant> {
        let refresh = self.refresh_at.filter(|_| self.machine.state() == State::Master);
        [self.machine.poll_timeout(), refresh].into_iter().flatten().min()
    }

    /// If the protocol was due more than a master-down interval ago and the whole process stood
    /// still meanwhile (a paused VM, a frozen cgroup, SIGSTOP, a starved host; whether the pause
    /// hit this task asleep or in an await), what it knew may be stale (a peer took over, its
    /// VIPs' lifetimes ran out), so it re-enters the protocol instead of acting on it. A task late
    /// by its own long await, the process running, is no pause. Whether it did.
    fn notice_pause(&mut self, now: Instant) -> bool {
        let due = self.protocol_deadline();
        let late = lateness(now, due);
        let master_down = self.machine.master_down_interval();
        let stood_still = || due.and_then(stalls::longest_since).is_none_or(|stall| stall > master_down / 2);
        let paused = late > master_down && stood_still();
        if paused {
            self.rejoin(now, late);
        }
        paused
    }

    /// Something is due: a protocol timer (unless the task was paused), the end of giving the
    /// addresses up or of waiting for the trackers, a master's VIP refresh.
    async fn on_timeout(&mut self) {
        let now = Instant::now();
        let paused = self.notice_pause(now);
        if !paused {
            self.machine.handle_timeout(now);
        }
        if self.holding.expire(now) {
            tracing::info!("trying to hold the addresses again");
            self.machine.set_fault(now, self.faulted(now));
        }
        if self.awaiting_fresh.is_some_and(|(_, until)| until <= now) {
            self.awaiting_fresh = None;
            tracing::warn!(waited = ?TRACKER_SETTLE, "the trackers did not check again after the link returned: going on with what they say");
            self.machine.set_fault(now, self.faulted(now));
        }
        if !paused && self.refresh_at.is_some_and(|t| t <= now) && self.machine.state() == State::Master {
            self.refresh_addresses(now).await;
        }
    }

    /// Re-enters the protocol as after a restart: whatever it held is given up (a master's
    /// priority-0 advert, its VIPs removed), then it listens as a backup for a whole master-down
    /// interval (or stays in FAULT while a fault of its own lasts).
    fn rejoin(&mut self, now: Instant, late: Duration) {
        tracing::warn!(
            late = ?late,
            master_down_interval = ?self.machine.master_down_interval(),
            state = %self.machine.state(),
            "not scheduled for longer than the master-down interval (a pause, a freeze, a starved host): re-entering the protocol as after a restart"
        );
        self.machine.set_fault(now, true);
        self.machine.set_fault(now, self.faulted(now));
    }

    /// Renews the VIPs' lifetime: a failure is retried at once and counted; failures that last a
    /// lifetime give the addresses up (FAULT, a peer takes over); an address that had gone (it
    /// expired, or someone removed it) and is added again is announced again.
    async fn refresh_addresses(&mut self, now: Instant) {
        let mut refreshed = refresh(&self.io).await;
        if !refreshed.failed.is_empty() {
            self.counters.vip_refresh_failures += refreshed.failed.len() as u64;
            let again = refresh(&self.io).await;
            self.counters.vip_refresh_failures += again.failed.len() as u64;
            refreshed.readded.extend(again.readded);
            refreshed.failed = again.failed;
        }
        self.refresh_at = Some(now + VIP_REFRESH);
        if !refreshed.readded.is_empty() {
            tracing::warn!(addresses = ?refreshed.readded, "virtual addresses had gone and were added again: announcing them");
            announce(&self.io, &refreshed.readded);
        }
        if self.holding.refreshed(now, refreshed.failed.is_empty()) {
            tracing::error!(given_up_for = ?GIVE_UP_FOR, "cannot hold its addresses: FAULT, so that a peer takes over");
            self.machine.set_fault(now, true);
        }
    }

    /// Whether the instance is in a fault of its own now: a tracker without weight fails, its
    /// link is down, or it gave its addresses up.
    fn faulted(&self, now: Instant) -> bool {
        self.tracker_fault || !self.link_up || self.holding.given_up(now) || self.awaiting_fresh.is_some()
    }

    /// Its link came back: what its trackers said during the outage may be stale (checks that
    /// failed because the link was down, or passed before the server died), so it asks them to
    /// check again and stays in FAULT until they answer (at most [`TRACKER_SETTLE`]): it claims
    /// mastership once, on fresh verdicts, instead of claiming, failing, and claiming again.
    fn await_fresh_verdicts(&mut self, now: Instant) {
        self.awaiting_fresh = Some((now, now + TRACKER_SETTLE));
        self.recheck.send_replace(Some(now));
        tracing::info!(interface = %self.io.link.name, "link back: the trackers check again before the instance leaves FAULT");
    }

    /// Ends the wait for fresh verdicts once every tracker that checks something (a balancer, a
    /// script) has answered the request; interface and file trackers are always current.
    fn take_fresh(&mut self, verdicts: &BTreeMap<String, Verdict>) {
        let Some((since, _)) = self.awaiting_fresh else { return };
        let names = tracked(&self.config, self.machine.group().map(Arc::as_ref));
        let checks = self.trackers.iter().filter(|t| names.contains(&t.name));
        let mut checks = checks.filter(|t| matches!(t.kind, TrackerKind::Balancer { .. } | TrackerKind::Script { .. }));
        if checks.all(|t| verdicts.get(&t.name).and_then(|v| v.fresh_from).is_some_and(|fresh| fresh >= since)) {
            self.awaiting_fresh = None;
            tracing::info!("the trackers checked again after the link returned");
        }
    }

    /// Folds the verdicts of the trackers listed (by the instance and its group) into the
    /// priority and the fault.
    fn apply_trackers(&mut self, verdicts: &BTreeMap<String, Verdict>) {
        self.take_fresh(verdicts);
        let names = tracked(&self.config, self.machine.group().map(Arc::as_ref));
        let (adjustment, fault) = fold(&self.trackers, &names, verdicts);
        self.tracker_fault = fault;
        let now = Instant::now();
        self.machine.set_adjustment(now, adjustment);
        self.machine.set_fault(now, self.faulted(now));
    }

    fn on_link(&mut self, up: bool, verdicts: &BTreeMap<String, Verdict>) {
        if up != self.link_up {
            self.link_up = up;
            tracing::info!(interface = %self.io.link.name, up, "interface changed");
            if up {
                self.await_fresh_verdicts(Instant::now());
                self.take_fresh(verdicts);
            } else {
                // Down again before the trackers answered: the next return asks again.
                self.awaiting_fresh = None;
            }
            let now = Instant::now();
            self.machine.set_fault(now, self.faulted(now));
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

/// How late the protocol is: measured from when it was due (an await that outlasts a
/// master-down interval is as much a pause as a SIGSTOP: the peers took over meanwhile); zero
/// when nothing of the protocol was due.
fn lateness(now: Instant, due: Option<Instant>) -> Duration {
    due.map_or(Duration::ZERO, |due| now.saturating_duration_since(due))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_counts_from_the_due_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(lateness(t0 + 5 * s, Some(t0 + s)), 4 * s, "asleep before it was due: late since it was due");
        // The pause hit while the task was awake (between two sleeps, in an await): when it went
        // to sleep again the deadline had long passed. Counted from the sleep, it looked punctual,
        // and the resumed master refreshed its expired VIP silently (seen in CI).
        assert_eq!(lateness(t0 + 5 * s, Some(t0 + s)), 4 * s, "paused while awake: late since it was due");
        assert_eq!(lateness(t0 + 5 * s, Some(t0 + 6 * s)), Duration::ZERO, "not due yet");
        assert_eq!(lateness(t0 + 5 * s, None), Duration::ZERO, "nothing of the protocol due");
    }
}

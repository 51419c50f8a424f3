//! The state machine an instance drives: its own `Router`, or its member's place in a sync
//! group's `SyncGroup`, shared with the tasks of the other members. A call on a member may give
//! other members actions (the group moved them): their tasks are woken to carry them out. The
//! group's lock is held for the call only, never across an await.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halo_vrrp::fsm::{Action, Handover, Ignored, Router, RouterConfig, State};
use halo_vrrp::packet::Advertisement;
use halo_vrrp::sync::{GroupChange, SyncGroup};

use crate::daemon::sync_group::Group;

/// What a driver holds: its router alone, or its place in a group.
pub(super) enum Machine {
    Alone(Router),
    Member { group: Arc<Group>, index: usize, changes: Vec<GroupChange> },
}

impl Machine {
    /// A member's machine: its router (built once its address is known) takes its place.
    pub(super) fn member(group: Arc<Group>, index: usize, router: Router) -> Self {
        let joined = group.lock().join(index, Instant::now(), router);
        if !joined {
            tracing::error!(group = %group.config.name, index, "joined a sync group whose member had started already");
        }
        Machine::Member { group, index, changes: Vec::new() }
    }

    /// Runs `f` on the router or the group, then wakes the other members it moved and keeps
    /// the group's changes for the driver.
    fn call<T>(&mut self, alone: impl FnOnce(&mut Router) -> T, grouped: impl FnOnce(&mut SyncGroup, usize) -> T) -> T {
        match self {
            Machine::Alone(router) => alone(router),
            Machine::Member { group, index, changes } => {
                let (out, touched) = {
                    let mut core = group.lock();
                    let out = grouped(&mut core, *index);
                    changes.extend(std::iter::from_fn(|| core.poll_change()));
                    (out, core.take_touched())
                };
                for member in touched {
                    if let Some(kick) = group.kicks.get(member) {
                        kick.notify_one();
                    }
                }
                out
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Router) -> T) -> Option<T> {
        match self {
            Machine::Alone(router) => Some(f(router)),
            Machine::Member { group, index, .. } => group.lock().router(*index).map(f),
        }
    }

    pub(super) fn start(&mut self, now: Instant) {
        self.call(|r| r.start(now), |g, i| g.start(i, now));
    }

    pub(super) fn adopt(&mut self, now: Instant, from: &Handover) {
        self.call(|r| r.adopt(now, from), |g, i| g.adopt(i, now, from));
    }

    /// Hands the router over; what it was (its Initialize state if the group lost it).
    pub(super) fn hand_over(&mut self, now: Instant) -> Handover {
        let lost = Handover { state: State::Initialize, master_adver_interval_cs: 0, master_down_in: None, preempt_in: Duration::ZERO };
        self.call(|r| r.hand_over(now), |g, i| g.hand_over(i, now).unwrap_or(lost))
    }

    pub(super) fn shutdown(&mut self, now: Instant) {
        self.call(|r| r.shutdown(now), |g, i| g.shutdown(i, now));
    }

    pub(super) fn handle_advert(&mut self, now: Instant, source: IpAddr, advert: &Advertisement) -> Result<(), Ignored> {
        self.call(|r| r.handle_advert(now, source, advert), |g, i| g.handle_advert(i, now, source, advert))
    }

    pub(super) fn handle_timeout(&mut self, now: Instant) {
        self.call(|r| r.handle_timeout(now), |g, i| g.handle_timeout(i, now));
    }

    pub(super) fn set_adjustment(&mut self, now: Instant, adjustment: i32) {
        self.call(|r| r.set_adjustment(now, adjustment), |g, i| g.set_adjustment(i, now, adjustment));
    }

    pub(super) fn set_maintenance(&mut self, now: Instant, on: bool) {
        self.call(|r| r.set_maintenance(now, on), |g, i| g.set_maintenance(i, now, on));
    }

    pub(super) fn in_maintenance(&self) -> bool {
        self.read(Router::in_maintenance).unwrap_or(false)
    }

    pub(super) fn set_fault(&mut self, now: Instant, faulted: bool) {
        self.call(|r| r.set_fault(now, faulted), |g, i| g.set_fault(i, now, faulted));
    }

    pub(super) fn reconfigure(&mut self, now: Instant, config: RouterConfig) -> Result<(), RouterConfig> {
        // Both closures want the configuration; only one runs.
        let (a, b) = (config.clone(), config);
        self.call(|r| r.reconfigure(now, a), |g, i| g.reconfigure(i, now, b))
    }

    /// Every action waiting, in order.
    pub(super) fn take_actions(&mut self) -> Vec<Action> {
        self.call(|r| std::iter::from_fn(|| r.poll_action()).collect(), |g, i| std::iter::from_fn(|| g.poll_action(i)).collect())
    }

    /// The group's changes seen by this member's calls since the last time.
    pub(super) fn take_changes(&mut self) -> Vec<GroupChange> {
        match self {
            Machine::Alone(_) => Vec::new(),
            Machine::Member { changes, .. } => std::mem::take(changes),
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.read(Router::poll_timeout).flatten()
    }

    pub(super) fn state(&self) -> State {
        self.read(Router::state).unwrap_or(State::Initialize)
    }

    pub(super) fn effective_priority(&self) -> u8 {
        self.read(Router::effective_priority).unwrap_or(0)
    }

    /// Master_Down_Interval as the router counts it now (never reached when the group lost it).
    pub(super) fn master_down_interval(&self) -> Duration {
        self.read(Router::master_down_interval).unwrap_or(Duration::MAX)
    }

    /// The group, for a member.
    pub(super) fn group(&self) -> Option<&Arc<Group>> {
        match self {
            Machine::Alone(_) => None,
            Machine::Member { group, .. } => Some(group),
        }
    }

    /// Resolves when the group gave this member actions; never for a router alone.
    pub(super) async fn kicked(&self) {
        match self {
            Machine::Alone(_) => std::future::pending().await,
            Machine::Member { group, index, .. } => match group.kicks.get(*index) {
                Some(kick) => kick.notified().await,
                None => std::future::pending().await,
            },
        }
    }
}

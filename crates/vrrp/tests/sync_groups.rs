//! Sync group scenarios on a simulated clock and LAN: hosts whose virtual routers are grouped
//! (a `SyncGroup`) or alone (a plain `Router`), timed events in, each router's and each group's
//! transitions out. An advert reaches every live router of its VRID on the other hosts one
//! millisecond after it is sent; a router whose link is cut neither sends nor receives.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use halo_vrrp::fsm::{Action, GratuitousSchedule, Router, RouterConfig, State};
use halo_vrrp::packet::Auth;
use halo_vrrp::sync::SyncGroup;
use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

/// A router: its name (unique in the scenario), VRID and priority.
type R = (&'static str, u8, u8);

/// The routers of one host: groups of them, and lone ones.
struct HostSpec {
    name: &'static str,
    groups: Vec<Vec<R>>,
    alone: Vec<R>,
}

fn host(name: &'static str, groups: Vec<Vec<R>>, alone: Vec<R>) -> HostSpec {
    HostSpec { name, groups, alone }
}

/// A set of routers driven together: a sync group, or one router alone.
enum Unit {
    Group(SyncGroup),
    Alone(Router),
}

impl Unit {
    fn router(&self, m: usize) -> &Router {
        match self {
            Unit::Group(g) => g.router(m).expect("member"),
            Unit::Alone(r) => r,
        }
    }
    fn start(&mut self, m: usize, now: Instant) {
        match self {
            Unit::Group(g) => g.start(m, now),
            Unit::Alone(r) => r.start(now),
        }
    }
    fn shutdown(&mut self, m: usize, now: Instant) {
        match self {
            Unit::Group(g) => g.shutdown(m, now),
            Unit::Alone(r) => r.shutdown(now),
        }
    }
    fn advert(&mut self, m: usize, now: Instant, source: IpAddr, advert: &halo_vrrp::packet::Advertisement) {
        // Ignored adverts are the scenario's business only through the states they leave.
        let _ignored = match self {
            Unit::Group(g) => g.handle_advert(m, now, source, advert).err(),
            Unit::Alone(r) => r.handle_advert(now, source, advert).err(),
        };
    }
    fn timeout(&mut self, m: usize, now: Instant) {
        match self {
            Unit::Group(g) => g.handle_timeout(m, now),
            Unit::Alone(r) => r.handle_timeout(now),
        }
    }
    fn fault(&mut self, m: usize, now: Instant, on: bool) {
        match self {
            Unit::Group(g) => g.set_fault(m, now, on),
            Unit::Alone(r) => r.set_fault(now, on),
        }
    }
    fn adjust(&mut self, m: usize, now: Instant, by: i32) {
        match self {
            Unit::Group(g) => g.set_adjustment(m, now, by),
            Unit::Alone(r) => r.set_adjustment(now, by),
        }
    }
    fn action(&mut self, m: usize) -> Option<Action> {
        match self {
            Unit::Group(g) => g.poll_action(m),
            Unit::Alone(r) => r.poll_action(),
        }
    }
    fn members(&self) -> usize {
        match self {
            Unit::Group(g) => g.len(),
            Unit::Alone(_) => 1,
        }
    }
}

/// Where a router lives.
#[derive(Clone, Copy)]
struct Slot {
    name: &'static str,
    host: usize,
    unit: usize,
    member: usize,
    vrid: u8,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    /// Every router of the host starts.
    Start(&'static str),
    /// Every router of the host stops cleanly (priority-0 adverts).
    Stop(&'static str),
    /// The host dies silently.
    Crash(&'static str),
    /// A router's own fault (a tracker without weight) trips or clears.
    Trip(&'static str, bool),
    /// A router's link goes down (fault, and nothing in or out) or comes back.
    Link(&'static str, bool),
    /// A router's tracker adjustment.
    Adjust(&'static str, i32),
}

struct Sim {
    base: Instant,
    hosts: Vec<&'static str>,
    alive: Vec<bool>,
    units: Vec<(usize, Unit)>,
    slots: Vec<Slot>,
    cut: Vec<bool>,
    /// (arrival, sender slot, priority) in flight.
    wire: Vec<(Instant, usize, u8)>,
    /// (ms, router, state) of every transition.
    transitions: Vec<(u64, &'static str, State)>,
    /// (ms, host, group index on that host, state) of every group transition.
    group_changes: Vec<(u64, &'static str, usize, State)>,
    /// ms instants at which two routers of one VRID were master.
    dual_master_at: Vec<u64>,
}

fn config(vrid: u8, priority: u8) -> RouterConfig {
    RouterConfig {
        vrid: Vrid::new(i64::from(vrid)).expect("vrid"),
        version: Version::V3,
        priority: Priority::new(i64::from(priority)).expect("priority"),
        advert_interval: AdvertInterval::new(Version::V3, Duration::from_millis(100)).expect("interval"),
        preempt: true,
        preempt_delay: Duration::ZERO,
        eager_start: false,
        auth: Auth::None,
        gratuitous: GratuitousSchedule { delay: Duration::from_secs(5), refresh: None },
    }
}

fn address(host: usize) -> IpAddr {
    IpAddr::from([192, 0, 2, 10 + host as u8])
}

impl Sim {
    fn new(specs: &[HostSpec]) -> Self {
        let mut sim = Sim {
            base: Instant::now(),
            hosts: specs.iter().map(|h| h.name).collect(),
            alive: vec![false; specs.len()],
            units: Vec::new(),
            slots: Vec::new(),
            cut: Vec::new(),
            wire: Vec::new(),
            transitions: Vec::new(),
            group_changes: Vec::new(),
            dual_master_at: Vec::new(),
        };
        for (h, spec) in specs.iter().enumerate() {
            let units = spec.groups.iter().map(|g| (g.clone(), true)).chain(spec.alone.iter().map(|r| (vec![*r], false)));
            for (routers, grouped) in units {
                let unit = sim.units.len();
                for (member, (name, vrid, _)) in routers.iter().enumerate() {
                    sim.slots.push(Slot { name, host: h, unit, member, vrid: *vrid });
                    sim.cut.push(false);
                }
                let built: Vec<Router> = routers.iter().map(|(_, v, p)| Router::new(config(*v, *p), address(h))).collect();
                let unit_value =
                    if grouped { Unit::Group(SyncGroup::new(built)) } else { Unit::Alone(built.into_iter().next().expect("one")) };
                sim.units.push((h, unit_value));
            }
        }
        sim
    }

    fn slot(&self, name: &str) -> usize {
        self.slots.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no router {name}"))
    }

    fn host_index(&self, name: &str) -> usize {
        self.hosts.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.base).as_millis() as u64
    }

    /// Carries out the actions of every router (a group moves members other than the one
    /// called) and records the group's changes.
    fn drain(&mut self, now: Instant) {
        for s in 0..self.slots.len() {
            let slot = self.slots[s];
            while let Some(action) = self.units[slot.unit].1.action(slot.member) {
                match action {
                    Action::SendAdvert { priority } if self.alive[slot.host] && !self.cut[s] => {
                        self.wire.push((now + Duration::from_millis(1), s, priority));
                    }
                    Action::StateChanged { to, .. } => self.transitions.push((self.ms(now), slot.name, to)),
                    _ => {}
                }
            }
        }
        let ms = self.ms(now);
        for u in 0..self.units.len() {
            let host = self.units[u].0;
            let index = self.units[..u].iter().filter(|(h, _)| *h == host).count();
            if let Unit::Group(g) = &mut self.units[u].1 {
                while let Some(change) = g.poll_change() {
                    self.group_changes.push((ms, self.hosts[host], index, change.to));
                }
                g.take_touched();
            }
        }
    }

    fn each_of_host(&self, host: &str) -> Vec<usize> {
        let h = self.host_index(host);
        (0..self.slots.len()).filter(|s| self.slots[*s].host == h).collect()
    }

    fn apply(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start(h) => {
                let i = self.host_index(h);
                self.alive[i] = true;
                for s in self.each_of_host(h) {
                    let slot = self.slots[s];
                    self.units[slot.unit].1.start(slot.member, now);
                }
            }
            Event::Stop(h) => {
                for s in self.each_of_host(h) {
                    let slot = self.slots[s];
                    self.units[slot.unit].1.shutdown(slot.member, now);
                }
                self.drain(now);
                let i = self.host_index(h);
                self.alive[i] = false;
            }
            Event::Crash(h) => {
                let i = self.host_index(h);
                self.alive[i] = false;
            }
            Event::Trip(r, on) => {
                let slot = self.slots[self.slot(r)];
                self.units[slot.unit].1.fault(slot.member, now, on);
            }
            Event::Link(r, up) => {
                let s = self.slot(r);
                self.cut[s] = !up;
                let slot = self.slots[s];
                self.units[slot.unit].1.fault(slot.member, now, !up);
            }
            Event::Adjust(r, by) => {
                let slot = self.slots[self.slot(r)];
                self.units[slot.unit].1.adjust(slot.member, now, by);
            }
        }
        self.drain(now);
    }

    fn deliver(&mut self, now: Instant) {
        let position = self.wire.iter().position(|(t, _, _)| *t == now).expect("packet");
        let (_, from, priority) = self.wire.remove(position);
        let sender = self.slots[from];
        let advert = self.units[sender.unit].1.router(sender.member).advertisement(priority, vec![IpAddr::from([192, 0, 2, 170])]);
        for to in 0..self.slots.len() {
            let slot = self.slots[to];
            if slot.host != sender.host && slot.vrid == sender.vrid && self.alive[slot.host] && !self.cut[to] {
                self.units[slot.unit].1.advert(slot.member, now, address(sender.host), &advert);
            }
        }
        self.drain(now);
    }

    fn next_timer(&self) -> Option<Instant> {
        let live = |(h, _): &&(usize, Unit)| self.alive[*h];
        self.units.iter().filter(live).flat_map(|(_, u)| (0..u.members()).filter_map(|m| u.router(m).poll_timeout())).min()
    }

    /// Runs until `end_ms`, applying `events` at their times.
    fn run(&mut self, events: &[(u64, Event)], end_ms: u64) {
        let mut pending: Vec<(u64, Event)> = events.to_vec();
        pending.sort_by_key(|(t, _)| *t);
        let end = self.base + Duration::from_millis(end_ms);
        loop {
            let next_event = pending.first().map(|(t, _)| self.base + Duration::from_millis(*t));
            let next_packet = self.wire.iter().map(|(t, _, _)| *t).min();
            let Some(now) = [next_event, next_packet, self.next_timer()].into_iter().flatten().min() else { break };
            if now > end {
                break;
            }
            if next_event == Some(now) {
                let (_, event) = pending.remove(0);
                self.apply(now, event);
            } else if next_packet == Some(now) {
                self.deliver(now);
            } else {
                for s in 0..self.slots.len() {
                    let slot = self.slots[s];
                    let unit = &mut self.units[slot.unit].1;
                    if self.alive[slot.host] && unit.router(slot.member).poll_timeout().is_some_and(|t| t <= now) {
                        unit.timeout(slot.member, now);
                    }
                }
                self.drain(now);
            }
            self.count_masters(now);
        }
    }

    fn count_masters(&mut self, now: Instant) {
        let mut vrids: Vec<u8> = self.slots.iter().map(|s| s.vrid).collect();
        vrids.dedup();
        for vrid in vrids {
            let masters = (0..self.slots.len()).filter(|s| self.slots[*s].vrid == vrid && self.state_of(*s) == State::Master).count();
            if masters > 1 {
                let ms = self.ms(now);
                self.dual_master_at.push(ms);
            }
        }
    }

    fn state_of(&self, s: usize) -> State {
        let slot = self.slots[s];
        if self.alive[slot.host] { self.units[slot.unit].1.router(slot.member).state() } else { State::Initialize }
    }

    fn state(&self, name: &str) -> State {
        self.state_of(self.slot(name))
    }

    /// When `name` first became `state` at or after `after_ms`.
    fn became(&self, name: &str, state: State, after_ms: u64) -> Option<u64> {
        self.transitions.iter().find(|(t, n, s)| *t >= after_ms && *n == name && *s == state).map(|(t, _, _)| *t)
    }

    /// Runs the scenario, checking `(at_ms, router, state)` expectations at their times.
    fn check(&mut self, events: &[(u64, Event)], expect: &[(u64, &'static str, State)]) {
        let mut checkpoints: Vec<u64> = expect.iter().map(|(t, _, _)| *t).collect();
        checkpoints.dedup();
        let mut done = 0;
        for checkpoint in checkpoints {
            let due: Vec<(u64, Event)> = events[done..].iter().filter(|(t, _)| *t <= checkpoint).copied().collect();
            done += due.len();
            self.run(&due, checkpoint);
            for (_, name, state) in expect.iter().filter(|(t, _, _)| *t == checkpoint) {
                assert_eq!(self.state(name), *state, "{name} at {checkpoint} ms; transitions {:?}", self.transitions);
            }
        }
    }
}

use Event::*;
use State::{Backup, Fault, Initialize, Master};

/// Hosts `a` (priority 150) and `b` (100), each with VI_1 (VRID 1) and VI_2 (VRID 2) in one group.
fn two_grouped_hosts() -> Sim {
    Sim::new(&[
        host("a", vec![vec![("a1", 1, 150), ("a2", 2, 150)]], vec![]),
        host("b", vec![vec![("b1", 1, 100), ("b2", 2, 100)]], vec![]),
    ])
}

#[test]
fn a_member_fault_takes_the_whole_group_to_fault_and_both_routers_move() {
    let mut sim = two_grouped_hosts();
    sim.check(
        &[(0, Start("a")), (0, Start("b")), (1000, Link("a1", false)), (3000, Link("a1", true))],
        &[
            (999, "a1", Master),
            (999, "a2", Master),
            (999, "b1", Backup),
            (999, "b2", Backup),
            (1000, "a2", Fault),
            (1500, "b1", Master),
            (1500, "b2", Master),
            (2999, "a1", Fault),
            (2999, "a2", Fault),
            (3001, "a1", Backup),
            (3001, "a2", Backup),
            (4000, "a1", Master),
            (4000, "a2", Master),
            (4000, "b1", Backup),
            (4000, "b2", Backup),
        ],
    );
    // a1's link is cut, so only a2 could announce priority 0: b2 wants mastership after its skew
    // time, but b1 still waits out its Master_Down_Interval (3 × 100 ms + skew 60 ms after a1's
    // last advert, sent at 941 ms and received at 942); then the group takes both at once.
    let (b1, b2) = (sim.became("b1", Master, 1000), sim.became("b2", Master, 1000));
    assert_eq!(b1, b2, "b's routers become master together");
    assert_eq!(b1, Some(1302));
    // a1's link back: both leave FAULT at once, then take over together after their down timer.
    assert_eq!(sim.became("a1", Master, 3000), sim.became("a2", Master, 3000));
    let a: Vec<State> = sim.group_changes.iter().filter(|c| c.1 == "a").map(|c| c.3).collect();
    assert_eq!(a, [Backup, Master, Fault, Backup, Master], "{:?}", sim.group_changes);
    let late: Vec<u64> = sim.dual_master_at.iter().copied().filter(|t| !(3000..3400).contains(t)).collect();
    assert!(late.is_empty(), "two masters of a VRID: {late:?}");
}

#[test]
fn the_group_recovers_only_when_no_member_is_faulted() {
    let mut sim = two_grouped_hosts();
    sim.check(
        &[
            (0, Start("a")),
            (0, Start("b")),
            (1000, Trip("a1", true)),
            (1500, Trip("a2", true)),
            (2000, Trip("a1", false)),
            (3000, Trip("a2", false)),
        ],
        &[
            (1100, "a2", Fault),
            (1100, "b1", Master),
            (1100, "b2", Master),
            (2500, "a1", Fault),
            (2500, "a2", Fault),
            (3001, "a1", Backup),
            (3001, "a2", Backup),
            (4000, "a1", Master),
            (4000, "a2", Master),
            (4000, "b2", Backup),
        ],
    );
    // A tracker faults a1 with both links up: a1 and a2 announce priority 0, and b takes both
    // after the skew time of each (60 ms) + 1 ms of wire.
    assert_eq!(sim.became("b1", Master, 1000), Some(1061));
    assert_eq!(sim.became("b2", Master, 1000), Some(1061));
}

#[test]
fn a_member_preempted_by_a_higher_priority_peer_takes_the_group_to_backup() {
    // c (priority 200, alone on VRID 1) arrives late and preempts a1; a2 follows it to backup
    // and its priority-0 advert hands VRID 2 to b2 (alone) after b2's skew time.
    let mut sim = Sim::new(&[
        host("a", vec![vec![("a1", 1, 150), ("a2", 2, 150)]], vec![]),
        host("b", vec![], vec![("b2", 2, 100)]),
        host("c", vec![], vec![("c1", 1, 200)]),
    ]);
    sim.check(
        &[(0, Start("a")), (0, Start("b")), (1000, Start("c"))],
        &[(999, "a1", Master), (999, "a2", Master), (2000, "c1", Master), (2000, "a1", Backup), (2000, "a2", Backup), (2000, "b2", Master)],
    );
    let preempted = sim.became("a1", Backup, 1000).expect("a1 preempted");
    assert_eq!(sim.became("a2", Backup, 1000), Some(preempted), "a2 follows a1 at once");
    assert_eq!(sim.became("b2", Master, 1000), Some(preempted + 1 + 60), "b2 takes VRID 2 after its skew (60 ms) + wire");
    // a stays backup on both: a1 accepts c1, so the group never wants mastership again.
    sim.run(&[], 6000);
    assert_eq!((sim.state("a1"), sim.state("a2")), (Backup, Backup));
}

#[test]
fn a_higher_priority_group_takes_every_member_together() {
    let mut sim = Sim::new(&[
        host("a", vec![vec![("a1", 1, 150), ("a2", 2, 150)]], vec![]),
        host("b", vec![vec![("b1", 1, 200), ("b2", 2, 200)]], vec![]),
    ]);
    sim.check(
        &[(0, Start("a")), (1000, Start("b"))],
        &[(999, "a1", Master), (999, "a2", Master), (2000, "b1", Master), (2000, "b2", Master), (2000, "a1", Backup), (2000, "a2", Backup)],
    );
    assert_eq!(sim.became("b1", Master, 1000), sim.became("b2", Master, 1000));
}

#[test]
fn mastership_waits_for_every_member_and_then_all_take_it_at_once() {
    // a runs VRID 1 and 2 as lone routers; b groups them. a's VRID-1 router crashes first: b1
    // wants mastership, but b2 still accepts a live master, so b keeps both as backup (VRID 1
    // then has no master at all, as keepalived would have it). When a's VRID-2 router dies too,
    // b2's master-down timer runs out and both become master at that instant.
    let mut sim =
        Sim::new(&[host("a", vec![], vec![("a1", 1, 200), ("a2", 2, 200)]), host("b", vec![vec![("b1", 1, 100), ("b2", 2, 100)]], vec![])]);
    sim.check(
        &[(0, Start("a")), (0, Start("b")), (1000, Link("a1", false)), (2000, Link("a2", false))],
        &[(1999, "b1", Backup), (1999, "b2", Backup), (3000, "b1", Master), (3000, "b2", Master)],
    );
    let (b1, b2) = (sim.became("b1", Master, 0), sim.became("b2", Master, 0));
    assert_eq!(b1, b2);
    // a2's last advert sent at 1921 ms (a became master at 321), received at 1922, then
    // 3 × 100 ms + skew(100) = 60 ms.
    assert_eq!(b2, Some(2282));
}

#[test]
fn a_group_of_one_behaves_as_a_lone_router() {
    let events = [(0, Start("a")), (0, Start("b")), (1000, Trip("x", true)), (2000, Trip("x", false)), (3000, Crash("a"))];
    let run = |grouped: bool| {
        let x = ("x", 1, 200);
        let a = if grouped { host("a", vec![vec![x]], vec![]) } else { host("a", vec![], vec![x]) };
        let mut sim = Sim::new(&[a, host("b", vec![], vec![("y", 1, 100)])]);
        sim.run(&events, 5000);
        sim.transitions
    };
    let (grouped, alone) = (run(true), run(false));
    assert_eq!(grouped, alone);
    assert!(grouped.contains(&(321, "x", Master)), "{grouped:?}");
}

#[test]
fn two_groups_on_one_host_are_independent() {
    let mut sim = Sim::new(&[
        host("a", vec![vec![("a1", 1, 150), ("a2", 2, 150)], vec![("a3", 3, 150)]], vec![]),
        host("b", vec![], vec![("b1", 1, 100), ("b2", 2, 100), ("b3", 3, 100)]),
    ]);
    sim.check(
        &[(0, Start("a")), (0, Start("b")), (1000, Trip("a1", true))],
        &[(999, "a3", Master), (1500, "a1", Fault), (1500, "a2", Fault), (1500, "a3", Master), (1500, "b1", Master), (1500, "b3", Backup)],
    );
    let second: Vec<State> = sim.group_changes.iter().filter(|c| c.2 == 1).map(|c| c.3).collect();
    assert_eq!(second, [Backup, Master], "the second group never moved: {:?}", sim.group_changes);
}

#[test]
fn a_weighted_member_alone_cannot_move_the_group() {
    // Why keepalived ignores members' own weights (sync_group_tracking_weight): a1 drops below
    // b1, but b2 still accepts a2, so b's group never takes over; neither does a's give up.
    let mut sim = two_grouped_hosts();
    sim.check(&[(0, Start("a")), (0, Start("b")), (1000, Adjust("a1", -100))], &[(3000, "a1", Master), (3000, "b1", Backup)]);
    // The same drop on every member (a weight on the group's tracker) moves the whole group.
    sim.check(&[(3000, Adjust("a2", -100))], &[(4000, "b1", Master), (4000, "b2", Master), (4000, "a1", Backup), (4000, "a2", Backup)]);
}

#[test]
fn owners_in_a_group_become_master_together_once_all_started() {
    let mut sim =
        Sim::new(&[host("o", vec![vec![("o1", 1, 255), ("o2", 2, 255)]], vec![]), host("b", vec![], vec![("b1", 1, 100), ("b2", 2, 100)])]);
    sim.check(
        &[(0, Start("b")), (1000, Start("o"))],
        &[(999, "b1", Master), (1000, "o1", Master), (1000, "o2", Master), (1100, "b2", Backup)],
    );
}

#[test]
fn stopping_a_grouped_host_hands_every_router_over_and_stops_the_group() {
    let mut sim = two_grouped_hosts();
    sim.check(
        &[(0, Start("a")), (0, Start("b")), (1000, Stop("a"))],
        &[(1100, "a1", Initialize), (1100, "b1", Master), (1100, "b2", Master)],
    );
    let a: Vec<State> = sim.group_changes.iter().filter(|c| c.1 == "a").map(|c| c.3).collect();
    assert_eq!(a.last(), Some(&Initialize), "{:?}", sim.group_changes);
}

#[test]
fn a_member_joins_with_its_own_router_until_it_starts_and_finds_the_group_as_it_is() {
    let now = Instant::now();
    let placeholder = |vrid| Router::new(config(vrid, 100), IpAddr::from([0, 0, 0, 0]));
    let mut group = SyncGroup::new(vec![placeholder(1), placeholder(2)]);
    assert!(group.join(0, now, Router::new(config(1, 150), address(0))));
    group.start(0, now);
    group.set_fault(0, now, true);
    assert_eq!(group.state(), Fault);
    // The second member's driver comes later: its router joins and starts held in FAULT.
    assert!(group.join(1, now, Router::new(config(2, 150), address(0))));
    group.start(1, now);
    assert_eq!(group.router(1).map(Router::state), Some(Fault));
    assert!(!group.join(1, now, Router::new(config(2, 99), address(0))), "a started member keeps its router");
    group.set_fault(0, now, false);
    assert_eq!(
        (group.state(), group.router(0).map(Router::state), group.router(1).map(Router::state)),
        (Backup, Some(Backup), Some(Backup))
    );
}

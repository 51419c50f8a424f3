//! Scenario tests of several routers on a simulated clock and a simulated LAN, written as data:
//! routers, timed events in, expected states out. Adverts reach every live router of the
//! sender's segment one millisecond after they are sent.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use halo_vrrp::fsm::{Action, GratuitousSchedule, Ignored, Router, RouterConfig, State};
use halo_vrrp::packet::Auth;
use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

/// One router of a scenario.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    priority: u8,
    version: Version,
    interval_ms: u64,
    preempt: bool,
    preempt_delay_ms: u64,
    eager_start: bool,
}

const fn v3(name: &'static str, priority: u8) -> Spec {
    Spec { name, priority, version: Version::V3, interval_ms: 100, preempt: true, preempt_delay_ms: 0, eager_start: false }
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Start(&'static str),
    /// Clean stop: priority-0 advert.
    Stop(&'static str),
    /// Silent death: nothing more is sent or received.
    Crash(&'static str),
    /// Routers not listed stay in segment 0; listed ones move to segment 1.
    Partition(&'static [&'static str]),
    Heal,
    Adjust(&'static str, i32),
    SetFault(&'static str, bool),
    Maintenance(&'static str, bool),
}

struct Node {
    spec: Spec,
    router: Router,
    alive: bool,
    segment: u8,
    ignored: Vec<Ignored>,
}

struct Sim {
    base: Instant,
    nodes: Vec<Node>,
    /// (time, sender, advert priority) in flight.
    wire: Vec<(Instant, usize, u8)>,
    /// (ms, name, state) of every transition.
    transitions: Vec<(u64, &'static str, State)>,
    /// ms instants at which more than one router of a segment was master.
    dual_master_at: Vec<u64>,
}

fn address(i: usize) -> IpAddr {
    IpAddr::from([192, 0, 2, 10 + i as u8])
}

impl Sim {
    fn new(specs: &[Spec]) -> Self {
        let base = Instant::now();
        let nodes = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let config = RouterConfig {
                    vrid: Vrid::new(51).expect("vrid"),
                    version: spec.version,
                    priority: Priority::new(i64::from(spec.priority)).expect("priority"),
                    advert_interval: AdvertInterval::new(spec.version, Duration::from_millis(spec.interval_ms)).expect("interval"),
                    preempt: spec.preempt,
                    preempt_delay: Duration::from_millis(spec.preempt_delay_ms),
                    eager_start: spec.eager_start,
                    auth: Auth::None,
                    gratuitous: GratuitousSchedule { delay: Duration::from_secs(5), refresh: None },
                };
                Node { spec: *spec, router: Router::new(config, address(i)), alive: false, segment: 0, ignored: Vec::new() }
            })
            .collect();
        Self { base, nodes, wire: Vec::new(), transitions: Vec::new(), dual_master_at: Vec::new() }
    }

    fn index(&self, name: &str) -> usize {
        self.nodes.iter().position(|n| n.spec.name == name).unwrap_or_else(|| panic!("no router {name}"))
    }

    fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.base).as_millis() as u64
    }

    fn drain(&mut self, i: usize, now: Instant) {
        while let Some(action) = self.nodes[i].router.poll_action() {
            match action {
                Action::SendAdvert { priority } if self.nodes[i].alive => self.wire.push((now + Duration::from_millis(1), i, priority)),
                Action::StateChanged { to, .. } => {
                    let (ms, name) = (self.ms(now), self.nodes[i].spec.name);
                    self.transitions.push((ms, name, to));
                }
                _ => {}
            }
        }
    }

    fn apply(&mut self, now: Instant, event: Event) {
        match event {
            Event::Start(n) => {
                let i = self.index(n);
                self.nodes[i].alive = true;
                self.nodes[i].router.start(now);
                self.drain(i, now);
            }
            Event::Stop(n) => {
                let i = self.index(n);
                self.nodes[i].router.shutdown(now);
                self.drain(i, now);
                self.nodes[i].alive = false;
            }
            Event::Crash(n) => {
                let i = self.index(n);
                self.nodes[i].alive = false;
            }
            Event::Partition(names) => {
                for node in &mut self.nodes {
                    node.segment = u8::from(names.contains(&node.spec.name));
                }
            }
            Event::Heal => self.nodes.iter_mut().for_each(|n| n.segment = 0),
            Event::Adjust(n, delta) => {
                let i = self.index(n);
                self.nodes[i].router.set_adjustment(now, delta);
                self.drain(i, now);
            }
            Event::SetFault(n, on) => {
                let i = self.index(n);
                self.nodes[i].router.set_fault(now, on);
                self.drain(i, now);
            }
            Event::Maintenance(n, on) => {
                let i = self.index(n);
                self.nodes[i].router.set_maintenance(now, on);
                self.drain(i, now);
            }
        }
    }

    /// Runs until `end_ms`, applying `events` at their times.
    fn run(&mut self, events: &[(u64, Event)], end_ms: u64) {
        let mut pending: Vec<(u64, Event)> = events.to_vec();
        pending.sort_by_key(|(t, _)| *t);
        let end = self.base + Duration::from_millis(end_ms);
        loop {
            let next_event = pending.first().map(|(t, _)| self.base + Duration::from_millis(*t));
            let next_packet = self.wire.iter().map(|(t, _, _)| *t).min();
            let next_timer = self.nodes.iter().filter(|n| n.alive).filter_map(|n| n.router.poll_timeout()).min();
            let Some(now) = [next_event, next_packet, next_timer].into_iter().flatten().min() else { break };
            if now > end {
                break;
            }
            if next_event == Some(now) {
                let (_, event) = pending.remove(0);
                self.apply(now, event);
            } else if next_packet == Some(now) {
                let position = self.wire.iter().position(|(t, _, _)| *t == now).expect("packet");
                let (_, from, priority) = self.wire.remove(position);
                let advert = self.nodes[from].router.advertisement(priority, vec![IpAddr::from([192, 0, 2, 170])]);
                for to in 0..self.nodes.len() {
                    if to != from && self.nodes[to].alive && self.nodes[to].segment == self.nodes[from].segment {
                        if let Err(ignored) = self.nodes[to].router.handle_advert(now, address(from), &advert) {
                            self.nodes[to].ignored.push(ignored);
                        }
                        self.drain(to, now);
                    }
                }
            } else {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].alive && self.nodes[i].router.poll_timeout().is_some_and(|t| t <= now) {
                        self.nodes[i].router.handle_timeout(now);
                        self.drain(i, now);
                    }
                }
            }
            for segment in 0..2 {
                let masters = self.nodes.iter().filter(|n| n.alive && n.segment == segment && n.router.state() == State::Master).count();
                if masters > 1 {
                    let ms = self.ms(now);
                    self.dual_master_at.push(ms);
                }
            }
        }
    }

    fn state(&self, name: &str) -> State {
        let node = &self.nodes[self.index(name)];
        if node.alive { node.router.state() } else { State::Initialize }
    }

    /// When `name` last became `state` at or before `until_ms`.
    fn became(&self, name: &str, state: State, after_ms: u64) -> Option<u64> {
        self.transitions.iter().find(|(t, n, s)| *t >= after_ms && *n == name && *s == state).map(|(t, _, _)| *t)
    }
}

/// Runs a scenario and checks `(at_ms, router, state)` expectations, each at its time.
fn scenario(specs: &[Spec], events: &[(u64, Event)], expect: &[(u64, &'static str, State)]) -> Sim {
    let mut sim = Sim::new(specs);
    let mut checkpoints: Vec<u64> = expect.iter().map(|(t, _, _)| *t).collect();
    checkpoints.dedup();
    let mut done_events = 0;
    for checkpoint in checkpoints {
        let now_events: Vec<(u64, Event)> = events[done_events..].iter().filter(|(t, _)| *t <= checkpoint).copied().collect();
        done_events += now_events.len();
        sim.run(&now_events, checkpoint);
        for (_, name, state) in expect.iter().filter(|(t, _, _)| *t == checkpoint) {
            assert_eq!(sim.state(name), *state, "{name} at {checkpoint} ms; transitions: {:?}", sim.transitions);
        }
    }
    sim
}

use Event::*;
use State::{Backup, Fault, Initialize, Master};

#[test]
fn election_highest_priority_wins() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200), v3("c", 150)],
        &[(0, Start("a")), (0, Start("b")), (0, Start("c"))],
        &[(2000, "a", Backup), (2000, "b", Master), (2000, "c", Backup)],
    );
    // b wins when its Master_Down_Interval (3 × 100 ms + skew) runs out first: ~321 ms.
    assert_eq!(sim.became("b", Master, 0), Some(321));
    assert!(sim.dual_master_at.is_empty(), "{:?}", sim.dual_master_at);
}

#[test]
fn master_crash_next_priority_takes_over_after_master_down_interval() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200), v3("c", 150)],
        &[(0, Start("a")), (0, Start("b")), (0, Start("c")), (1000, Crash("b"))],
        &[(999, "b", Master), (2000, "c", Master), (2000, "a", Backup)],
    );
    let takeover = sim.became("c", Master, 1000).expect("c takes over");
    // Last advert from b at ~921 ms; c's timer: 3 × 100 + skew(150) = 341 ms after it.
    assert!((1200..=1300).contains(&takeover), "took over at {takeover} ms");
}

#[test]
fn clean_stop_hands_over_within_skew_time() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200), v3("c", 150)],
        &[(0, Start("a")), (0, Start("b")), (0, Start("c")), (1000, Stop("b"))],
        &[(1100, "c", Master), (1100, "a", Backup), (1100, "b", Initialize)],
    );
    let takeover = sim.became("c", Master, 1000).expect("c takes over");
    // Priority 0 → Skew_Time of c = (256 − 150) × 10 cs / 256 = 41 ms (+1 ms wire).
    assert_eq!(takeover, 1042);
}

#[test]
fn preemption_by_a_higher_priority_newcomer() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200)],
        &[(0, Start("a")), (1000, Start("b"))],
        &[(900, "a", Master), (2000, "b", Master), (2000, "a", Backup)],
    );
    assert!(sim.dual_master_at.len() <= 1, "a and b both master for more than an instant: {:?}", sim.dual_master_at);
}

#[test]
fn nopreempt_keeps_the_current_master() {
    let lazy = Spec { preempt: false, ..v3("b", 200) };
    scenario(&[v3("a", 100), lazy], &[(0, Start("a")), (1000, Start("b"))], &[(5000, "a", Master), (5000, "b", Backup)]);
}

#[test]
fn preempt_delay_postpones_the_takeover() {
    let patient = Spec { preempt_delay_ms: 3000, ..v3("b", 200) };
    let sim = scenario(
        &[v3("a", 100), patient],
        &[(0, Start("a")), (1000, Start("b"))],
        &[(3900, "b", Backup), (4500, "b", Master), (4500, "a", Backup)],
    );
    let takeover = sim.became("b", Master, 1000).expect("takes over");
    assert!(takeover >= 4000, "preempted at {takeover} ms, before the 3 s delay");
}

#[test]
fn partition_gives_two_masters_and_heal_one_within_an_advert_interval() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200)],
        &[(0, Start("a")), (0, Start("b")), (1000, Partition(&["a"])), (3000, Heal)],
        &[(2000, "a", Master), (2000, "b", Master), (3101, "a", Backup), (3101, "b", Master)],
    );
    let late: Vec<u64> = sim.dual_master_at.iter().copied().filter(|t| *t > 3100).collect();
    assert!(late.is_empty(), "two masters after the heal: {late:?}");
}

#[test]
fn tracker_weight_moves_mastership_and_back() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200)],
        &[(0, Start("a")), (0, Start("b")), (1000, Adjust("b", -150)), (3000, Adjust("b", 0))],
        &[(999, "b", Master), (2000, "a", Master), (2000, "b", Backup), (4000, "b", Master), (4000, "a", Backup)],
    );
    let moved = sim.became("a", Master, 1000).expect("a takes over");
    // b advertises priority 50 at once; a ignores it (lower) and takes over when its timer
    // runs out: 3 × 100 ms + skew(100) ≈ 361 ms after b's last acceptable advert.
    assert!(moved <= 1400, "moved at {moved} ms");
}

#[test]
fn fault_hands_over_at_once_and_recovery_preempts_back() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200)],
        &[(0, Start("a")), (0, Start("b")), (1000, SetFault("b", true)), (3000, SetFault("b", false))],
        &[(1100, "b", Fault), (1100, "a", Master), (4000, "b", Master), (4000, "a", Backup)],
    );
    assert_eq!(sim.became("a", Master, 1000), Some(1061), "skew of a (60 ms) + wire (1 ms) after b's priority-0 advert");
}

#[test]
fn maintenance_hands_over_at_once_holds_off_preemption_and_ends_with_it() {
    let sim = scenario(
        &[v3("a", 100), v3("b", 200)],
        &[(0, Start("a")), (0, Start("b")), (1000, Maintenance("b", true)), (3000, Maintenance("b", false))],
        &[(999, "b", Master), (1100, "a", Master), (1100, "b", Backup), (2999, "b", Backup), (4000, "b", Master), (4000, "a", Backup)],
    );
    assert_eq!(sim.became("a", Master, 1000), Some(1061), "skew of a (60 ms) + wire (1 ms) after b's priority-0 advert");
    // Two masters only for the instant of b's preemption at the end (as any preemption).
    assert!(sim.dual_master_at.len() <= 1 && sim.dual_master_at.iter().all(|t| *t > 3000), "two masters: {:?}", sim.dual_master_at);
    // b heard a's adverts of priority 100 for 2 s with preemption on, and did not take over.
    assert_eq!(sim.became("b", Master, 1000), sim.became("b", Master, 3000));
}

#[test]
fn a_node_in_maintenance_takes_over_from_nobody_not_even_as_owner() {
    scenario(
        &[v3("a", 100), v3("o", 255)],
        &[(0, Maintenance("o", true)), (0, Start("o")), (0, Start("a")), (1000, Crash("a"))],
        &[(500, "a", Master), (500, "o", Backup), (5000, "o", Backup)],
    );
}

#[test]
fn owner_is_master_at_once() {
    let sim = scenario(&[v3("a", 100), v3("o", 255)], &[(0, Start("a")), (0, Start("o"))], &[(1, "o", Master), (1000, "a", Backup)]);
    assert_eq!(sim.became("o", Master, 0), Some(0));
}

#[test]
fn v3_backup_adopts_the_masters_interval() {
    // b is configured with 1 s but learns a's 100 ms: it detects a's crash in ~0.35 s, not 3 s.
    let slow = Spec { interval_ms: 1000, ..v3("b", 100) };
    let sim = scenario(
        &[v3("a", 200), slow],
        &[(0, Start("a")), (0, Start("b")), (2000, Crash("a"))],
        &[(1999, "a", Master), (3000, "b", Master)],
    );
    let takeover = sim.became("b", Master, 2000).expect("b takes over");
    assert!(takeover < 2500, "took {takeover} ms");
}

#[test]
fn v2_interval_mismatch_is_dropped() {
    let a = Spec { version: Version::V2, interval_ms: 1000, ..v3("a", 200) };
    let b = Spec { version: Version::V2, interval_ms: 2000, ..v3("b", 100) };
    let sim = scenario(&[a, b], &[(0, Start("a")), (0, Start("b"))], &[(10_000, "a", Master), (10_000, "b", Master)]);
    let b_node = &sim.nodes[sim.index("b")];
    assert!(b_node.ignored.contains(&Ignored::Interval), "{:?}", b_node.ignored);
}

#[test]
fn v2_timing_in_whole_seconds() {
    let a = Spec { version: Version::V2, interval_ms: 1000, ..v3("a", 100) };
    let b = Spec { version: Version::V2, interval_ms: 1000, ..v3("b", 200) };
    let sim = scenario(&[a, b], &[(0, Start("a")), (0, Start("b")), (10_000, Crash("b"))], &[(9_000, "b", Master), (15_000, "a", Master)]);
    // RFC 3768: skew = (256 − 100) / 256 s = 609 ms; down interval = 3.609 s after b's last advert.
    let takeover = sim.became("a", Master, 10_000).expect("a takes over");
    assert!((12_000..=13_700).contains(&takeover), "took over at {takeover} ms");
}

#[test]
fn initial_state_master_listens_one_interval_instead_of_three() {
    let eager = Spec { eager_start: true, ..v3("e", 100) };
    let sim = scenario(&[eager, v3("p", 100)], &[(0, Start("e")), (0, Start("p"))], &[(1000, "e", Master), (1000, "p", Backup)]);
    // 1 × 100 ms + skew(100) = 160 ms, against 3 × 100 ms + 60 ms for a plain start.
    assert_eq!(sim.became("e", Master, 0), Some(160));
    // An eager router still yields to a live master: it hears it within that one interval.
    let sim = scenario(
        &[v3("m", 200), Spec { eager_start: true, ..v3("e", 100) }],
        &[(0, Start("m")), (1000, Start("e"))],
        &[(3000, "m", Master), (3000, "e", Backup)],
    );
    assert!(sim.dual_master_at.is_empty(), "{:?}", sim.dual_master_at);
}

#[test]
fn reconfigure_changes_priority_live_and_refuses_wire_identity_changes() {
    let mut sim = Sim::new(&[v3("a", 200), v3("b", 100)]);
    sim.run(&[(0, Start("a")), (0, Start("b"))], 1000);
    assert_eq!(sim.state("a"), Master);
    let now = sim.base + Duration::from_millis(1000);
    let i = sim.index("a");
    let mut lower = sim.nodes[i].router.config().clone();
    lower.priority = Priority::new(50).expect("priority");
    sim.nodes[i].router.reconfigure(now, lower).expect("live change");
    sim.drain(i, now);
    sim.run(&[], 2000);
    assert_eq!((sim.state("a"), sim.state("b")), (Backup, Master), "b preempts the lowered a: {:?}", sim.transitions);
    let mut other = sim.nodes[i].router.config().clone();
    other.vrid = Vrid::new(52).expect("vrid");
    assert!(sim.nodes[i].router.reconfigure(now, other).is_err());
}

/// A master that hears a master of lower priority (a router that took over while this one was not
/// heard: a pause, a partition) answers at once with an advert and a gratuitous announcement, as
/// keepalived does: the other yields to the advert, and the LAN, which may have learnt the other
/// router's MAC for the addresses, learns this one's again. At most once an advert interval.
#[test]
fn a_master_that_hears_a_lower_master_answers_and_announces_at_once() {
    let mut sim = Sim::new(&[v3("a", 200), v3("b", 100)]);
    sim.run(&[(0, Start("a")), (0, Start("b"))], 1000);
    assert_eq!(sim.state("a"), Master);
    let i = sim.index("a");
    let now = sim.base + Duration::from_millis(1000);
    sim.drain(i, now);
    let lower = sim.nodes[sim.index("b")].router.config().advertisement(100, Vec::new());
    let answered = |sim: &mut Sim, at: Instant| {
        let _lower_priority = sim.nodes[i].router.handle_advert(at, address(1), &lower);
        let actions: Vec<Action> = std::iter::from_fn(|| sim.nodes[i].router.poll_action()).collect();
        (actions.contains(&Action::SendAdvert { priority: 200 }), actions.contains(&Action::SendGratuitous))
    };
    assert_eq!(answered(&mut sim, now), (true, true), "an advert and an announcement at once");
    assert_eq!(answered(&mut sim, now + Duration::from_millis(10)), (false, false), "not again within an advert interval");
    assert_eq!(answered(&mut sim, now + Duration::from_millis(110)), (true, true), "again after an interval");
    assert_eq!(sim.state("a"), Master);
}

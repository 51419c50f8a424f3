//! A router handed over to its successor (`halo upgrade`) on a simulated clock: a master's
//! successor advertises with no gap longer than one interval and never priority 0, keeps the
//! addresses (no removal, no gratuitous burst) and the backup never moves; a backup's successor
//! keeps the master-down time left; a sync group adopted whole is in its members' state without a
//! group change; a successor whose trackers fault gives the addresses up as a faulting master.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use halo_vrrp::fsm::{Action, GratuitousSchedule, Handover, Reason, Router, RouterConfig, State};
use halo_vrrp::packet::Auth;
use halo_vrrp::sync::SyncGroup;
use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

const INTERVAL: Duration = Duration::from_millis(100);

fn config(priority: u8) -> RouterConfig {
    RouterConfig {
        vrid: Vrid::new(51).expect("vrid"),
        version: Version::V3,
        priority: Priority::new(i64::from(priority)).expect("priority"),
        advert_interval: AdvertInterval::new(Version::V3, INTERVAL).expect("interval"),
        preempt: true,
        preempt_delay: Duration::ZERO,
        eager_start: false,
        auth: Auth::None,
        gratuitous: GratuitousSchedule { delay: Duration::from_secs(5), refresh: None },
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, last])
}

fn drain(router: &mut Router) -> Vec<Action> {
    std::iter::from_fn(|| router.poll_action()).collect()
}

fn advert_priorities(actions: &[Action]) -> Vec<u8> {
    actions.iter().filter_map(|a| if let Action::SendAdvert { priority } = a { Some(*priority) } else { None }).collect()
}

/// Runs `router` from `from` to `to` in 1 ms steps; the times (ms since `base`) and priorities
/// of its adverts, and every other action.
fn run(router: &mut Router, base: Instant, from: u64, to: u64) -> (Vec<(u64, u8)>, Vec<Action>) {
    let (mut adverts, mut other) = (Vec::new(), Vec::new());
    for ms in from..to {
        let now = base + Duration::from_millis(ms);
        if router.poll_timeout().is_some_and(|t| t <= now) {
            router.handle_timeout(now);
        }
        for action in drain(router) {
            match action {
                Action::SendAdvert { priority } => adverts.push((ms, priority)),
                other_action => other.push(other_action),
            }
        }
    }
    (adverts, other)
}

#[test]
fn a_master_handed_over_keeps_advertising_and_its_addresses() {
    // The handover happens at every phase of the advert interval.
    for phase in 0..100u64 {
        let base = Instant::now();
        let mut old = Router::new(config(200), ip(11));
        let mut backup = Router::new(config(100), ip(12));
        // The old router is already master (as after an election) and the backup follows it.
        old.adopt(base, &Handover { state: State::Master, master_adver_interval_cs: 10, master_down_in: None, preempt_in: Duration::ZERO });
        backup.start(base);
        drain(&mut backup);
        let (mut adverts, _) = run(&mut old, base, 0, 1_000 + phase);
        let handed_at = 1_000 + phase;
        let now = base + Duration::from_millis(handed_at);
        let handover = old.hand_over(now);
        assert_eq!(handover.state, State::Master);
        assert_eq!(drain(&mut old), vec![Action::SendAdvert { priority: 200 }], "one last advert, no priority 0, no removal");
        adverts.push((handed_at, 200));
        assert_eq!(old.poll_timeout(), None, "the old router is driven no more");
        // Up to 30 ms pass between the old one's last advert and the successor's first.
        let adopted_at = handed_at + phase % 31;
        let mut new = Router::new(config(200), ip(11));
        new.adopt(base + Duration::from_millis(adopted_at), &handover);
        let first = drain(&mut new);
        assert_eq!(
            first,
            vec![
                Action::SendAdvert { priority: 200 },
                Action::AddAddresses,
                Action::StateChanged { from: State::Initialize, to: State::Master, reason: Reason::Handover, priority: 200 },
            ],
            "advertise now, refresh the addresses; no gratuitous burst, no removal"
        );
        adverts.push((adopted_at, 200));
        let (later, other) = run(&mut new, base, adopted_at + 1, 3_000);
        adverts.extend(later);
        assert!(other.iter().all(|a| !matches!(a, Action::RemoveAddresses | Action::SendGratuitous)), "{other:?}");
        assert!(adverts.iter().all(|(_, p)| *p == 200), "never priority 0: {adverts:?}");
        let longest = adverts.windows(2).map(|w| w[1].0 - w[0].0).max().expect("adverts");
        assert!(longest <= 100, "phase {phase}: a gap of {longest} ms between adverts: {adverts:?}");
        // The backup, fed every advert, never claims.
        for (ms, priority) in &adverts {
            let now = base + Duration::from_millis(*ms);
            if backup.poll_timeout().is_some_and(|t| t <= now) {
                backup.handle_timeout(now);
            }
            let advert = config(200).advertisement(*priority, vec![ip(170)]);
            assert!(backup.handle_advert(now, ip(11), &advert).is_ok());
        }
        assert_eq!(backup.state(), State::Backup);
        assert!(advert_priorities(&drain(&mut backup)).is_empty(), "the backup never advertised");
    }
}

#[test]
fn a_backup_handed_over_keeps_the_master_down_time_it_had_left() {
    let base = Instant::now();
    let mut old = Router::new(config(100), ip(12));
    old.start(base);
    drain(&mut old);
    // 200 ms after the last advert it heard, it hands over.
    let advert = config(200).advertisement(200, vec![ip(170)]);
    old.handle_advert(base, ip(11), &advert).expect("accepted");
    let now = base + Duration::from_millis(200);
    let handover = old.hand_over(now);
    assert!(drain(&mut old).is_empty(), "a backup sends nothing");
    let left = old.master_down_interval() - Duration::from_millis(200);
    assert_eq!(handover.master_down_in, Some(left));
    let mut new = Router::new(config(100), ip(12));
    new.adopt(now, &handover);
    assert_eq!(new.state(), State::Backup);
    assert_eq!(new.poll_timeout(), Some(now + left), "no new full Master_Down_Interval, no earlier claim");
    let actions = drain(&mut new);
    assert_eq!(actions, vec![Action::StateChanged { from: State::Initialize, to: State::Backup, reason: Reason::Handover, priority: 100 }]);
}

#[test]
fn a_master_whose_successor_faults_gives_the_addresses_up() {
    let now = Instant::now();
    let mut new = Router::new(config(200), ip(11));
    new.set_fault(now, true);
    new.adopt(now, &Handover { state: State::Master, master_adver_interval_cs: 10, master_down_in: None, preempt_in: Duration::ZERO });
    let actions = drain(&mut new);
    assert_eq!(&actions[..2], &[Action::SendAdvert { priority: 0 }, Action::RemoveAddresses]);
    assert_eq!(new.state(), State::Fault);
}

#[test]
fn a_sync_group_adopted_whole_changes_nothing() {
    let now = Instant::now();
    let members = vec![Router::new(config(200), ip(11)), Router::new(config(200), ip(11))];
    let mut group = SyncGroup::new(members);
    let master = Handover { state: State::Master, master_adver_interval_cs: 10, master_down_in: None, preempt_in: Duration::ZERO };
    group.adopt(0, now, &master);
    assert_eq!(group.state(), State::Initialize, "not every member has started yet");
    group.adopt(1, now, &master);
    assert_eq!(group.state(), State::Master);
    assert_eq!(group.poll_change(), None, "no group change: no group hook runs");
    for member in 0..2 {
        let actions: Vec<Action> = std::iter::from_fn(|| group.poll_action(member)).collect();
        assert_eq!(advert_priorities(&actions), vec![200]);
        assert!(!actions.contains(&Action::RemoveAddresses));
    }
}

//! What a new process adopts from the one it replaces, decided without I/O: the VRRP instances
//! it can take over as they are (the others start afresh once the old process has stopped
//! them), and the states handed over, to and from their messages.

use std::collections::BTreeSet;
use std::time::Duration;

use halo_config::Config;
use halo_vrrp::fsm::{Handover, State};

use super::message::{FrozenInstance, InstanceOffer, InstancePlace};
use crate::daemon::vrrp_driver::Frozen;

/// The instances `config` runs, as offered to a successor.
pub fn offered(config: &Config) -> Vec<InstanceOffer> {
    config
        .vrrp
        .iter()
        .map(|v| InstanceOffer { name: v.name.clone(), place: InstancePlace::of(v), sync_group: sync_group(config, &v.name) })
        .collect()
}

fn sync_group(config: &Config, instance: &str) -> Option<(String, Vec<String>)> {
    config.sync_group_of(instance).map(|g| (g.name.clone(), g.instances.clone()))
}

/// The instances of `config` that take over those `offer`ed: the same name in the same place
/// (interface, VRID, version, interval, family, unicast, password) and the same sync group,
/// never one with a virtual MAC; a sync group only whole (its members share one state).
pub fn adoptable(config: &Config, offer: &[InstanceOffer]) -> BTreeSet<String> {
    let alike = |v: &halo_config::VrrpInstance| {
        let ours = InstanceOffer { name: v.name.clone(), place: InstancePlace::of(v), sync_group: sync_group(config, &v.name) };
        !ours.place.virtual_mac && offer.contains(&ours)
    };
    let mut names: BTreeSet<String> = config.vrrp.iter().filter(|v| alike(v)).map(|v| v.name.clone()).collect();
    let partial: Vec<String> = config
        .sync_groups
        .iter()
        .filter(|g| !g.instances.iter().all(|m| names.contains(m)))
        .flat_map(|g| g.instances.iter().cloned())
        .collect();
    for member in partial {
        names.remove(&member);
    }
    names
}

/// An instance handed over, as its message says it.
pub fn to_message(name: &str, frozen: &Frozen) -> FrozenInstance {
    let h = &frozen.handover;
    FrozenInstance {
        name: name.to_string(),
        state: h.state.to_string(),
        master_adver_interval_cs: h.master_adver_interval_cs,
        master_down_in_ms: h.master_down_in.map(|d| d.as_millis() as u64),
        preempt_in_ms: h.preempt_in.as_millis() as u64,
        last_change: frozen.last_change.clone(),
    }
}

/// The longest time a frozen instance can have left on a timer: the longest duration halo.toml
/// accepts (7 days, for a preemption delay); a master-down time is far shorter.
const LONGEST_TIMER: Duration = halo_config::MAX_DURATION;

/// The state a message hands over; an unknown state or a timer no daemon could have is an error.
pub fn from_message(message: &FrozenInstance) -> Result<Frozen, String> {
    let state = match message.state.as_str() {
        "MASTER" => State::Master,
        "BACKUP" => State::Backup,
        "FAULT" => State::Fault,
        "INIT" => State::Initialize,
        other => return Err(format!("instance {} handed over in an unknown state {other:?}", message.name)),
    };
    let timer = |what: &str, ms: u64| {
        let duration = Duration::from_millis(ms);
        if duration > LONGEST_TIMER {
            return Err(format!("instance {} handed over with {what} of {ms} ms, longer than any halo.toml allows", message.name));
        }
        Ok(duration)
    };
    let master_down_in = message.master_down_in_ms.map(|ms| timer("a master-down time", ms)).transpose()?;
    let preempt_in = timer("a preemption delay", message.preempt_in_ms)?;
    Ok(Frozen {
        handover: Handover { state, master_adver_interval_cs: message.master_adver_interval_cs, master_down_in, preempt_in },
        last_change: message.last_change.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, vi2: &str, groups: &str) -> Config {
        let text = format!(
            "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\nvirtual_addresses = [\"10.0.0.1/24\"]\n{extra}\n\n[[vrrp]]\nname = \"VI_2\"\ninterface = \"eth0\"\nvirtual_router_id = 52\npriority = 100\nvirtual_addresses = [\"10.0.0.2/24\"]\n{vi2}\n\n[[vrrp]]\nname = \"VI_3\"\ninterface = \"eth0\"\nvirtual_router_id = 53\npriority = 100\nvirtual_addresses = [\"10.0.0.3/24\"]\n\n{groups}"
        );
        halo_config::load_str("t.toml", &text).unwrap_or_else(|e| panic!("{e:?}")).config
    }

    fn names(set: BTreeSet<String>) -> Vec<String> {
        set.into_iter().collect()
    }

    #[test]
    fn the_same_instances_are_adopted_a_priority_change_too() {
        let old = config("", "", "");
        assert_eq!(names(adoptable(&old, &offered(&old))), ["VI_1", "VI_2", "VI_3"]);
        let new = config("preempt = false", "", "");
        assert_eq!(names(adoptable(&new, &offered(&old))), ["VI_1", "VI_2", "VI_3"], "preemption changes live, as in a reload");
    }

    #[test]
    fn an_instance_changed_on_the_wire_or_with_a_virtual_mac_starts_afresh() {
        let old = config("", "", "");
        let interval = config("advert_interval = \"2s\"", "", "");
        assert_eq!(names(adoptable(&interval, &offered(&old))), ["VI_2", "VI_3"]);
        let vmac = config("virtual_mac = true", "", "");
        assert_eq!(names(adoptable(&vmac, &offered(&vmac))), ["VI_2", "VI_3"]);
    }

    #[test]
    fn a_sync_group_is_adopted_whole_or_not_at_all() {
        let g12 = "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_2\"]\n";
        let old = config("", "", g12);
        assert_eq!(names(adoptable(&old, &offered(&old))), ["VI_1", "VI_2", "VI_3"]);
        let changed = config("", "advert_interval = \"2s\"", g12);
        assert_eq!(names(adoptable(&changed, &offered(&old))), ["VI_3"], "VI_2 changed: its group starts afresh");
        let regrouped = config("", "", "[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_3\"]\n");
        assert!(adoptable(&regrouped, &offered(&old)).is_empty(), "every instance whose group changed starts afresh");
    }

    #[test]
    fn a_state_crosses_both_ways_and_an_unknown_one_is_refused() {
        let frozen = Frozen {
            handover: Handover {
                state: State::Backup,
                master_adver_interval_cs: 10,
                master_down_in: Some(Duration::from_millis(250)),
                preempt_in: Duration::ZERO,
            },
            last_change: ("MasterDown".into(), 7),
        };
        let message = to_message("VI_1", &frozen);
        let back = from_message(&message).expect("valid");
        assert_eq!(back.handover, frozen.handover);
        assert!(from_message(&FrozenInstance { state: "LEADER".into(), ..message }).is_err());
    }

    /// A frozen timer longer than any halo.toml allows is no state a daemon could hand over: taken
    /// as it comes, a backup would never preempt or never see its master down.
    #[test]
    fn timers_no_daemon_could_hand_over_are_refused() {
        let frozen = Frozen {
            handover: Handover { state: State::Backup, master_adver_interval_cs: 10, master_down_in: None, preempt_in: Duration::ZERO },
            last_change: ("MasterDown".into(), 7),
        };
        let message = to_message("VI_1", &frozen);
        let week_and_a_bit = 7 * 24 * 3600 * 1000 + 1;
        assert!(from_message(&FrozenInstance { preempt_in_ms: week_and_a_bit, ..message.clone() }).is_err());
        assert!(from_message(&FrozenInstance { master_down_in_ms: Some(u64::MAX), ..message.clone() }).is_err());
        assert!(from_message(&FrozenInstance { preempt_in_ms: week_and_a_bit - 1, ..message }).is_ok());
    }
}

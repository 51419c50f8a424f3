//! What an instance's actions do on the host and the wire: adverts sent, VIPs added and
//! removed, gratuitous ARP / NA, the guard armed, notify hooks started; a reload applied in place;
//! the state published for the status endpoint.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use halo_config::VrrpInstance;
use halo_vrrp::fsm::{Action, Reason, RouterConfig, State};
use halo_vrrp::packet;

use super::counters::Counters;
use super::io::{self, Io, refresh};
use super::machine::Machine;
use crate::daemon::router_config::router_config;
use crate::daemon::state::{InstanceStatus, Shared};
use crate::daemon::vip::VIP_REFRESH;

/// Carries out one action; the notify hooks it started, if any.
pub(super) async fn perform(
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
            // Announced by the state machine's SendGratuitous that follows.
            counters.vip_refresh_failures += refresh(io).await.failed.len() as u64;
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
        Action::SendGratuitous => announce(io, &io.announced()),
        // A handover changes nothing on the wire: the hooks ran when the state was reached.
        Action::StateChanged { to, reason: Reason::Handover, priority, .. } => {
            tracing::info!(state = %to, priority, "state taken over, no hook runs");
        }
        Action::StateChanged { from, to, reason, priority } => {
            tracing::info!(%from, %to, ?reason, priority, "state changed");
            return crate::daemon::notify::spawn(config, to, priority, Arc::clone(&counters.hooks));
        }
    }
    Vec::new()
}

/// Tells the LAN where `addresses` live now: gratuitous ARP / unsolicited NA, `repeat` times.
pub(super) fn announce(io: &Io, addresses: &[IpAddr]) {
    for _ in 0..io.repeat {
        if let Err(e) = io.announcer.announce(addresses) {
            tracing::warn!(error = %e, "gratuitous announcement failed");
            break;
        }
    }
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
    guard.arm(&guard_key(io, wire), &io.advert_interface, io.source, &shutdown);
}

/// Applies a reloaded configuration in place: new base priority and preemption, and the
/// address list (a master adds the new VIPs, announces them, and removes the dropped ones).
pub(super) async fn update(machine: &mut Machine, io: &mut Io, new: &VrrpInstance) -> anyhow::Result<()> {
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
        io.announcer = halo_hostnet::gratuitous::Announcer::open(&io.link, &io.announced())?;
    }
    io.repeat = new.gratuitous.repeat;
    if machine.state() == State::Master {
        arm_guard(io, &wire);
        for address in &removed {
            io.remove_vip(*address).await?;
        }
        // A refusal is logged; the next periodic refresh retries and counts it.
        refresh(io).await;
        if !added.is_empty() {
            io.announcer.announce(&added)?;
        }
    }
    Ok(())
}

/// Now, in seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Publishes the instance's state and counters for the status endpoint.
pub(super) fn publish(
    status: &Shared,
    config: &VrrpInstance,
    io: &Io,
    machine: &Machine,
    counters: &Counters,
    last_change: &(String, u64),
) {
    status.set_instance(
        &config.name,
        InstanceStatus {
            state: machine.state().to_string(),
            // In node maintenance the router acts as if its priority were 0.
            priority: if machine.in_maintenance() { 0 } else { machine.effective_priority() },
            interface: io.link.name.clone(),
            vrid: config.virtual_router_id.get(),
            last_change: last_change.0.clone(),
            last_change_unix: last_change.1,
            adverts_sent: counters.sent,
            adverts_received: counters.received,
            address_mismatch: counters.address_mismatch,
            vip_refresh_failures: counters.vip_refresh_failures,
            dropped: counters.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            hook_failures: counters.hooks.failures.load(Ordering::Relaxed),
            last_hook: counters.hooks.last(),
            sync_group: machine.group().map(|g| g.config.name.clone()),
        },
    );
}

/// Publishes an instance that waits for its trackers' first results before its election: INIT,
/// at its configured priority, with what it waits for (else `halo status` would not show it).
pub(super) fn publish_waiting(status: &Shared, config: &VrrpInstance, io: &Io, group: Option<&str>) {
    status.set_instance(
        &config.name,
        InstanceStatus {
            state: State::Initialize.to_string(),
            priority: config.priority.get(),
            interface: io.link.name.clone(),
            vrid: config.virtual_router_id.get(),
            last_change: "waiting for the trackers' first results".to_string(),
            last_change_unix: unix_now(),
            sync_group: group.map(str::to_string),
            ..InstanceStatus::default()
        },
    );
}

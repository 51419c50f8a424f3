//! Adverts coming in: checked (TTL, unicast peers, decoding, VRID, v2 address list), counted by
//! what became of them, and handed to the state machine.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use halo_config::VrrpInstance;
use halo_hostnet::vrrp_socket::Received;
use halo_vrrp::fsm::Ignored;
use halo_vrrp::packet;

use super::counters::Counters;
use super::io::Io;
use super::machine::Machine;

/// At most one log line per this period for adverts with another address list.
const MISMATCH_LOG_PERIOD: Duration = Duration::from_secs(60);

pub(super) fn receive(machine: &mut Machine, io: &Io, config: &VrrpInstance, packet: Received, counters: &mut Counters) {
    // RFC 5798 §7.1: an advert that crossed a router is not from our LAN.
    if packet.ttl != packet::TTL {
        tracing::debug!(source = %packet.source, ttl = packet.ttl, "dropped: TTL is not 255");
        counters.drop_one("ttl");
        return;
    }
    if packet.source == io.source {
        return;
    }
    // Unicast: only the configured peers speak for this router (keepalived's check_unicast_src).
    if !config.unicast_peers.is_empty() && !config.unicast_peers.contains(&packet.source) {
        tracing::trace!(source = %packet.source, "dropped: not a configured peer");
        counters.drop_one("not_a_peer");
        return;
    }
    let advert = match packet::decode(&packet.payload, packet.source, packet.destination, io.checksum) {
        Ok(advert) => advert,
        Err(e) => {
            tracing::debug!(source = %packet.source, reason = e.reason(), "dropped: {e}");
            counters.drop_one(e.reason());
            return;
        }
    };
    if advert.vrid != config.virtual_router_id {
        // Another virtual router on the same group: not ours, counted as such.
        counters.drop_one(Ignored::Vrid.reason());
        return;
    }
    tracing::trace!(source = %packet.source, priority = advert.priority, "advert");
    let now = Instant::now();
    // RFC 3768 §7.1: a v2 router that checks the address list discards a mismatch (keepalived
    // does); a v3 one acts on it (see note_address_mismatch).
    let mismatch = address_mismatch(io, &advert);
    if mismatch && advert.version == halo_vrrp::Version::V2 && config.version == halo_vrrp::Version::V2 {
        counters.drop_one("address_mismatch");
        note_address_mismatch(io, &advert, packet.source, now, counters);
        return;
    }
    let outcome = machine.handle_advert(now, packet.source, &advert);
    // Only an advert this router accepts counts as received: of its version, authenticated,
    // with its interval (a valid advert ignored for its priority is still received).
    if matches!(outcome, Ok(()) | Err(Ignored::LowerPriority | Ignored::NotListening)) {
        counters.received += 1;
        if mismatch {
            note_address_mismatch(io, &advert, packet.source, now, counters);
        }
    }
    if let Err(ignored) = outcome {
        tracing::trace!(source = %packet.source, reason = ignored.reason(), "advert ignored");
        counters.drop_one(ignored.reason());
    }
}

/// Whether the advert's address list differs from the instance's (order aside).
fn address_mismatch(io: &Io, advert: &packet::Advertisement) -> bool {
    advert.addresses.len() != io.addresses.len() || advert.addresses.iter().any(|a| !io.addresses.iter().any(|(ours, _)| ours == a))
}

/// RFC 5798 §6.4.2/§6.4.3 let a router act on an advert whose address list differs from its own
/// (a misconfigured peer) or discard it. halo acts on it, so that a peer with a higher priority
/// still wins the election and two masters never hold the VRID at once, and counts and logs it
/// (one line a minute), so the misconfiguration is seen.
fn note_address_mismatch(io: &Io, advert: &packet::Advertisement, source: IpAddr, now: Instant, counters: &mut Counters) {
    counters.address_mismatch += 1;
    if counters.mismatch_logged.is_none_or(|at| now.duration_since(at) >= MISMATCH_LOG_PERIOD) {
        counters.mismatch_logged = Some(now);
        let mut theirs = advert.addresses.clone();
        theirs.sort();
        let mut ours: Vec<IpAddr> = io.addresses.iter().map(|(a, _)| *a).collect();
        ours.sort();
        tracing::warn!(%source, ?theirs, ?ours, seen = counters.address_mismatch, "advert's address list differs from this instance's");
    }
}

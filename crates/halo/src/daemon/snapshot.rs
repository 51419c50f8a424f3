//! The daemon's state as one document at one moment: what `/status` serves as JSON and
//! `/metrics` turns into Prometheus text. The balancer's counters are read from its atomics,
//! everything else copied from the shared state.

use std::collections::BTreeMap;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use halo_lb::runtime::FrontendRuntime;
use halo_lb::server::{CHECK_LATENCY_BUCKETS, ServerRuntime};
use serde::Serialize;

use super::generation::Generation;
use super::state::{AnnounceStatus, GroupStatus, InstanceStatus, ReloadJson, Shared, UpgradeJson};

#[derive(Serialize)]
pub(super) struct ServerJson {
    pub(super) name: String,
    /// As configured: `ip:port` or `name:port`.
    pub(super) address: String,
    /// The address connections go to now (what a name resolved to); none before it resolves.
    pub(super) resolved: Option<String>,
    /// Why the name did not resolve the last time, while it does not.
    pub(super) dns_error: Option<String>,
    pub(super) healthy: bool,
    /// UP, DOWN, DRAIN (up, taking no new connections) or MAINT.
    pub(super) state: &'static str,
    /// What an operator set: ready, drain or maint.
    pub(super) admin: &'static str,
    /// The weight in effect.
    pub(super) weight: u32,
    /// When its state last changed (seconds since the Unix epoch).
    pub(super) last_change_unix: u64,
    pub(super) reason: String,
    pub(super) connections: u64,
    pub(super) total: u64,
    pub(super) bytes_up: u64,
    pub(super) bytes_down: u64,
    pub(super) connect_errors: u64,
    pub(super) local_errors: u64,
    pub(super) retries: u64,
    pub(super) redispatches: u64,
    pub(super) flips: u64,
    pub(super) check_latency_seconds: f64,
    /// Cumulative counts per bucket upper bound (the last is +Inf), and the sum in seconds.
    pub(super) check_latency_histogram: Vec<(String, u64)>,
    pub(super) check_latency_sum_seconds: f64,
}

#[derive(Serialize)]
pub(super) struct FrontendJson {
    pub(super) name: String,
    pub(super) backend: String,
    pub(super) listening: bool,
    pub(super) connections: u64,
    pub(super) total: u64,
    pub(super) queue_drops: u64,
    pub(super) no_server: u64,
    pub(super) first_byte_timeouts: u64,
    /// Closed at accept: the source is not in `allow`.
    pub(super) refused: u64,
    /// Forwarded in the kernel (`[balancer] forwarding`).
    pub(super) kernel_forwarded: u64,
    pub(super) servers: Vec<ServerJson>,
}

#[derive(Serialize)]
pub(crate) struct StatusJson {
    /// The daemon's process id (`halo reload` checks it is asking the daemon it signalled).
    pub(super) pid: u32,
    /// Node maintenance: no VIP held, nothing announced (`halo node maintenance`).
    pub(super) maintenance: bool,
    pub(super) vrrp: BTreeMap<String, InstanceStatus>,
    pub(super) sync_groups: BTreeMap<String, GroupStatus>,
    pub(super) announce: BTreeMap<String, AnnounceStatus>,
    pub(super) frontends: Vec<FrontendJson>,
    pub(super) last_reload: Option<ReloadJson>,
    /// Which generation answers: version, binary, pid, start, and the previous one while it drains.
    pub(super) generation: Option<Generation>,
    /// The last upgrade this process tried.
    pub(super) last_upgrade: Option<UpgradeJson>,
}

/// The whole state now.
pub(super) fn snapshot(shared: &Shared) -> StatusJson {
    let frontends = shared.frontends.read().unwrap_or_else(PoisonError::into_inner).clone();
    StatusJson {
        pid: std::process::id(),
        maintenance: shared.maintenance(),
        vrrp: shared.vrrp.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        sync_groups: shared.sync_groups.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        announce: shared.announce.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        frontends: frontends.iter().map(|f| frontend(f)).collect(),
        last_reload: shared.last_reload(),
        generation: shared.generation(),
        last_upgrade: shared.last_upgrade(),
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A frontend, its backend's name and its servers, with their counters now.
fn frontend(f: &FrontendRuntime) -> FrontendJson {
    let backend = f.backend();
    FrontendJson {
        name: f.name.clone(),
        backend: backend.config.name.clone(),
        listening: f.is_listening(),
        connections: load(&f.stats.current),
        total: load(&f.stats.total),
        queue_drops: load(&f.stats.queue_drops),
        no_server: load(&f.stats.no_server),
        first_byte_timeouts: load(&f.stats.first_byte_timeouts),
        refused: load(&f.stats.refused),
        kernel_forwarded: load(&f.stats.kernel_forwarded),
        servers: backend.servers.iter().map(|s| server(s)).collect(),
    }
}

/// A server: where it is, its health, its counters.
fn server(s: &ServerRuntime) -> ServerJson {
    ServerJson {
        name: s.config.name.clone(),
        address: s.config.address.to_string(),
        resolved: s.address().map(|a| a.to_string()),
        dns_error: s.dns_error(),
        healthy: s.is_healthy(),
        state: state_word(s),
        admin: s.admin.admin().as_str(),
        weight: s.weight(),
        last_change_unix: s.changed_unix(),
        reason: s.reason(),
        connections: load(&s.stats.current),
        total: load(&s.stats.total),
        bytes_up: load(&s.stats.bytes_up),
        bytes_down: load(&s.stats.bytes_down),
        connect_errors: load(&s.stats.connect_errors),
        local_errors: load(&s.stats.local_errors),
        retries: load(&s.stats.retries),
        redispatches: load(&s.stats.redispatches),
        flips: load(&s.stats.flips),
        check_latency_seconds: load(&s.stats.check_latency_us) as f64 / 1e6,
        check_latency_histogram: latency_histogram(s),
        check_latency_sum_seconds: load(&s.stats.check_latency_sum_us) as f64 / 1e6,
    }
}

/// The server's state in a word, as haproxy's stats page gives it.
fn state_word(s: &ServerRuntime) -> &'static str {
    match (s.admin.admin(), s.is_healthy(), s.takes_new_connections()) {
        // `disabled = true` in the file: out of service, as haproxy shows it.
        _ if s.config.disabled => "MAINT",
        (halo_lb::Admin::Maint, _, _) => "MAINT",
        (_, false, _) => "DOWN",
        (_, true, false) => "DRAIN",
        (_, true, true) => "UP",
    }
}

/// The check latency's cumulative count per bucket upper bound, the last one +Inf.
fn latency_histogram(s: &ServerRuntime) -> Vec<(String, u64)> {
    let bounds = CHECK_LATENCY_BUCKETS.iter().map(|b| b.to_string()).chain(std::iter::once("+Inf".to_string()));
    let mut running = 0;
    bounds
        .zip(s.stats.check_latency_buckets.iter())
        .map(|(bound, count)| {
            running += load(count);
            (bound, running)
        })
        .collect()
}

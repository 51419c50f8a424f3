//! One server at run time: its address (fixed, or resolved from its name), its health fed by
//! checks, and its counters.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo_config::{CheckKind, Server};
use tokio::sync::watch;

use crate::admin::{Admin, AdminState, Order};
use crate::health::Health;
use crate::lock::lock;
use crate::probe::Failure;

/// Counters of one server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open now.
    pub current: AtomicU64,
    /// Connections served.
    pub total: AtomicU64,
    /// Bytes client to server.
    pub bytes_up: AtomicU64,
    /// Bytes server to client.
    pub bytes_down: AtomicU64,
    /// Failed or timed-out connects.
    pub connect_errors: AtomicU64,
    /// Connects and checks that failed for halo's own reasons (descriptors, ports): not counted
    /// against the server.
    pub local_errors: AtomicU64,
    /// Connect attempts repeated on this server.
    pub retries: AtomicU64,
    /// Clients sent elsewhere after this server failed them.
    pub redispatches: AtomicU64,
    /// Health flips.
    pub flips: AtomicU64,
    /// Latency of the last passing check, microseconds.
    pub check_latency_us: AtomicU64,
    /// Passing checks by latency: counts per bucket of [`CHECK_LATENCY_BUCKETS`] (cumulative
    /// counts are made when exposed), the last one for slower checks.
    pub check_latency_buckets: [AtomicU64; CHECK_LATENCY_BUCKETS.len() + 1],
    /// Sum of passing check latencies, microseconds.
    pub check_latency_sum_us: AtomicU64,
}

/// Upper bounds of the check-latency histogram, seconds.
pub const CHECK_LATENCY_BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

impl ServerStats {
    pub(crate) fn record_check_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = CHECK_LATENCY_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(CHECK_LATENCY_BUCKETS.len());
        self.check_latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.check_latency_sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.check_latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Everything server choice depends on of one server, packed in one number read without a lock:
/// health, operator state, weight and how often its address changed. A backend's schedule is
/// built from these keys, and rebuilt when one differs from the key it was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SelectionKey(u64);

impl SelectionKey {
    fn new(healthy: bool, admin: Admin, weight: u32, address_changes: u64) -> Self {
        // At most MAX_WEIGHT (256): nine bits, 3..=11.
        let weight = u64::from(weight.min(crate::admin::MAX_WEIGHT));
        Self((address_changes << 12) | (weight << 3) | ((admin as u64) << 1) | u64::from(healthy))
    }

    fn address_changes(self) -> u64 {
        self.0 >> 12
    }

    /// The weight selection uses.
    pub(crate) fn weight(self) -> u32 {
        ((self.0 >> 3) & 0x1ff) as u32
    }

    /// Healthy, `ready` and with a weight above 0 (its address and `disabled` aside).
    pub(crate) fn takes_connections(self) -> bool {
        self.0 & 1 == 1 && (self.0 >> 1) & 3 == Admin::Ready as u64 && self.weight() > 0
    }
}

/// One server at run time.
#[derive(Debug)]
pub struct ServerRuntime {
    /// Its configuration.
    pub config: Server,
    /// The address connections and checks go to: the configured one, or the last one its name
    /// resolved to (`None` until a name first resolves).
    address: watch::Sender<Option<SocketAddr>>,
    /// Why the name did not resolve the last time it was asked (cleared when it does).
    dns_error: Mutex<Option<String>>,
    /// Read by the data path on every choice; written on health flips only.
    pub(crate) healthy: AtomicBool,
    /// Rise/fall state, fed by probes and by failed connects.
    pub(crate) health: Mutex<Health>,
    /// Why the last check failed (or "ok").
    reason: Mutex<String>,
    /// Counters.
    pub stats: ServerStats,
    /// Set when a reload removes the server: its connections get `drain_timeout` to finish.
    pub(crate) retired: watch::Sender<bool>,
    /// Wakes the server's check loop for a check now (a failed connect on the data path).
    pub(crate) check_now: tokio::sync::Notify,
    /// When the last check that completed had started (none before the first).
    last_check_started: Mutex<Option<Instant>>,
    /// Never probed (`kind = "none"`): up whenever its address is known.
    unchecked: bool,
    /// When a local error was last logged (at most one line a minute per server).
    local_logged: Mutex<Option<Instant>>,
    /// What an operator set at run time (drain, maint, a weight).
    pub admin: AdminState,
    /// When its state last changed (a flip, an operator's order), seconds since the Unix epoch.
    changed_unix: AtomicU64,
    /// Counts changes of `address`: part of what server choice compares to see that its
    /// schedule is stale ([`ServerRuntime::selection_key`]).
    address_changes: AtomicU64,
}

impl ServerRuntime {
    pub(crate) fn new(config: &Server, check: &halo_config::HealthCheck) -> Self {
        let address = config.address.ip();
        let unchecked = check.kind == CheckKind::None;
        let reason = match (unchecked, address) {
            (_, None) => "name not resolved yet",
            (true, Some(_)) => "not checked (kind = none)",
            (false, Some(_)) => "not checked yet",
        };
        Self {
            config: config.clone(),
            address: watch::Sender::new(address),
            dns_error: Mutex::new(None),
            healthy: AtomicBool::new(unchecked && address.is_some()),
            health: Mutex::new(Health::new(check.fall, check.rise, check.interval, check.fast_interval)),
            reason: Mutex::new(reason.to_string()),
            unchecked,
            stats: ServerStats::default(),
            retired: watch::Sender::new(false),
            check_now: tokio::sync::Notify::new(),
            last_check_started: Mutex::new(None),
            local_logged: Mutex::new(None),
            admin: AdminState::default(),
            changed_unix: AtomicU64::new(unix_now()),
            address_changes: AtomicU64::new(0),
        }
    }

    /// What server choice reads of this server, without a lock ([`SelectionKey`]).
    pub(crate) fn selection_key(&self) -> SelectionKey {
        SelectionKey::new(
            self.healthy.load(Ordering::Relaxed),
            self.admin.admin(),
            self.weight(),
            self.address_changes.load(Ordering::Acquire),
        )
    }

    /// Its key and the address it stands for, read together: the address's change count is
    /// the same before and after the address is read.
    pub(crate) fn selection_state(&self) -> (SelectionKey, Option<SocketAddr>) {
        loop {
            let key = self.selection_key();
            let address = self.address();
            if self.address_changes.load(Ordering::Acquire) == key.address_changes() {
                return (key, address);
            }
        }
    }

    /// Sets the address connections go to; the previous one.
    fn set_address(&self, address: Option<SocketAddr>) -> Option<SocketAddr> {
        let previous = self.address.send_replace(address);
        if previous != address {
            self.address_changes.fetch_add(1, Ordering::Release);
        }
        previous
    }

    /// When its state last changed (seconds since the Unix epoch; its start before any change).
    pub fn changed_unix(&self) -> u64 {
        self.changed_unix.load(Ordering::Relaxed)
    }

    /// The weight selection uses: the run-time one when set, else the configured one.
    pub fn weight(&self) -> u32 {
        self.admin.weight().unwrap_or(self.config.weight)
    }

    /// Whether new connections may go to it, as far as the operator is concerned: `ready`, with
    /// a weight above 0.
    pub fn takes_new_connections(&self) -> bool {
        self.admin.admin() == Admin::Ready && self.weight() > 0
    }

    /// Whether its checks run (not in MAINT).
    pub(crate) fn in_maint(&self) -> bool {
        self.admin.admin() == Admin::Maint
    }

    /// Applies an operator's order: a state or a weight. Entering MAINT takes the server out of
    /// service at once (its checks stop); leaving it starts over from an undecided health, checked
    /// now (an unchecked server is back as soon as its address is known). The previous state and
    /// weight.
    pub(crate) fn order(&self, order: Order, check: &halo_config::HealthCheck) -> (Admin, u32) {
        let before = (self.admin.admin(), self.weight());
        self.changed_unix.store(unix_now(), Ordering::Relaxed);
        match order {
            Order::Weight(weight) => {
                self.admin.set_weight(Some(weight));
            }
            Order::State(admin) => {
                self.admin.set_admin(admin);
                match (before.0, admin) {
                    (_, Admin::Maint) => {
                        self.healthy.store(false, Ordering::Relaxed);
                        *lock(&self.reason) = "maintenance (set at run time)".to_string();
                    }
                    (Admin::Maint, _) => {
                        let (fall, rise, interval, fast) = (check.fall, check.rise, check.interval, check.fast_interval);
                        *lock(&self.health) = Health::new(fall, rise, interval, fast);
                        let up = self.unchecked && self.address().is_some();
                        self.healthy.store(up, Ordering::Relaxed);
                        *lock(&self.reason) =
                            if up { "not checked (kind = none)" } else { "back from maintenance: not checked yet" }.to_string();
                        self.check_now.notify_one();
                    }
                    _ => {}
                }
            }
        }
        before
    }

    /// Takes over the state of the same server before a reload changed its settings or its
    /// backend's check (`check`, the new one): the address its name resolved to, the DNS state,
    /// and its health under the new thresholds. A server that is no longer checked is up (if its
    /// address is known); one that now is checked keeps its last known health: one that served
    /// unchecked stays in service until its checks fail `fall` times.
    pub(crate) fn inherit(&self, old: &ServerRuntime, check: &halo_config::HealthCheck) {
        self.admin.copy_from(&old.admin);
        // A weight changed in the file wins over one set at run time.
        if old.config.weight != self.config.weight && self.admin.set_weight(None).is_some() {
            tracing::info!(server = %self.config.name, weight = self.config.weight, "the configured weight changed: the run-time weight is dropped");
        }
        self.changed_unix.store(old.changed_unix(), Ordering::Relaxed);
        *lock(&self.dns_error) = old.dns_error();
        self.set_address(old.address());
        let (fall, rise, interval, fast) = (check.fall, check.rise, check.interval, check.fast_interval);
        let (healthy, health) = if self.unchecked {
            (self.address().is_some(), Health::new(fall, rise, interval, fast))
        } else if old.unchecked {
            let up = old.is_healthy();
            (up, if up { Health::up(fall, rise, interval, fast) } else { Health::new(fall, rise, interval, fast) })
        } else {
            (old.is_healthy(), lock(&old.health).retuned(fall, rise, interval, fast))
        };
        *lock(&self.health) = health;
        self.healthy.store(healthy && !self.in_maint(), Ordering::Relaxed);
        *lock(&self.reason) = if self.unchecked && healthy { "not checked (kind = none)".to_string() } else { old.reason() };
        if self.in_maint() {
            *lock(&self.reason) = old.reason();
        }
    }

    /// Takes the health the process this one replaces had decided, and the address its name
    /// resolved to there (`halo upgrade`); its own checks carry on from that state.
    pub(crate) fn adopt_health(&self, up: bool, resolved: Option<SocketAddr>, check: &halo_config::HealthCheck) {
        if self.address().is_none()
            && let Some(address) = resolved
        {
            self.set_address(Some(address));
        }
        if self.address().is_none() {
            return;
        }
        let (fall, rise, interval, fast) = (check.fall, check.rise, check.interval, check.fast_interval);
        if !self.unchecked {
            *lock(&self.health) = Health::known(up, fall, rise, interval, fast);
        }
        let healthy = up || (self.unchecked && self.address().is_some());
        if self.in_maint() {
            self.healthy.store(false, Ordering::Relaxed);
            *lock(&self.reason) = "maintenance (set at run time)".to_string();
            return;
        }
        self.healthy.store(healthy, Ordering::Relaxed);
        *lock(&self.reason) = if healthy { "up before the upgrade".to_string() } else { "down before the upgrade".to_string() };
    }

    /// Whether its state is known: for a checked server, UP or DOWN after `fall` failures; for
    /// an unchecked one, as soon as its address is known or its name failed to resolve.
    pub(crate) fn is_decided(&self) -> bool {
        if self.unchecked { self.address().is_some() || self.dns_error().is_some() } else { lock(&self.health).is_decided() }
    }

    /// Removes the server from service: open connections drain.
    pub(crate) fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Whether it takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The address connections go to now; `None` while its name has never resolved.
    pub fn address(&self) -> Option<SocketAddr> {
        *self.address.borrow()
    }

    /// Waits until the address or the name's resolution changes.
    pub(crate) fn address_watch(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.address.subscribe()
    }

    /// Why its name does not resolve, when it does not.
    pub fn dns_error(&self) -> Option<String> {
        lock(&self.dns_error).clone()
    }

    /// The result of resolving its name. A new address is used by new connections and checks
    /// at once (open connections keep theirs) and makes the check run now. A failure keeps the
    /// last address: a DNS outage never takes a server down; a name that never resolved keeps
    /// the server DOWN with the reason. One line per change, none per repeated result.
    pub(crate) fn resolved(&self, backend: &str, result: Result<SocketAddr, String>) {
        let server = &self.config.name;
        let name = self.config.address.host_name().unwrap_or_default();
        match result {
            Ok(address) => {
                if let Some(error) = lock(&self.dns_error).take() {
                    tracing::info!(backend, server, name, %address, was = %error, "server name resolves again");
                }
                let previous = self.set_address(Some(address));
                match previous {
                    Some(old) if old == address => {}
                    Some(old) => {
                        tracing::info!(backend, server, name, from = %old, to = %address, "server address changed: new connections go to the new one");
                        self.check_now.notify_one();
                    }
                    None => {
                        tracing::info!(backend, server, name, %address, "server name resolved");
                        if self.unchecked && !self.in_maint() {
                            self.healthy.store(true, Ordering::Relaxed);
                            *lock(&self.reason) = "not checked (kind = none)".to_string();
                        }
                    }
                }
            }
            Err(error) => {
                let mut last = lock(&self.dns_error);
                if last.as_deref() != Some(error.as_str()) {
                    match self.address() {
                        Some(kept) => {
                            tracing::warn!(backend, server, %error, %kept, "server name does not resolve: keeping its last address")
                        }
                        None => {
                            tracing::warn!(backend, server, %error, "server name does not resolve: server DOWN until it does");
                            *lock(&self.reason) = error.clone();
                        }
                    }
                }
                *last = Some(error);
                drop(last);
                // Wakes a check loop waiting for the first resolution, so that it reports it.
                self.address.send_modify(|_| {});
            }
        }
    }

    /// The reason of the last result.
    pub fn reason(&self) -> String {
        lock(&self.reason).clone()
    }

    /// Feeds a check's result; logs one line when the server flips, and the first decided state
    /// (a server DOWN from the start never flips). A local failure is counted and logged, never
    /// fed to the health.
    pub(crate) fn record(&self, backend: &str, result: Result<(), Failure>) {
        // A check that was under way when an operator set MAINT says nothing any more.
        if self.in_maint() {
            return;
        }
        if let Err(failure) = &result
            && failure.local
        {
            self.local_failure(backend, &failure.reason);
            return;
        }
        let ok = result.is_ok();
        let (was_decided, flipped, decided) = {
            let mut health = lock(&self.health);
            let was_decided = health.is_decided();
            let flipped = health.record(ok);
            (was_decided, flipped, health.is_decided())
        };
        let reason = result.err().map_or_else(|| "check passed".to_string(), |f| f.reason);
        *lock(&self.reason) = if ok { "ok".to_string() } else { reason.clone() };
        if let Some(up) = flipped {
            self.healthy.store(up, Ordering::Relaxed);
            self.changed_unix.store(unix_now(), Ordering::Relaxed);
            self.stats.flips.fetch_add(1, Ordering::Relaxed);
            if up {
                tracing::info!(backend, server = %self.config.name, address = %self.display_address(), %reason, "server UP");
            } else {
                tracing::warn!(backend, server = %self.config.name, address = %self.display_address(), %reason, "server DOWN");
            }
        } else if decided && !was_decided {
            tracing::warn!(backend, server = %self.config.name, address = %self.display_address(), %reason, "server DOWN (since the start)");
        }
    }

    /// The address for logs: the name and what it resolved to.
    fn display_address(&self) -> String {
        match (self.config.address.host_name(), self.address()) {
            (Some(name), Some(address)) => format!("{name} ({address})"),
            _ => self.config.address.to_string(),
        }
    }

    /// Counts (and logs, rate-limited) a failure that is halo's own.
    fn local_failure(&self, backend: &str, reason: &str) {
        self.stats.local_errors.fetch_add(1, Ordering::Relaxed);
        let mut logged = lock(&self.local_logged);
        if logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *logged = Some(Instant::now());
            tracing::warn!(backend, server = %self.config.name, %reason, "local error (not the server's): not counted against it");
        }
    }

    /// A check that had started at `started` completed (its result is recorded next).
    pub(crate) fn check_completed(&self, started: Instant) {
        *lock(&self.last_check_started) = Some(started);
    }

    /// Whether its health rests on what is true since `since`: a check that started then or later
    /// has completed, and its state is settled (UP or DOWN with no result against it since). A
    /// server never probed is settled once its address is known.
    pub fn settled_since(&self, since: Instant) -> bool {
        if self.unchecked {
            return self.address().is_some();
        }
        lock(&self.last_check_started).is_some_and(|started| started >= since) && lock(&self.health).is_settled()
    }

    /// A client's connect failed: the server's check runs now (haproxy's `on-error fastinter`),
    /// and the check decides its health, so that one client's retries alone never mark it down.
    pub(crate) fn connect_failed(&self, backend: &str, failure: &Failure) {
        if failure.local {
            self.local_failure(backend, &failure.reason);
            return;
        }
        self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
        self.check_now.notify_one();
    }
}

/// Seconds since the Unix epoch now.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Whether two checks leave a server's run-time state as it is: whether it is probed at all,
/// its thresholds and intervals.
pub(crate) fn same_server_check(a: &halo_config::HealthCheck, b: &halo_config::HealthCheck) -> bool {
    (a.kind == CheckKind::None) == (b.kind == CheckKind::None)
        && (a.fall, a.rise, a.interval, a.fast_interval) == (b.fall, b.rise, b.interval, b.fast_interval)
}

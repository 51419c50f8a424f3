//! The connection log: one line per proxied connection when it ends (haproxy's `option
//! tcplog`), rate-limited so that a flood can never make logging the data path's bottleneck.
//!
//! Lines go through `tracing` at `info` with the target `connection`, in the daemon's format
//! (text or JSON). Beyond [`CONNECTION_LOG_RATE`] lines in one second the rest are counted,
//! not written, and the count is logged once the next second begins.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use halo_config::CONNECTION_LOG_RATE;

/// How a connection ended, as the log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides closed.
    Closed,
    /// Cut after the idle timeout.
    Idle,
    /// A side failed (reset, write error).
    Error,
    /// Cut when its server's drain timeout ended (server removed, or halo stopping).
    Drained,
    /// Closed at once: no server could take it.
    NoServer,
    /// Closed after waiting `queue_timeout` for a slot.
    QueueTimeout,
    /// Closed unserved: nothing came from the client within `first_byte_timeout`.
    FirstByteTimeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Idle => "idle_timeout",
            Self::Error => "error",
            Self::Drained => "drained",
            Self::NoServer => "no_server",
            Self::QueueTimeout => "queue_timeout",
            Self::FirstByteTimeout => "first_byte_timeout",
        }
    }
}

/// One finished connection.
#[derive(Debug)]
pub struct Record<'a> {
    /// The client's address.
    pub client: SocketAddr,
    /// The frontend that accepted it.
    pub frontend: &'a str,
    /// Its backend.
    pub backend: &'a str,
    /// The server, with the address connected to (none when no server took it).
    pub server: Option<(&'a str, SocketAddr)>,
    /// Waiting for a connection slot.
    pub queued: Duration,
    /// Connecting to a server, retries and redispatches included.
    pub connecting: Duration,
    /// From accept to close.
    pub total: Duration,
    /// Client to server.
    pub bytes_up: u64,
    /// Server to client.
    pub bytes_down: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// The switch and the rate limit, shared by every frontend.
#[derive(Debug)]
pub struct ConnectionLog {
    enabled: AtomicBool,
    origin: Instant,
    /// The second (since `origin`) being counted.
    second: AtomicU64,
    written: AtomicU32,
    suppressed: AtomicU64,
}

impl ConnectionLog {
    /// A log, on or off.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled: AtomicBool::new(enabled),
            origin: Instant::now(),
            second: AtomicU64::new(0),
            written: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Turns it on or off (reload).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether lines are written; callers skip building a record when not.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Writes the line, or counts it when this second's lines are spent.
    pub fn write(&self, record: &Record<'_>) {
        if !self.enabled() || !self.admit() {
            return;
        }
        let (server, server_address) = record.server.map_or(("-", None), |(name, address)| (name, Some(address)));
        tracing::info!(
            target: "connection",
            client = %record.client,
            frontend = record.frontend,
            backend = record.backend,
            server,
            server_address = server_address.map_or_else(|| "-".to_string(), |a| a.to_string()),
            queue_ms = millis(record.queued),
            connect_ms = millis(record.connecting),
            duration_ms = millis(record.total),
            bytes_up = record.bytes_up,
            bytes_down = record.bytes_down,
            ended = record.outcome.as_str(),
            "connection"
        );
    }

    /// Starts a new second when one began, and reports the lines the last ones lost. Called by
    /// every line, and once a second by the balancer ([`ConnectionLog::tick`]), so that the
    /// count of a flood's last second does not wait for the next connection.
    fn roll(&self) {
        let now = self.origin.elapsed().as_secs();
        let second = self.second.load(Ordering::Relaxed);
        if now != second && self.second.compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.written.store(0, Ordering::Relaxed);
            let lost = self.suppressed.swap(0, Ordering::Relaxed);
            if lost > 0 {
                tracing::warn!(target: "connection", suppressed = lost, limit = CONNECTION_LOG_RATE, "connection lines over the rate limit were not written");
            }
        }
    }

    /// Reports a finished second's loss now (the balancer calls this once a second).
    pub fn tick(&self) {
        if self.suppressed.load(Ordering::Relaxed) > 0 {
            self.roll();
        }
    }

    /// One more line this second? Starting a new second reports the lines the last ones lost.
    fn admit(&self) -> bool {
        self.roll();
        if self.written.fetch_add(1, Ordering::Relaxed) < CONNECTION_LOG_RATE {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines not written so far in this second.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            client: "10.0.0.9:40000".parse().expect("address"),
            frontend: "api",
            backend: "masters",
            server: None,
            queued: Duration::ZERO,
            connecting: Duration::ZERO,
            total: Duration::ZERO,
            bytes_up: 0,
            bytes_down: 0,
            outcome: Outcome::NoServer,
        }
    }

    #[test]
    fn beyond_the_rate_lines_are_counted_not_written() {
        let log = ConnectionLog::new(true);
        for _ in 0..CONNECTION_LOG_RATE + 25 {
            log.write(&record());
        }
        // Unless the second turned during the loop, exactly the excess was suppressed.
        let suppressed = log.suppressed();
        assert!(suppressed == 25 || log.origin.elapsed() >= Duration::from_secs(1), "suppressed {suppressed}");
    }

    #[test]
    fn a_disabled_log_counts_nothing() {
        let log = ConnectionLog::new(false);
        for _ in 0..CONNECTION_LOG_RATE + 25 {
            log.write(&record());
        }
        assert_eq!(log.suppressed(), 0);
    }
}

//! A frontend's accepted connections that have not sent their first byte, oldest first. While
//! every place is taken and more connections wait in the listen backlog, the accept loop makes
//! room by closing the one silent the longest, once it has been silent for
//! [`SILENT_EVICTION_AGE`]: a flood of silent clients then costs a real client behind it a
//! fraction of a second a hundred of them, not `first_byte_timeout` a hundred.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::lock::lock;

/// How long a connection may stay silent before it may be closed to make room (a client sends
/// its first bytes, a TLS hello, within a round trip of connecting).
pub const SILENT_EVICTION_AGE: Duration = Duration::from_millis(500);

/// How often a crowded accept loop looks again when nobody can be closed yet.
const RECHECK: Duration = Duration::from_millis(20);

/// The silent connections of one frontend.
#[derive(Debug, Default)]
pub(crate) struct Silent {
    waiting: std::sync::Mutex<BTreeMap<u64, (Instant, Arc<Notify>)>>,
    next: AtomicU64,
}

/// One silent connection's entry, removed when dropped; `evicted` is told when it is to close.
pub(crate) struct Waiting<'a> {
    silent: &'a Silent,
    id: u64,
    pub(crate) evicted: Arc<Notify>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.silent.waiting).remove(&self.id);
    }
}

impl Silent {
    /// Enters a connection that waits for its first byte.
    pub(crate) fn register(&self) -> Waiting<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = Arc::new(Notify::new());
        lock(&self.waiting).insert(id, (Instant::now(), Arc::clone(&evicted)));
        Waiting { silent: self, id, evicted }
    }

    /// Tells the connection silent the longest to close if it has been silent for `age`; when
    /// none is, when the oldest will be (`None`: nobody is silent).
    fn evict_oldest(&self, now: Instant, age: Duration) -> Result<(), Option<Instant>> {
        let mut waiting = lock(&self.waiting);
        let Some((&id, (since, _))) = waiting.iter().next() else { return Err(None) };
        if now.duration_since(*since) < age {
            return Err(Some(*since + age));
        }
        if let Some((_, evicted)) = waiting.remove(&id) {
            evicted.notify_one();
        }
        Ok(())
    }

    /// Returns once a silent connection has been told to close because connections wait in
    /// `listener`'s backlog (the caller, whose places are all taken, then gets the place it
    /// frees); never while the backlog is empty.
    pub(crate) async fn make_room(&self, listener: &impl AsFd) {
        loop {
            let next = if backlog_waiting(listener) {
                match self.evict_oldest(Instant::now(), SILENT_EVICTION_AGE) {
                    Ok(()) => return,
                    Err(Some(when)) => when.min(Instant::now() + RECHECK),
                    Err(None) => Instant::now() + RECHECK,
                }
            } else {
                Instant::now() + RECHECK
            };
            tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        }
    }
}

/// Whether connections wait in `listener`'s backlog (a poll(2) that does not wait).
fn backlog_waiting(listener: &impl AsFd) -> bool {
    let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_silent_connection_goes_first_and_only_once_old_enough() {
        let silent = Silent::default();
        let first = silent.register();
        let second = silent.register();
        let now = Instant::now();
        assert!(matches!(silent.evict_oldest(now, Duration::from_secs(60)), Err(Some(_))), "not old enough yet");
        assert_eq!(silent.evict_oldest(now + Duration::from_secs(61), Duration::from_secs(60)), Ok(()));
        // The first was told (a permit waits for it); the second was not.
        let told = |w: &Waiting<'_>| {
            let notified = w.evicted.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        assert!(told(&first), "the oldest is told to close");
        assert!(!told(&second), "the younger one stays");
        drop((first, second));
        assert_eq!(silent.evict_oldest(now, Duration::ZERO), Err(None), "nobody left");
    }
}

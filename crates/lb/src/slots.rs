//! A frontend's connection slots: at most `max_connections` connections are served at once. A
//! reload may lower the cap below what is in use: the free slots go at once, and the slots in
//! use beyond the new cap are forgotten as their connections end, so the cap after a reload is
//! the configured one whatever was open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slots of one frontend.
#[derive(Debug)]
pub(crate) struct Slots {
    /// Free slots.
    free: Arc<Semaphore>,
    /// Slots in use that a lowered cap no longer has: forgotten as they come back.
    owed: Arc<AtomicUsize>,
}

/// A slot held by one connection; given back (or forgotten, when owed) when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take()
            && take_one(&self.owed)
        {
            permit.forget();
        }
    }
}

/// Takes one from `counter` unless it is zero; whether it did.
fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
}

impl Slots {
    /// `cap` free slots.
    pub(crate) fn new(cap: usize) -> Self {
        Self { free: Arc::new(Semaphore::new(cap)), owed: Arc::new(AtomicUsize::new(0)) }
    }

    /// A slot: at once while the cap is not reached (no timer), else after waiting up to
    /// `queue_timeout` for one; `None` when the wait ended empty.
    pub(crate) async fn acquire(&self, queue_timeout: Duration) -> Option<Slot> {
        let permit = match Arc::clone(&self.free).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(queue_timeout, Arc::clone(&self.free).acquire_owned()).await.ok()?.ok()?,
        };
        Some(Slot { permit: Some(permit), owed: Arc::clone(&self.owed) })
    }

    /// A slot, however long it takes to come free (the accept loop waits so, leaving new
    /// connections in the kernel's backlog); `None` once the slots are closed.
    pub(crate) async fn acquire_waiting(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.free).acquire_owned().await.ok()?;
        Some(Slot { permit: Some(permit), owed: Arc::clone(&self.owed) })
    }

    /// A slot if one is free now, for a connection adopted from the process this one replaced
    /// (never refused: `None` serves it over the cap).
    pub(crate) fn adopt(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.free).try_acquire_owned().ok()?;
        Some(Slot { permit: Some(permit), owed: Arc::clone(&self.owed) })
    }

    /// Moves the cap from `before` to `after`; how many slots in use are owed (0 when the free
    /// ones were enough).
    pub(crate) fn resize(&self, before: usize, after: usize) -> usize {
        if after > before {
            let mut grow = after - before;
            while grow > 0 && take_one(&self.owed) {
                grow -= 1;
            }
            self.free.add_permits(grow);
        } else if before > after {
            let forgotten = self.free.forget_permits(before - after);
            self.owed.fetch_add(before - after - forgotten, Ordering::AcqRel);
        }
        self.owed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[tokio::test]
    async fn a_lowered_cap_holds_once_the_owed_slots_come_back() {
        let slots = Slots::new(4);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slots.acquire(NOW).await.expect("under the cap"));
        }
        assert_eq!(slots.resize(4, 2), 2, "every slot is in use: two are owed");
        held.truncate(1);
        assert!(slots.acquire(NOW).await.is_some_and(|s| {
            drop(s);
            true
        }));
        held.push(slots.acquire(NOW).await.expect("one of two"));
        assert!(slots.acquire(NOW).await.is_none(), "two in use under a cap of two");
        assert_eq!(slots.resize(2, 3), 0);
        held.push(slots.acquire(NOW).await.expect("raised to three"));
        assert!(slots.acquire(NOW).await.is_none());
    }

    #[tokio::test]
    async fn raising_the_cap_first_cancels_what_is_owed() {
        let slots = Slots::new(2);
        let held = [slots.acquire(NOW).await.expect("1"), slots.acquire(NOW).await.expect("2")];
        assert_eq!(slots.resize(2, 1), 1);
        assert_eq!(slots.resize(1, 3), 0, "the debt is cancelled before any slot is added");
        drop(held);
        let all: Vec<Slot> = [slots.acquire(NOW).await, slots.acquire(NOW).await, slots.acquire(NOW).await].into_iter().flatten().collect();
        assert_eq!(all.len(), 3);
        assert!(slots.acquire(NOW).await.is_none());
    }
}

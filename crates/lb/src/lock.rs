//! The balancer's one way to take a mutex: a lock that a panic elsewhere cannot poison.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// The guard of `m`, taken even when a thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the data path down with it: the state stays usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

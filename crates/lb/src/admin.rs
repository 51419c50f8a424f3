//! A server's state set by an operator at run time, with haproxy's runtime-API meanings: `ready`
//! (health-checked service, the normal state), `drain` (no new connections; established ones
//! run on; checks go on), `maint` (drain, and checks stop: shown as MAINT) — and a run-time
//! weight (0 to 256; 0 takes no new connections, as in haproxy). It survives a reload for a
//! server that stays and is handed over by `halo upgrade`; a restart forgets it (as haproxy
//! forgets its runtime changes without a state file).

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::watch;

/// What an operator set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Admin {
    /// Health-checked service.
    #[default]
    Ready,
    /// No new connections.
    Drain,
    /// No new connections, no checks.
    Maint,
}

impl Admin {
    /// Its name, as the commands and the status give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Drain => "drain",
            Self::Maint => "maint",
        }
    }

    /// The state of that name.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ready, Self::Drain, Self::Maint].into_iter().find(|a| a.as_str() == text)
    }
}

/// The largest run-time weight (the configuration's too).
pub const MAX_WEIGHT: u32 = 256;
/// No run-time weight: the configured one applies.
const CONFIGURED: u32 = u32::MAX;

/// A server's operator state: [`Admin`] (watched by its check loop) and the run-time weight.
#[derive(Debug)]
pub struct AdminState {
    admin: watch::Sender<Admin>,
    weight: AtomicU32,
}

impl Default for AdminState {
    fn default() -> Self {
        Self { admin: watch::Sender::new(Admin::Ready), weight: AtomicU32::new(CONFIGURED) }
    }
}

impl AdminState {
    /// The state set.
    pub fn admin(&self) -> Admin {
        *self.admin.borrow()
    }

    /// Sets it; the previous one.
    pub fn set_admin(&self, admin: Admin) -> Admin {
        self.admin.send_replace(admin)
    }

    /// Woken when the state changes.
    pub(crate) fn watch(&self) -> watch::Receiver<Admin> {
        self.admin.subscribe()
    }

    /// The run-time weight, when one was set.
    pub fn weight(&self) -> Option<u32> {
        let weight = self.weight.load(Ordering::Relaxed);
        (weight != CONFIGURED).then_some(weight)
    }

    /// Sets the run-time weight (at most [`MAX_WEIGHT`]); the previous one.
    pub fn set_weight(&self, weight: Option<u32>) -> Option<u32> {
        let previous = self.weight.swap(weight.map_or(CONFIGURED, |w| w.min(MAX_WEIGHT)), Ordering::Relaxed);
        (previous != CONFIGURED).then_some(previous)
    }

    /// Takes what another had (the same server before a reload or in the process this one
    /// replaces).
    pub fn copy_from(&self, other: &AdminState) {
        self.set_admin(other.admin());
        self.set_weight(other.weight());
    }
}

/// An operator's command for one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Set the state.
    State(Admin),
    /// Set the run-time weight.
    Weight(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_weights_round_trip_and_copy() {
        for admin in [Admin::Ready, Admin::Drain, Admin::Maint] {
            assert_eq!(Admin::parse(admin.as_str()), Some(admin));
        }
        assert_eq!(Admin::parse("MAINT"), None);
        let state = AdminState::default();
        assert_eq!((state.admin(), state.weight()), (Admin::Ready, None));
        assert_eq!(state.set_admin(Admin::Maint), Admin::Ready);
        assert_eq!(state.set_weight(Some(0)), None);
        assert_eq!(state.set_weight(Some(9999)), Some(0));
        assert_eq!(state.weight(), Some(MAX_WEIGHT));
        let other = AdminState::default();
        other.copy_from(&state);
        assert_eq!((other.admin(), other.weight()), (Admin::Maint, Some(MAX_WEIGHT)));
    }
}

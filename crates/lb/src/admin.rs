//! A server's state set by an operator at run time, with haproxy's runtime-API meanings: `ready`
//! (health-checked service, the normal state), `drain` (no new connections; established ones
//! run on; checks go on), `maint` (drain, and checks stop: shown as MAINT) — and a run-time
//! weight (0 to 256; 0 takes no new connections, as in haproxy). It survives a reload for a
//! server that stays and is handed over by `halo upgrade`; a restart forgets it (as haproxy
//! forgets its runtime changes without a state file). [`crate::Balancer::order_server`] applies them.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

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
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    const ALL: [Self; 3] = [Self::Ready, Self::Drain, Self::Maint];
}

/// The largest run-time weight (the configuration's too).
pub const MAX_WEIGHT: u32 = 256;
/// No run-time weight: the configured one applies.
const CONFIGURED: u32 = u32::MAX;

/// A server's operator state: [`Admin`] (watched by its check loop) and the run-time weight.
#[derive(Debug)]
pub struct AdminState {
    admin: watch::Sender<Admin>,
    /// The same state as a number, read without a lock by every server choice.
    current: AtomicU8,
    weight: AtomicU32,
}

impl Default for AdminState {
    fn default() -> Self {
        Self { admin: watch::Sender::new(Admin::Ready), current: AtomicU8::new(Admin::Ready as u8), weight: AtomicU32::new(CONFIGURED) }
    }
}

impl AdminState {
    /// The state set.
    pub fn admin(&self) -> Admin {
        Admin::ALL[usize::from(self.current.load(Ordering::Relaxed))]
    }

    /// Sets it; the previous one.
    pub fn set_admin(&self, admin: Admin) -> Admin {
        self.current.store(admin as u8, Ordering::Relaxed);
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

/// A server's operator state before and after an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordered {
    /// The state before.
    pub admin_before: Admin,
    /// The weight in effect before.
    pub weight_before: u32,
    /// The state now.
    pub admin: Admin,
    /// The weight in effect now.
    pub weight: u32,
}

impl crate::Balancer {
    /// Applies an operator's order to one server (`halo server drain|maint|ready|weight`); the
    /// server's state before and after. Refused, with nothing changed, for an unknown backend or
    /// server or a weight above [`crate::admin::MAX_WEIGHT`].
    pub fn order_server(&self, backend: &str, server: &str, order: Order) -> Result<Ordered, crate::OrderError> {
        let runtime = self
            .backends
            .iter()
            .find(|b| b.config.name == backend)
            .ok_or_else(|| crate::OrderError::UnknownBackend(backend.to_string()))?;
        let target = runtime
            .servers
            .iter()
            .find(|s| s.config.name == server)
            .ok_or_else(|| crate::OrderError::UnknownServer { backend: backend.to_string(), server: server.to_string() })?;
        if let Order::Weight(weight) = order
            && weight > crate::admin::MAX_WEIGHT
        {
            return Err(crate::OrderError::Weight(weight));
        }
        let (admin_before, weight_before) = target.order(order, &runtime.config.health);
        Ok(Ordered { admin_before, weight_before, admin: target.admin.admin(), weight: target.weight() })
    }
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

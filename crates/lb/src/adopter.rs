//! Adopts the connections handed over by the process this one replaces (`halo upgrade`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::established::Established;
use crate::runtime::FrontendRuntime;

/// Adopts connections handed over by the process this one replaces (`halo upgrade`): each is
/// relayed on by its frontend (by name; the first frontend when the new configuration has
/// no frontend of that name), counted as open.
#[derive(Clone)]
pub struct Adopter {
    pub(crate) frontends: Vec<Arc<FrontendRuntime>>,
    pub(crate) in_flight: Arc<AtomicU64>,
}

impl Adopter {
    /// Relays `established` on, from a task of the current runtime.
    pub fn adopt(&self, established: Established) {
        let Some(frontend) = self.frontends.iter().find(|f| f.name == established.frontend).or(self.frontends.first()).cloned() else {
            tracing::warn!(frontend = %established.frontend, "a connection handed over has no frontend here: closed");
            return;
        };
        frontend.stats.current.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::clone(&self.in_flight);
        tokio::spawn(async move {
            frontend.adopt(established).await;
            frontend.stats.current.fetch_sub(1, Ordering::Relaxed);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

//! Notify hooks: commands run on state changes, asynchronously, without a shell, killed after
//! the configured timeout. A failing hook is logged, never fatal; failures are counted and the
//! last outcome is kept for the status endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use halo_config::VrrpInstance;
use halo_vrrp::fsm::State;

/// What an instance's hooks did.
#[derive(Debug, Default)]
pub struct HookRecord {
    /// Hooks that failed (exit status, timeout, could not start).
    pub failures: AtomicU64,
    last: Mutex<String>,
}

impl HookRecord {
    /// The last hook's outcome: what ran, for which state, how it ended, when.
    pub fn last(&self) -> String {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, text: String) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = text;
    }
}

/// Starts the hooks for a transition to `state`; returns at once. A failed hook is logged and
/// counted in `record`.
pub fn spawn(instance: &VrrpInstance, state: State, priority: u8, record: Arc<HookRecord>) {
    let n = &instance.notify;
    let specific = match state {
        State::Master => n.master.clone(),
        State::Backup => n.backup.clone(),
        State::Fault => n.fault.clone(),
        State::Initialize => n.stop.clone(),
    };
    let change = n.change.clone().map(|mut argv| {
        argv.extend([instance.name.clone(), state.to_string(), priority.to_string()]);
        argv
    });
    for argv in [specific, change].into_iter().flatten() {
        let (timeout, name, record) = (n.timeout, instance.name.clone(), Arc::clone(&record));
        tokio::spawn(async move {
            let (ok, why) = super::exec::run_script(&argv, timeout).await;
            let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            if ok {
                tracing::debug!(instance = %name, hook = %argv[0], "notify hook done");
                record.record(format!("{} ({state}) ok at {when}", argv[0]));
            } else {
                record.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %name, hook = %argv[0], reason = %why, "notify hook failed");
                record.record(format!("{} ({state}) failed at {when}: {why}", argv[0]));
            }
        });
    }
}

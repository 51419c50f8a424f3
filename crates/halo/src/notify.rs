//! Notify hooks: commands run on state changes, asynchronously, without a shell, killed after
//! the configured timeout. A failing hook is logged, never fatal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use halo_config::VrrpInstance;
use halo_vrrp::fsm::State;

/// Starts the hooks for a transition to `state`; returns at once. A failed hook is logged and
/// added to `failures`.
pub fn spawn(instance: &VrrpInstance, state: State, priority: u8, failures: Arc<AtomicU64>) {
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
        let (timeout, name, failures) = (n.timeout, instance.name.clone(), Arc::clone(&failures));
        tokio::spawn(async move {
            let (ok, why) = crate::tracker::run_script(&argv, timeout).await;
            if ok {
                tracing::debug!(instance = %name, hook = %argv[0], "notify hook done");
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %name, hook = %argv[0], reason = %why, "notify hook failed");
            }
        });
    }
}

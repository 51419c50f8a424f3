//! Notify hooks: commands run on state changes, asynchronously, as `exec` runs commands, killed
//! after the configured timeout. The `change` hook gets keepalived's `notify` arguments
//! (`INSTANCE name state priority`, state `MASTER`, `BACKUP`, `FAULT` or `STOP`). A failing hook is
//! logged, never fatal; failures are counted and the last outcome is kept for the status
//! endpoint. The caller keeps the tasks, so that hooks of a stop finish before halo exits.

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

/// keepalived's name of a state, as its notify scripts receive it.
pub fn keepalived_state(state: State) -> &'static str {
    match state {
        State::Master => "MASTER",
        State::Backup => "BACKUP",
        State::Fault => "FAULT",
        State::Initialize => "STOP",
    }
}

/// Starts the hooks for a transition to `state`; returns their tasks at once. A failed hook is
/// logged and counted in `record`.
pub fn spawn(instance: &VrrpInstance, state: State, priority: u8, record: Arc<HookRecord>) -> Vec<tokio::task::JoinHandle<()>> {
    let n = &instance.notify;
    let specific = match state {
        State::Master => n.master.clone(),
        State::Backup => n.backup.clone(),
        State::Fault => n.fault.clone(),
        State::Initialize => n.stop.clone(),
    };
    let change = n.change.clone().map(|mut argv| {
        argv.extend(["INSTANCE".to_string(), instance.name.clone(), keepalived_state(state).to_string(), priority.to_string()]);
        argv
    });
    let mut tasks = Vec::new();
    for argv in [specific, change].into_iter().flatten() {
        let (timeout, name, record) = (n.timeout, instance.name.clone(), Arc::clone(&record));
        tasks.push(tokio::spawn(async move {
            let (ok, why) = super::exec::run_script(&argv, timeout).await;
            let state = keepalived_state(state);
            let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            if ok {
                tracing::debug!(instance = %name, hook = %argv[0], "notify hook done");
                record.record(format!("{} ({state}) ok at {when}", argv[0]));
            } else {
                record.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(instance = %name, hook = %argv[0], reason = %why, "notify hook failed");
                record.record(format!("{} ({state}) failed at {when}: {why}", argv[0]));
            }
        }));
    }
    tasks
}

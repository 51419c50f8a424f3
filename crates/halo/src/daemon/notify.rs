//! Notify hooks: commands run on state changes, asynchronously, as `exec` runs commands, killed
//! after the configured timeout. The `change` hook gets keepalived's `notify` arguments
//! (`INSTANCE name state priority`, state `MASTER`, `BACKUP`, `FAULT` or `STOP`; a sync group's
//! `GROUP name state 0`). A failing hook is logged, never fatal; failures are counted and the
//! last outcome is kept for the status endpoint. The caller keeps the tasks, so that hooks of a
//! stop finish before halo exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use halo_config::{Notify, SyncGroup, VrrpInstance};
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
    launch(&instance.notify, "INSTANCE", &instance.name, state, priority, record)
}

/// Starts a sync group's hooks for its transition to `state` (keepalived's group notify: the
/// `change` hook gets `GROUP <name> <state> 0`).
pub fn spawn_group(group: &SyncGroup, state: State, record: Arc<HookRecord>) -> Vec<tokio::task::JoinHandle<()>> {
    launch(&group.notify, "GROUP", &group.name, state, 0, record)
}

fn launch(n: &Notify, kind: &str, who: &str, state: State, priority: u8, record: Arc<HookRecord>) -> Vec<tokio::task::JoinHandle<()>> {
    let specific = match state {
        State::Master => n.master.clone(),
        State::Backup => n.backup.clone(),
        State::Fault => n.fault.clone(),
        State::Initialize => n.stop.clone(),
    };
    let change = n.change.clone().map(|mut argv| {
        argv.extend([kind.to_string(), who.to_string(), keepalived_state(state).to_string(), priority.to_string()]);
        argv
    });
    let mut tasks = Vec::new();
    let kind = if kind == "GROUP" { "group" } else { "instance" };
    for argv in [specific, change].into_iter().flatten() {
        let (timeout, name, record) = (n.timeout, who.to_string(), Arc::clone(&record));
        tasks.push(tokio::spawn(async move {
            let (ok, why) = super::exec::run_script(&argv, timeout).await;
            let state = keepalived_state(state);
            let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            if ok {
                tracing::debug!(kind, name = %name, hook = %argv[0], "notify hook done");
                record.record(format!("{} ({state}) ok at {when}", argv[0]));
            } else {
                record.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind, name = %name, hook = %argv[0], reason = %why, "notify hook failed");
                record.record(format!("{} ({state}) failed at {when}: {why}", argv[0]));
            }
        }));
    }
    tasks
}

//! Trackers (`[[tracker]]`): the health inputs that move VRRP priority or put an instance into
//! fault, and what each kind checks.

use std::path::PathBuf;
use std::time::Duration;

/// A health input that changes VRRP priority (or puts an instance into fault).
#[derive(Debug, Clone, PartialEq)]
pub struct Tracker {
    /// Name referenced by `vrrp.track`.
    pub name: String,
    /// keepalived's semantics: negative applies after `fall` failures, positive after `rise`
    /// successes; `None` puts the instance into FAULT while the tracker fails.
    pub weight: Option<i32>,
    /// Consecutive failures before the tracker counts as failed.
    pub fall: u32,
    /// Consecutive successes before it counts as good again.
    pub rise: u32,
    /// What is checked.
    pub kind: TrackerKind,
}

/// What a tracker checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackerKind {
    /// The local balancer: the frontend is listening and enough of its servers are healthy.
    Balancer {
        /// The frontend whose health is tracked.
        frontend: String,
        /// Servers of its backend that must be healthy.
        min_healthy: u32,
        /// How often it is evaluated.
        interval: Duration,
    },
    /// An external command (like keepalived's vrrp_script): exit 0 is success.
    Script {
        /// Argument vector, run without a shell.
        command: Vec<String>,
        /// Period between runs.
        interval: Duration,
        /// A run still going after this is killed and counts as failed.
        timeout: Duration,
    },
    /// A network interface's link state.
    Interface {
        /// The interface.
        interface: String,
    },
    /// A number read from a file, multiplied by the weight (keepalived's track_file).
    File {
        /// The file.
        path: PathBuf,
    },
}

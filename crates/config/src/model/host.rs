//! This host's own settings: its identity (`[node]`), the status endpoint (`[status]`) and
//! logging (`[log]`).

use std::net::SocketAddr;
use std::path::PathBuf;

/// This host's identity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// Name in logs and status; the host name when unset.
    pub name: Option<String>,
    /// Interface used by VRRP instances that do not name their own.
    pub interface: Option<String>,
    /// The user tracker scripts and notify hooks run as (keepalived's `script_user`); root when
    /// unset. A command that anyone else could modify (the file or a directory above it) is
    /// refused, as keepalived's `enable_script_security` does.
    pub script_user: Option<String>,
    /// Threads of the balancer's runtime (listeners, proxying, checks); one per available core
    /// when unset. VRRP, trackers and announcements run on a thread of their own.
    pub worker_threads: Option<u32>,
    /// Where halo keeps what outlives a restart (node maintenance); [`Node::STATE_DIRECTORY`]
    /// when unset.
    pub state_directory: Option<std::path::PathBuf>,
}

impl Node {
    /// The state directory when none is set (the packaged unit's `StateDirectory=halo`).
    pub const STATE_DIRECTORY: &'static str = "/var/lib/halo";

    /// The state directory in force.
    pub fn state_directory(&self) -> std::path::PathBuf {
        self.state_directory.clone().unwrap_or_else(|| Self::STATE_DIRECTORY.into())
    }
}

/// Where halo reports its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Address of the HTTP endpoint (`/status`, `/metrics`, `/healthz`).
    pub listen: SocketAddr,
    /// File holding a bearer token the endpoint requires; none means no token.
    pub token_file: Option<PathBuf>,
    /// A unix socket serving the same endpoint as well (mode 0600, for local tools that should
    /// not need a TCP port or for hosts with many network namespaces); none by default.
    pub socket: Option<PathBuf>,
}

impl Status {
    /// The bearer token from `token_file` (trimmed), when there is one.
    pub fn token(&self) -> std::io::Result<Option<String>> {
        self.token_file.as_ref().map(|file| std::fs::read_to_string(file).map(|t| t.trim().to_string())).transpose()
    }
}

/// The status endpoint's default address: loopback only, so that nothing is exposed by default.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:9470";

impl Default for Status {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 9470)), token_file: None, socket: None }
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Log {
    /// The most verbose level written.
    pub level: LogLevel,
    /// Line format.
    pub format: LogFormat,
    /// One line per proxied connection when it ends (haproxy's `option tcplog`): client,
    /// frontend, server, waits, bytes each way, duration, how it ended. Rate-limited: beyond
    /// [`CONNECTION_LOG_RATE`] lines a second the rest are counted, and the count is logged.
    pub connections: bool,
    /// Where the lines go.
    pub target: LogTarget,
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LogTarget {
    /// Standard error (journald under systemd, the container's log in a pod).
    #[default]
    Stderr,
    /// Syslog: RFC 5424 datagrams to a local socket, as haproxy's `log /dev/log local0`.
    Syslog {
        /// The socket (`/dev/log` by default).
        socket: std::path::PathBuf,
        /// The facility's number (RFC 5424: daemon 3, local0..local7 16..23).
        facility: u8,
    },
}

/// The syslog socket when none is named.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The facilities `[log] facility` takes, by name, with their RFC 5424 numbers.
pub const FACILITIES: [(&str, u8); 9] = [
    ("daemon", 3),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// Connection-log lines written per second at most; the excess is counted, never queued.
pub const CONNECTION_LOG_RATE: u32 = 1000;

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// State changes (the default): one line each.
    #[default]
    Info,
    /// Decisions and their inputs.
    Debug,
    /// Every packet and probe.
    Trace,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Readable `key=value` lines (journald-friendly).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

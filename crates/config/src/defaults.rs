//! The defaults of every optional key of `halo.toml`, in one place so that the loader, the
//! importers (which omit a value equal to its default) and the renderers agree.

use std::time::Duration;

/// VRRP version: 3 (sub-second adverts, IPv6; keepalived speaks it).
pub const VRRP_VERSION: i64 = 3;
/// Advert interval: 1 s, the RFC's and keepalived's.
pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);
/// Health check period of a stable server.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Health check period while a server changes state.
pub const CHECK_FAST_INTERVAL: Duration = Duration::from_millis(500);
/// Health check timeout.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failed checks that mark a server down.
pub const CHECK_FALL: u32 = 3;
/// Consecutive passed checks that mark a server up.
pub const CHECK_RISE: u32 = 2;
/// Path of the HTTPS check: `/readyz` (unlike `/healthz`, it fails while an API server is
/// starting or shutting down, which is exactly when it must not get traffic).
pub const CHECK_PATH: &str = "/readyz";
/// Expected HTTP status.
pub const CHECK_STATUS: u16 = 200;
/// Connect retries to one server before redispatching.
pub const RETRIES: u32 = 3;
/// Connect timeout: long enough for a loaded host, short enough that a redispatch still helps.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle timeout of a proxied connection (see `Backend::idle_timeout` for why it is long).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Drain timeout for removed servers and for shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent connections per frontend.
pub const MAX_CONNECTIONS: u32 = 10_000;
/// How long an excess connection waits for a slot.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection may stay silent (a TLS client sends its hello at once).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Tracker failures before it counts as failed.
pub const TRACKER_FALL: u32 = 2;
/// Tracker successes before it counts as good.
pub const TRACKER_RISE: u32 = 5;
/// Period of the balancer tracker (in-process, so it is cheap to run often).
pub const BALANCER_TRACKER_INTERVAL: Duration = Duration::from_millis(200);
/// Period of a script tracker.
pub const SCRIPT_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of a script tracker.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Healthy servers the balancer tracker needs.
pub const MIN_HEALTHY: u32 = 1;
/// Server weight.
pub const SERVER_WEIGHT: u32 = 1;
/// How often servers given by name are resolved again (haproxy's `hold valid` default is 10 s;
/// 30 s keeps the resolver's load low and still follows a moved master within a minute).
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

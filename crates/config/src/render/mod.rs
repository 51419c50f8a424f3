//! Renderers: the typed [`Config`](crate::Config) written out as halo.toml, or as the classic
//! stack's artefacts for hosts that keep haproxy and keepalived (corrected, not copied).

mod check_script;
mod frr;
mod haproxy;
mod keepalived;
mod network;
mod sync_group;
mod sysctl;
mod systemd;
mod toml;

use std::time::Duration;

pub use check_script::{CHECK_SCRIPT_PATH, check_script};
pub use frr::frr;
pub use haproxy::haproxy;
pub use keepalived::keepalived;
pub use network::{NetworkFacts, NetworkFile, NetworkFormat, mac_text, network};
pub use sysctl::sysctl;
pub use systemd::{static_pod, systemd};
pub use toml::halo_toml;

/// A rendered file, with what it could not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The file's text.
    pub text: String,
    /// Settings of the config the format cannot carry, each a sentence.
    pub losses: Vec<String>,
}

/// Appends one formatted line (writing to a String cannot fail).
pub(crate) fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    out.push_str(&std::fmt::format(args));
    out.push('\n');
}

/// Whole seconds, rounding a fraction up (classic formats often take integers only).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A duration in haproxy's format: milliseconds unless whole seconds.
pub(crate) fn haproxy_time(d: Duration) -> String {
    match (d.subsec_nanos(), d.as_secs()) {
        (0, s) if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        (0, s) if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        (0, s) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// keepalived seconds, fractional when needed ("1", "0.1").
pub(crate) fn keepalived_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        let text = format!("{}.{:06}", d.as_secs(), d.subsec_micros());
        text.trim_end_matches('0').to_string()
    }
}

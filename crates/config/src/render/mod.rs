//! Renderers: the typed [`Config`](crate::Config) written out as halo.toml, or as the classic
//! stack's artefacts for hosts that keep haproxy and keepalived (corrected, not copied).

mod check_script;
mod container;
mod frr;
mod haproxy;
mod keepalived;
mod network;
mod sync_group;
mod sysctl;
mod systemd;
mod toml;
mod write;

pub use check_script::{CHECK_SCRIPT_PATH, check_script};
pub use container::{IMAGE, IMAGE_PROGRAMS, IMAGE_USERS, Mount, capabilities, mounts, quadlet, static_pod};
pub use frr::frr;
pub use haproxy::haproxy;
pub use keepalived::keepalived;
pub use network::{NetworkFacts, NetworkFile, NetworkFormat, mac_text, network};
pub use sysctl::sysctl;
pub use systemd::{CAPABILITIES, systemd};
pub use toml::halo_toml;

/// A rendered file, with what it could not express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The file's text.
    pub text: String,
    /// Settings of the config the format cannot carry, each a sentence.
    pub losses: Vec<String>,
}

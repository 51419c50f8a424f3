//! halo's Linux side effects: netlink links and addresses (the VIP with a kernel lifetime),
//! raw VRRP sockets for IPv4 and IPv6, gratuitous ARP and unsolicited neighbour advertisements.
//! Every failure is returned to the caller; nothing here ignores an error.

pub mod arp_isolation;
pub mod arp_probe;
pub mod bridge;
pub mod devconf;
pub mod fd_passing;
pub mod gratuitous;
pub mod guard;
pub mod netlink;
pub mod netlink_blocking;
pub mod run_as;
mod sys;
pub mod sysctl;
pub mod virtual_mac;
pub mod vrrp_socket;

/// A failure of a host operation, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What halo was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What halo was doing.
        what: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// The interface does not exist.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// The interface has no usable address of the family.
    #[error("interface {interface} has no {family} address to send from")]
    NoAddress {
        /// The interface.
        interface: String,
        /// "IPv4" or "IPv6 link-local".
        family: &'static str,
    },
}

/// Result of host operations.
pub type Result<T> = std::result::Result<T, HostError>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

pub(crate) fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> HostError {
    let what = what.into();
    move |e| HostError::Io { what, source: std::io::Error::from(e) }
}

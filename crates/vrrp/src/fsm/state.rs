//! The states of a virtual router ([`State`]) and why it moves between them ([`Reason`]).

use std::fmt;

/// Protocol states (RFC 5798 §6.4), plus FAULT as keepalived has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Watching the master.
    Backup,
    /// Owning the addresses and advertising.
    Master,
    /// Unable to serve (a tracker without weight fails, or the interface is down).
    Fault,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        })
    }
}

/// Why a state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Started as backup.
    Start,
    /// Started as the address owner (priority 255).
    Owner,
    /// No advert from a master within Master_Down_Interval.
    MasterDown,
    /// An advert of higher priority (or equal priority from a higher address).
    HigherPriority,
    /// Stopped cleanly.
    Shutdown,
    /// A fault began.
    Fault,
    /// The fault cleared.
    Recovered,
    /// Its sync group moved it, following another member (see [`crate::sync`]).
    Group,
    /// Took the place of the same router in the process it replaces (`halo upgrade`): the state
    /// did not change on the wire.
    Handover,
    /// The node went into maintenance (`halo node maintenance on`).
    Maintenance,
}

//! VRRP protocol core for halo: the types shared by the configuration and the state machine.
//!
//! This crate never touches a socket or a clock. It holds the protocol's value types now; the
//! packet codec and the state machine join it (RFC 3768 for version 2, RFC 5798 for version 3).

pub mod fsm;
pub mod packet;
pub mod types;

pub use types::{AdvertInterval, ChecksumMode, Priority, RangeError, Version, Vrid};

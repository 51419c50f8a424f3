//! VRRP protocol core for halo: the types shared by the configuration and the state machine.
//!
//! This crate never touches a socket or a clock: the protocol's value types, the packet codec,
//! the state machine of one virtual router (RFC 3768 for version 2, RFC 5798 for version 3) and
//! the sync group that moves several of them together (keepalived's `vrrp_sync_group`).

pub mod fsm;
pub mod packet;
pub mod sync;
pub mod types;

pub use types::{AdvertInterval, ChecksumMode, Priority, RangeError, Version, Vrid};

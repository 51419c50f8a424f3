//! What a virtual router asks its driver to do ([`Action`]): send, add or remove addresses, and
//! report a state change.

use super::state::{Reason, State};

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0 announces a stop).
    SendAdvert {
        /// Priority to put in the packet.
        priority: u8,
    },
    /// Add the virtual addresses to the interface.
    AddAddresses,
    /// Remove them.
    RemoveAddresses,
    /// Send one burst of gratuitous ARP / unsolicited NA for every virtual address.
    SendGratuitous,
    /// The state changed (log it, run notify hooks, update status).
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
        /// Effective priority at the change.
        priority: u8,
    },
}

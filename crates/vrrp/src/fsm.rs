//! The VRRP state machine of one virtual router (RFC 5798 §6, RFC 3768 §6 for version 2), pure:
//! it is told the time and the events, and answers with actions and its next deadline. It never
//! reads a clock or touches a socket; the driver does both.
//!
//! Its parts: the configuration (`config`), the states and reasons (`state`),
//! the actions asked of the driver (`action`), why an advert is ignored (`ignored`), the router
//! itself (`router`) and what it does with an advert (`receive`), for its sync group (`group`)
//! and at a handover (`handover`).

mod action;
mod config;
mod group;
mod handover;
mod ignored;
mod receive;
mod router;
mod state;

pub use action::Action;
pub use config::{GratuitousSchedule, RouterConfig, WireIdentity};
pub use handover::Handover;
pub use ignored::Ignored;
pub use router::Router;
pub use state::{Reason, State};

//! The VIP guard, the small process `halo run` starts beside itself (the `halo-guard` binary):
//! what the daemon tells it over a pipe (`wire`) and what it does when the pipe closes because
//! the daemon died without cleaning up (`clean_up`). Both are blocking and need no runtime, so
//! that the guard is a small image that acts the moment the daemon is gone.

pub mod clean_up;
pub mod wire;

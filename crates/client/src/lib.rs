//! The client of a running halo daemon: its status endpoint (the HTTP client, in `status`), and
//! the terminal colours of the state words it answers with (`paint`). It knows the daemon only
//! through the endpoint, as `[status]` describes it.

pub mod paint;
pub mod status;

pub use paint::paint;
pub use status::{CONNECT_TIMEOUT, Endpoint, MAX_BODY, REQUEST_TIMEOUT, StatusClient, StatusError};

//! How one check of `halo host check` came out ([`Verdict`]): shared by every subject checked,
//! the FRR checks among them.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Not ready.
    Fail,
}

//! Why a received advert was not acted upon ([`Ignored`]), with a stable name for counters.

/// Why a received advert was not acted upon. Each has a stable name for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// For another virtual router.
    Vrid,
    /// Of another version.
    Version,
    /// v2 authentication does not match.
    Auth,
    /// v2 advert interval differs from ours (RFC 3768 §7.1: discard).
    Interval,
    /// Not listening (initialize or fault).
    NotListening,
    /// Lower priority than ours while we may preempt (or are master).
    LowerPriority,
}

impl Ignored {
    /// A short stable name, for counters and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Ignored::Vrid => "vrid",
            Ignored::Version => "version",
            Ignored::Auth => "auth",
            Ignored::Interval => "interval_mismatch",
            Ignored::NotListening => "not_listening",
            Ignored::LowerPriority => "lower_priority",
        }
    }
}

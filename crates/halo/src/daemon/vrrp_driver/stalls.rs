//! Whether the whole process went unscheduled (a paused VM, a frozen cgroup, SIGSTOP, a starved
//! host), as opposed to one task waiting long: a thread of its own ticks every [`TICK`] and notes
//! each gap between two ticks well past that; a VRRP driver whose protocol is late asks for the
//! longest stall since it was due. A long await of the driver itself (netlink held up by the
//! kernel's lock) leaves the ticks regular: it is no pause.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How often the watching thread ticks.
const TICK: Duration = Duration::from_millis(20);
/// A gap longer than a tick by this much is a stall.
const SLACK: Duration = Duration::from_millis(60);
/// Stalls remembered (the most recent).
const KEPT: usize = 32;

/// The stalls seen, and the last tick.
#[derive(Debug)]
pub(super) struct Stalls {
    seen: Mutex<(VecDeque<(Instant, Duration)>, Instant)>,
}

static STALLS: OnceLock<Stalls> = OnceLock::new();

impl Stalls {
    fn new(now: Instant) -> Self {
        Self { seen: Mutex::new((VecDeque::new(), now)) }
    }

    /// A tick at `now`: the gap since the last one is noted if it was a stall.
    fn tick(&self, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let gap = now.saturating_duration_since(seen.1);
        if gap > TICK + SLACK {
            if seen.0.len() == KEPT {
                seen.0.pop_front();
            }
            seen.0.push_back((now, gap));
        }
        seen.1 = now;
    }

    /// The longest time the process went unscheduled since `since`, as of `now`: stalls that
    /// ended after it, and the one under way if the ticks have stopped (the thread that notes
    /// stalls may not have run yet after one).
    fn longest_since(&self, since: Instant, now: Instant) -> Duration {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let ongoing = now.saturating_duration_since(seen.1);
        let ongoing = if ongoing > TICK + SLACK { ongoing } else { Duration::ZERO };
        seen.0.iter().filter(|(ended, _)| *ended > since).map(|(_, gap)| *gap).fold(ongoing, Duration::max)
    }
}

/// Starts the watching thread (once for the process).
pub(super) fn watch() {
    STALLS.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("halo-stalls".to_string()).spawn(|| {
            loop {
                std::thread::sleep(TICK);
                if let Some(stalls) = STALLS.get() {
                    stalls.tick(Instant::now());
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot watch for stalls: a pause of the whole process is taken for a late timer");
        }
        Stalls::new(Instant::now())
    });
}

/// The longest time the process went unscheduled since `since`; `None` when nothing watches
/// (then any late timer counts as a pause).
pub(super) fn longest_since(since: Instant) -> Option<Duration> {
    STALLS.get().map(|stalls| stalls.longest_since(since, Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_between_ticks_is_a_stall_and_a_stopped_ticker_one_under_way() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let stalls = Stalls::new(t0);
        for i in 1..=10 {
            stalls.tick(t0 + ms(20 * i));
        }
        assert_eq!(stalls.longest_since(t0, t0 + ms(210)), Duration::ZERO, "regular ticks: no stall");
        stalls.tick(t0 + ms(5200));
        assert_eq!(stalls.longest_since(t0, t0 + ms(5210)), ms(5000), "a 5 s gap between ticks");
        assert_eq!(stalls.longest_since(t0 + ms(5210), t0 + ms(5220)), Duration::ZERO, "it ended before: not since");
        // The ticker has not run since 5 200 ms: a stall under way.
        assert_eq!(stalls.longest_since(t0 + ms(5300), t0 + ms(7200)), ms(2000));
    }
}

//! Health, pure: rise/fall hysteresis ("flip after N consecutive opposite results"), shared by
//! server checks and the daemon's trackers; for servers, a fast interval while a server is
//! changing state and DOWN until the first passing check. The probe I/O is in `probe`; the data
//! path reads the verdict lock-free (an atomic in `runtime`).

use std::time::Duration;

/// Rise/fall hysteresis: the verdict flips only after `fall` consecutive failures or `rise`
/// consecutive successes.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    passing: bool,
    /// Consecutive results opposite to the verdict.
    streak: u32,
}

impl Hysteresis {
    /// A verdict starting at `passing`, with these thresholds (0 counts as 1).
    pub fn new(fall: u32, rise: u32, passing: bool) -> Self {
        Self { fall: fall.max(1), rise: rise.max(1), passing, streak: 0 }
    }

    /// The current verdict.
    pub fn is_passing(&self) -> bool {
        self.passing
    }

    /// Whether results opposite to the verdict have started to come in.
    pub fn in_doubt(&self) -> bool {
        self.streak > 0
    }

    /// Failures in a row that make a passing verdict fail.
    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// Sets the verdict outright (a first result), forgetting any streak.
    pub fn set(&mut self, passing: bool) {
        self.passing = passing;
        self.streak = 0;
    }

    /// Feeds one result; `Some(new verdict)` when it flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak >= if ok { self.rise } else { self.fall } {
            self.set(ok);
            return Some(ok);
        }
        None
    }
}

/// The health of one server.
#[derive(Debug, Clone)]
pub struct Health {
    verdict: Hysteresis,
    interval: Duration,
    fast_interval: Duration,
    /// No result yet: the first pass marks the server up at once.
    initial: bool,
    /// The state is known: UP, or DOWN after `fall` failures in a row or a flip.
    decided: bool,
    /// Failures in a row since the start, while undecided.
    start_failures: u32,
}

impl Health {
    /// A server that is DOWN until its first passing check.
    pub fn new(fall: u32, rise: u32, interval: Duration, fast_interval: Duration) -> Self {
        Self { verdict: Hysteresis::new(fall, rise, false), interval, fast_interval, initial: true, decided: false, start_failures: 0 }
    }

    /// The same state under the thresholds and intervals of a changed check (a reload): the
    /// verdict, the streak and whether it is decided are kept.
    pub fn retuned(&self, fall: u32, rise: u32, interval: Duration, fast_interval: Duration) -> Self {
        let mut verdict = Hysteresis::new(fall, rise, self.verdict.passing);
        verdict.streak = self.verdict.streak;
        Self { verdict, interval, fast_interval, ..self.clone() }
    }

    /// A server known to be UP (it served unchecked until a reload gave its backend checks):
    /// decided, and DOWN only after `fall` failures, as any server that passed.
    pub fn up(fall: u32, rise: u32, interval: Duration, fast_interval: Duration) -> Self {
        let mut health = Self::new(fall, rise, interval, fast_interval);
        health.record(true);
        health
    }

    /// A server whose state another process decided (`halo upgrade`): decided, UP or DOWN.
    pub fn known(up: bool, fall: u32, rise: u32, interval: Duration, fast_interval: Duration) -> Self {
        let mut health = Self::new(fall, rise, interval, fast_interval);
        health.initial = false;
        health.decided = true;
        health.verdict.set(up);
        health
    }

    /// Whether the state is known, not just assumed: the server passed (UP), or failed `fall`
    /// checks in a row (DOWN). A server still coming up at start is not decided yet, so whoever
    /// waits for it (the balancer tracker, before VRRP elects) does not take "starting" for "down".
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// Whether the server takes traffic.
    pub fn is_up(&self) -> bool {
        self.verdict.is_passing()
    }

    /// Feeds a result (a probe, or a failed connect from the data path); `Some(up)` on a flip.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if std::mem::take(&mut self.initial) && ok {
            self.verdict.set(true);
            self.decided = true;
            return Some(true);
        }
        if !self.decided {
            self.start_failures = if ok { 0 } else { self.start_failures + 1 };
            self.decided = self.start_failures >= self.verdict.fall();
        }
        let flipped = self.verdict.record(ok);
        self.decided |= flipped.is_some();
        flipped
    }

    /// Whether the state is settled: decided, and no result against it has come in since.
    pub fn is_settled(&self) -> bool {
        self.decided && !self.verdict.in_doubt()
    }

    /// When to probe next: fast while the state is in doubt.
    pub fn next_interval(&self) -> Duration {
        if self.verdict.in_doubt() || !self.decided { self.fast_interval } else { self.interval }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_flips_only_after_consecutive_results() {
        let mut h = Hysteresis::new(3, 2, true);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success resets the failure streak");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    fn health() -> Health {
        Health::new(3, 2, Duration::from_secs(2), Duration::from_millis(500))
    }

    #[test]
    fn down_until_the_first_pass() {
        let mut h = health();
        assert!(!h.is_up());
        assert_eq!(h.next_interval(), Duration::from_millis(500));
        assert_eq!(h.record(true), Some(true));
        assert_eq!(h.next_interval(), Duration::from_secs(2));
    }

    #[test]
    fn a_server_still_starting_is_not_decided_until_fall_failures_or_rise_passes() {
        let mut h = health();
        assert!(!h.is_decided());
        assert_eq!(h.record(false), None);
        assert!(!h.is_decided(), "one failure at start may be a server still starting");
        assert_eq!(h.next_interval(), Duration::from_millis(500), "fast while undecided");
        assert_eq!(h.record(true), None);
        assert!(!h.is_decided());
        assert_eq!(h.record(true), Some(true));
        assert!(h.is_decided() && h.is_up());
        let mut down = health();
        for _ in 0..2 {
            down.record(false);
        }
        assert!(!down.is_decided());
        down.record(false);
        assert!(down.is_decided() && !down.is_up(), "three failures (fall) decide DOWN");
        assert_eq!(down.next_interval(), Duration::from_secs(2));
        let mut up = health();
        up.record(true);
        assert!(up.is_decided());
    }

    #[test]
    fn retuned_keeps_the_state_and_takes_the_new_thresholds() {
        let mut h = health();
        h.record(true);
        h.record(false);
        let mut retuned = h.retuned(2, 2, Duration::from_secs(5), Duration::from_secs(1));
        assert!(retuned.is_up() && retuned.is_decided());
        assert_eq!(retuned.next_interval(), Duration::from_secs(1), "in doubt: the new fast interval");
        assert_eq!(retuned.record(false), Some(false), "the kept failure and this one make the new fall of 2");
        let mut up = Health::up(1, 1, Duration::from_secs(2), Duration::from_millis(500));
        assert!(up.is_up() && up.is_decided());
        assert_eq!(up.record(false), Some(false));
    }

    #[test]
    fn a_failing_start_needs_rise_passes() {
        let mut h = health();
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    #[test]
    fn fall_consecutive_failures_with_the_fast_interval_in_between() {
        let mut h = health();
        h.record(true);
        assert_eq!(h.record(false), None);
        assert_eq!(h.next_interval(), Duration::from_millis(500), "changing: fast interval");
        assert_eq!(h.record(true), None, "a pass resets the streak");
        assert_eq!(h.next_interval(), Duration::from_secs(2));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert!(!h.is_up());
    }
}

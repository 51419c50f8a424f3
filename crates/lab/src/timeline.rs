//! What the lab measured, judged without I/O: client requests per step (sent, failed, outage,
//! latency), failures outside the failover windows, the longest time two hosts held the VIP,
//! and the requests a sick server received after a balancer marked it down.

use std::net::Ipv4Addr;

use serde::Serialize;

/// A request slower than this counts toward an outage even though it succeeded (a SYN
/// retransmitted after the VIP moved, for instance).
pub const SLOW_MS: u64 = 1000;

/// One client request, as the client logged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// When it started (Unix milliseconds).
    pub start_ms: u64,
    /// How long it took.
    pub latency_ms: u64,
    /// `ok`, `http-NNN`, `timeout` or the error.
    pub outcome: String,
    /// The stand-in that answered, `-` when none did.
    pub server: String,
}

impl Request {
    /// Parses a `client.log` line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let start_ms = words.next()?.parse().ok()?;
        let latency_ms = words.next()?.parse().ok()?;
        let outcome = words.next()?.to_string();
        let server = words.next().unwrap_or("-").to_string();
        Some(Self { start_ms, latency_ms, outcome, server })
    }

    /// Answered 200.
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

/// A stand-in's log line: a request it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When (Unix milliseconds).
    pub at_ms: u64,
    /// Who sent it (a balancer's address).
    pub peer: Ipv4Addr,
    /// What it asked for.
    pub path: String,
}

impl Received {
    /// Parses a `NAME.requests` line.
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        Some(Self { at_ms: words.next()?.parse().ok()?, peer: words.next()?.parse().ok()?, path: words.next()?.to_string() })
    }
}

/// The client's view of a stretch of time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests started.
    pub sent: usize,
    /// Of which failed.
    pub failed: usize,
    /// Longest run of failed or slow requests: from the first one's start to the start of the
    /// next good one.
    pub outage_ms: u64,
    /// Median latency of the successful ones.
    pub p50_ms: u64,
    /// 99th percentile latency of the successful ones.
    pub p99_ms: u64,
}

/// Statistics of the requests started in `[from, to)`.
pub fn stats(requests: &[Request], from: u64, to: u64) -> Stats {
    let mut inside: Vec<&Request> = requests.iter().filter(|r| r.start_ms >= from && r.start_ms < to).collect();
    inside.sort_by_key(|r| r.start_ms);
    let mut latencies: Vec<u64> = inside.iter().filter(|r| r.ok()).map(|r| r.latency_ms).collect();
    latencies.sort_unstable();
    let percentile = |p: usize| if latencies.is_empty() { 0 } else { latencies[(latencies.len() - 1) * p / 100] };
    let mut outage_ms = 0;
    let mut run_start = None;
    for r in &inside {
        let bad = !r.ok() || r.latency_ms > SLOW_MS;
        match (bad, run_start) {
            (true, None) => run_start = Some(r.start_ms),
            (false, Some(first)) => {
                outage_ms = outage_ms.max(r.start_ms - first);
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(first) = run_start {
        outage_ms = outage_ms.max(to.saturating_sub(first));
    }
    Stats {
        sent: inside.len(),
        failed: inside.iter().filter(|r| !r.ok()).count(),
        outage_ms,
        p50_ms: percentile(50),
        p99_ms: percentile(99),
    }
}

/// Failed requests that started outside every window.
pub fn failed_outside<'a>(requests: &'a [Request], windows: &[(u64, u64)]) -> Vec<&'a Request> {
    requests.iter().filter(|r| !r.ok() && !windows.iter().any(|(from, to)| r.start_ms >= *from && r.start_ms <= *to)).collect()
}

/// The longest stretch during which two or more hosts held the VIP, from samples of
/// (time, holders): from the first sample with two to the next sample with fewer (so it errs
/// long by up to one sampling period).
pub fn longest_double_holding(samples: &[(u64, usize)]) -> u64 {
    let mut longest = 0;
    let mut since = None;
    for (at, holders) in samples {
        match (*holders >= 2, since) {
            (true, None) => since = Some(*at),
            (false, Some(first)) => {
                longest = longest.max(at - first);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(first), Some((last, _))) = (since, samples.last()) {
        longest = longest.max(last - first);
    }
    longest
}

/// Requests from `peer` for something other than a probe that arrived after `after_ms`.
pub fn received_after(log: &[Received], peer: Ipv4Addr, after_ms: u64) -> Vec<&Received> {
    log.iter().filter(|r| r.peer == peer && r.at_ms > after_ms).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(start_ms: u64, latency_ms: u64, outcome: &str) -> Request {
        Request { start_ms, latency_ms, outcome: outcome.to_string(), server: "api1".to_string() }
    }

    #[test]
    fn parses_the_logs() {
        assert_eq!(Request::parse("1000 12 ok api2"), Some(request(1000, 12, "ok")).map(|r| Request { server: "api2".into(), ..r }));
        assert_eq!(Request::parse("1000 12"), None);
        assert_eq!(Request::parse("x 12 ok api1"), None);
        let received = Received::parse("1700 10.77.0.21 /version 200").expect("line");
        assert_eq!((received.at_ms, received.peer, received.path.as_str()), (1700, Ipv4Addr::new(10, 77, 0, 21), "/version"));
        assert_eq!(Received::parse("1700 nonsense /version 200"), None);
    }

    #[test]
    fn outage_runs_from_the_first_bad_request_to_the_next_good_one() {
        let requests = vec![
            request(0, 5, "ok"),
            request(50, 5, "connect:refused"),
            request(100, 2000, "timeout"),
            request(150, 1200, "ok"), // slow: part of the outage
            request(200, 5, "ok"),
            request(250, 5, "http-500"),
            request(300, 5, "ok"),
        ];
        let s = stats(&requests, 0, 400);
        assert_eq!((s.sent, s.failed, s.outage_ms), (7, 3, 150));
        assert_eq!(s.p50_ms, 5);
        assert_eq!(stats(&requests, 200, 400).outage_ms, 50);
        // A run still going at the end of the stretch lasts until its end.
        assert_eq!(stats(&requests[..3], 0, 1000).outage_ms, 950);
        assert_eq!(stats(&[], 0, 10), Stats::default());
    }

    #[test]
    fn failures_inside_windows_are_expected_and_others_are_not() {
        let requests = vec![request(100, 5, "timeout"), request(500, 5, "ok"), request(900, 5, "http-500")];
        let outside = failed_outside(&requests, &[(50, 200)]);
        assert_eq!(outside, vec![&requests[2]]);
        assert!(failed_outside(&requests, &[(50, 200), (800, 900)]).is_empty());
    }

    #[test]
    fn double_holding_is_measured_between_samples() {
        assert_eq!(longest_double_holding(&[(0, 1), (100, 1), (200, 0), (300, 1)]), 0);
        assert_eq!(longest_double_holding(&[(0, 1), (100, 2), (200, 2), (300, 1), (400, 2), (450, 1)]), 200);
        assert_eq!(longest_double_holding(&[(0, 2), (700, 2)]), 700);
    }

    #[test]
    fn requests_after_the_mark_down_are_found_per_balancer() {
        let lb1 = Ipv4Addr::new(10, 77, 0, 21);
        let lb2 = Ipv4Addr::new(10, 77, 0, 22);
        let log = vec![
            Received { at_ms: 100, peer: lb1, path: "/version".into() },
            Received { at_ms: 300, peer: lb2, path: "/version".into() },
            Received { at_ms: 400, peer: lb1, path: "/version".into() },
        ];
        assert_eq!(received_after(&log, lb1, 200), vec![&log[2]]);
        assert!(received_after(&log, lb2, 300).is_empty());
    }
}

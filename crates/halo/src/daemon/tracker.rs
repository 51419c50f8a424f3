//! Trackers: health inputs that move VRRP priority. Each runs as its own task, turns raw
//! results into a stable verdict with rise/fall hysteresis (`halo_lb::health::Hysteresis`), and publishes it; each
//! instance folds the verdicts of the trackers it lists into a priority adjustment or a FAULT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use halo_config::{Tracker, TrackerKind};
use halo_lb::health::Hysteresis;
use halo_lb::runtime::FrontendRuntime;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::Instrument;

/// Stable verdict of one tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Passing (after `rise` successes) or failing (after `fall` failures).
    pub passing: bool,
    /// False until the tracker has a first real result (VRRP waits for it, bounded, at start).
    pub settled: bool,
    /// For file trackers: the number read, which multiplies the weight.
    pub value: i64,
    /// The latest request to check again ([`Recheck`]) this verdict answers: it rests on checks
    /// that started at that moment or later.
    pub fresh_from: Option<Instant>,
}

impl Verdict {
    /// A verdict before any result.
    pub const UNSETTLED: Verdict = Verdict { passing: true, settled: false, value: 0, fresh_from: None };
}

/// How long an instance waits for its trackers' first results at start, or for their fresh
/// results when its link returns, before it goes on with what it has.
pub const TRACKER_SETTLE: Duration = Duration::from_secs(10);

/// Asks the trackers whose verdict rests on checks (balancer, script) to check again now and
/// answer with a fresh verdict: set to the moment of asking (an instance whose link returned).
pub type Recheck = Arc<watch::Sender<Option<Instant>>>;

/// The published verdicts of all trackers, by name.
pub type Verdicts = watch::Receiver<BTreeMap<String, Verdict>>;

/// What an instance should apply: the sum of weights in effect, and whether it is in FAULT.
pub fn fold(trackers: &[Tracker], names: &[String], verdicts: &BTreeMap<String, Verdict>) -> (i32, bool) {
    let mut adjustment = 0i32;
    let mut fault = false;
    for tracker in trackers.iter().filter(|t| names.contains(&t.name)) {
        let verdict = verdicts.get(&tracker.name).copied().unwrap_or(Verdict::UNSETTLED);
        match (&tracker.kind, tracker.weight) {
            (TrackerKind::File { .. }, Some(weight)) => adjustment += weight.saturating_mul(verdict.value.clamp(-254, 254) as i32),
            (TrackerKind::File { .. }, None) => fault |= verdict.value != 0,
            (_, None) => fault |= !verdict.passing,
            (_, Some(weight)) if weight < 0 && !verdict.passing => adjustment += weight,
            (_, Some(weight)) if weight > 0 && verdict.passing => adjustment += weight,
            _ => {}
        }
    }
    (adjustment, fault)
}

/// The running trackers: one task each, all publishing into one channel that outlives reloads.
pub struct TrackerSet {
    sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>,
    /// Requests to check again, shared with the instances; outlives reloads.
    recheck: Recheck,
    stop: watch::Sender<bool>,
    current: Vec<Tracker>,
    links: halo_hostnet::netlink::LinkStates,
    /// The VRRP side's runtime (its own thread), where the trackers run.
    runtime: Handle,
}

impl TrackerSet {
    /// Starts a task per tracker on `runtime` (the VRRP side's, now and at reloads).
    /// `frontends` are the running balancer's, for `balancer` ones.
    pub fn start(
        trackers: &[Tracker],
        links: halo_hostnet::netlink::LinkStates,
        frontends: &[Arc<FrontendRuntime>],
        runtime: &Handle,
    ) -> anyhow::Result<Self> {
        let initial: BTreeMap<String, Verdict> = trackers.iter().map(|t| (t.name.clone(), Verdict::UNSETTLED)).collect();
        let mut set = Self {
            sender: Arc::new(watch::Sender::new(initial)),
            recheck: Arc::new(watch::Sender::new(None)),
            stop: watch::Sender::new(false),
            current: Vec::new(),
            links,
            runtime: runtime.clone(),
        };
        set.spawn(trackers, frontends)?;
        Ok(set)
    }

    /// The verdicts, for the VRRP instances.
    pub fn verdicts(&self) -> Verdicts {
        self.sender.subscribe()
    }

    /// Where instances ask the trackers to check again.
    pub fn rechecker(&self) -> Recheck {
        Arc::clone(&self.recheck)
    }

    /// Replaces the trackers when they changed; verdicts of trackers that keep their name carry
    /// over, so a reload does not move a VIP.
    pub fn reload(&mut self, trackers: &[Tracker], frontends: &[Arc<FrontendRuntime>]) -> anyhow::Result<()> {
        if trackers == self.current.as_slice() {
            // Same trackers; balancer ones may watch a frontend object that was rebuilt.
            if !trackers.iter().any(|t| matches!(t.kind, TrackerKind::Balancer { .. })) {
                return Ok(());
            }
        }
        self.stop.send_replace(true);
        self.stop = watch::Sender::new(false);
        self.sender.send_modify(|all| all.retain(|name, _| trackers.iter().any(|t| t.name == *name)));
        self.spawn(trackers, frontends)
    }

    fn spawn(&mut self, trackers: &[Tracker], frontends: &[Arc<FrontendRuntime>]) -> anyhow::Result<()> {
        for tracker in trackers {
            let (tracker, sender, stop) = (tracker.clone(), Arc::clone(&self.sender), self.stop.subscribe());
            let previous = self.sender.borrow().get(&tracker.name).copied();
            let span = tracing::info_span!("tracker", name = %tracker.name);
            match &tracker.kind {
                TrackerKind::Balancer { frontend, .. } => {
                    let running = frontends.iter().find(|f| f.name == *frontend).cloned();
                    let running = running
                        .ok_or_else(|| anyhow::anyhow!("tracker `{}` watches frontend `{frontend}`, which is not running", tracker.name))?;
                    let recheck = self.recheck.subscribe();
                    self.runtime.spawn(run_balancer(tracker, sender, running, previous, (stop, recheck)).instrument(span));
                }
                TrackerKind::Script { .. } | TrackerKind::File { .. } => {
                    self.runtime.spawn(run(tracker, sender, previous, (stop, self.recheck.subscribe())).instrument(span));
                }
                TrackerKind::Interface { .. } => {
                    self.runtime.spawn(run_interface(tracker, sender, self.links.clone(), previous, stop).instrument(span));
                }
            }
        }
        self.current = trackers.to_vec();
        Ok(())
    }
}

/// What ends a tracker's wait besides its period: its stop, and requests to check again.
type Wake = (watch::Receiver<bool>, watch::Receiver<Option<Instant>>);

/// Sleeps `period`, or less when asked to check again (the moment asked, to answer); `None`
/// when the tracker must stop (reload or shutdown).
async fn pause(period: Duration, (stop, recheck): &mut Wake) -> Option<Option<Instant>> {
    tokio::select! {
        () = tokio::time::sleep(period) => Some(None),
        Ok(()) = recheck.changed() => Some(*recheck.borrow_and_update()),
        _ = stop.changed() => None,
    }
}

/// A script or file tracker: a result every period (at once when asked to check again), folded
/// with rise/fall.
async fn run(tracker: Tracker, sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>, previous: Option<Verdict>, mut wake: Wake) {
    // Starts passing, as keepalived's scripts do, so a restart does not flap the VIP.
    let mut hysteresis = Hysteresis::new(tracker.fall, tracker.rise, previous.is_none_or(|v| v.passing));
    let mut settled = previous.is_some_and(|v| v.settled);
    let (mut asked, mut answered) = (None, previous.and_then(|v| v.fresh_from));
    loop {
        let (ok, value, why, period) = match &tracker.kind {
            TrackerKind::Script { command, interval, timeout } => {
                let (ok, why) = super::exec::run_script(command, *timeout).await;
                (ok, 0, why, *interval)
            }
            TrackerKind::File { path } => {
                let (value, why) = read_weight(path).await;
                (true, value, why, Duration::from_secs(1))
            }
            TrackerKind::Interface { .. } => return,
            TrackerKind::Balancer { .. } => return,
        };
        let flipped = hysteresis.record(ok);
        let changed_value =
            matches!(tracker.kind, TrackerKind::File { .. }) && sender.borrow().get(&tracker.name).is_some_and(|v| v.value != value);
        let answering = std::mem::take(&mut asked);
        if flipped.is_some() || changed_value || !settled || answering.is_some() {
            let passing = hysteresis.is_passing();
            if flipped.is_some() || changed_value {
                tracing::info!(passing, value, reason = %why, "tracker changed");
            }
            answered = answering.or(answered);
            publish(&sender, &tracker.name, Verdict { passing, value, settled: true, fresh_from: answered });
            settled = true;
        }
        match pause(period, &mut wake).await {
            None => return,
            Some(recheck) => asked = recheck,
        }
    }
}

/// An interface tracker follows its link as keepalived's `track_interface` does: it passes while
/// the interface exists, is up and has its carrier (`halo_hostnet::netlink::watch_links`), from
/// the first look and at every change the kernel reports. No fall/rise: a notification is a
/// state, not one result among several (counted as results, a returning link waited for more
/// changes that never came). An interface that does not exist fails, and says so.
async fn run_interface(
    tracker: Tracker,
    sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>,
    mut links: halo_hostnet::netlink::LinkStates,
    previous: Option<Verdict>,
    mut stop: watch::Receiver<bool>,
) {
    let TrackerKind::Interface { interface } = &tracker.kind else { return };
    let mut published = previous.filter(|v| v.settled).map(|v| v.passing);
    loop {
        let state = links.borrow_and_update().get(interface).copied();
        let passing = state == Some(true);
        if published != Some(passing) {
            match state {
                Some(up) => tracing::info!(passing, interface = %interface, up, "tracker changed"),
                None => tracing::warn!(passing, interface = %interface, "tracker changed: no such interface on this host"),
            }
            publish(&sender, &tracker.name, Verdict { passing, value: 0, settled: true, fresh_from: None });
            published = Some(passing);
        }
        tokio::select! {
            changed = links.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// The built-in balancer tracker: the local frontend listens and at least `min_healthy` servers
/// of its backend pass their checks. It reads the balancer's own state, so it needs no curl, no
/// shell and no address; backend health already has its own rise/fall, so an API server that is
/// briefly slow does not move the VIP.
async fn run_balancer(
    tracker: Tracker,
    sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>,
    frontend: Arc<FrontendRuntime>,
    previous: Option<Verdict>,
    mut wake: Wake,
) {
    let TrackerKind::Balancer { min_healthy, interval, .. } = tracker.kind else { return };
    // At start the balancer's health is unknown until every server has had a first check: the
    // verdict stays unsettled (VRRP waits for it) and then starts from what the checks say, so a
    // starting host neither claims the VIP too early nor gives it away and takes it back.
    // After a reload it carries on from where it was. Asked to check again (a link of this host
    // came back: what the checks said during the outage is stale), it has every server checked
    // at once and answers from those fresh checks, as at start.
    let mut settled = previous.is_some_and(|v| v.settled);
    let mut hysteresis = Hysteresis::new(tracker.fall, tracker.rise, previous.is_some_and(|v| v.passing));
    let (mut asked, mut answered): (Option<Instant>, _) = (None, previous.and_then(|v| v.fresh_from));
    loop {
        let backend = frontend.backend();
        let healthy = backend.healthy_servers();
        let listening = frontend.is_listening();
        let ok = listening && healthy >= min_healthy as usize;
        let fresh = asked.filter(|since| backend.settled_since(*since));
        if let Some(since) = fresh {
            (asked, answered, settled) = (None, Some(since), true);
            hysteresis.set(ok);
            publish(&sender, &tracker.name, Verdict { passing: ok, value: 0, settled: true, fresh_from: answered });
            tracing::info!(passing = ok, listening, healthy, min_healthy, "tracker checked again");
        } else if !settled && backend.checked() {
            hysteresis.set(ok);
            publish(&sender, &tracker.name, Verdict { passing: ok, value: 0, settled: true, fresh_from: answered });
            tracing::info!(passing = ok, listening, healthy, min_healthy, "tracker settled");
            settled = true;
        } else if settled && let Some(passing) = hysteresis.record(ok) {
            tracing::info!(passing, listening, healthy, min_healthy, "tracker changed");
            publish(&sender, &tracker.name, Verdict { passing, value: 0, settled: true, fresh_from: answered });
        }
        match pause(interval, &mut wake).await {
            None => return,
            Some(Some(since)) => {
                asked = Some(since);
                backend.check_all_now();
            }
            Some(None) => {}
        }
    }
}

fn publish(sender: &watch::Sender<BTreeMap<String, Verdict>>, name: &str, verdict: Verdict) {
    sender.send_modify(|all| {
        all.insert(name.to_string(), verdict);
    });
}

/// The most a file tracker reads: a number needs a few bytes, and a file that grew by mistake (a
/// log written to the wrong path) must not be read whole every second.
const FILE_TRACKER_LIMIT: u64 = 4096;

async fn read_weight(path: &Path) -> (i64, String) {
    use tokio::io::AsyncReadExt;
    let mut text = String::new();
    let read = match tokio::fs::File::open(path).await {
        Ok(file) => file.take(FILE_TRACKER_LIMIT + 1).read_to_string(&mut text).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(n) if n as u64 > FILE_TRACKER_LIMIT => (0, format!("{} is larger than {FILE_TRACKER_LIMIT} bytes", path.display())),
        Ok(_) => match text.trim().parse::<i64>() {
            Ok(value) => (value, format!("read {value}")),
            Err(_) => (0, format!("{} does not hold a number", path.display())),
        },
        Err(e) => (0, format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(name: &str, weight: Option<i32>, kind: TrackerKind) -> Tracker {
        Tracker { name: name.to_string(), weight, fall: 1, rise: 1, kind }
    }

    #[tokio::test]
    async fn file_trackers_read_a_bounded_number() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("weight");
        std::fs::write(&file, " 42\n").expect("write");
        assert_eq!(read_weight(&file).await.0, 42);
        std::fs::write(&file, "1".repeat(10_000)).expect("write");
        let (value, why) = read_weight(&file).await;
        assert_eq!(value, 0);
        assert!(why.contains("is larger than 4096 bytes"), "{why}");
        std::fs::write(&file, "lots").expect("write");
        assert!(read_weight(&file).await.1.contains("does not hold a number"));
    }

    #[test]
    fn keepalived_weight_semantics() {
        let script =
            || TrackerKind::Script { command: vec!["/bin/true".into()], interval: Duration::from_secs(1), timeout: Duration::from_secs(1) };
        let trackers = vec![
            tracker("neg", Some(-50), script()),
            tracker("pos", Some(10), script()),
            tracker("fault", None, script()),
            tracker("file", Some(2), TrackerKind::File { path: "/x".into() }),
        ];
        let names: Vec<String> = trackers.iter().map(|t| t.name.clone()).collect();
        let verdicts = |neg: bool, pos: bool, fault: bool, value: i64| -> BTreeMap<String, Verdict> {
            [("neg", neg, 0), ("pos", pos, 0), ("fault", fault, 0), ("file", true, value)]
                .iter()
                .map(|(n, p, v)| (n.to_string(), Verdict { passing: *p, value: *v, settled: true, fresh_from: None }))
                .collect()
        };
        assert_eq!(fold(&trackers, &names, &verdicts(true, true, true, 0)), (10, false));
        assert_eq!(fold(&trackers, &names, &verdicts(false, true, true, 0)), (-40, false));
        assert_eq!(fold(&trackers, &names, &verdicts(false, false, true, 3)), (-44, false));
        assert_eq!(fold(&trackers, &names, &verdicts(true, true, false, 0)), (10, true));
        assert_eq!(fold(&trackers, &["neg".to_string()], &verdicts(false, false, false, 9)), (-50, false), "only listed trackers count");
    }
}

//! Trackers: health inputs that move VRRP priority. Each runs as its own task, turns raw
//! results into a stable verdict with rise/fall hysteresis (pure, below), and publishes it; each
//! instance folds the verdicts of the trackers it lists into a priority adjustment or a FAULT.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use halo_config::{Tracker, TrackerKind};
use halo_lb::runtime::FrontendRuntime;
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
}

/// Rise/fall hysteresis: flips only after `fall` consecutive failures or `rise` consecutive
/// successes. Starts passing, as keepalived's scripts do, so a restart does not flap the VIP.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    fall: u32,
    rise: u32,
    passing: bool,
    streak: u32,
}

impl Hysteresis {
    /// A passing tracker with these thresholds.
    pub fn new(fall: u32, rise: u32) -> Self {
        Self { fall: fall.max(1), rise: rise.max(1), passing: true, streak: 0 }
    }

    /// Feeds one result; returns `Some(new verdict)` when it flips.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.passing {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if ok { self.rise } else { self.fall };
        if self.streak >= needed {
            self.passing = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

/// The published verdicts of all trackers, by name.
pub type Verdicts = watch::Receiver<BTreeMap<String, Verdict>>;

/// What an instance should apply: the sum of weights in effect, and whether it is in FAULT.
pub fn fold(trackers: &[Tracker], names: &[String], verdicts: &BTreeMap<String, Verdict>) -> (i32, bool) {
    let mut adjustment = 0i32;
    let mut fault = false;
    for tracker in trackers.iter().filter(|t| names.contains(&t.name)) {
        let verdict = verdicts.get(&tracker.name).copied().unwrap_or(Verdict { passing: true, value: 0, settled: false });
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
    stop: watch::Sender<bool>,
    current: Vec<Tracker>,
    links: halo_hostnet::netlink::LinkStates,
}

impl TrackerSet {
    /// Starts a task per tracker. `frontends` are the running balancer's, for `balancer` ones.
    pub fn start(
        trackers: &[Tracker],
        links: halo_hostnet::netlink::LinkStates,
        frontends: &[Arc<FrontendRuntime>],
    ) -> anyhow::Result<Self> {
        let initial: BTreeMap<String, Verdict> =
            trackers.iter().map(|t| (t.name.clone(), Verdict { passing: true, value: 0, settled: false })).collect();
        let mut set = Self { sender: Arc::new(watch::Sender::new(initial)), stop: watch::Sender::new(false), current: Vec::new(), links };
        set.spawn(trackers, frontends)?;
        Ok(set)
    }

    /// The verdicts, for the VRRP instances.
    pub fn verdicts(&self) -> Verdicts {
        self.sender.subscribe()
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
                    tokio::spawn(run_balancer(tracker, sender, running, previous, stop).instrument(span));
                }
                TrackerKind::Script { .. } | TrackerKind::File { .. } => {
                    tokio::spawn(run(tracker, sender, previous, stop).instrument(span));
                }
                TrackerKind::Interface { .. } => {
                    tokio::spawn(run_interface(tracker, sender, self.links.clone(), previous, stop).instrument(span));
                }
            }
        }
        self.current = trackers.to_vec();
        Ok(())
    }
}

/// Sleeps `period`; false when the tracker must stop (reload or shutdown).
async fn pause(period: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => true,
        _ = stop.changed() => false,
    }
}

async fn run(
    tracker: Tracker,
    sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>,
    previous: Option<Verdict>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hysteresis = Hysteresis::new(tracker.fall, tracker.rise);
    hysteresis.passing = previous.is_none_or(|v| v.passing);
    let mut settled = previous.is_some_and(|v| v.settled);
    loop {
        let (ok, value, why, period) = match &tracker.kind {
            TrackerKind::Script { command, interval, timeout } => {
                let (ok, why) = run_script(command, *timeout).await;
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
        if flipped.is_some() || changed_value || !settled {
            let passing = hysteresis.passing;
            if flipped.is_some() || changed_value {
                tracing::info!(passing, value, reason = %why, "tracker changed");
            }
            publish(&sender, &tracker.name, Verdict { passing, value, settled: true });
            settled = true;
        }
        if !pause(period, &mut stop).await {
            return;
        }
    }
}

/// An interface tracker: each link notification for its interface is one result.
async fn run_interface(
    tracker: Tracker,
    sender: Arc<watch::Sender<BTreeMap<String, Verdict>>>,
    mut links: halo_hostnet::netlink::LinkStates,
    previous: Option<Verdict>,
    mut stop: watch::Receiver<bool>,
) {
    let TrackerKind::Interface { interface } = &tracker.kind else { return };
    let mut hysteresis = Hysteresis::new(tracker.fall, tracker.rise);
    hysteresis.passing = previous.is_none_or(|v| v.passing);
    let mut settled = previous.is_some_and(|v| v.settled);
    loop {
        let up = links.borrow_and_update().get(interface).copied().unwrap_or(false);
        let flipped = hysteresis.record(up);
        if let Some(passing) = flipped {
            tracing::info!(passing, interface = %interface, up, "tracker changed");
        }
        if flipped.is_some() || !settled {
            publish(&sender, &tracker.name, Verdict { passing: hysteresis.passing, value: 0, settled: true });
            settled = true;
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
    mut stop: watch::Receiver<bool>,
) {
    let TrackerKind::Balancer { min_healthy, interval, .. } = tracker.kind else { return };
    let mut hysteresis = Hysteresis::new(tracker.fall, tracker.rise);
    // At start the balancer's health is unknown until every server has had a first check: the
    // verdict stays unsettled (VRRP waits for it) and then starts from what the checks say, so a
    // starting host neither claims the VIP too early nor gives it away and takes it back.
    // After a reload it carries on from where it was.
    let mut settled = previous.is_some_and(|v| v.settled);
    hysteresis.passing = previous.is_some_and(|v| v.passing);
    loop {
        let backend = frontend.backend();
        let healthy = backend.healthy_servers();
        let listening = frontend.is_listening();
        let ok = listening && healthy >= min_healthy as usize;
        if !settled && backend.checked() {
            hysteresis.passing = ok;
            publish(&sender, &tracker.name, Verdict { passing: ok, value: 0, settled: true });
            tracing::info!(passing = ok, listening, healthy, min_healthy, "tracker settled");
            settled = true;
        } else if settled && let Some(passing) = hysteresis.record(ok) {
            tracing::info!(passing, listening, healthy, min_healthy, "tracker changed");
            publish(&sender, &tracker.name, Verdict { passing, value: 0, settled: true });
        }
        if !pause(interval, &mut stop).await {
            return;
        }
    }
}

fn publish(sender: &watch::Sender<BTreeMap<String, Verdict>>, name: &str, verdict: Verdict) {
    sender.send_modify(|all| {
        all.insert(name.to_string(), verdict);
    });
}

/// Runs a command without a shell; a run past `timeout` is killed and fails.
pub async fn run_script(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else { return (false, "empty command".to_string()) };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run {program}: {e}")),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, "exit 0".to_string()),
        Ok(Ok(status)) => (false, format!("{status}")),
        Ok(Err(e)) => (false, format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Err(e) = child.kill().await {
                tracing::warn!(program, error = %e, "could not kill a timed-out command");
            }
            (false, format!("timeout after {}", humantime::format_duration(timeout)))
        }
    }
}

async fn read_weight(path: &Path) -> (i64, String) {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(value) => (value, format!("read {value}")),
            Err(_) => (0, format!("{} does not hold a number", path.display())),
        },
        Err(e) => (0, format!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_flips_only_after_consecutive_results() {
        let mut h = Hysteresis::new(3, 2);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), None, "a success resets the failure streak");
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true));
    }

    fn tracker(name: &str, weight: Option<i32>, kind: TrackerKind) -> Tracker {
        Tracker { name: name.to_string(), weight, fall: 1, rise: 1, kind }
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
                .map(|(n, p, v)| (n.to_string(), Verdict { passing: *p, value: *v, settled: true }))
                .collect()
        };
        assert_eq!(fold(&trackers, &names, &verdicts(true, true, true, 0)), (10, false));
        assert_eq!(fold(&trackers, &names, &verdicts(false, true, true, 0)), (-40, false));
        assert_eq!(fold(&trackers, &names, &verdicts(false, false, true, 3)), (-44, false));
        assert_eq!(fold(&trackers, &names, &verdicts(true, true, false, 0)), (10, true));
        assert_eq!(fold(&trackers, &["neg".to_string()], &verdicts(false, false, false, 9)), (-50, false), "only listed trackers count");
    }

    #[tokio::test]
    async fn scripts_pass_fail_and_time_out() {
        assert!(run_script(&["/bin/true".into()], Duration::from_secs(5)).await.0);
        let (ok, why) = run_script(&["/bin/false".into()], Duration::from_secs(5)).await;
        assert!(!ok && why.contains("exit status: 1"), "{why}");
        let started = std::time::Instant::now();
        let (ok, why) = run_script(&["/bin/sleep".into(), "10".into()], Duration::from_millis(200)).await;
        assert!(!ok && why.starts_with("timeout after 200ms"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5), "the command was killed");
        let (ok, why) = run_script(&["/nonexistent".into()], Duration::from_secs(1)).await;
        assert!(!ok && why.starts_with("cannot run /nonexistent"), "{why}");
    }
}

//! What every scenario shares: the narrator, the play's state and its bounded waits, a step's
//! measurement and verdict from the client's log, the client, and the report file. Every wait
//! is bounded and gives up when the lab is interrupted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::net::{DIR, Host, Processes};
use super::observe::{Observer, Seen, Watch};
use super::timeline::{self, Request, Stats};
use super::{FRONTEND_PORT, Topology};

/// A bound on every wait for the cluster to react (it should take a few seconds).
pub const REACT: Duration = Duration::from_secs(20);
/// Failures are expected from a step's action until this long after the cluster settled
/// (requests already in flight when the VIP moved).
pub const GRACE_MS: u64 = 1000 + super::client::DEADLINE.as_millis() as u64;
/// How long each quiet stretch lasts.
pub const QUIET: Duration = Duration::from_secs(3);
/// The client's request period.
const CLIENT_PERIOD: Duration = Duration::from_millis(50);

/// One step as measured.
#[derive(Debug, Serialize)]
pub struct Step {
    pub title: String,
    pub started_ms: u64,
    pub ended_ms: u64,
    /// Where failures are expected.
    pub windows: Vec<(u64, u64)>,
    pub stats: Stats,
    /// What happened, in words.
    pub notes: Vec<String>,
    /// What did not behave.
    pub problems: Vec<String>,
}

/// Narration: printed as it happens without a terminal, drawn by the live view with one.
pub struct Narrator {
    start: Instant,
    pub lines: Arc<Mutex<Vec<String>>>,
    live: bool,
}

impl Narrator {
    pub fn say(&self, text: &str) {
        let line = format!("[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64());
        if !self.live {
            println!("{line}");
        }
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

/// A scenario being played: the lab, what the observer sees, the steps so far, and what each
/// mode's judge needs besides.
pub struct Play<'a> {
    pub topology: &'a Topology,
    pub processes: &'a mut Processes,
    pub exe: &'a Path,
    pub vip: Ipv4Addr,
    pub observer: Observer,
    pub narrator: Narrator,
    pub steps: Vec<Step>,
    /// VRRP: each balancer's address and when it was seen marking the sick server down.
    pub marked_down: BTreeMap<String, (Ipv4Addr, u64)>,
    /// VRRP: when the sick server was healed.
    pub sick_healed_ms: u64,
    /// BGP: per steady step, how many client requests each balancer passed on.
    pub spread: Vec<(String, BTreeMap<String, usize>)>,
}

/// The steps of one mode, and its judge (true when every step behaved).
pub type Steps = fn(&mut Play<'_>) -> anyhow::Result<()>;
pub type Judge = fn(&mut Play<'_>, Option<&Path>) -> anyhow::Result<bool>;

/// Plays a scenario with the live view on a terminal; ends the client and the observer, then
/// judges. True when every step behaved.
pub fn run(
    topology: &Topology,
    processes: &mut Processes,
    exe: &Path,
    watch: Watch,
    steps: Steps,
    judge: Judge,
    report: Option<&Path>,
) -> anyhow::Result<bool> {
    let live = std::io::stdout().is_terminal();
    let narrator = Narrator { start: Instant::now(), lines: Arc::new(Mutex::new(Vec::new())), live };
    let vip = watch.vip;
    let observer = Observer::start(topology.lbs.clone(), watch);
    let mut play = Play {
        topology,
        processes,
        exe,
        vip,
        observer,
        narrator,
        steps: Vec::new(),
        marked_down: BTreeMap::new(),
        sick_healed_ms: 0,
        spread: Vec::new(),
    };
    let view = live.then(|| super::view::View::start(Arc::clone(&play.observer.seen), Arc::clone(&play.narrator.lines), vip));
    let outcome = steps(&mut play);
    if let Some(mut view) = view {
        view.stop();
        // The timeline stays on the screen once the live view is gone.
        for line in play.narrator.lines.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            println!("{line}");
        }
    }
    if let Err(e) = play.processes.signal("client", Signal::SIGKILL) {
        tracing::debug!(error = %e, "client already gone");
    }
    play.processes.wait("client", Duration::from_secs(5));
    play.observer.stop();
    outcome?;
    judge(&mut play, report)
}

impl Play<'_> {
    pub fn lb(&self, name: &str) -> anyhow::Result<Host> {
        self.topology.lbs.iter().find(|h| h.name == name).cloned().with_context(|| format!("no balancer {name}"))
    }

    pub fn start_balancer(&mut self, lb: &Host) -> anyhow::Result<()> {
        let args = super::balancer_args(lb);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.processes.start(&lb.name, &lb.netns(), self.exe, &args).map(drop)
    }

    /// Starts the client: a new TLS connection to the VIP every `CLIENT_PERIOD`.
    pub fn start_client(&mut self) -> anyhow::Result<()> {
        let target = SocketAddr::from((self.vip, FRONTEND_PORT)).to_string();
        let period = CLIENT_PERIOD.as_millis().to_string();
        let client = self.topology.client.clone();
        self.processes.start(
            "client",
            &client.netns(),
            self.exe,
            &["lab", "client", "--target", &target, "--dir", DIR, "--period-ms", &period],
        )?;
        self.narrator.say(&format!("client: a new TLS connection and GET /version to {target} every {period} ms"));
        Ok(())
    }

    /// Waits until `done` holds for what the observer saw; the time it was first seen.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) -> anyhow::Result<u64> {
        let deadline = Instant::now() + REACT;
        loop {
            if super::interrupted() {
                bail!("interrupted");
            }
            if let Some(at) = self.observer.with(|seen| done(seen).then_some(seen.at_ms)) {
                return Ok(at);
            }
            if Instant::now() > deadline {
                bail!("{what}: not seen within {} s", REACT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sleeps, unless interrupted.
    pub fn pause(&self, how_long: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + how_long;
        while Instant::now() < deadline {
            if super::interrupted() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// All running balancers report every server in `servers` as `healthy`.
    pub fn all_see(&self, running: &[String], servers: &[&str], healthy: bool) -> impl Fn(&Seen) -> bool {
        let (running, servers): (Vec<String>, Vec<String>) = (running.to_vec(), servers.iter().map(|s| s.to_string()).collect());
        move |seen: &Seen| running.iter().all(|lb| servers.iter().all(|s| seen.server_healthy(lb, s) == Some(healthy)))
    }

    /// The balancers, their names and the API servers' names.
    pub fn names(&self) -> (Vec<Host>, Vec<String>, Vec<String>) {
        let lbs: Vec<Host> = self.topology.lbs.clone();
        let names = lbs.iter().map(|h| h.name.clone()).collect();
        let servers = self.topology.apis.iter().map(|h| h.name.clone()).collect();
        (lbs, names, servers)
    }

    /// Ends a step: its client statistics, failures outside its windows, the verdict line.
    pub fn finish(&mut self, title: &str, started_ms: u64, windows: Vec<(u64, u64)>, notes: Vec<String>, mut problems: Vec<String>) {
        let ended_ms = super::unix_ms();
        // A request already in flight when the fault came can fail too.
        let in_flight = super::client::DEADLINE.as_millis() as u64;
        let windows: Vec<(u64, u64)> = windows.into_iter().map(|(from, to)| (from.saturating_sub(in_flight), to)).collect();
        let requests = self.observer.with(|seen| seen.requests.clone());
        let stats = timeline::stats(&requests, started_ms, ended_ms);
        let unexpected = timeline::failed_outside(
            &requests.iter().filter(|r| r.start_ms >= started_ms && r.start_ms < ended_ms).cloned().collect::<Vec<_>>(),
            &windows,
        )
        .len();
        if unexpected > 0 {
            problems.push(format!("{unexpected} request(s) failed outside the failover window"));
        }
        let verdict = if problems.is_empty() { "ok" } else { "NOT OK" };
        self.narrator.say(&format!(
            "   {verdict}: {} requests, {} failed, outage {:.1} s, p50 {} ms, p99 {} ms{}",
            stats.sent,
            stats.failed,
            stats.outage_ms as f64 / 1000.0,
            stats.p50_ms,
            stats.p99_ms,
            problems.iter().map(|p| format!("; {p}")).collect::<String>()
        ));
        self.steps.push(Step { title: title.to_string(), started_ms, ended_ms, windows, stats, notes, problems });
    }

    pub fn note(&self, notes: &mut Vec<String>, text: String) {
        self.narrator.say(&format!("   {text}"));
        notes.push(text);
    }

    /// The whole client log, including lines written after the observer's last look.
    pub fn client_requests(&self) -> Vec<Request> {
        std::fs::read_to_string(format!("{DIR}/client.log")).unwrap_or_default().lines().filter_map(Request::parse).collect()
    }

    /// The judge's summary of the client (`more` appended to its line) and of the steps that did
    /// not behave; whether all behaved.
    pub fn summarize(&self, requests: &[Request], more: &str) -> bool {
        let total = timeline::stats(requests, 0, u64::MAX);
        let windows: Vec<(u64, u64)> = self.steps.iter().flat_map(|s| s.windows.clone()).collect();
        println!(
            "\nclient: {} requests, {} failed ({} outside the failover windows){more}",
            total.sent,
            total.failed,
            timeline::failed_outside(requests, &windows).len()
        );
        for step in self.steps.iter().filter(|s| !s.problems.is_empty()) {
            println!("NOT OK: {}: {}", step.title, step.problems.join("; "));
        }
        self.steps.iter().all(|s| s.problems.is_empty())
    }
}

/// Writes the report whole or not at all: a temporary file beside it, renamed over it.
pub fn write_report(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("encoding the report")?;
    let partial = path.with_extension("partial");
    std::fs::write(&partial, json + "\n")
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing {}", path.display()))
}

/// `kubectl version` through the VIP from the client's namespace, when kubectl is installed.
pub fn kubectl_version(client: &Host, vip: Ipv4Addr) -> Option<Result<String, String>> {
    let found = std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("kubectl").is_file()));
    if !found {
        return None;
    }
    let server = format!("https://{vip}:{FRONTEND_PORT}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &client.netns(), "kubectl", "--server", &server, "--certificate-authority"])
        .arg(format!("{DIR}/ca.pem"))
        // Any token: the stand-in, like an API server's /version, does not ask for one; without
        // it kubectl would prompt for a user name.
        .args(["--token", "halo-lab", "--request-timeout", "5s", "version"])
        .stdin(std::process::Stdio::null())
        .output();
    Some(match out {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("Server")).unwrap_or("ok").trim().to_string())
        }
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    })
}

//! The lab's scenario: start the balancers and the client, then play the steps, each with the
//! windows in which failures are expected, narrate the timeline (live view on a terminal, plain
//! lines otherwise), and judge it: failures only inside the windows, no request to the sick
//! master after a balancer marked it down, never two VIP holders for longer than one advert
//! interval. Every wait is bounded and gives up when the lab is interrupted.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::net::{self, DIR, Host, Processes};
use super::observe::{Observer, Seen};
use super::timeline::{self, Received, Request, Stats};
use super::{ADVERT_INTERVAL_MS, FRONTEND_PORT, Topology, VIP};

/// A bound on every wait for the cluster to react (it should take a few seconds).
const REACT: Duration = Duration::from_secs(20);
/// Failures are expected from a step's action until this long after the cluster settled
/// (requests already in flight when the VIP moved).
const GRACE_MS: u64 = 1000 + super::client::DEADLINE.as_millis() as u64;
/// How long each quiet stretch lasts.
const QUIET: Duration = Duration::from_secs(3);
/// The client's request period.
const CLIENT_PERIOD: Duration = Duration::from_millis(50);

/// One step as measured.
#[derive(Debug, Serialize)]
struct Step {
    title: String,
    started_ms: u64,
    ended_ms: u64,
    /// Where failures are expected.
    windows: Vec<(u64, u64)>,
    stats: Stats,
    /// What happened, in words.
    notes: Vec<String>,
    /// What did not behave.
    problems: Vec<String>,
}

/// The JSON report (`--report`).
#[derive(Debug, Serialize)]
struct Report {
    vip: Ipv4Addr,
    advert_interval_ms: u64,
    steps: Vec<Step>,
    requests: Vec<Request>,
    /// (time, connected hosts holding the VIP).
    holder_samples: Vec<(u64, usize)>,
    longest_double_holding_ms: u64,
    /// The sick master, each balancer's address and when it was seen marking it down.
    sick_server: String,
    marked_down: BTreeMap<String, (Ipv4Addr, u64)>,
    /// When it was healed (it may serve again from then on).
    sick_healed_ms: u64,
    /// Requests the sick master received (time, from whom, path).
    sick_received: Vec<(u64, Ipv4Addr, String)>,
    /// Every process the lab started.
    pids: Vec<u32>,
    behaved: bool,
}

/// Narration: printed as it happens without a terminal, drawn by the live view with one.
struct Narrator {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
    live: bool,
}

impl Narrator {
    fn say(&self, text: &str) {
        let line = format!("[{:>6.1}s] {text}", self.start.elapsed().as_secs_f64());
        if !self.live {
            println!("{line}");
        }
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

struct Play<'a> {
    topology: &'a Topology,
    processes: &'a mut Processes,
    exe: &'a Path,
    observer: Observer,
    narrator: Narrator,
    steps: Vec<Step>,
    marked_down: BTreeMap<String, (Ipv4Addr, u64)>,
    sick_healed_ms: u64,
}

/// Plays the scenario; true when every step behaved.
pub fn play(topology: &Topology, processes: &mut Processes, exe: &Path, report: Option<&Path>) -> anyhow::Result<bool> {
    let live = std::io::stdout().is_terminal();
    let narrator = Narrator { start: Instant::now(), lines: Arc::new(Mutex::new(Vec::new())), live };
    let observer = Observer::start(topology.lbs.clone(), VIP);
    let mut play =
        Play { topology, processes, exe, observer, narrator, steps: Vec::new(), marked_down: BTreeMap::new(), sick_healed_ms: 0 };
    let view = live.then(|| super::view::View::start(Arc::clone(&play.observer.seen), Arc::clone(&play.narrator.lines)));
    let outcome = play.steps();
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
    play.judge(report)
}

impl Play<'_> {
    fn lb(&self, name: &str) -> anyhow::Result<Host> {
        self.topology.lbs.iter().find(|h| h.name == name).cloned().with_context(|| format!("no balancer {name}"))
    }

    fn start_balancer(&mut self, lb: &Host) -> anyhow::Result<()> {
        let args = super::balancer_args(lb);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.processes.start(&lb.name, &lb.netns(), self.exe, &args).map(drop)
    }

    /// Waits until `done` holds for what the observer saw; the time it was first seen.
    fn wait_for(&self, what: &str, done: impl Fn(&Seen) -> bool) -> anyhow::Result<u64> {
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
    fn pause(&self, how_long: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + how_long;
        while Instant::now() < deadline {
            if super::interrupted() {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The one connected holder of the VIP, waited for.
    fn sole_holder(&self, not: Option<&str>) -> anyhow::Result<(String, u64)> {
        let at = self.wait_for("a single holder of the VIP", |seen| {
            let holders = seen.holders_now();
            holders.len() == 1 && not.is_none_or(|n| holders[0] != n)
        })?;
        let holder = self.observer.with(|seen| seen.holders_now().first().cloned()).context("the holder went away")?;
        Ok((holder, at))
    }

    /// All running balancers report every server in `servers` as `healthy`.
    fn all_see(&self, running: &[String], servers: &[&str], healthy: bool) -> impl Fn(&Seen) -> bool {
        let (running, servers): (Vec<String>, Vec<String>) = (running.to_vec(), servers.iter().map(|s| s.to_string()).collect());
        move |seen: &Seen| running.iter().all(|lb| servers.iter().all(|s| seen.server_healthy(lb, s) == Some(healthy)))
    }

    fn finish(&mut self, title: &str, started_ms: u64, windows: Vec<(u64, u64)>, notes: Vec<String>, mut problems: Vec<String>) {
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

    fn note(&self, notes: &mut Vec<String>, text: String) {
        self.narrator.say(&format!("   {text}"));
        notes.push(text);
    }

    /// The whole scenario, one step after the other.
    fn steps(&mut self) -> anyhow::Result<()> {
        self.bring_up()?;
        self.steady_state()?;
        let sick = self.server_answers_500()?;
        self.master_reaches_no_server()?;
        self.master_balancer_dies()?;
        let crashed = self.master_host_crashes()?;
        self.clean_stop()?;
        self.everything_comes_back(&sick, &crashed)?;
        self.steady_state_again()
    }

    /// The names of the balancers and of the API servers.
    fn names(&self) -> (Vec<Host>, Vec<String>, Vec<String>) {
        let lbs: Vec<Host> = self.topology.lbs.clone();
        let names = lbs.iter().map(|h| h.name.clone()).collect();
        let servers = self.topology.apis.iter().map(|h| h.name.clone()).collect();
        (lbs, names, servers)
    }

    /// Starts the balancers, waits for the preferred one to be master, then starts the client.
    fn bring_up(&mut self) -> anyhow::Result<()> {
        let (lbs, names, servers) = self.names();
        let server_refs: Vec<&str> = servers.iter().map(String::as_str).collect();
        self.narrator.say(&format!(
            "lab up: switch br0, API servers {} on :{}, balancers {} (priorities 150/100/50), VIP {VIP}:{FRONTEND_PORT}, VRRP v3 every {ADVERT_INTERVAL_MS} ms",
            servers.join(" "),
            super::API_PORT,
            names.join(" ")
        ));
        for lb in &lbs {
            self.start_balancer(lb)?;
        }
        self.wait_for("every balancer seeing every server up", self.all_see(&names, &server_refs, true))?;
        // Started together, a lower priority may win the first election and be preempted a moment
        // later (the protocol allows it): the scenario begins once the preferred balancer holds the VIP.
        let first = names[0].clone();
        self.wait_for(&format!("{first} holding the VIP"), |seen| seen.holders_now() == [first.clone()])?;
        self.narrator.say(&format!("{first} is master; every balancer sees {} up", servers.join(", ")));
        let target = SocketAddr::from((VIP, FRONTEND_PORT)).to_string();
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

    /// Step 1: nothing happens, nothing may fail.
    fn steady_state(&mut self) -> anyhow::Result<()> {
        let started = super::unix_ms();
        self.narrator.say("step 1: steady state");
        self.pause(QUIET)?;
        self.finish("steady state", started, Vec::new(), Vec::new(), Vec::new());
        Ok(())
    }

    /// Step 2: an API server answers 500; every balancer marks it down and sends it nothing
    /// more. Returns its name.
    fn server_answers_500(&mut self) -> anyhow::Result<String> {
        let (lbs, _, servers) = self.names();
        let sick = servers[0].clone();
        let started = super::unix_ms();
        self.narrator.say(&format!("step 2: API server {sick} starts answering 500 (TCP and TLS still fine)"));
        std::fs::write(format!("{DIR}/{sick}.fail"), "").context("making the server sick")?;
        let mut notes = Vec::new();
        let mut last_down = started;
        for lb in &lbs {
            let seen_down =
                self.wait_for(&format!("{} marking {sick} down", lb.name), |seen| seen.server_healthy(&lb.name, &sick) == Some(false))?;
            self.marked_down.insert(lb.name.clone(), (lb.address, seen_down));
            last_down = last_down.max(seen_down);
            self.note(&mut notes, format!("{} marked {sick} down after {:.1} s", lb.name, (seen_down - started) as f64 / 1000.0));
        }
        self.pause(QUIET)?;
        let received = sick_log(&sick);
        let mut problems = Vec::new();
        for (lb, (address, at)) in &self.marked_down {
            let late = timeline::received_after(&received, *address, *at);
            if !late.is_empty() {
                problems.push(format!("{sick} received {} request(s) from {lb} after {lb} marked it down", late.len()));
            }
        }
        if problems.is_empty() {
            self.note(&mut notes, format!("{sick} received no request from any balancer after it was marked down"));
        }
        self.finish(&format!("{sick} answers 500"), started, vec![(started, last_down + GRACE_MS)], notes, problems);
        Ok(sick)
    }

    /// Step 3: the master's balancer can serve nothing (blackhole routes to every API server).
    fn master_reaches_no_server(&mut self) -> anyhow::Result<()> {
        let (master, _) = self.sole_holder(None)?;
        let cut = self.lb(&master)?;
        let started = super::unix_ms();
        self.narrator
            .say(&format!("step 3: {master} loses its path to every API server (blackhole routes): its balancer has nothing to serve"));
        for api in &self.topology.apis {
            net::ip(&["-n", &cut.netns(), "route", "add", "blackhole", &format!("{}/32", api.address)])?;
        }
        let mut notes = Vec::new();
        let (next, took) = self.sole_holder(Some(&master))?;
        self.note(
            &mut notes,
            format!(
                "{next} took the VIP after {:.1} s: {master}'s balancer tracker failed, no keepalived script needed",
                (took - started) as f64 / 1000.0
            ),
        );
        self.pause(Duration::from_secs(1))?;
        let restored = super::unix_ms();
        for api in &self.topology.apis {
            net::ip(&["-n", &cut.netns(), "route", "del", "blackhole", &format!("{}/32", api.address)])?;
        }
        let back = self.wait_for(&format!("{master} taking the VIP back"), |seen| seen.holders_now() == [master.clone()])?;
        self.note(&mut notes, format!("routes restored: {master} took the VIP back {:.1} s later", (back - restored) as f64 / 1000.0));
        self.pause(QUIET)?;
        self.finish(
            &format!("{master} reaches no API server"),
            started,
            vec![(started, took + GRACE_MS), (restored, back + GRACE_MS)],
            notes,
            Vec::new(),
        );
        Ok(())
    }

    /// Step 4: the master's halo is SIGKILLed, then restarted.
    fn master_balancer_dies(&mut self) -> anyhow::Result<()> {
        let (master, _) = self.sole_holder(None)?;
        let started = super::unix_ms();
        self.narrator.say(&format!("step 4: the master's balancer dies: halo on {master} is SIGKILLed (systemd restarts it 1 s later)"));
        self.processes.kill(&master)?;
        let mut notes = Vec::new();
        let left = self.wait_for(&format!("the VIP leaving the dead {master}"), |seen| !seen.holders_now().contains(&master))?;
        self.note(
            &mut notes,
            format!("the VIP left the dead {master} after {:.1} s (its guard process removed it)", (left - started) as f64 / 1000.0),
        );
        let (next, took) = self.sole_holder(Some(&master))?;
        self.note(&mut notes, format!("{next} took the VIP after {:.1} s", (took - started) as f64 / 1000.0));
        self.pause(Duration::from_secs(1))?;
        let restarted = super::unix_ms();
        self.start_balancer(&self.lb(&master)?)?;
        let back = self.wait_for(&format!("{master} taking the VIP back"), |seen| seen.holders_now() == [master.clone()])?;
        self.note(
            &mut notes,
            format!("{master} restarted and took the VIP back (preemption) {:.1} s later", (back - restarted) as f64 / 1000.0),
        );
        self.pause(QUIET)?;
        self.finish(
            "the master's balancer dies",
            started,
            vec![(started, took + GRACE_MS), (restarted, back + GRACE_MS)],
            notes,
            Vec::new(),
        );
        Ok(())
    }

    /// Step 5: the master host crashes (cable pulled, halo killed). Returns that host.
    fn master_host_crashes(&mut self) -> anyhow::Result<Host> {
        let (master, _) = self.sole_holder(None)?;
        let crashed = self.lb(&master)?;
        let started = super::unix_ms();
        self.narrator.say(&format!("step 5: the master host {master} crashes (link down, halo killed)"));
        net::set_port(&crashed, false)?;
        self.observer.set_connected(&master, false);
        self.processes.kill(&master)?;
        let mut notes = Vec::new();
        let (next, took) = self.sole_holder(Some(&master))?;
        self.note(&mut notes, format!("{next} took the VIP after {:.1} s", (took - started) as f64 / 1000.0));
        self.pause(QUIET)?;
        self.finish(&format!("the master host {master} crashes"), started, vec![(started, took + GRACE_MS)], notes, Vec::new());
        Ok(crashed)
    }

    /// Step 6: a clean stop of the new master.
    fn clean_stop(&mut self) -> anyhow::Result<()> {
        let (master, _) = self.sole_holder(None)?;
        let started = super::unix_ms();
        self.narrator.say(&format!("step 6: clean stop of {master} (SIGTERM: priority-0 advert, VIP removed, drain)"));
        self.processes.signal(&master, Signal::SIGTERM)?;
        let mut notes = Vec::new();
        let (next, took) = self.sole_holder(Some(&master))?;
        self.note(&mut notes, format!("{next} took the VIP after {:.1} s", (took - started) as f64 / 1000.0));
        let mut problems = Vec::new();
        if !self.processes.wait(&master, REACT) {
            problems.push(format!("{master}'s halo did not exit within {} s of SIGTERM", REACT.as_secs()));
        }
        self.pause(QUIET)?;
        self.finish(&format!("clean stop of {master}"), started, vec![(started, took + GRACE_MS)], notes, problems);
        Ok(())
    }

    /// Step 7: the sick server heals, the crashed host returns, every halo runs.
    fn everything_comes_back(&mut self, sick: &str, crashed: &Host) -> anyhow::Result<()> {
        let (lbs, names, servers) = self.names();
        let server_refs: Vec<&str> = servers.iter().map(String::as_str).collect();
        let started = super::unix_ms();
        self.narrator.say(&format!("step 7: everything comes back: {sick} heals, {} is plugged in again, every halo runs", crashed.name));
        std::fs::remove_file(format!("{DIR}/{sick}.fail")).context("healing the server")?;
        self.sick_healed_ms = super::unix_ms();
        net::set_port(crashed, true)?;
        self.observer.set_connected(&crashed.name, true);
        for lb in &lbs {
            if !self.processes.is_running(&lb.name) {
                self.start_balancer(lb)?;
            }
        }
        let mut notes = Vec::new();
        let preferred = names[0].clone();
        let back = self.wait_for(&format!("{preferred} holding the VIP"), |seen| seen.holders_now() == [preferred.clone()])?;
        self.note(&mut notes, format!("{preferred} is master again after {:.1} s", (back - started) as f64 / 1000.0));
        let healed = self.wait_for("every balancer seeing every server up", self.all_see(&names, &server_refs, true))?;
        self.note(&mut notes, format!("every balancer sees every server up after {:.1} s", (healed - started) as f64 / 1000.0));
        let settled = back.max(healed);
        self.pause(QUIET)?;
        self.finish("everything comes back", started, vec![(started, settled + GRACE_MS)], notes, Vec::new());
        Ok(())
    }

    /// Step 8: quiet again; kubectl through the VIP when it is installed.
    fn steady_state_again(&mut self) -> anyhow::Result<()> {
        let started = super::unix_ms();
        self.narrator.say("step 8: steady state again");
        let mut notes = Vec::new();
        let mut problems = Vec::new();
        if let Some(outcome) = kubectl_version() {
            match outcome {
                Ok(version) => self.note(&mut notes, format!("kubectl version through the VIP: {version}")),
                Err(e) => problems.push(format!("kubectl version through the VIP failed: {e}")),
            }
        }
        self.pause(QUIET)?;
        self.finish("steady state again", started, Vec::new(), notes, problems);
        Ok(())
    }

    fn judge(&mut self, report: Option<&Path>) -> anyhow::Result<bool> {
        // The whole client log, including lines written after the observer's last look.
        let requests: Vec<Request> =
            std::fs::read_to_string(format!("{DIR}/client.log")).unwrap_or_default().lines().filter_map(Request::parse).collect();
        let holder_samples = self.observer.with(|seen| seen.holders.clone());
        let longest = timeline::longest_double_holding(&holder_samples);
        let mut behaved = self.steps.iter().all(|s| s.problems.is_empty());
        let total = timeline::stats(&requests, 0, u64::MAX);
        println!(
            "\nclient: {} requests, {} failed ({} outside the failover windows); two VIP holders at once for at most {} ms (advert interval {ADVERT_INTERVAL_MS} ms)",
            total.sent,
            total.failed,
            timeline::failed_outside(&requests, &self.steps.iter().flat_map(|s| s.windows.clone()).collect::<Vec<_>>()).len(),
            longest
        );
        if longest > ADVERT_INTERVAL_MS {
            println!("NOT OK: two hosts held the VIP for {longest} ms, longer than one advert interval");
            behaved = false;
        }
        for step in self.steps.iter().filter(|s| !s.problems.is_empty()) {
            println!("NOT OK: {}: {}", step.title, step.problems.join("; "));
        }
        println!("{}", if behaved { "every step behaved" } else { "some steps did not behave" });
        if let Some(path) = report {
            let sick = self.topology.apis[0].name.clone();
            let sick_received = sick_log(&sick).into_iter().map(|r| (r.at_ms, r.peer, r.path)).collect();
            let report = Report {
                vip: VIP,
                advert_interval_ms: ADVERT_INTERVAL_MS,
                steps: std::mem::take(&mut self.steps),
                requests,
                holder_samples,
                longest_double_holding_ms: longest,
                sick_server: sick,
                marked_down: self.marked_down.clone(),
                sick_healed_ms: self.sick_healed_ms,
                sick_received,
                pids: self.processes.started.clone(),
                behaved,
            };
            let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
            // Written whole or not at all: a temporary file beside it, renamed over it.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, json + "\n")
                .and_then(|()| std::fs::rename(&partial, path))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(behaved)
    }
}

/// What the sick server received (other than probes).
fn sick_log(name: &str) -> Vec<Received> {
    std::fs::read_to_string(format!("{DIR}/{name}.requests")).unwrap_or_default().lines().filter_map(Received::parse).collect()
}

/// `kubectl version` through the VIP from the client's namespace, when kubectl is installed.
fn kubectl_version() -> Option<Result<String, String>> {
    let found = std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("kubectl").is_file()));
    if !found {
        return None;
    }
    let server = format!("https://{VIP}:{FRONTEND_PORT}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", "halo-lab-client", "kubectl", "--server", &server, "--certificate-authority"])
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

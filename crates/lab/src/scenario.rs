//! The VRRP scenario (`halo lab`, the default mode): a sick API server, a master that reaches
//! no server, a killed balancer, a crashed host, a clean stop, everything back; judged by
//! failures only inside the windows, no request to the sick server after a balancer marked it
//! down, and never two VIP holders for longer than one advert interval.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use serde::Serialize;

use super::net::{self, DIR, Host, Processes};
use super::observe::Watch;
use super::play::{self, GRACE_MS, Play, QUIET, REACT, Step};
use super::timeline::{self, Received, Request};
use super::{ADVERT_INTERVAL_MS, FRONTEND_PORT, Topology, VIP};

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

/// Plays the scenario; true when every step behaved.
pub fn play(topology: &Topology, processes: &mut Processes, exe: &Path, report: Option<&Path>) -> anyhow::Result<bool> {
    let watch = Watch { vip: VIP, device: "eth0", router: None };
    play::run(topology, processes, exe, watch, |p| p.vrrp_steps(), |p, r| p.vrrp_judge(r), report)
}

impl Play<'_> {
    /// The one connected holder of the VIP, waited for.
    fn sole_holder(&self, not: Option<&str>) -> anyhow::Result<(String, u64)> {
        let at = self.wait_for("a single holder of the VIP", |seen| {
            let holders = seen.holders_now();
            holders.len() == 1 && not.is_none_or(|n| holders[0] != n)
        })?;
        let holder = self.observer.with(|seen| seen.holders_now().first().cloned()).context("the holder went away")?;
        Ok((holder, at))
    }

    /// The whole scenario, one step after the other.
    fn vrrp_steps(&mut self) -> anyhow::Result<()> {
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
        self.start_client()?;
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
        if let Some(outcome) = play::kubectl_version(&self.topology.client, VIP) {
            match outcome {
                Ok(version) => self.note(&mut notes, format!("kubectl version through the VIP: {version}")),
                Err(e) => problems.push(format!("kubectl version through the VIP failed: {e}")),
            }
        }
        self.pause(QUIET)?;
        self.finish("steady state again", started, Vec::new(), notes, problems);
        Ok(())
    }

    fn vrrp_judge(&mut self, report: Option<&Path>) -> anyhow::Result<bool> {
        let requests = self.client_requests();
        let holder_samples = self.observer.with(|seen| seen.holders.clone());
        let longest = timeline::longest_double_holding(&holder_samples);
        let more = format!("; two VIP holders at once for at most {longest} ms (advert interval {ADVERT_INTERVAL_MS} ms)");
        let mut behaved = self.summarize(&requests, &more);
        if longest > ADVERT_INTERVAL_MS {
            println!("NOT OK: two hosts held the VIP for {longest} ms, longer than one advert interval");
            behaved = false;
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
            play::write_report(path, &report)?;
        }
        Ok(behaved)
    }
}

/// What the sick server received (other than probes).
fn sick_log(name: &str) -> Vec<Received> {
    std::fs::read_to_string(format!("{DIR}/{name}.requests")).unwrap_or_default().lines().filter_map(Received::parse).collect()
}

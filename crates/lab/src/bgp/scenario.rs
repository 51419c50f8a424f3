//! The BGP scenario: steady state with connections spread over every balancer, a balancer whose
//! servers are unreachable withdraws, a SIGKILLed halo's guard withdraws, a crashed host is
//! dropped by BFD, a clean stop withdraws before it drains, everything comes back, steady state
//! again. Each step is judged on the client's failures (only inside its windows), on how soon
//! the router stopped forwarding to the balancer concerned, and the steady ones on the spread.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::{VIP, frr};
use crate::net::{self, DIR, Host, Processes};
use crate::observe::Watch;
use crate::play::{self, GRACE_MS, Play, QUIET, REACT, Step};
use crate::timeline::{Received, Request};
use crate::{API_PORT, FRONTEND_PORT, Topology};

/// A fresh BGP session may be reset once or twice as it comes up (a connection collision; bgpd
/// ending it with "BFD Down" while its BFD session is still coming up): the router's route
/// counts as settled once every BFD session is up and the route has not changed for this long.
const SETTLE: Duration = Duration::from_secs(2);
/// How long a steady step lasts: about 100 requests, enough to see the spread.
const STEADY: Duration = Duration::from_secs(5);
/// A balancer passing on fewer than this share of a steady step's requests is not in the spread.
const FAIR_SHARE_PERCENT: usize = 10;
/// From the fault to the router forwarding elsewhere, at most: the balancer tracker fails after
/// two failed checks 500 ms apart (`fall = 2`), then halo withdraws and BGP converges.
const TRACKER_BOUND_MS: u64 = 3000;
/// Halo killed (its guard removes the address) or stopped (it withdraws first): a withdrawal
/// within milliseconds, then BGP.
const WITHDRAW_BOUND_MS: u64 = 1000;
/// A host crash: BFD's 3 × 100 ms, then the router's own update.
const BFD_BOUND_MS: u64 = 1000;

/// The JSON report (`--report`).
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    vip: Ipv4Addr,
    steps: Vec<Step>,
    requests: Vec<Request>,
    /// (time, the balancers the router forwarded the VIP to), at the start and at each change.
    routes: Vec<(u64, Vec<String>)>,
    /// Per steady step, the client requests each balancer passed on.
    spread: Vec<(String, BTreeMap<String, usize>)>,
    /// Every process the lab started.
    pids: Vec<u32>,
    behaved: bool,
}

/// Plays the scenario; true when every step behaved.
pub fn play(topology: &Topology, processes: &mut Processes, exe: &Path, report: Option<&Path>) -> anyhow::Result<bool> {
    let router = topology.router.as_ref().context("the BGP topology has a router")?.netns();
    let watch = Watch { vip: VIP, device: "lo", router: Some(router) };
    play::run(topology, processes, exe, watch, steps, judge, report)
}

fn steps(play: &mut Play<'_>) -> anyhow::Result<()> {
    let mut bgp = Bgp { play };
    bgp.bring_up()?;
    bgp.steady_state(false)?;
    bgp.servers_unreachable("lb1")?;
    bgp.halo_killed("lb2")?;
    bgp.host_crashes("lb3")?;
    bgp.clean_stop("lb1")?;
    bgp.everything_comes_back("lb3")?;
    bgp.steady_state(true)
}

/// The play, with the BGP mode's steps.
struct Bgp<'p, 'a> {
    play: &'p mut Play<'a>,
}

impl Bgp<'_, '_> {
    fn router(&self) -> anyhow::Result<Host> {
        self.play.topology.router.clone().context("the BGP topology has a router")
    }

    /// Waits until the balancers the router forwards to satisfy `done`; when first seen.
    fn routed(&self, what: &str, done: impl Fn(&[String]) -> bool) -> anyhow::Result<u64> {
        self.play.wait_for(what, |seen| done(&seen.routed))
    }

    /// Waits until the router forwards to every balancer, every BFD session is up and the route
    /// stayed so for `SETTLE`; when it last became so.
    fn all_routed_and_settled(&self) -> anyhow::Result<u64> {
        let names: Vec<String> = self.play.topology.lbs.iter().map(|lb| lb.name.clone()).collect();
        let router = self.router()?;
        let deadline = std::time::Instant::now() + REACT;
        loop {
            let at = self.routed("the router forwarding to every balancer", |r| r == names.as_slice())?;
            self.play.pause(SETTLE)?;
            let changed = self.play.observer.with(|seen| seen.routes.last().is_some_and(|(t, _)| *t > at));
            let peers = frr::json(&router, "show bfd peers json");
            let bfd_up = self.play.topology.lbs.iter().all(|lb| {
                peers.as_array().into_iter().flatten().any(|p| p["peer"] == lb.address.to_string().as_str() && p["status"] == "up")
            });
            if !changed && bfd_up {
                return Ok(at);
            }
            if std::time::Instant::now() > deadline {
                bail!("the router's route to {VIP} did not settle within {} s (BFD up: {bfd_up})", REACT.as_secs());
            }
        }
    }

    /// Seconds since `from`, for the narration.
    fn secs(from: u64, to: u64) -> f64 {
        to.saturating_sub(from) as f64 / 1000.0
    }

    /// A problem when the router forwarded to a failed balancer for longer than `bound_ms`.
    fn within(problems: &mut Vec<String>, lb: &str, took: u64, bound_ms: u64) {
        if took > bound_ms {
            problems.push(format!(
                "the router forwarded to {lb} for {:.1} s, more than {:.1} s",
                took as f64 / 1000.0,
                bound_ms as f64 / 1000.0
            ));
        }
    }

    /// Starts FRR everywhere and halo on every balancer; waits for the router to forward to all
    /// of them; then starts the client.
    fn bring_up(&mut self) -> anyhow::Result<()> {
        let (lbs, names, servers) = self.play.names();
        let router = self.router()?;
        self.play.narrator.say(&format!(
            "lab up: switch br0 with API servers {} on :{API_PORT}, balancers {} and the router; the client behind the router; VIP {VIP}:{FRONTEND_PORT} announced by BGP",
            servers.join(" "),
            names.join(" ")
        ));
        let started = crate::unix_ms();
        frr::start(self.play.processes, &router)?;
        for lb in &lbs {
            frr::start(self.play.processes, lb)?;
        }
        self.play.narrator.say(&format!(
            "FRR (zebra, bfdd, bgpd) on the router (AS {}, ECMP over up to {} paths, L4 hashing) and on {} (AS {}, from `halo render frr`), BFD 100 ms x 3",
            super::ROUTER_ASN,
            super::MAXIMUM_PATHS,
            names.join(" "),
            super::BALANCER_ASN
        ));
        for lb in &lbs {
            self.play.start_balancer(lb)?;
        }
        let server_refs: Vec<&str> = servers.iter().map(String::as_str).collect();
        self.play.wait_for("every balancer seeing every server up", self.play.all_see(&names, &server_refs, true))?;
        let all = self.all_routed_and_settled()?;
        self.play.narrator.say(&format!(
            "every balancer sees {} up and announces {VIP}; the router forwards to {} (ECMP) {:.1} s after FRR started",
            servers.join(", "),
            names.join(" "),
            Self::secs(started, all)
        ));
        self.play.start_client()
    }

    /// Steps 1 and 7: nothing happens, nothing may fail, and every balancer serves its share;
    /// the second time, kubectl through the VIP when it is installed.
    fn steady_state(&mut self, again: bool) -> anyhow::Result<()> {
        let (number, title) = if again { (7, "steady state again") } else { (1, "steady state") };
        let started = crate::unix_ms();
        self.play.narrator.say(&format!("step {number}: {title}"));
        self.play.pause(STEADY)?;
        let (mut notes, mut problems) = (Vec::new(), Vec::new());
        let counts = self.requests_per_balancer(started, crate::unix_ms());
        let total: usize = counts.values().sum();
        let shares = counts.iter().map(|(lb, n)| format!("{lb} {n}")).collect::<Vec<_>>().join(", ");
        self.play.note(&mut notes, format!("requests per balancer (from the API servers' logs): {shares} of {total}"));
        for (lb, n) in &counts {
            if n * 100 < total * FAIR_SHARE_PERCENT || total == 0 {
                problems.push(format!("{lb} passed on {n} of {total} requests: the router does not spread connections over it"));
            }
        }
        if again && let Some(outcome) = play::kubectl_version(&self.play.topology.client, VIP) {
            match outcome {
                Ok(version) => self.play.note(&mut notes, format!("kubectl version through the VIP: {version}")),
                Err(e) => problems.push(format!("kubectl version through the VIP failed: {e}")),
            }
        }
        self.play.spread.push((title.to_string(), counts));
        self.play.finish(title, started, Vec::new(), notes, problems);
        Ok(())
    }

    /// The client requests each balancer passed on in `[from, to)`, from the stand-ins' logs
    /// (each line names the balancer that connected).
    fn requests_per_balancer(&self, from: u64, to: u64) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> = self.play.topology.lbs.iter().map(|lb| (lb.name.clone(), 0)).collect();
        for api in &self.play.topology.apis {
            let log = std::fs::read_to_string(format!("{DIR}/{}.requests", api.name)).unwrap_or_default();
            for received in log.lines().filter_map(Received::parse).filter(|r| r.at_ms >= from && r.at_ms < to && r.path == "/version") {
                if let Some(lb) = self.play.topology.lbs.iter().find(|lb| lb.address == received.peer) {
                    *counts.entry(lb.name.clone()).or_default() += 1;
                }
            }
        }
        counts
    }

    /// Step 2: a balancer reaches no API server (blackhole routes): its tracker fails, it
    /// withdraws, the router forwards to the others; then its routes come back.
    fn servers_unreachable(&mut self, name: &str) -> anyhow::Result<()> {
        let lb = self.play.lb(name)?;
        let started = crate::unix_ms();
        self.play
            .narrator
            .say(&format!("step 2: {name} loses its path to every API server (blackhole routes): its balancer has nothing to serve"));
        self.blackhole(&lb, true)?;
        let (mut notes, mut problems) = (Vec::new(), Vec::new());
        let withdrew = self.play.wait_for(&format!("{name} withdrawing"), |seen| !seen.holders_now().contains(&lb.name))?;
        self.play.note(&mut notes, format!("{name}'s balancer tracker failed: it withdrew after {:.1} s", Self::secs(started, withdrew)));
        let dropped = self.routed(&format!("the router dropping {name}"), |r| !r.contains(&lb.name))?;
        let others = self.play.observer.with(|seen| seen.routed.join(" "));
        self.play.note(
            &mut notes,
            format!("the router stopped forwarding to {name} after {:.1} s (BGP withdrawal); {others} serve", Self::secs(started, dropped)),
        );
        Self::within(&mut problems, name, dropped.saturating_sub(started), TRACKER_BOUND_MS);
        self.play.pause(Duration::from_secs(1))?;
        let restored = crate::unix_ms();
        self.blackhole(&lb, false)?;
        let back = self.routed(&format!("the router forwarding to {name} again"), |r| r.contains(&lb.name))?;
        self.play.note(
            &mut notes,
            format!("routes restored: {name} announces again, the router forwards to it {:.1} s later", Self::secs(restored, back)),
        );
        self.play.pause(QUIET)?;
        let windows = vec![(started, dropped + GRACE_MS), (restored, back + GRACE_MS)];
        self.play.finish(&format!("{name} reaches no API server"), started, windows, notes, problems);
        Ok(())
    }

    fn blackhole(&self, lb: &Host, add: bool) -> anyhow::Result<()> {
        for api in &self.play.topology.apis {
            net::ip(&["-n", &lb.netns(), "route", if add { "add" } else { "del" }, "blackhole", &format!("{}/32", api.address)])?;
        }
        Ok(())
    }

    /// Step 3: halo is SIGKILLed on a balancer: its guard removes the address, FRR withdraws;
    /// restarted 1 s later as systemd would, it announces again once its checks pass.
    fn halo_killed(&mut self, name: &str) -> anyhow::Result<()> {
        let lb = self.play.lb(name)?;
        let started = crate::unix_ms();
        self.play.narrator.say(&format!("step 3: halo on {name} is SIGKILLed (systemd restarts it 1 s later)"));
        self.play.processes.kill(name)?;
        let (mut notes, mut problems) = (Vec::new(), Vec::new());
        let left = self.play.wait_for(&format!("{name}'s address going"), |seen| !seen.holders_now().contains(&lb.name))?;
        self.play.note(&mut notes, format!("{name}'s guard process removed the address after {:.1} s", Self::secs(started, left)));
        let dropped = self.routed(&format!("the router dropping {name}"), |r| !r.contains(&lb.name))?;
        self.play.note(
            &mut notes,
            format!("the router stopped forwarding to {name} after {:.1} s (BGP withdrawal)", Self::secs(started, dropped)),
        );
        Self::within(&mut problems, name, dropped.saturating_sub(started), WITHDRAW_BOUND_MS);
        self.play.pause(Duration::from_secs(1))?;
        let restarted = crate::unix_ms();
        self.play.start_balancer(&lb)?;
        let back = self.routed(&format!("the router forwarding to {name} again"), |r| r.contains(&lb.name))?;
        self.play.note(
            &mut notes,
            format!(
                "{name} restarted; once its checks passed it announced, the router forwards to it {:.1} s later",
                Self::secs(restarted, back)
            ),
        );
        self.play.pause(QUIET)?;
        let windows = vec![(started, dropped + GRACE_MS), (restarted, back + GRACE_MS)];
        self.play.finish(&format!("halo on {name} dies"), started, windows, notes, problems);
        Ok(())
    }

    /// Step 4: a balancer host crashes (cable pulled, halo and FRR killed): nothing withdraws,
    /// the router's BFD session notices.
    fn host_crashes(&mut self, name: &str) -> anyhow::Result<()> {
        let (lb, router) = (self.play.lb(name)?, self.router()?);
        let started = crate::unix_ms();
        self.play.narrator.say(&format!("step 4: the host {name} crashes (link down, halo and FRR killed): only BFD can tell"));
        net::set_port(&lb, false)?;
        self.play.observer.set_connected(name, false);
        self.play.processes.kill(name)?;
        frr::kill(self.play.processes, &lb)?;
        let (mut notes, mut problems) = (Vec::new(), Vec::new());
        let dropped = self.routed(&format!("the router dropping {name}"), |r| !r.contains(&lb.name))?;
        let peer = lb.address.to_string();
        let neighbor = frr::json(&router, &format!("show bgp neighbors {peer} json"));
        let why = neighbor[&peer]["lastNotificationReason"].as_str().unwrap_or("?").to_string();
        self.play.note(
            &mut notes,
            format!(
                "BFD took {name} out: the router stopped forwarding to it after {:.1} s (its session ended: {why})",
                Self::secs(started, dropped)
            ),
        );
        if !why.contains("BFD") {
            problems.push(format!("the router's session with {name} did not end by BFD but by {why}"));
        }
        Self::within(&mut problems, name, dropped.saturating_sub(started), BFD_BOUND_MS);
        self.play.pause(QUIET)?;
        self.play.finish(&format!("the host {name} crashes"), started, vec![(started, dropped + GRACE_MS)], notes, problems);
        Ok(())
    }

    /// Step 5: a clean stop: halo withdraws, keeps serving for a second while the router
    /// converges, drains, exits. Only requests in flight when the router rehashed may fail.
    fn clean_stop(&mut self, name: &str) -> anyhow::Result<()> {
        let lb = self.play.lb(name)?;
        let started = crate::unix_ms();
        self.play.narrator.say(&format!("step 5: clean stop of {name} (SIGTERM: withdraw, 1 s for the router, drain, exit)"));
        self.play.processes.signal(name, Signal::SIGTERM)?;
        let (mut notes, mut problems) = (Vec::new(), Vec::new());
        let dropped = self.routed(&format!("the router dropping {name}"), |r| !r.contains(&lb.name))?;
        self.play
            .note(&mut notes, format!("{name} withdrew: the router stopped forwarding to it after {:.1} s", Self::secs(started, dropped)));
        Self::within(&mut problems, name, dropped.saturating_sub(started), WITHDRAW_BOUND_MS);
        if self.play.processes.wait(name, REACT) {
            self.play.note(&mut notes, format!("{name}'s halo exited {:.1} s after SIGTERM", Self::secs(started, crate::unix_ms())));
        } else {
            problems.push(format!("{name}'s halo did not exit within {} s of SIGTERM", REACT.as_secs()));
        }
        self.play.pause(QUIET)?;
        self.play.finish(&format!("clean stop of {name}"), started, vec![(started, dropped)], notes, problems);
        Ok(())
    }

    /// Step 6: the crashed host is plugged in again and starts FRR and halo; every stopped halo
    /// starts; the router forwards to every balancer again.
    fn everything_comes_back(&mut self, crashed: &str) -> anyhow::Result<()> {
        let (lbs, names, servers) = self.play.names();
        let crashed = self.play.lb(crashed)?;
        let started = crate::unix_ms();
        self.play
            .narrator
            .say(&format!("step 6: everything comes back: {} is plugged in again and boots FRR and halo, every halo runs", crashed.name));
        net::set_port(&crashed, true)?;
        self.play.observer.set_connected(&crashed.name, true);
        frr::start(self.play.processes, &crashed)?;
        for lb in &lbs {
            if !self.play.processes.is_running(&lb.name) {
                self.play.start_balancer(lb)?;
            }
        }
        let mut notes = Vec::new();
        let back = self.all_routed_and_settled()?;
        self.play.note(&mut notes, format!("the router forwards to {} again after {:.1} s", names.join(" "), Self::secs(started, back)));
        let server_refs: Vec<&str> = servers.iter().map(String::as_str).collect();
        let healed = self.play.wait_for("every balancer seeing every server up", self.play.all_see(&names, &server_refs, true))?;
        self.play.pause(QUIET)?;
        let windows = vec![(started, back.max(healed) + GRACE_MS)];
        self.play.finish("everything comes back", started, windows, notes, Vec::new());
        Ok(())
    }
}

fn judge(play: &mut Play<'_>, report: Option<&Path>) -> anyhow::Result<bool> {
    let requests = play.client_requests();
    let behaved = play.summarize(&requests, "");
    println!("{}", if behaved { "every step behaved" } else { "some steps did not behave" });
    if let Some(path) = report {
        let report = Report {
            mode: "bgp",
            vip: VIP,
            steps: std::mem::take(&mut play.steps),
            requests,
            routes: play.observer.with(|seen| seen.routes.clone()),
            spread: play.spread.clone(),
            pids: play.processes.started.clone(),
            behaved,
        };
        play::write_report(path, &report)?;
    }
    Ok(behaved)
}

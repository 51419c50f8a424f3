//! Real FRR for the BGP tests: an instance (zebra, bfdd, bgpd) inside a network namespace,
//! its sockets and pid files under `/var/run/frr/<namespace>` (FRR's pathspace), started in the
//! foreground and ended by PID; its configuration loaded through vtysh as FRR's own boot does;
//! vtysh queries (JSON), bounded waits for a session or a route, the kernel's view of a route,
//! and a resilient next-hop group that mirrors a route of FRR's (FRR 8.4 cannot program one).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::lan::{Daemon, can_run, common, run, run_ok, wait_for};

/// Where Debian puts FRR's daemons.
pub const DAEMONS: &str = "/usr/lib/frr";

/// Whether an FRR test can run: root, `ip`, `vtysh` and the daemons; mandatory under CI.
pub fn can_run_frr(test: &str) -> bool {
    if !can_run(test, true, &["ip", "vtysh"]) {
        return false;
    }
    let missing: Vec<String> =
        ["zebra", "bfdd", "bgpd"].iter().filter(|d| !Path::new(DAEMONS).join(d).is_file()).map(|d| format!("{DAEMONS}/{d}")).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not installed (scripts/setup.sh installs frr)", missing.join(", "));
    assert!(!common::in_ci(), "{test}: cannot run under CI: {why}");
    eprintln!("SKIP {test}: {why}");
    false
}

/// One FRR instance inside a namespace, its daemons killed (by PID) and its directory removed
/// on drop.
pub struct Frr {
    /// The namespace, also FRR's pathspace (`-N`): `vtysh -N <ns>` talks to it.
    pub ns: String,
    /// `/var/run/frr/<ns>`: sockets, pid files, the configuration.
    pub dir: PathBuf,
    /// zebra, bfdd, bgpd, in that order (the last two need zebra's socket).
    daemons: Vec<Daemon>,
    logs: Vec<PathBuf>,
}

impl Frr {
    /// Starts zebra, bfdd and bgpd in `ns` with FRR's `datacenter` defaults and an empty
    /// configuration, then loads `config` through vtysh (as `vtysh -b` loads an integrated
    /// `frr.conf` at boot); panics with vtysh's words when it refuses a line.
    pub fn start(ns: &str, config: &str, logs: &Path) -> Self {
        let dir = PathBuf::from("/var/run/frr").join(ns);
        std::fs::create_dir_all(&dir).expect("FRR pathspace directory");
        let (file, empty) = (dir.join("frr.conf"), dir.join("empty.conf"));
        std::fs::write(&file, config).expect("frr.conf");
        std::fs::write(&empty, "").expect("empty.conf");
        run_ok("chown", &["-R", "frr:frr", &dir.to_string_lossy()]);
        let mut frr = Self { ns: ns.to_string(), dir, daemons: Vec::new(), logs: Vec::new() };
        for daemon in ["zebra", "bfdd", "bgpd"] {
            let log = logs.join(format!("{ns}.{daemon}.log"));
            let (pid, empty) = (frr.dir.join(format!("{daemon}.pid")).display().to_string(), empty.display().to_string());
            let args = ["-F", "datacenter", "-N", ns, "-f", &empty, "-i", &pid, "-P", "0", "--log", "stdout"];
            // In the foreground: the child is the daemon (ip netns exec execs), ended by its PID.
            frr.daemons.push(Daemon::start(ns, &format!("{DAEMONS}/{daemon}"), &args, log.clone(), Vec::new()));
            frr.logs.push(log);
            let socket = if daemon == "zebra" { frr.dir.join("zserv.api") } else { frr.dir.join(format!("{daemon}.vty")) };
            let up = wait_for(Duration::from_secs(10), || socket.exists());
            assert!(up.is_some(), "{daemon} in {ns} never made {}:\n{}", socket.display(), frr.log());
        }
        let vty = ["zebra", "bfdd", "bgpd"].map(|d| frr.dir.join(format!("{d}.vty")));
        assert!(wait_for(Duration::from_secs(10), || vty.iter().all(|s| s.exists())).is_some(), "vty sockets:\n{}", frr.log());
        let out = run("vtysh", &["-N", ns, "-f", &file.to_string_lossy()]);
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), quiet(&String::from_utf8_lossy(&out.stderr)));
        assert!(out.status.success() && !said.contains('%'), "vtysh refused the configuration in {ns}:\n{said}\n--- frr.conf:\n{config}");
        frr
    }

    /// The output of one vtysh command (its noise about a missing vtysh.conf left out).
    pub fn vtysh(&self, command: &str) -> String {
        let out = run("vtysh", &["-N", &self.ns, "-c", command]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), quiet(&String::from_utf8_lossy(&out.stderr)))
    }

    /// A `... json` command's answer, `Null` when it is not JSON.
    pub fn json(&self, command: &str) -> serde_json::Value {
        let out = run("vtysh", &["-N", &self.ns, "-c", command]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The BGP state of the session with `peer` ("Established", "Active", ...), "" when unknown.
    pub fn bgp_state(&self, peer: &str) -> String {
        self.json(&format!("show bgp neighbors {peer} json"))[peer]["bgpState"].as_str().unwrap_or_default().to_string()
    }

    /// The last notification bgpd sent or received on the session with `peer` ("Cease/BFD
    /// Down", ...), and how many it has sent.
    pub fn last_notification(&self, peer: &str) -> (String, u64) {
        let neighbor = &self.json(&format!("show bgp neighbors {peer} json"))[peer];
        let reason = neighbor["lastNotificationReason"].as_str().unwrap_or_default().to_string();
        (reason, neighbor["messageStats"]["notificationsSent"].as_u64().unwrap_or_default())
    }

    /// The BFD session state with `peer` ("up", "down", "init"), "" when there is none.
    pub fn bfd_status(&self, peer: &str) -> String {
        let peers = self.json("show bfd peers json");
        peers
            .as_array()
            .and_then(|all| all.iter().find(|p| p["peer"].as_str() == Some(peer)))
            .and_then(|p| p["status"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (bounded) until the session with each of `peers` is established.
    pub fn wait_established(&self, peers: &[&str], limit: Duration) -> Option<Duration> {
        wait_for(limit, || peers.iter().all(|p| self.bgp_state(p) == "Established"))
    }

    /// Crash: every daemon SIGKILLed at once (nothing is withdrawn, no notification sent).
    pub fn kill(&mut self) {
        for daemon in &self.daemons {
            daemon.signal("KILL");
        }
        self.daemons.clear();
    }

    /// The daemons' logs, one after the other.
    pub fn log(&self) -> String {
        self.logs.iter().map(|l| format!("--- {}\n{}", l.display(), std::fs::read_to_string(l).unwrap_or_default())).collect()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // Each Daemon is SIGKILLed and reaped by its own drop.
        self.daemons.clear();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// vtysh's stderr without the warning every pathspace gives (no vtysh.conf of its own).
fn quiet(stderr: &str) -> String {
    stderr.lines().filter(|l| !l.contains("vtysh.conf")).map(|l| format!("{l}\n")).collect()
}

/// The gateways of the route to `prefix` (exactly) in `table` of `ns`'s kernel, sorted; empty
/// when there is no such route. This is what forwards, whatever the routing daemon believes.
pub fn table_nexthops(ns: &str, prefix: &str, table: &str) -> Vec<String> {
    let out = run("ip", &["-n", ns, "-j", "route", "show", "table", table, "exact", prefix]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let mut gateways: Vec<String> = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        if let Some(hops) = route["nexthops"].as_array() {
            gateways.extend(hops.iter().filter_map(|h| h["gateway"].as_str().map(String::from)));
        } else if let Some(gateway) = route["gateway"].as_str() {
            gateways.push(gateway.to_string());
        } else if let Some(id) = route["nhid"].as_u64() {
            gateways.extend(group_gateways(ns, id));
        }
    }
    gateways.sort();
    gateways
}

/// The kernel next-hop object the main table's route to `prefix` uses: zebra makes a new one
/// for every change of the route, so an unchanged id means an unchanged route.
pub fn route_nhid(ns: &str, prefix: &str) -> Option<u64> {
    let out = run("ip", &["-n", ns, "-j", "route", "show", "exact", prefix]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    routes.as_array()?.first()?["nhid"].as_u64()
}

/// The main table's gateways for `prefix` (see [`table_nexthops`]).
pub fn nexthops(ns: &str, prefix: &str) -> Vec<String> {
    table_nexthops(ns, prefix, "main")
}

/// The gateways of a kernel next-hop object (a group's members, or one gateway).
fn group_gateways(ns: &str, id: u64) -> Vec<String> {
    let show = |id: u64| -> serde_json::Value {
        let out = run("ip", &["-n", ns, "-j", "nexthop", "show", "id", &id.to_string()]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        all.as_array().and_then(|a| a.first().cloned()).unwrap_or(serde_json::Value::Null)
    };
    let object = show(id);
    match object["group"].as_array() {
        Some(members) => {
            members.iter().filter_map(|m| m["id"].as_u64()).filter_map(|m| show(m)["gateway"].as_str().map(String::from)).collect()
        }
        None => object["gateway"].as_str().map(String::from).into_iter().collect(),
    }
}

/// Waits (bounded) until the main table's gateways for `prefix` in `ns` satisfy `done`.
pub fn wait_nexthops(ns: &str, prefix: &str, limit: Duration, mut done: impl FnMut(&[String]) -> bool) -> Option<Duration> {
    wait_for(limit, || done(&nexthops(ns, prefix)))
}

/// What a fabric with resilient hashing does, for a router whose FRR (8.4) can only program
/// hash-threshold groups: a thread copies the gateways zebra installs for `prefix` in the main
/// table into a kernel resilient next-hop group, routed through table `TABLE` by a rule that
/// comes before the main table. When a gateway goes, only the buckets that led to it move; the
/// other flows keep their balancer. The copy lags zebra by one poll (10 ms) and an `ip` call.
pub struct ResilientMirror {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    current: Arc<Mutex<Vec<String>>>,
}

impl ResilientMirror {
    const TABLE: &'static str = "100";
    const GROUP: &'static str = "900";

    /// Starts mirroring `prefix` in `ns`; `gateways` (all that may ever appear) reach through `device`.
    pub fn start(ns: &str, prefix: &str, gateways: &[&str], device: &str) -> Self {
        for (i, gateway) in gateways.iter().enumerate() {
            run_ok("ip", &["-n", ns, "nexthop", "replace", "id", &(901 + i).to_string(), "via", gateway, "dev", device]);
        }
        run_ok("ip", &["-n", ns, "rule", "add", "to", prefix, "lookup", Self::TABLE, "pref", "100"]);
        let ids: Vec<(String, String)> = gateways.iter().enumerate().map(|(i, g)| (g.to_string(), (901 + i).to_string())).collect();
        let (stop, current) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let (stopped, shown, ns, prefix) = (Arc::clone(&stop), Arc::clone(&current), ns.to_string(), prefix.to_string());
        let thread = std::thread::spawn(move || {
            let mut installed: Vec<String> = Vec::new();
            // Bounded: it ends with the test (drop), at the latest after 10 minutes.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !stopped.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                let wanted: Vec<String> = nexthops(&ns, &prefix).into_iter().filter(|g| ids.iter().any(|(k, _)| k == g)).collect();
                if wanted != installed {
                    if wanted.is_empty() {
                        run("ip", &["-n", &ns, "route", "del", &prefix, "table", Self::TABLE]);
                        run("ip", &["-n", &ns, "nexthop", "del", "id", Self::GROUP]);
                    } else {
                        let group: Vec<&str> =
                            wanted.iter().filter_map(|g| ids.iter().find(|(k, _)| k == g).map(|(_, id)| id.as_str())).collect();
                        let group = group.join("/");
                        // The bucket count never changes (the kernel refuses that on replace);
                        // idle buckets may move to a new member after 10 s, busy ones never.
                        let args = [
                            "-n",
                            &ns,
                            "nexthop",
                            "replace",
                            "id",
                            Self::GROUP,
                            "group",
                            &group,
                            "type",
                            "resilient",
                            "buckets",
                            "128",
                            "idle_timer",
                            "10",
                        ];
                        run_ok("ip", &args);
                        run_ok("ip", &["-n", &ns, "route", "replace", &prefix, "nhid", Self::GROUP, "table", Self::TABLE]);
                    }
                    installed = wanted;
                    *shown.lock().expect("mirror state") = installed.clone();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Self { stop, thread: Some(thread), current }
    }

    /// The gateways the resilient group holds now.
    pub fn gateways(&self) -> Vec<String> {
        self.current.lock().expect("mirror state").clone()
    }
}

impl Drop for ResilientMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            eprintln!("warning: the resilient mirror thread panicked");
        }
    }
}

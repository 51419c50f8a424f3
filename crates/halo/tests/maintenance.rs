//! Node maintenance against a peer, as an operator takes a balancer out: `halo node maintenance
//! on` on the master hands the VIP to the backup at once (a priority-0 advert) and withdraws its
//! announcement; the node stays out through a reload and a restart (the flag's file); `off`
//! brings it back (preemption as configured). A sampler watches both hosts every few
//! milliseconds: never two holders while the node is out, and the time with none is said. Root
//! only (network namespaces; run in CI); daemons ended by PID, namespaces deleted.

mod lan;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lan::{Daemon, Lan, run, skip, wait_for};

const VIP: &str = "192.0.2.170";
const ANNOUNCED: &str = "198.51.100.7";

fn config(lan: &Lan, host: usize, priority: u8) -> String {
    let dir = lan.dir.path();
    format!(
        "[node]\nstate_directory = \"{state}\"\n\n[status]\nlisten = \"127.0.0.1:9470\"\nsocket = \"{socket}\"\n\n\
         [[announce]]\nname = \"extra\"\naddress = \"{ANNOUNCED}/32\"\ninterface = \"lo\"\n\n{vrrp}",
        state = dir.join(format!("state{host}")).display(),
        socket = dir.join(format!("status{host}.sock")).display(),
        vrrp = lan::halo_conf(3, priority, "100ms", &format!("{VIP}/24"), ""),
    )
}

fn halo(lan: &Lan, host: usize, args: &[&str]) -> std::process::Output {
    let config = lan.dir.path().join(format!("host{host}.toml"));
    let mut all = vec!["netns", "exec", lan.host(host), env!("CARGO_BIN_EXE_halo")];
    all.extend(args);
    all.extend(["-c", config.to_str().expect("utf-8")]);
    run("ip", &all)
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn announced(lan: &Lan) -> bool {
    lan.holds_on(0, "lo", ANNOUNCED)
}

/// Samples who holds the VIP until stopped: (moments with two holders, longest time with none).
fn sampler(lan: &Arc<Lan>, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Duration)> {
    let (lan, stop) = (Arc::clone(lan), Arc::clone(stop));
    std::thread::spawn(move || {
        let (mut both, mut longest, mut none_since) = (0, Duration::ZERO, None::<Instant>);
        while !stop.load(Ordering::Relaxed) {
            let holders = (0..2).filter(|&i| lan.holds(i, VIP)).count();
            both += usize::from(holders == 2);
            match (holders, none_since) {
                (0, None) => none_since = Some(Instant::now()),
                (0, Some(_)) => {}
                (_, Some(since)) => {
                    longest = longest.max(since.elapsed());
                    none_since = None;
                }
                _ => {}
            }
        }
        (both, longest)
    })
}

#[test]
fn maintenance_hands_the_vip_over_keeps_the_node_out_and_brings_it_back() {
    if skip("maintenance_hands_the_vip_over_keeps_the_node_out_and_brings_it_back") {
        return;
    }
    let lan = Arc::new(Lan::new(2));
    for (host, priority) in [(0, 200), (1, 100)] {
        std::fs::write(lan.dir.path().join(format!("host{host}.toml")), config(&lan, host, priority)).expect("config");
    }
    let start = |host: usize| {
        let config = lan.dir.path().join(format!("host{host}.toml"));
        let log = lan.dir.path().join(format!("host{host}-{}.log", std::process::id()));
        let pid = lan.dir.path().join(format!("host{host}.pid"));
        Daemon::start(
            lan.host(host),
            env!("CARGO_BIN_EXE_halo"),
            &["run", "-c", config.to_str().expect("utf-8"), "--pid-file", pid.to_str().expect("utf-8")],
            log,
            Vec::new(),
        )
    };
    let master = start(0);
    let backup = start(1);
    assert!(wait_for(Duration::from_secs(10), || lan.holds(0, VIP) && announced(&lan)).is_some(), "{}", master.log());

    let stop = Arc::new(AtomicBool::new(false));
    let watching = sampler(&lan, &stop);
    let on = halo(&lan, 0, &["node", "maintenance", "on"]);
    assert!(on.status.success(), "{}", text(&on));
    let answer: serde_json::Value = serde_json::from_slice(&on.stdout).expect("one JSON answer");
    assert_eq!((answer["maintenance"].as_bool(), answer["maintenance_before"].as_bool()), (Some(true), Some(false)), "{answer}");
    let moved = wait_for(Duration::from_secs(5), || lan.holds(1, VIP) && !lan.holds(0, VIP));
    assert!(moved.is_some(), "the backup did not take the VIP:\n{}\n{}", master.log(), backup.log());
    assert!(wait_for(Duration::from_secs(5), || !announced(&lan)).is_some(), "the announcement was not withdrawn:\n{}", master.log());
    // The node stays out, though it has the higher priority and preempts.
    std::thread::sleep(Duration::from_secs(2));
    assert!(lan.holds(1, VIP) && !lan.holds(0, VIP), "the node in maintenance took the VIP back:\n{}", master.log());
    let status = text(&halo(&lan, 0, &["status"]));
    assert!(status.contains("MAINTENANCE"), "{status}");

    // A reload and a restart keep it out: the flag is in its file.
    master.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(master.stop().is_some(), "the master did not stop");
    let master = start(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(lan.holds(1, VIP) && !lan.holds(0, VIP), "the restarted node left maintenance:\n{}", master.log());
    assert!(master.log().contains("node in maintenance"), "{}", master.log());
    assert!(!announced(&lan), "the restarted node announced");
    // And an upgrade: the new process reads the flag too.
    let pid = lan.dir.path().join("host0.pid");
    let upgraded = halo(&lan, 0, &["upgrade", "--pid-file", pid.to_str().expect("utf-8")]);
    assert!(upgraded.status.success(), "{}\n{}", text(&upgraded), master.log());
    std::thread::sleep(Duration::from_secs(1));
    assert!(lan.holds(1, VIP) && !lan.holds(0, VIP), "the upgraded node left maintenance:\n{}", master.log());
    let successor: u32 = std::fs::read_to_string(&pid).expect("pid file").trim().parse().expect("pid");
    let _successor = EndedOnDrop(successor);
    stop.store(true, Ordering::Relaxed);
    let (both, longest) = watching.join().expect("sampler");
    eprintln!("maintenance on: {both} samples with two holders; longest time without a holder {longest:?}");
    assert_eq!(both, 0, "two holders while the node went into maintenance");
    assert!(longest < Duration::from_secs(2), "no holder for {longest:?}");

    // off: back in service; the higher priority preempts.
    let off = halo(&lan, 0, &["node", "maintenance", "off"]);
    assert!(off.status.success(), "{}", text(&off));
    let back = wait_for(Duration::from_secs(5), || lan.holds(0, VIP) && !lan.holds(1, VIP) && announced(&lan));
    assert!(back.is_some(), "the node did not come back:\n{}", master.log());
    let off_again = text(&halo(&lan, 0, &["status", "--json"]));
    assert!(off_again.contains("\"maintenance\": false"), "{off_again}");
}

/// A process the test started indirectly (the upgrade's new daemon), ended by its PID whatever
/// the test's outcome.
struct EndedOnDrop(u32);

impl Drop for EndedOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        let _ = wait_for(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{}", self.0)).exists());
    }
}

/// A bad command changes nothing: a body that is no command, over the unix socket.
#[test]
fn a_maintenance_command_needs_on_or_off() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_halo")).args(["node", "maintenance", "maybe"]).output().expect("halo");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("possible values: on, off"), "{}", text(&out));
}

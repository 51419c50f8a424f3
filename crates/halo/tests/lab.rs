//! `halo lab` end to end (root): the whole scenario headless, its report checked against its
//! own raw data (client requests, VIP holder samples, what the sick server received); Ctrl-C in
//! the middle of a run; `halo lab down` removing a stale lab; `halo lab --mode bgp` with real FRR
//! (requests spread over every balancer, the router's route to the VIP following each fault).
//! Afterwards no lab namespace, process or file may be left. The lab's names are fixed: the
//! tests take turns.

#![cfg(feature = "lab")]
#![allow(clippy::unwrap_used)]

#[path = "../../config/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One lab at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lab_namespaces() -> Vec<String> {
    let out = common::run("ip", &["netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("halo-lab-"))
        .map(str::to_string)
        .collect()
}

fn assert_all_gone(pids: &[u64]) {
    assert!(lab_namespaces().is_empty(), "namespaces left: {:?}", lab_namespaces());
    assert!(!Path::new("/run/halo-lab").exists(), "/run/halo-lab left");
    let frr: Vec<String> = std::fs::read_dir("/var/run/frr")
        .map(|entries| {
            entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("halo-lab-")).collect()
        })
        .unwrap_or_default();
    assert!(frr.is_empty(), "FRR pathspaces left: {frr:?}");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
        assert!(stat.is_empty() || zombie, "process {pid} is still running: {stat}");
    }
}

fn in_some_window(at: u64, windows: &[(u64, u64)]) -> bool {
    windows.iter().any(|(from, to)| at >= *from && at <= *to)
}

fn check_report(report: &Value) {
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 8, "{report:#}");
    let windows: Vec<(u64, u64)> = steps
        .iter()
        .flat_map(|s| s["windows"].as_array().unwrap().iter().map(|w| (w[0].as_u64().unwrap(), w[1].as_u64().unwrap())))
        .collect();
    // Every request succeeded except inside the failover windows.
    let requests = report["requests"].as_array().unwrap();
    assert!(requests.len() > 300, "the client ran all along: {} requests", requests.len());
    for r in requests {
        if r["outcome"] != "ok" {
            assert!(in_some_window(r["start_ms"].as_u64().unwrap(), &windows), "failed outside every failover window: {r}");
        }
    }
    // The steady stretches have no window and every step saw traffic.
    for step in steps {
        assert!(step["stats"]["sent"].as_u64().unwrap() > 10, "{step}");
        if step["title"].as_str().unwrap().starts_with("steady") {
            assert_eq!(step["stats"]["failed"], 0, "{step}");
        }
    }
    // The sick master: nothing from a balancer after that balancer marked it down, and every
    // balancer did mark it down.
    let marked: Vec<(String, u64)> =
        report["marked_down"].as_object().unwrap().values().map(|v| (v[0].as_str().unwrap().to_string(), v[1].as_u64().unwrap())).collect();
    assert_eq!(marked.len(), 3, "{report:#}");
    let healed = report["sick_healed_ms"].as_u64().unwrap();
    for received in report["sick_received"].as_array().unwrap() {
        let (at, peer) = (received[0].as_u64().unwrap(), received[1].as_str().unwrap());
        if at >= healed {
            continue;
        }
        for (address, down_at) in &marked {
            assert!(!(peer == address && at > *down_at), "{peer} sent {received} after marking the server down at {down_at}");
        }
    }
    // Never two holders for longer than one advert interval, recomputed from the samples.
    let interval = report["advert_interval_ms"].as_u64().unwrap();
    let samples: Vec<(u64, u64)> =
        report["holder_samples"].as_array().unwrap().iter().map(|s| (s[0].as_u64().unwrap(), s[1].as_u64().unwrap())).collect();
    assert!(samples.len() > 100, "the VIP was watched all along");
    let mut since = None;
    for (at, holders) in &samples {
        match (*holders >= 2, since) {
            (true, None) => since = Some(*at),
            (false, Some(first)) => {
                assert!(at - first <= interval, "two holders for {} ms", at - first);
                since = None;
            }
            _ => {}
        }
    }
    assert!(since.is_none(), "two holders at the end");
    // The VIP did move: each fault step names who took over.
    for step in &steps[2..6] {
        assert!(step["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("took the VIP")), "{step}");
    }
    assert_eq!(report["behaved"], true);
}

#[test]
fn lab_end_to_end() {
    if !common::can_run("lab_end_to_end", true, &["ip"]) {
        return;
    }
    let _turn = LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let halo = env!("CARGO_BIN_EXE_halo");
    let dir = tempfile::tempdir().unwrap();

    // A stale lab (as a crashed run leaves it): `halo lab down` ends its process and namespace.
    common::run_ok("ip", &["netns", "add", "halo-lab-stale"]);
    let mut stale = Command::new("ip").args(["netns", "exec", "halo-lab-stale", "sleep", "600"]).spawn().unwrap();
    let down = Command::new(halo).args(["lab", "down"]).output().unwrap();
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stdout).contains("halo-lab-stale (1 processes)"), "{}", String::from_utf8_lossy(&down.stdout));
    assert!(stale.wait().is_ok());
    assert_all_gone(&[u64::from(stale.id())]);

    // The scenario, headless.
    let report_path = dir.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(halo).args(["lab", "--report", &report_path.to_string_lossy()]).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("halo lab took {:.0} s:\n{stdout}", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    check_report(&report);
    let pids: Vec<u64> = report["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(pids.len() >= 8, "3 stand-ins, 3 balancers (some twice), the client: {pids:?}");
    assert_all_gone(&pids);

    // Interrupted while running: exit 2, nothing left behind.
    let mut lab = Command::new(halo).arg("lab").stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new("/run/halo-lab/client.log").exists() {
        assert!(Instant::now() < deadline, "the lab never started its client");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = lab.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = lab.wait().unwrap();
    assert_eq!(status.code(), Some(2), "an interrupted lab reports that it did not finish");
    assert_all_gone(&[]);
}

/// The BGP report, checked against its own raw data.
fn check_bgp_report(report: &Value) {
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 7, "{report:#}");
    let windows: Vec<(u64, u64)> = steps
        .iter()
        .flat_map(|s| s["windows"].as_array().unwrap().iter().map(|w| (w[0].as_u64().unwrap(), w[1].as_u64().unwrap())))
        .collect();
    let requests = report["requests"].as_array().unwrap();
    assert!(requests.len() > 300, "the client ran all along: {} requests", requests.len());
    for r in requests {
        if r["outcome"] != "ok" {
            assert!(in_some_window(r["start_ms"].as_u64().unwrap(), &windows), "failed outside every failover window: {r}");
        }
    }
    for step in steps {
        assert!(step["stats"]["sent"].as_u64().unwrap() > 10, "{step}");
        if step["title"].as_str().unwrap().starts_with("steady") {
            assert_eq!(step["stats"]["failed"], 0, "{step}");
        }
    }
    // Both steady steps: every balancer passed on a share of the requests (ECMP, L4 hashing).
    let spread = report["spread"].as_array().unwrap();
    assert_eq!(spread.len(), 2, "{report:#}");
    for entry in spread {
        let counts: Vec<u64> = entry[1].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).collect();
        let total: u64 = counts.iter().sum();
        assert_eq!(counts.len(), 3, "{entry}");
        assert!(counts.iter().all(|n| n * 10 >= total) && total > 50, "not spread over the three balancers: {entry}");
    }
    // The router's route: all three at first and at the end, and each balancer out of it once.
    let routes = report["routes"].as_array().unwrap();
    let names = |sample: &Value| -> Vec<String> { sample[1].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect() };
    let all = ["lb1", "lb2", "lb3"].map(String::from).to_vec();
    assert_eq!(routes.last().map(names), Some(all.clone()), "{routes:?}");
    for lb in &all {
        assert!(routes.iter().any(|s| !names(s).contains(lb)), "{lb} never left the router's route: {routes:?}");
    }
    let crash = &steps[3];
    assert!(crash["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("BFD Down")), "{crash}");
    assert_eq!(report["behaved"], true);
}

#[test]
fn lab_bgp_end_to_end() {
    if !common::can_run("lab_bgp_end_to_end", true, &["ip", "vtysh"]) {
        return;
    }
    let missing: Vec<&str> = ["zebra", "bfdd", "bgpd"].into_iter().filter(|d| !Path::new("/usr/lib/frr").join(d).is_file()).collect();
    if !missing.is_empty() {
        assert!(
            !common::in_ci(),
            "lab_bgp_end_to_end: cannot run under CI: FRR's {missing:?} not installed (scripts/setup.sh installs frr)"
        );
        eprintln!("SKIP lab_bgp_end_to_end: FRR's {missing:?} not installed");
        return;
    }
    let _turn = LAB.lock().unwrap_or_else(PoisonError::into_inner);
    let halo = env!("CARGO_BIN_EXE_halo");
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let started = Instant::now();
    let out = Command::new(halo)
        .args(["lab", "--mode", "bgp", "--report", &report_path.to_string_lossy()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("halo lab --mode bgp took {:.0} s:\n{stdout}", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    check_bgp_report(&report);
    let pids: Vec<u64> = report["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert!(pids.len() >= 20, "3 stand-ins, 4 FRRs of 3 daemons (one twice), 3 balancers (some twice), the client: {pids:?}");
    assert_all_gone(&pids);
}

//! `[[announce]]` on one host, without FRR (crates/halo/tests/bgp.rs has the routed topology):
//! the local route is installed at start; the address is on `lo` exactly while the tracker
//! passes; a SIGKILLed halo's guard removes it; a clean stop withdraws it and then removes the
//! local route. Root, in a network namespace.

mod lan;

use std::time::Duration;

use lan::{Daemon, Netns, can_run, run, run_ok, wait_for};

const GENEROUS: Duration = Duration::from_secs(10);

fn has_address(ns: &Netns, address: &str) -> bool {
    let out = run("ip", &["-n", &ns.name, "-o", "addr", "show", "dev", "lo"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {address}/"))
}

fn has_local_route(ns: &Netns, address: &str) -> bool {
    let family = if address.contains(':') { "-6" } else { "-4" };
    let out = run("ip", &[family, "-n", &ns.name, "route", "show", "table", "local", "proto", "250"]);
    String::from_utf8_lossy(&out.stdout).contains(address)
}

const CONFIG: &str = "[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"eth1\"\n\n\
                      [[announce]]\nname = \"api\"\naddress = \"10.0.0.100/32\"\ntrack = [\"uplink\"]\n\n\
                      [[announce]]\nname = \"api6\"\naddress = \"fd00::100\"\ntrack = [\"uplink\"]\n";

/// A host whose `eth1` link the announcement tracks, running halo.
fn host(dir: &std::path::Path) -> (Netns, Daemon) {
    let ns = Netns::new();
    ns.add_interface("eth1");
    // The veth's peer up too: the link has carrier.
    run_ok("ip", &["-n", &ns.name, "link", "set", "peth1", "up"]);
    let file = dir.join("halo.toml");
    std::fs::write(&file, CONFIG).expect("config");
    let log = dir.join("halo.log");
    let pid = dir.join("halo.pid");
    let daemon = Daemon::start(
        &ns.name,
        env!("CARGO_BIN_EXE_halo"),
        &["run", "-c", &file.to_string_lossy(), "--pid-file", &pid.to_string_lossy()],
        log,
        Vec::new(),
    );
    (ns, daemon)
}

#[test]
fn an_address_is_announced_exactly_while_its_tracker_passes() {
    if !can_run("an_address_is_announced_exactly_while_its_tracker_passes", true, &["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, daemon) = host(dir.path());
    assert!(wait_for(GENEROUS, || has_address(&ns, "10.0.0.100") && has_address(&ns, "fd00::100")).is_some(), "{}", daemon.log());
    assert!(has_local_route(&ns, "10.0.0.100") && has_local_route(&ns, "fd00::100"), "no local route: {}", daemon.log());
    run_ok("ip", &["-n", &ns.name, "link", "set", "eth1", "down"]);
    assert!(wait_for(GENEROUS, || !has_address(&ns, "10.0.0.100") && !has_address(&ns, "fd00::100")).is_some(), "{}", daemon.log());
    // Withdrawn, the host still accepts the address's packets (open connections drain).
    assert!(has_local_route(&ns, "10.0.0.100"));
    run_ok("ip", &["-n", &ns.name, "link", "set", "eth1", "up"]);
    assert!(wait_for(GENEROUS, || has_address(&ns, "10.0.0.100")).is_some(), "{}", daemon.log());
    let log = daemon.log();
    assert_eq!(log.matches("withdrawn").count(), 2, "one line per address and change: {log}");
    // A clean stop withdraws, then removes the local route.
    assert_eq!(daemon.stop(), Some(0));
    assert!(!has_address(&ns, "10.0.0.100") && !has_local_route(&ns, "10.0.0.100"));
    assert!(!has_address(&ns, "fd00::100") && !has_local_route(&ns, "fd00::100"));
}

#[test]
fn a_killed_halos_guard_withdraws_its_addresses() {
    if !can_run("a_killed_halos_guard_withdraws_its_addresses", true, &["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, daemon) = host(dir.path());
    assert!(wait_for(GENEROUS, || has_address(&ns, "10.0.0.100") && has_address(&ns, "fd00::100")).is_some(), "{}", daemon.log());
    daemon.signal("KILL");
    let gone = wait_for(GENEROUS, || !has_address(&ns, "10.0.0.100") && !has_address(&ns, "fd00::100"));
    assert!(gone.is_some_and(|d| d < Duration::from_secs(1)), "{gone:?}: the guard did not remove the addresses");
}

#[test]
fn a_reload_keeping_the_address_changes_trackers_in_place_and_a_maintenance_file_withdraws() {
    if !can_run("a_reload_keeping_the_address_changes_trackers_in_place_and_a_maintenance_file_withdraws", true, &["ip"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ns, daemon) = host(dir.path());
    assert!(wait_for(GENEROUS, || has_address(&ns, "10.0.0.100")).is_some(), "{}", daemon.log());
    // The same address, renamed and tracking a maintenance file that reads 0.
    let maintenance = dir.path().join("maintenance");
    std::fs::write(&maintenance, "0\n").expect("file");
    let config = format!("{CONFIG}\n[[tracker]]\nname = \"maintenance\"\nkind = \"file\"\npath = \"{}\"\n", maintenance.display()).replace(
        "name = \"api\"\naddress = \"10.0.0.100/32\"\ntrack = [\"uplink\"]",
        "name = \"api-v4\"\naddress = \"10.0.0.100/32\"\ntrack = [\"uplink\", \"maintenance\"]",
    );
    std::fs::write(dir.path().join("halo.toml"), config).expect("config");
    daemon.signal("HUP");
    assert!(wait_for(GENEROUS, || daemon.log().contains("reloaded")).is_some(), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(has_address(&ns, "10.0.0.100"), "the reload withdrew it: {}", daemon.log());
    assert!(!daemon.log().contains("withdrawn"), "a reload keeping the address must not withdraw it: {}", daemon.log());
    std::fs::write(&maintenance, "1\n").expect("file");
    assert!(wait_for(GENEROUS, || !has_address(&ns, "10.0.0.100")).is_some(), "the maintenance file did not withdraw it: {}", daemon.log());
    assert!(has_address(&ns, "fd00::100"), "the other announcement does not track the file");
}

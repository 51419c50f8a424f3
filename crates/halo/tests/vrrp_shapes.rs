//! VRRP in the shapes users configure (root, network namespaces, run in CI): several instances
//! in one file on one and on several interfaces, both families, multicast and unicast; reloads
//! that add instances or change what identifies one on the wire; the virtual MAC with halo and
//! keepalived peers; notify hooks as keepalived users expect them; adverts from strangers.

mod lan;

use std::time::Duration;

use lan::*;

/// One `[[vrrp]]` instance: VRID `vrid` on `interface`, 100 ms adverts.
fn instance(name: &str, interface: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"{name}\"\ninterface = \"{interface}\"\nvirtual_router_id = {vrid}\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{vip}\"]\n{extra}\n"
    )
}

/// The k-th instance of a shape: its interface (spread over `interfaces`), family alternating
/// IPv4 / IPv6 when `both_families`, VRID 31 + k, and its VIP (address without prefix, and with).
fn shaped(k: usize, interfaces: usize, both_families: bool) -> (String, u8, String, String) {
    let interface = k % interfaces;
    let vrid = 31 + k as u8;
    let ipv6 = both_families && k % 2 == 1;
    let address = match (interface, ipv6) {
        (0, false) => format!("192.0.2.{}", 100 + k),
        (0, true) => format!("2001:db8::{}", 100 + k),
        (i, false) => format!("10.{i}.0.{}", 100 + k),
        (i, true) => format!("2001:db8:{i}::{}", 100 + k),
    };
    let with_prefix = format!("{address}/{}", if ipv6 { 64 } else { 24 });
    (format!("eth{interface}"), vrid, address, with_prefix)
}

fn config_of(count: usize, interfaces: usize, priority: u8, both_families: bool) -> String {
    (0..count)
        .map(|k| {
            let (interface, vrid, _, vip) = shaped(k, interfaces, both_families);
            instance(&format!("VI_{vrid}"), &interface, vrid, priority, &vip, "")
        })
        .collect()
}

/// Two halo hosts with the same `count` instances, priorities 150 and 100: host 0 holds every
/// VIP, host 1 none, each on its own interface.
fn several_instances_elect(count: usize, interfaces: usize, both_families: bool) {
    let lan = Lan::with_interfaces(2, interfaces);
    let high = Daemon::halo(&lan, 0, "high", &config_of(count, interfaces, 150, both_families));
    let low = Daemon::halo(&lan, 1, "low", &config_of(count, interfaces, 100, both_families));
    let logs = || format!("{}\n---\n{}", high.log(), low.log());
    for k in 0..count {
        let (interface, _, address, _) = shaped(k, interfaces, both_families);
        assert!(
            wait_for(GENEROUS, || lan.holds_on(0, &interface, &address)).is_some(),
            "{count} instances on {interfaces} interface(s): {address} never came up on {interface}:\n{}",
            logs()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    for k in 0..count {
        let (interface, _, address, _) = shaped(k, interfaces, both_families);
        assert!(!lan.holds_on(1, &interface, &address), "the backup holds {address} too:\n{}", logs());
    }
    let high_log = high.log();
    assert_eq!(high.stop(), Some(0), "{high_log}");
    for k in 0..count {
        let (interface, _, address, _) = shaped(k, interfaces, both_families);
        assert!(wait_for(GENEROUS, || lan.holds_on(1, &interface, &address)).is_some(), "{address} did not move:\n{}", low.log());
    }
}

#[test]
fn one_instance_starts_and_elects() {
    if skip("one_instance_starts_and_elects") {
        return;
    }
    several_instances_elect(1, 1, false);
}

#[test]
fn two_instances_on_two_interfaces_start_and_elect() {
    if skip("two_instances_on_two_interfaces_start_and_elect") {
        return;
    }
    several_instances_elect(2, 2, false);
}

#[test]
fn two_instances_on_one_interface_start_and_elect() {
    if skip("two_instances_on_one_interface_start_and_elect") {
        return;
    }
    several_instances_elect(2, 1, false);
}

#[test]
fn eight_instances_of_both_families_on_one_interface_start_and_elect() {
    if skip("eight_instances_of_both_families_on_one_interface_start_and_elect") {
        return;
    }
    several_instances_elect(8, 1, true);
}

#[test]
fn eight_instances_of_both_families_on_three_interfaces_start_and_elect() {
    if skip("eight_instances_of_both_families_on_three_interfaces_start_and_elect") {
        return;
    }
    several_instances_elect(8, 3, true);
}

/// Rewrites `name`'s config and asks its daemon to reload it with `halo reload`.
fn reload(lan: &Lan, name: &str, config: &str) {
    let file = lan.file(&format!("{name}.toml"), config);
    let pid = lan.dir.path().join(format!("{name}.pid"));
    let out = run(env!("CARGO_BIN_EXE_halo"), &["reload", "-c", &file.to_string_lossy(), "--pid-file", &pid.to_string_lossy()]);
    assert!(out.status.success(), "halo reload: {}", String::from_utf8_lossy(&out.stderr));
}

/// `/status` of the daemon in host `i` (its default status address, inside the namespace).
fn status(lan: &Lan, i: usize) -> serde_json::Value {
    let body = lan.exec(i, "curl", &["-s", "--max-time", "2", "http://127.0.0.1:9470/status"]);
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// A reload that changes what identifies one instance restarts that instance only: the daemon
/// keeps running, the other instance keeps its VIP throughout, and the changed one elects again.
fn reload_restarts_only_the_changed_instance(changed: &str, vip: &str, expected_vrid: u64) {
    let lan = Lan::with_interfaces(1, 2);
    let steady = instance("steady", "eth0", 40, 150, "192.0.2.140/24", "");
    let before = instance("moving", "eth0", 77, 150, "192.0.2.177/24", "");
    let halo = Daemon::halo(&lan, 0, "halo", &format!("{steady}{before}"));
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.140") && lan.holds(0, "192.0.2.177")).is_some(), "{}", halo.log());
    reload(&lan, "halo", &format!("{steady}{changed}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        assert!(lan.holds(0, "192.0.2.140"), "the unchanged instance lost its VIP during the reload:\n{}", halo.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let elected = wait_for(GENEROUS, || {
        let s = status(&lan, 0);
        s["vrrp"]["moving"]["state"] == "MASTER" && s["vrrp"]["moving"]["vrid"] == expected_vrid
    });
    assert!(elected.is_some(), "the changed instance did not elect again: {}\n{}", status(&lan, 0), halo.log());
    let (interface, address) = vip.split_once(' ').expect("interface and address");
    assert!(lan.holds_on(0, interface, address), "{address} not on {interface}:\n{}", halo.log());
    assert!(!halo.log().contains("stopped on its own"), "{}", halo.log());
    assert_eq!(halo.stop(), Some(0), "the daemon kept running and stops cleanly");
}

#[test]
fn reload_changing_the_vrid_restarts_only_that_instance() {
    if skip("reload_changing_the_vrid_restarts_only_that_instance") {
        return;
    }
    let changed = instance("moving", "eth0", 78, 150, "192.0.2.177/24", "");
    reload_restarts_only_the_changed_instance(&changed, "eth0 192.0.2.177", 78);
}

#[test]
fn reload_changing_the_version_restarts_only_that_instance() {
    if skip("reload_changing_the_version_restarts_only_that_instance") {
        return;
    }
    let changed = instance("moving", "eth0", 77, 150, "192.0.2.177/24", "version = 2").replace("\"100ms\"", "\"1s\"");
    reload_restarts_only_the_changed_instance(&changed, "eth0 192.0.2.177", 77);
}

#[test]
fn reload_changing_the_family_restarts_only_that_instance() {
    if skip("reload_changing_the_family_restarts_only_that_instance") {
        return;
    }
    let changed = instance("moving", "eth0", 77, 150, "2001:db8::177/64", "");
    reload_restarts_only_the_changed_instance(&changed, "eth0 2001:db8::177", 77);
}

#[test]
fn reload_changing_the_interface_restarts_only_that_instance() {
    if skip("reload_changing_the_interface_restarts_only_that_instance") {
        return;
    }
    let changed = instance("moving", "eth1", 77, 150, "10.1.0.177/24", "");
    reload_restarts_only_the_changed_instance(&changed, "eth1 10.1.0.177", 77);
}

#[test]
fn reload_from_multicast_to_unicast_restarts_only_that_instance() {
    if skip("reload_from_multicast_to_unicast_restarts_only_that_instance") {
        return;
    }
    let unicast = "unicast_source = \"192.0.2.11\"\nunicast_peers = [\"192.0.2.12\"]";
    let changed = instance("moving", "eth0", 77, 150, "192.0.2.177/24", unicast);
    reload_restarts_only_the_changed_instance(&changed, "eth0 192.0.2.177", 77);
}

#[test]
fn reload_adding_instances_starts_them() {
    if skip("reload_adding_instances_starts_them") {
        return;
    }
    let lan = Lan::with_interfaces(1, 2);
    let halo = Daemon::halo(&lan, 0, "halo", &config_of(1, 2, 150, true));
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.100")).is_some(), "{}", halo.log());
    reload(&lan, "halo", &config_of(4, 2, 150, true));
    for k in 0..4 {
        let (interface, _, address, _) = shaped(k, 2, true);
        assert!(wait_for(GENEROUS, || lan.holds_on(0, &interface, &address)).is_some(), "{address} not added:\n{}", halo.log());
    }
    assert_eq!(halo.stop(), Some(0));
}

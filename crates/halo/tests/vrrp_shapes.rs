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
/// Whether host `i` holds `address` on the virtual-MAC interface of VRID `vrid`.
fn holds_on_vmac(lan: &Lan, i: usize, vrid: u8, address: &str) -> bool {
    lan.holds_on(i, &format!("vrrp.{vrid}"), address)
}

/// `hosts` halo nodes with `virtual_mac = true`, VRID 62, priorities 150, 100, 50, ...: exactly
/// the highest holds the VIP and the others hear its adverts; when it stops, the next one takes
/// over, and still only one holds it.
fn virtual_mac_nodes_elect_one_master(hosts: usize) {
    let lan = Lan::new(hosts);
    let vip = "192.0.2.162";
    let daemons: Vec<Daemon> = (0..hosts)
        .map(|i| {
            let priority = 150 - 50 * i as u8;
            let config = instance("VI_62", "eth0", 62, priority, "192.0.2.162/24", "virtual_mac = true").replace("\"100ms\"", "\"200ms\"");
            Daemon::halo(&lan, i, &format!("halo{i}"), &config)
        })
        .collect();
    let logs = |daemons: &[Daemon]| daemons.iter().map(Daemon::log).collect::<Vec<_>>().join("\n---\n");
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 0, 62, vip)).is_some(), "{}", logs(&daemons));
    std::thread::sleep(Duration::from_secs(1));
    for i in 1..hosts {
        assert!(!holds_on_vmac(&lan, i, 62, vip), "host {i} holds the VIP too (two masters):\n{}", logs(&daemons));
        let received = &status(&lan, i)["vrrp"]["VI_62"]["adverts_received"];
        assert!(received.as_u64().is_some_and(|n| n > 0), "host {i} hears no advert: {received}\n{}", logs(&daemons));
    }
    let mut daemons = daemons;
    let first = daemons.remove(0);
    assert_eq!(first.stop(), Some(0));
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 1, 62, vip)).is_some(), "{}", logs(&daemons));
    std::thread::sleep(Duration::from_secs(1));
    for i in 2..hosts {
        assert!(!holds_on_vmac(&lan, i, 62, vip), "host {i} holds the VIP too after the failover:\n{}", logs(&daemons));
    }
}

#[test]
fn two_halo_nodes_with_virtual_mac_elect_one_master() {
    if skip("two_halo_nodes_with_virtual_mac_elect_one_master") {
        return;
    }
    virtual_mac_nodes_elect_one_master(2);
}

#[test]
fn three_halo_nodes_with_virtual_mac_elect_one_master() {
    if skip("three_halo_nodes_with_virtual_mac_elect_one_master") {
        return;
    }
    virtual_mac_nodes_elect_one_master(3);
}

/// keepalived with `use_vmac` as master and halo with `virtual_mac` as backup: halo hears it
/// (it does not become a second master), and takes over when keepalived stops.
#[test]
fn halo_with_virtual_mac_is_backup_to_keepalived_use_vmac() {
    if skip("halo_with_virtual_mac_is_backup_to_keepalived_use_vmac") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 200, "0.2", "192.0.2.170/24", "  use_vmac"));
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 1, 51, vip)).is_some(), "{}", keepalived.log());
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 100, "200ms", "192.0.2.170/24", "virtual_mac = true"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!holds_on_vmac(&lan, 0, 51, vip), "halo became a second master:\n{}", halo.log());
    assert!(status(&lan, 0)["vrrp"]["VI_1"]["adverts_received"].as_u64().is_some_and(|n| n > 0), "{}", halo.log());
    assert_eq!(keepalived.stop(), Some(0));
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 0, 51, vip)).is_some(), "halo did not take over:\n{}", halo.log());
}

/// With the virtual MAC, a client on the LAN caches the VIP with the virtual MAC: the parent
/// interface does not answer ARP for the VIP with its own MAC. Its ARP settings come back when
/// halo stops.
#[test]
fn clients_learn_the_virtual_mac_for_the_vip() {
    if skip("clients_learn_the_virtual_mac_for_the_vip") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let sysctl = |key: &str| lan.exec(0, "sysctl", &["-n", key]).trim().to_string();
    let settings = || ["arp_ignore", "arp_filter", "arp_announce"].map(|k| sysctl(&format!("net.ipv4.conf.eth0.{k}")));
    let before = settings();
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", "virtual_mac = true"));
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 0, 51, vip)).is_some(), "{}", halo.log());
    for trial in 0..5 {
        run_ok("ip", &["-n", lan.host(1), "neigh", "flush", "dev", "eth0"]);
        lan.exec(1, "ping", &["-c", "1", "-W", "1", vip]);
        let neighbour = lan.exec(1, "ip", &["neigh", "show", vip, "dev", "eth0"]);
        assert!(neighbour.contains("00:00:5e:00:01:33"), "trial {trial}: the client cached {neighbour:?}, not the virtual MAC");
    }
    assert_eq!(halo.stop(), Some(0));
    assert_eq!(settings(), before, "the parent's ARP settings are restored when halo stops");
}

/// A dropped-advert counter of halo's instance `name` in host `i`.
fn dropped(lan: &Lan, i: usize, name: &str, reason: &str) -> u64 {
    status(lan, i)["vrrp"][name]["dropped"][reason].as_u64().unwrap_or(0)
}

/// In unicast mode halo listens to its configured peers only: a third router sending to it
/// (keepalived, unicast, same VRID, higher priority) is dropped and counted, and does not take
/// the VIP away.
#[test]
fn unicast_adverts_from_a_stranger_are_dropped_and_counted() {
    if skip("unicast_adverts_from_a_stranger_are_dropped_and_counted") {
        return;
    }
    let lan = Lan::new(3);
    let vip = "192.0.2.170";
    let halo_unicast = "unicast_source = \"192.0.2.11\"\nunicast_peers = [\"192.0.2.12\"]";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 150, "100ms", "192.0.2.170/24", halo_unicast));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", halo.log());
    let stranger_unicast = "  unicast_src_ip 192.0.2.13\n  unicast_peer {\n    192.0.2.11\n  }";
    let stranger = Daemon::keepalived(&lan, 2, "stranger", &keepalived_conf(3, 250, "0.1", "192.0.2.170/24", stranger_unicast));
    assert!(
        wait_for(GENEROUS, || dropped(&lan, 0, "VI_1", "not_a_peer") > 5).is_some(),
        "adverts from 192.0.2.13 are not counted: {}\n{}",
        status(&lan, 0),
        stranger.log()
    );
    assert!(lan.holds(0, vip), "a stranger's advert took the VIP away:\n{}", halo.log());
}

/// A higher-priority advert whose address list differs from ours: halo steps down (RFC 5798
/// lets a router act on it), counts it as `address_mismatch` and says so in its log.
#[test]
fn a_higher_priority_advert_with_other_addresses_is_counted_and_logged() {
    if skip("a_higher_priority_advert_with_other_addresses_is_counted_and_logged") {
        return;
    }
    let lan = Lan::new(2);
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.170")).is_some(), "{}", halo.log());
    let other = Daemon::keepalived(&lan, 1, "other", &keepalived_conf(3, 200, "0.1", "192.0.2.171/24", ""));
    assert!(wait_for(GENEROUS, || !lan.holds(0, "192.0.2.170")).is_some(), "halo did not step down:\n{}", halo.log());
    let mismatched = || status(&lan, 0)["vrrp"]["VI_1"]["address_mismatch"].as_u64().unwrap_or(0);
    assert!(wait_for(GENEROUS, || mismatched() > 0).is_some(), "{}", status(&lan, 0));
    assert!(halo.log().contains("address list differs"), "{}\n{}", halo.log(), other.log());
    // One log line for a stream of such adverts (rate-limited).
    std::thread::sleep(Duration::from_secs(1));
    assert!(mismatched() > 5, "{}", status(&lan, 0));
    assert_eq!(halo.log().matches("address list differs").count(), 1, "{}", halo.log());
}

/// A VRRPv2 advert (keepalived, version 2, same VRID) reaching a v3 instance is counted as a
/// version mismatch, not as received; adverts of another VRID on the interface are counted too.
#[test]
fn adverts_of_another_version_or_vrid_count_as_dropped_not_received() {
    if skip("adverts_of_another_version_or_vrid_count_as_dropped_not_received") {
        return;
    }
    let lan = Lan::new(3);
    // halo only listens: a failing tracker without weight keeps its instance in FAULT, so it sends
    // nothing that could disturb the other routers (keepalived takes a v3 advert, although it
    // logs it as the wrong version, for a live master and stays silent).
    let listening = "track = [\"down\"]\n\n[[tracker]]\nname = \"down\"\nkind = \"script\"\ncommand = [\"/bin/false\"]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 150, "100ms", "192.0.2.170/24", listening));
    assert!(wait_for(GENEROUS, || status(&lan, 0)["vrrp"]["VI_1"]["state"] == "FAULT").is_some(), "{}", halo.log());
    let v2 = Daemon::keepalived(&lan, 1, "v2", &keepalived_conf(2, 100, "1", "192.0.2.170/24", ""));
    let other_vrid = keepalived_conf(3, 100, "0.1", "192.0.2.180/24", "").replace("virtual_router_id 51", "virtual_router_id 52");
    let neighbour = Daemon::keepalived(&lan, 2, "neighbour", &other_vrid);
    assert!(wait_for(GENEROUS, || dropped(&lan, 0, "VI_1", "version") >= 3).is_some(), "{}\n{}", status(&lan, 0), v2.log());
    assert!(wait_for(GENEROUS, || dropped(&lan, 0, "VI_1", "vrid") >= 3).is_some(), "{}\n{}", status(&lan, 0), neighbour.log());
    let received = status(&lan, 0)["vrrp"]["VI_1"]["adverts_received"].as_u64();
    assert_eq!(received, Some(0), "only accepted adverts count as received: {}", status(&lan, 0));
}

/// Two instances in one file against keepalived with the same two (an IPv4 and an IPv6 one):
/// each side is master of one; when keepalived stops, halo holds both.
#[test]
fn two_instances_against_keepalived_each_master_of_one() {
    if skip("two_instances_against_keepalived_each_master_of_one") {
        return;
    }
    let lan = Lan::new(2);
    let halo_config =
        format!("{}{}", instance("VI_1", "eth0", 51, 200, "192.0.2.170/24", ""), instance("VI_2", "eth0", 52, 100, "2001:db8::172/64", ""));
    let keepalived_config = format!(
        "{}{}",
        keepalived_conf(3, 100, "0.1", "192.0.2.170/24", ""),
        keepalived_conf(3, 200, "0.1", "2001:db8::172/64", "")
            .replace("VI_1", "VI_2")
            .replace("virtual_router_id 51", "virtual_router_id 52")
    );
    let halo = Daemon::halo(&lan, 0, "halo", &halo_config);
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_config);
    let split = || lan.holds(0, "192.0.2.170") && lan.holds(1, "2001:db8::172");
    assert!(wait_for(GENEROUS, split).is_some(), "{}\n---\n{}", halo.log(), keepalived.log());
    std::thread::sleep(Duration::from_millis(700));
    assert!(!lan.holds(1, "192.0.2.170") && !lan.holds(0, "2001:db8::172"), "{}\n---\n{}", halo.log(), keepalived.log());
    assert_eq!(keepalived.stop(), Some(0));
    assert!(wait_for(GENEROUS, || lan.holds(0, "2001:db8::172") && lan.holds(0, "192.0.2.170")).is_some(), "{}", halo.log());
}

/// The `change` hook gets keepalived's `INSTANCE name state priority`; on SIGTERM the stop and
/// change hooks run to their end (a 0.5 s stop hook included) before halo exits.
#[test]
fn notify_hooks_get_keepalived_arguments_and_stop_hooks_finish_before_exit() {
    if skip("notify_hooks_get_keepalived_arguments_and_stop_hooks_finish_before_exit") {
        return;
    }
    let lan = Lan::new(1);
    let changes = lan.dir.path().join("changes");
    let stopped = lan.dir.path().join("stopped");
    let hooks = format!(
        "[vrrp.notify]\nchange = [\"/bin/sh\", \"-c\", \"echo \\\"$*\\\" >> {changes}\", \"hook\"]\nstop = [\"/bin/sh\", \"-c\", \"sleep 0.5; echo done > {stopped}\"]\ntimeout = \"5s\"\n",
        changes = changes.display(),
        stopped = stopped.display()
    );
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", &hooks));
    let read = || std::fs::read_to_string(&changes).unwrap_or_default();
    assert!(wait_for(GENEROUS, || read().contains("INSTANCE VI_1 MASTER 200")).is_some(), "{:?}\n{}", read(), halo.log());
    let log = halo.log();
    assert_eq!(halo.stop(), Some(0), "{log}");
    assert_eq!(std::fs::read_to_string(&stopped).unwrap_or_default(), "done\n", "the stop hook was cut short");
    assert!(read().contains("INSTANCE VI_1 STOP 200"), "the change hook did not run on stop: {:?}", read());
    assert!(read().lines().all(|l| l.starts_with("INSTANCE VI_1 ")), "{:?}", read());
}

/// A guard process that dies while halo runs is reaped (no zombie) and the loss is logged.
#[test]
fn a_guard_that_dies_is_reaped_and_logged() {
    if skip("a_guard_that_dies_is_reaped_and_logged") {
        return;
    }
    let lan = Lan::new(1);
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.170")).is_some(), "{}", halo.log());
    let pid = halo.child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let guard: Vec<String> = children
        .split_whitespace()
        .filter(|c| std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|cmd| cmd.ends_with(b"guard\0")))
        .map(str::to_string)
        .collect();
    assert_eq!(guard.len(), 1, "one guard under halo: {children:?}");
    run_ok("kill", &["-KILL", &guard[0]]);
    let reaped = wait_for(GENEROUS, || !std::path::Path::new(&format!("/proc/{}", guard[0])).exists());
    assert!(
        reaped.is_some(),
        "the dead guard stays a zombie: {}",
        std::fs::read_to_string(format!("/proc/{}/stat", guard[0])).unwrap_or_default()
    );
    assert!(wait_for(GENEROUS, || halo.log().contains("VIP guard ended")).is_some(), "{}", halo.log());
    assert!(lan.holds(0, "192.0.2.170"), "halo keeps serving without its guard");
}

/// IPv6 unicast with peers listed by their global addresses and no unicast_source: adverts come
/// from the global address the peer lists (not the link-local one, which the peer would drop as
/// not a peer), so the two routers elect one master.
#[test]
fn ipv6_unicast_without_a_source_elects_one_master() {
    if skip("ipv6_unicast_without_a_source_elects_one_master") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "2001:db8::170";
    let high = Daemon::halo(&lan, 0, "high", &halo_conf(3, 200, "100ms", "2001:db8::170/64", "unicast_peers = [\"2001:db8::12\"]"));
    let low = Daemon::halo(&lan, 1, "low", &halo_conf(3, 100, "100ms", "2001:db8::170/64", "unicast_peers = [\"2001:db8::11\"]"));
    assert_sole_holder(&lan, 0, 1, vip, &[&high, &low]);
    assert_eq!(dropped(&lan, 1, "VI_1", "not_a_peer"), 0, "{}", status(&lan, 1));
}

/// An IPv6 advert longer than 2 KiB (150 addresses: 2 408 bytes) is received whole: the backup
/// hears the master and does not become a second one.
#[test]
fn a_long_ipv6_advert_is_received_whole() {
    if skip("a_long_ipv6_advert_is_received_whole") {
        return;
    }
    let lan = Lan::new(2);
    let vips: Vec<String> = (0..150).map(|i| format!("\"2001:db8:99::{:x}/64\"", 0x100 + i)).collect();
    let config = |priority: u8| {
        halo_conf(3, priority, "100ms", "2001:db8:99::ff/64", "").replace("[\"2001:db8:99::ff/64\"]", &format!("[{}]", vips.join(", ")))
    };
    let high = Daemon::halo(&lan, 0, "high", &config(200));
    let low = Daemon::halo(&lan, 1, "low", &config(100));
    assert_sole_holder(&lan, 0, 1, "2001:db8:99::100", &[&high, &low]);
    let received = status(&lan, 1)["vrrp"]["VI_1"]["adverts_received"].as_u64().unwrap_or(0);
    assert!(received > 0, "the backup heard nothing: {}", status(&lan, 1));
}

/// A VRRP instance whose task panics does not leave halo serving without it: the daemon logs it,
/// stops the other instances (their VIPs go) and exits non-zero, so that systemd restarts it.
#[test]
fn a_panicking_instance_makes_the_daemon_fail_loudly() {
    let test = "a_panicking_instance_makes_the_daemon_fail_loudly";
    if skip(test) || !has_test_hooks(test) {
        return;
    }
    let lan = Lan::new(1);
    let config = format!(
        "{}{}",
        instance("VI_1", "eth0", 51, 200, "192.0.2.170/24", ""),
        instance("VI_2", "eth0", 52, 200, "192.0.2.171/24", "").replace("\"100ms\"", "\"1s\"")
    );
    let file = lan.file("halo.toml", &config);
    let log = lan.dir.path().join("halo.log");
    let pid = lan.dir.path().join("halo.pid");
    let args = [
        "HALO_TEST_PANIC_INSTANCE=VI_2",
        env!("CARGO_BIN_EXE_halo"),
        "run",
        "-c",
        &file.to_string_lossy(),
        "--pid-file",
        &pid.to_string_lossy(),
    ];
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let mut halo = Daemon::start(lan.host(0), "env", &args, log, Vec::new());
    let exited = wait_for(Duration::from_secs(30), || matches!(halo.child.try_wait(), Ok(Some(_))));
    assert!(exited.is_some(), "halo kept running with a dead instance:\n{}", halo.log());
    let code = halo.child.try_wait().ok().flatten().and_then(|s| s.code());
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}:\n{}", halo.log());
    assert!(halo.log().contains("VRRP instance VI_2 panicked: injected by HALO_TEST_PANIC_INSTANCE"), "{}", halo.log());
    assert!(wait_for(GENEROUS, || !lan.holds(0, "192.0.2.170") && !lan.holds(0, "192.0.2.171")).is_some(), "a VIP stayed behind");
}

/// A SIGKILLed master hands over like a clean stop: its guard sends the priority-0 advert halo
/// could not send, so the backup takes over after its skew time, not a whole
/// Master_Down_Interval (3.6 s at 1 s adverts).
#[test]
fn a_killed_master_hands_over_like_a_clean_stop() {
    if skip("a_killed_master_hands_over_like_a_clean_stop") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "1s", "192.0.2.170/24", ""));
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "1s", "192.0.2.170/24", ""));
    assert_sole_holder(&lan, 0, 1, vip, &[&master, &backup]);
    // A priority-0 advert from the master: VRRP's priority byte is the 23rd of the IP packet.
    let capture = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| lan.capture("ip proto 112 and src host 192.0.2.11 and ip[22] == 0", 1, &["vrrp.prio"], &[]));
        std::thread::sleep(Duration::from_millis(1500));
        master.signal("KILL");
        let took = wait_for(GENEROUS, || lan.holds(1, vip)).unwrap_or_else(|| panic!("the backup never took over:\n{}", backup.log()));
        (watcher.join().expect("capture"), took)
    });
    let (rows, took) = capture;
    assert_eq!(rows.trim(), "0", "no priority-0 advert after the SIGKILL: {rows}\n{}", master.log());
    assert!(master.log().contains("halo-guard: halo ended as master: sent its priority-0 advert"), "{}", master.log());
    assert!(took < Duration::from_millis(2500), "the backup waited {took:?}: a whole Master_Down_Interval");
    eprintln!("after a SIGKILL the backup took over in {took:?} (1 s adverts: Master_Down_Interval 3.6 s)");
}

/// The guard cleans up after a SIGKILLed master of both families: the IPv4 and the IPv6 VIP go
/// (an IPv6 address is removed by address and prefix), and the backup, told by the priority-0
/// adverts of both instances, takes both.
#[test]
fn a_killed_master_of_both_families_leaves_neither_vip() {
    if skip("a_killed_master_of_both_families_leaves_neither_vip") {
        return;
    }
    let lan = Lan::new(2);
    let master = Daemon::halo(&lan, 0, "master", &config_of(2, 1, 150, true));
    let backup = Daemon::halo(&lan, 1, "backup", &config_of(2, 1, 100, true));
    let addresses: Vec<String> = (0..2).map(|k| shaped(k, 1, true).2).collect();
    for address in &addresses {
        assert!(wait_for(GENEROUS, || lan.holds(0, address)).is_some(), "{address} never came up:\n{}", master.log());
    }
    master.signal("KILL");
    for address in &addresses {
        assert!(wait_for(GENEROUS, || !lan.holds(0, address)).is_some(), "{address} stayed on the killed master:\n{}", master.log());
        assert!(wait_for(GENEROUS, || lan.holds(1, address)).is_some(), "the backup never took {address}:\n{}", backup.log());
        let removed = format!("halo-guard: halo ended holding {address} ");
        assert!(wait_for(GENEROUS, || master.log().contains(&removed)).is_some(), "the guard did not remove {address}:\n{}", master.log());
    }
    let adverts = master.log().matches("halo-guard: halo ended as master: sent its priority-0 advert").count();
    assert_eq!(adverts, 2, "one priority-0 advert per instance:\n{}", master.log());
}

/// A SIGKILLed halo leaves no virtual-MAC interface behind: a dead node's macvlan still carries
/// the virtual MAC, and one frame from it would steal the MAC on the switch. Its guard removes it.
#[test]
fn a_killed_node_leaves_no_virtual_mac_interface() {
    if skip("a_killed_node_leaves_no_virtual_mac_interface") {
        return;
    }
    let lan = Lan::new(1);
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", "virtual_mac = true"));
    assert!(wait_for(GENEROUS, || holds_on_vmac(&lan, 0, 51, "192.0.2.170")).is_some(), "{}", halo.log());
    halo.signal("KILL");
    let link_exists = || run("ip", &["-n", lan.host(0), "link", "show", "dev", "vrrp.51"]).status.success();
    assert!(wait_for(GENEROUS, || !link_exists()).is_some(), "vrrp.51 stayed after the SIGKILL:\n{}", halo.log());
    assert!(wait_for(GENEROUS, || halo.log().contains("removed halo's virtual-MAC interface vrrp.51")).is_some(), "{}", halo.log());
}

/// keepalived's `virtual_ipaddress_excluded`: held with the virtual addresses while master, of
/// either family, never listed in adverts; they move with the master and go when it stops.
#[test]
fn excluded_addresses_are_held_by_the_master_and_never_advertised() {
    if skip("excluded_addresses_are_held_by_the_master_and_never_advertised") {
        return;
    }
    let lan = Lan::new(2);
    let extra = "excluded_addresses = [\"192.0.2.201/24\", \"2001:db8::201/64\"]";
    let high = Daemon::halo(&lan, 0, "high", &instance("VI_1", "eth0", 51, 150, "192.0.2.100/24", extra));
    let low = Daemon::halo(&lan, 1, "low", &instance("VI_1", "eth0", 51, 100, "192.0.2.100/24", extra));
    let logs = || format!("{}\n---\n{}", high.log(), low.log());
    for address in ["192.0.2.100", "192.0.2.201", "2001:db8::201"] {
        assert!(wait_for(GENEROUS, || lan.holds(0, address)).is_some(), "{address} never came up:\n{}", logs());
    }
    // The master's adverts list the virtual address alone.
    let rows = lan.capture("ip proto 112 and src host 192.0.2.11", 3, &["vrrp.ip_addr", "vrrp.addr_count"], &[]);
    let adverts: Vec<&str> = rows.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(adverts.len(), 3, "{rows}");
    for advert in adverts {
        assert_eq!(advert, "192.0.2.100\t1", "{rows}");
    }
    assert!(!lan.holds(1, "192.0.2.201") && !lan.holds(1, "2001:db8::201"), "the backup holds them too:\n{}", logs());
    let high_log = high.log();
    assert_eq!(high.stop(), Some(0), "{high_log}");
    for address in ["192.0.2.201", "2001:db8::201"] {
        assert!(!lan.holds(0, address), "{address} stayed after a clean stop");
        assert!(wait_for(GENEROUS, || lan.holds(1, address)).is_some(), "{address} did not move:\n{}", low.log());
    }
}

/// A new master tells the LAN where its excluded addresses now live, of either family, as
/// keepalived does (vrrp_send_link_update walks `vip` and `evip`, ARP or NA by each address's
/// family): without an unsolicited NA, neighbours keep sending to the old master's MAC until
/// their neighbour cache notices, seconds of loss for a dual-stack VIP kept in the excluded list.
#[test]
fn a_new_master_announces_its_excluded_addresses_of_the_other_family() {
    if skip("a_new_master_announces_its_excluded_addresses_of_the_other_family") {
        return;
    }
    let lan = Lan::new(1);
    let extra = "excluded_addresses = [\"2001:db8::202/64\"]";
    // Captures the neighbour advertisements for the excluded address (bounded: 4 s).
    let capture = {
        let switch = lan.switch.name.clone();
        std::thread::spawn(move || {
            let out = std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &switch,
                    "timeout",
                    "6",
                    "tshark",
                    "-i",
                    "br0",
                    "-a",
                    "duration:4",
                    "-f",
                    "icmp6 and ip6[40] == 136",
                ])
                .args(["-Y", "icmpv6.nd.na.target_address == 2001:db8::202", "-T", "fields", "-e", "eth.src"])
                .output()
                .expect("tshark");
            (String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string())
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let halo = Daemon::halo(&lan, 0, "halo", &instance("VI_1", "eth0", 52, 150, "192.0.2.102/24", extra));
    assert!(wait_for(GENEROUS, || lan.holds(0, "2001:db8::202")).is_some(), "{}", halo.log());
    let (announced, tshark) = capture.join().expect("capture");
    assert!(!announced.is_empty(), "no neighbour advertisement for the excluded IPv6 address ({tshark}):\n{}", halo.log());
}

/// An instance that waits for its trackers' first results (a slow first check) shows in
/// `/status` as INIT, saying what it waits for (it used to be missing until its election), then
/// carries on as usual.
#[test]
fn an_instance_waiting_for_its_trackers_shows_as_init() {
    if skip("an_instance_waiting_for_its_trackers_shows_as_init") {
        return;
    }
    let lan = Lan::new(1);
    let slow = "track = [\"slow\"]\n\n[[tracker]]\nname = \"slow\"\nkind = \"script\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 4\"]\ninterval = \"1s\"\ntimeout = \"8s\"\n";
    let halo = Daemon::halo(&lan, 0, "halo", &instance("VI_1", "eth0", 51, 200, "192.0.2.170/24", slow));
    let seen = wait_for(Duration::from_secs(3), || status(&lan, 0)["vrrp"]["VI_1"].is_object());
    assert!(seen.is_some(), "the waiting instance is missing from /status: {}\n{}", status(&lan, 0), halo.log());
    let waiting = status(&lan, 0)["vrrp"]["VI_1"].clone();
    assert_eq!(waiting["state"], "INIT", "{waiting}");
    assert_eq!(waiting["priority"], 200, "{waiting}");
    assert!(waiting["last_change"].as_str().is_some_and(|c| c.contains("waiting for the trackers")), "{waiting}");
    assert!(!lan.holds(0, "192.0.2.170"), "it claimed the VIP before its tracker answered");
    let elected = wait_for(GENEROUS, || status(&lan, 0)["vrrp"]["VI_1"]["state"] == "MASTER");
    assert!(elected.is_some(), "{}\n{}", status(&lan, 0), halo.log());
}

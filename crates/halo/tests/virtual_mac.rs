//! The virtual MAC as keepalived's `use_vmac` keeps it (root, network namespaces, run in CI).
//! A backup stays silent: two halo routers with `virtual_mac = true` on one bridge, the backup
//! restarted while a client pings the VIP; no frame with the virtual MAC as its source may leave
//! the backup (a capture on its switch port, and the bridge's forwarding table, which must never
//! place the MAC there), neither macvlan carries an IPv6 link-local address for duplicate address
//! detection to fight over, and the client's pings keep being answered. An excluded IPv6 address
//! is held on the macvlan without one; unicast adverts leave from the parent. All traffic stays
//! inside the namespaces these tests create; every process is ended by its PID.

mod lan;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lan::*;

const VIP: &str = "192.0.2.170";
const VIRTUAL_MAC: &str = "00:00:5e:00:01:33";

/// Ends a capture or a ping (SIGINT, so that it prints what it has) and returns its output.
fn interrupt(mut process: Daemon) -> String {
    process.signal("INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !matches!(process.child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(20));
    }
    process.log()
}

/// tshark on the backup's switch port (`p1k0`), frames from the virtual MAC in one direction:
/// `inbound` is what the backup sends, `outbound` what the bridge sends it (the master's
/// adverts: the capture's positive control). Returns once tshark captures.
fn capture_port(lan: &Lan, direction: &str) -> Daemon {
    let filter = format!("{direction} and ether src {VIRTUAL_MAC}");
    let log = lan.dir.path().join(format!("capture-{direction}.log"));
    let fields = ["-T", "fields", "-e", "frame.time_relative", "-e", "eth.dst", "-e", "frame.protocols"];
    let mut args = vec!["-l", "-n", "-i", "p1k0", "-f", &filter, "-a", "duration:60"];
    args.extend(fields);
    let capture = Daemon::start(&lan.switch.name, "tshark", &args, log, Vec::new());
    assert!(wait_for(GENEROUS, || capture.log().contains("Capturing on")).is_some(), "tshark did not start: {}", capture.log());
    capture
}

/// Captured frames: the lines tshark printed fields on.
fn frames(output: &str) -> Vec<&str> {
    output.lines().filter(|l| l.contains('\t')).collect()
}

/// Polls the bridge's forwarding table every few milliseconds until stopped: every entry that
/// placed the virtual MAC on the backup's port, and how many polls there were.
fn watch_forwarding_table(lan: &Lan, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<String>, usize)> {
    let switch = lan.switch.name.clone();
    std::thread::spawn(move || {
        let (mut seen, mut polls) = (Vec::new(), 0);
        while !stop.load(Ordering::SeqCst) {
            let table = run("bridge", &["-n", &switch, "fdb", "show", "br", "br0"]);
            polls += 1;
            for line in String::from_utf8_lossy(&table.stdout).lines() {
                if line.starts_with(VIRTUAL_MAC) && line.contains("dev p1k0 ") {
                    seen.push(line.to_string());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (seen, polls)
    })
}

/// Whether host `i` has its `vrrp.51`, up.
fn vmac_is_up(lan: &Lan, i: usize) -> bool {
    String::from_utf8_lossy(&run("ip", &["-n", lan.host(i), "-o", "link", "show", "dev", "vrrp.51"]).stdout).contains(",UP")
}

/// The IPv6 addresses of host `i`'s `vrrp.51`, one line each.
fn ipv6_of_vmac(lan: &Lan, i: usize) -> String {
    String::from_utf8_lossy(&run("ip", &["-n", lan.host(i), "-6", "-o", "addr", "show", "dev", "vrrp.51"]).stdout).to_string()
}

/// Transmitted and received counts from ping's summary line.
fn ping_counts(output: &str) -> Option<(u64, u64)> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let numbers: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
    Some((*numbers.first()?, *numbers.get(1)?))
}

/// The master (host 0) and the backup (host 1) both with the virtual MAC, a client (host 2)
/// pinging the VIP; the backup is stopped and started again. Before that the macvlans' DAD is on,
/// as on an ordinary host (the LAN turns it off for its own addresses).
#[test]
fn a_restarted_vmac_backup_sends_no_frame_from_the_virtual_mac() {
    if skip("a_restarted_vmac_backup_sends_no_frame_from_the_virtual_mac") || !can_run("vmac backup", true, &["ping", "bridge"]) {
        return;
    }
    let lan = Lan::new(3);
    for host in [0, 1] {
        lan.exec(host, "sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=1"]);
    }
    let config = |priority: u8| halo_conf(3, priority, "100ms", "192.0.2.170/24", "virtual_mac = true");
    let master = Daemon::halo(&lan, 0, "master", &config(200));
    let backup = Daemon::halo(&lan, 1, "backup", &config(100));
    assert!(wait_for(GENEROUS, || lan.holds_on(0, "vrrp.51", VIP)).is_some(), "no master:\n{}", master.log());
    std::thread::sleep(Duration::from_secs(1));
    assert!(!lan.holds_on(1, "vrrp.51", VIP), "two masters:\n{}\n---\n{}", master.log(), backup.log());

    let leaks = capture_port(&lan, "inbound");
    let control = capture_port(&lan, "outbound");
    let stop_watching = Arc::new(AtomicBool::new(false));
    let table = watch_forwarding_table(&lan, Arc::clone(&stop_watching));
    let ping_log = lan.dir.path().join("ping.log");
    let ping = Daemon::start(lan.host(2), "ping", &["-n", "-i", "0.1", "-w", "60", VIP], ping_log, Vec::new());
    std::thread::sleep(Duration::from_secs(2));

    // The restart: stopped by its PID, started again, then watched for several seconds; the
    // client also asks the LAN for the backup's own address (an ARP request the macvlan hears).
    assert_eq!(backup.stop(), Some(0), "the backup does not stop cleanly");
    let backup = Daemon::halo(&lan, 1, "backup-again", &config(100));
    assert!(wait_for(GENEROUS, || vmac_is_up(&lan, 1)).is_some(), "the restarted backup has no vrrp.51:\n{}", backup.log());
    std::thread::sleep(Duration::from_secs(1));
    run("ip", &["-n", lan.host(2), "neigh", "flush", "to", "192.0.2.12", "dev", "eth0"]);
    lan.exec(2, "ping", &["-n", "-c", "2", "-W", "1", "192.0.2.12"]);
    std::thread::sleep(Duration::from_secs(5));

    let (pinged, leaked, controlled) = (interrupt(ping), interrupt(leaks), interrupt(control));
    stop_watching.store(true, Ordering::SeqCst);
    let (placed, polls) = table.join().expect("forwarding table watcher");
    let logs = format!("{}\n---\n{}", master.log(), backup.log());
    assert!(lan.holds_on(0, "vrrp.51", VIP) && !lan.holds_on(1, "vrrp.51", VIP), "the roles changed:\n{logs}");
    assert!(!frames(&controlled).is_empty(), "the capture saw not even the master's adverts: {controlled}");
    let sent = frames(&leaked);
    eprintln!("frames from the virtual MAC leaving the backup: {}; forwarding-table polls: {polls}", sent.len());
    assert!(sent.is_empty(), "frames left the backup from the virtual MAC (time, destination, protocols):\n{}", sent.join("\n"));
    assert!(placed.is_empty(), "the bridge placed the virtual MAC on the backup's port ({} of {polls} polls): {placed:?}", placed.len());
    let (master_v6, backup_v6) = (ipv6_of_vmac(&lan, 0), ipv6_of_vmac(&lan, 1));
    assert!(
        !master_v6.contains("dadfailed") && !backup_v6.contains("dadfailed"),
        "duplicate address detection failed:\n{master_v6}{backup_v6}"
    );
    assert!(!backup_v6.contains("fe80:"), "the backup's macvlan carries an IPv6 link-local address: {backup_v6}");
    let (transmitted, received) = ping_counts(&pinged).unwrap_or_else(|| panic!("no ping summary: {pinged}"));
    eprintln!("pings to the VIP across the restart: {received} of {transmitted} answered");
    assert!(transmitted >= 50 && transmitted - received <= 3, "the client lost pings: {received} of {transmitted} answered\n{logs}");
}

/// An IPv4 instance with an excluded IPv6 address keeps IPv6 on its macvlan for it, still without
/// a link-local address of the macvlan's own: the master holds the address there and a client
/// reaches it; the IPv6 of a backup's macvlan is as silent as its IPv4.
#[test]
fn a_vmac_master_holds_an_excluded_ipv6_address_without_a_link_local_one() {
    if skip("a_vmac_master_holds_an_excluded_ipv6_address_without_a_link_local_one") || !can_run("vmac ipv6", true, &["ping"]) {
        return;
    }
    let lan = Lan::new(3);
    let extra = "virtual_mac = true\nexcluded_addresses = [\"2001:db8::201/64\"]";
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "100ms", "192.0.2.170/24", extra));
    assert!(wait_for(GENEROUS, || lan.holds_on(0, "vrrp.51", "2001:db8::201")).is_some(), "no excluded address:\n{}", master.log());
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "100ms", "192.0.2.170/24", extra));
    assert!(wait_for(GENEROUS, || vmac_is_up(&lan, 1)).is_some(), "the backup has no vrrp.51:\n{}", backup.log());
    std::thread::sleep(Duration::from_secs(1));
    let logs = format!("{}\n---\n{}", master.log(), backup.log());
    let (master_v6, backup_v6) = (ipv6_of_vmac(&lan, 0), ipv6_of_vmac(&lan, 1));
    assert!(master_v6.contains("2001:db8::201/64") && !master_v6.contains("fe80:"), "master's vrrp.51: {master_v6}\n{logs}");
    assert!(backup_v6.trim().is_empty(), "the backup's vrrp.51 holds IPv6 addresses: {backup_v6}\n{logs}");
    let ping = lan.exec(2, "ping", &["-6", "-n", "-c", "3", "-i", "0.2", "-W", "1", "2001:db8::201"]);
    assert!(ping_counts(&ping).is_some_and(|(sent, answered)| sent == 3 && answered >= 2), "the client cannot reach it: {ping}\n{logs}");
}

/// In unicast mode adverts leave from the parent, as keepalived's `vmac_xmit_base` (which it
/// imposes on unicast with `use_vmac`): the peers elect one master, which then hands over on stop.
#[test]
fn unicast_vmac_peers_elect_one_master_with_adverts_from_the_parent() {
    if skip("unicast_vmac_peers_elect_one_master_with_adverts_from_the_parent") {
        return;
    }
    let lan = Lan::new(2);
    let config = |priority: u8, peer: &str| {
        halo_conf(3, priority, "100ms", "192.0.2.170/24", &format!("virtual_mac = true\nunicast_peers = [\"{peer}\"]"))
    };
    let master = Daemon::halo(&lan, 0, "master", &config(200, "192.0.2.12"));
    let backup = Daemon::halo(&lan, 1, "backup", &config(100, "192.0.2.11"));
    assert!(wait_for(GENEROUS, || lan.holds_on(0, "vrrp.51", VIP)).is_some(), "no master:\n{}", master.log());
    std::thread::sleep(Duration::from_secs(1));
    assert!(!lan.holds_on(1, "vrrp.51", VIP), "two masters:\n{}\n---\n{}", master.log(), backup.log());
    let rows = lan.capture("ip proto 112 and src host 192.0.2.11", 2, &["eth.src", "ip.dst"], &[]);
    assert!(rows.lines().count() == 2 && rows.lines().all(|l| !l.starts_with(VIRTUAL_MAC) && l.ends_with("\t192.0.2.12")), "{rows}");
    assert_eq!(master.stop(), Some(0));
    assert!(wait_for(GENEROUS, || lan.holds_on(1, "vrrp.51", VIP)).is_some(), "no takeover:\n{}", backup.log());
}

/// A SIGKILLed unicast virtual-MAC master: its guard sends the priority-0 advert it could not
/// send, from the parent like every unicast advert, so the peer receives it and takes over (sent
/// from the macvlan, it asked the peer's MAC by ARP from the virtual MAC and never arrived).
#[test]
fn a_killed_unicast_vmac_master_hands_over_through_its_guard() {
    if skip("a_killed_unicast_vmac_master_hands_over_through_its_guard") {
        return;
    }
    let lan = Lan::new(2);
    let config = |priority: u8, peer: &str| {
        halo_conf(3, priority, "1s", "192.0.2.170/24", &format!("virtual_mac = true\nunicast_peers = [\"{peer}\"]"))
    };
    let master = Daemon::halo(&lan, 0, "master", &config(200, "192.0.2.12"));
    let backup = Daemon::halo(&lan, 1, "backup", &config(100, "192.0.2.11"));
    assert!(wait_for(GENEROUS, || lan.holds_on(0, "vrrp.51", VIP)).is_some(), "no master:\n{}", master.log());
    std::thread::sleep(Duration::from_secs(2));
    // VRRP's priority byte is the 23rd of the IP packet: the master's priority-0 advert.
    let rows = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| lan.capture("ip proto 112 and src host 192.0.2.11 and ip[22] == 0", 1, &["eth.src", "ip.dst"], &[]));
        std::thread::sleep(Duration::from_millis(1500));
        master.signal("KILL");
        watcher.join().expect("capture")
    });
    assert!(
        rows.trim().ends_with("\t192.0.2.12") && !rows.starts_with(VIRTUAL_MAC),
        "no priority-0 advert to the peer from the parent: {rows:?}\n{}",
        master.log()
    );
    assert!(wait_for(GENEROUS, || lan.holds_on(1, "vrrp.51", VIP)).is_some(), "no takeover:\n{}", backup.log());
}

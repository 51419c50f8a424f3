//! Sync groups on the wire (root, network namespaces, run in CI): two routers, each running
//! VI_1 on eth0 and VI_2 on eth1 in one sync group. One instance failing on the master moves
//! both VIPs to the other router, and its recovery brings both back; halo against halo, and
//! halo against real keepalived 2.2.7 with a `vrrp_sync_group`, each way round. And a reload
//! that creates a group restarts its members only.
//! All traffic stays inside the namespaces this test creates; every process is killed by PID.

mod lan;

use std::path::Path;
use std::time::Duration;

use lan::*;

const VIP_1: &str = "192.0.2.100";
const VIP_2: &str = "10.1.0.100";

/// VI_1 (eth0, VRID 51) and VI_2 (eth1, VRID 52) at `priority`, 100 ms adverts, in group G1.
/// `tracked` makes VI_2 track a script tracker that passes while `flag` exists (no weight: its
/// failure is VI_2's FAULT).
fn halo_group(priority: u8, flag: Option<&Path>) -> String {
    let instance = |name: &str, interface: &str, vrid: u8, vip: &str, extra: &str| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"{interface}\"\nvirtual_router_id = {vrid}\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{vip}/24\"]\n{extra}\n"
        )
    };
    let (track, tracker) = match flag {
        Some(f) => (
            "track = [\"flag\"]",
            format!(
                "[[tracker]]\nname = \"flag\"\nkind = \"script\"\ncommand = [\"/usr/bin/test\", \"-e\", \"{}\"]\ninterval = \"100ms\"\ntimeout = \"1s\"\nfall = 1\nrise = 1\n\n",
                f.display()
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        "{}{}{tracker}[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n",
        instance("VI_1", "eth0", 51, VIP_1, ""),
        instance("VI_2", "eth1", 52, VIP_2, track)
    )
}

/// The same shape for keepalived, VRRPv3 at 100 ms, with a `vrrp_sync_group`.
fn keepalived_group(priority: u8) -> String {
    let instance = |name: &str, interface: &str, vrid: u8, vip: &str| {
        format!(
            "vrrp_instance {name} {{\n  state BACKUP\n  interface {interface}\n  virtual_router_id {vrid}\n  priority {priority}\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    {vip}/24\n  }}\n}}\n"
        )
    };
    format!(
        "vrrp_sync_group G1 {{\n  group {{\n    VI_1\n    VI_2\n  }}\n}}\n{}{}",
        instance("VI_1", "eth0", 51, VIP_1),
        instance("VI_2", "eth1", 52, VIP_2)
    )
}

/// Whether host `i` holds both VIPs, and the other host neither.
fn both_on(lan: &Lan, i: usize) -> bool {
    let other = 1 - i;
    lan.holds_on(i, "eth0", VIP_1)
        && lan.holds_on(i, "eth1", VIP_2)
        && !lan.holds_on(other, "eth0", VIP_1)
        && !lan.holds_on(other, "eth1", VIP_2)
}

/// Waits until host `i` holds both VIPs and the other none; when each VIP arrived, from now
/// (polled: a few tens of milliseconds of resolution).
fn both_move_to(lan: &Lan, i: usize, what: &str, logs: &dyn Fn() -> String) -> (Duration, Duration) {
    let start = std::time::Instant::now();
    let mut arrived: [Option<Duration>; 2] = [None, None];
    let both = wait_for(GENEROUS, || {
        for (k, (device, vip)) in [("eth0", VIP_1), ("eth1", VIP_2)].into_iter().enumerate() {
            if arrived[k].is_none() && lan.holds_on(i, device, vip) {
                arrived[k] = Some(start.elapsed());
            }
        }
        arrived.iter().all(Option::is_some)
    });
    assert!(both.is_some(), "{what}: the VIPs never both reached host {i} ({arrived:?}):\n{}", logs());
    assert!(wait_for(GENEROUS, || both_on(lan, i)).is_some(), "{what}: the VIPs are not all on host {i} alone:\n{}", logs());
    (arrived[0].unwrap_or_default(), arrived[1].unwrap_or_default())
}

/// `/status` of the daemon in host `i`.
fn status(lan: &Lan, i: usize) -> serde_json::Value {
    let body = lan.exec(i, "curl", &["-s", "--max-time", "2", "http://127.0.0.1:9470/status"]);
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn halo_with_halo_a_member_fault_moves_the_whole_group_and_back() {
    if skip("halo_with_halo_a_member_fault_moves_the_whole_group_and_back") {
        return;
    }
    let lan = Lan::with_interfaces(2, 2);
    let high = Daemon::halo(&lan, 0, "high", &halo_group(150, None));
    let low = Daemon::halo(&lan, 1, "low", &halo_group(100, None));
    let logs = || format!("{}\n---\n{}", high.log(), low.log());
    both_move_to(&lan, 0, "start", &logs);
    let s = status(&lan, 0);
    assert_eq!((&s["vrrp"]["VI_1"]["sync_group"], &s["vrrp"]["VI_2"]["sync_group"]), (&"G1".into(), &"G1".into()), "{s}");
    assert_eq!(s["sync_groups"]["G1"]["state"], "MASTER", "{s}");
    assert_eq!(status(&lan, 1)["sync_groups"]["G1"]["state"], "BACKUP");

    // VI_2's link goes down on the master: VI_2 FAULT, and VI_1 (its link up) follows it.
    run_ok("ip", &["-n", lan.host(0), "link", "set", "eth1", "down"]);
    let (vi_1, vi_2) = both_move_to(&lan, 1, "eth1 down on the master", &logs);
    eprintln!("eth1 down on the master: VI_1 moved in {vi_1:?}, VI_2 in {vi_2:?}");
    let s = status(&lan, 0);
    assert_eq!((&s["vrrp"]["VI_1"]["state"], &s["sync_groups"]["G1"]["state"]), (&"FAULT".into(), &"FAULT".into()), "{s}");
    assert!(high.log().contains("sync group changed group=G1 from=MASTER to=FAULT member=VI_2"), "{}", high.log());

    // The link back: both leave FAULT together and take both VIPs back (preemption).
    run_ok("ip", &["-n", lan.host(0), "link", "set", "eth1", "up"]);
    let (vi_1, vi_2) = both_move_to(&lan, 0, "eth1 back on the master", &logs);
    eprintln!("eth1 back: VI_1 returned in {vi_1:?}, VI_2 in {vi_2:?}");
    let changes = high.log().matches("sync group changed").count();
    assert_eq!(changes, 5, "INIT>BACKUP>MASTER>FAULT>BACKUP>MASTER, one line per change:\n{}", high.log());
    let low_log = || low.log();
    assert_eq!(high.stop(), Some(0));
    let (vi_1, vi_2) = both_move_to(&lan, 1, "the master stops", &low_log);
    eprintln!("the master stopped: VI_1 moved in {vi_1:?}, VI_2 in {vi_2:?}");
}

/// Phase one: halo master, its VI_2 tracker fails (a FAULT), keepalived takes both, halo
/// takes both back when it recovers.
#[test]
fn keepalived_peer_halo_member_fault_moves_both_to_keepalived_and_back() {
    if skip("keepalived_peer_halo_member_fault_moves_both_to_keepalived_and_back") {
        return;
    }
    let lan = Lan::with_interfaces(2, 2);
    let flag = lan.dir.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let halo = Daemon::halo(&lan, 0, "halo", &halo_group(150, Some(&flag)));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_group(100));
    let logs = || format!("{}\n---\n{}", halo.log(), keepalived.log());
    both_move_to(&lan, 0, "start", &logs);
    std::fs::remove_file(&flag).expect("remove flag");
    let (vi_1, vi_2) = both_move_to(&lan, 1, "halo's VI_2 tracker fails", &logs);
    eprintln!("halo's VI_2 tracker failed: keepalived took VI_1 in {vi_1:?}, VI_2 in {vi_2:?}");
    std::fs::write(&flag, "").expect("flag");
    let (vi_1, vi_2) = both_move_to(&lan, 0, "halo's tracker recovers", &logs);
    eprintln!("halo recovered: VI_1 back in {vi_1:?}, VI_2 in {vi_2:?}");
    assert!(keepalived.log().contains("VRRP_Group(G1) Syncing instances to MASTER state"), "{}", keepalived.log());
    assert!(keepalived.log().contains("VRRP_Group(G1) Syncing instances to BACKUP state"), "{}", keepalived.log());
}

/// keepalived's group (higher priority, started second) preempts halo's on both instances;
/// keepalived's VI_2 link goes down: halo takes both; the link back, keepalived takes both.
#[test]
fn keepalived_master_group_member_fault_moves_both_to_halo_and_back() {
    if skip("keepalived_master_group_member_fault_moves_both_to_halo_and_back") {
        return;
    }
    let lan = Lan::with_interfaces(2, 2);
    let halo = Daemon::halo(&lan, 0, "halo", &halo_group(100, None));
    let logs_halo_only = || halo.log();
    both_move_to(&lan, 0, "halo alone", &logs_halo_only);
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_group(200));
    let logs = || format!("{}\n---\n{}", halo.log(), keepalived.log());
    let (vi_1, vi_2) = both_move_to(&lan, 1, "keepalived's group preempts", &logs);
    eprintln!("keepalived's group preempted halo's: VI_1 in {vi_1:?}, VI_2 in {vi_2:?}");
    assert!(halo.log().contains("sync group changed group=G1 from=MASTER to=BACKUP"), "{}", halo.log());
    run_ok("ip", &["-n", lan.host(1), "link", "set", "eth1", "down"]);
    let (vi_1, vi_2) = both_move_to(&lan, 0, "keepalived's eth1 down", &logs);
    eprintln!("keepalived's eth1 down: halo took VI_1 in {vi_1:?}, VI_2 in {vi_2:?}");
    assert!(keepalived.log().contains("VRRP_Group(G1) Syncing instances to FAULT state"), "{}", keepalived.log());
    run_ok("ip", &["-n", lan.host(1), "link", "set", "eth1", "up"]);
    let (vi_1, vi_2) = both_move_to(&lan, 1, "keepalived's eth1 back", &logs);
    eprintln!("keepalived's eth1 back: it took VI_1 back in {vi_1:?}, VI_2 in {vi_2:?}");
    assert_eq!(halo.stop(), Some(0));
}

/// Rewrites `name`'s config and asks its daemon to reload it with `halo reload`.
fn reload(lan: &Lan, name: &str, config: &str) {
    let file = lan.file(&format!("{name}.toml"), config);
    let pid = lan.dir.path().join(format!("{name}.pid"));
    let out = run(env!("CARGO_BIN_EXE_halo"), &["reload", "-c", &file.to_string_lossy(), "--pid-file", &pid.to_string_lossy()]);
    assert!(out.status.success(), "halo reload: {}", String::from_utf8_lossy(&out.stderr));
}

/// A reload that creates a group restarts its members into it, and only them; a reload that
/// changes a member's priority only is applied live, without a restart.
#[test]
fn reload_creating_a_group_restarts_its_members_only() {
    if skip("reload_creating_a_group_restarts_its_members_only") {
        return;
    }
    let lan = Lan::with_interfaces(1, 2);
    let steady = "[[vrrp]]\nname = \"steady\"\ninterface = \"eth0\"\nvirtual_router_id = 40\npriority = 150\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"192.0.2.140/24\"]\n\n";
    let grouped = halo_group(150, None);
    let (members, group) = grouped.split_at(grouped.find("[[sync_group]]").expect("group"));
    let halo = Daemon::halo(&lan, 0, "halo", &format!("{steady}{members}"));
    let in_group = |s: &serde_json::Value| s["vrrp"]["VI_1"]["sync_group"] == "G1" && s["vrrp"]["VI_2"]["sync_group"] == "G1";
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.140") && lan.holds_on(0, "eth1", VIP_2)).is_some(), "{}", halo.log());
    assert!(!in_group(&status(&lan, 0)));
    reload(&lan, "halo", &format!("{steady}{members}{group}"));
    let regrouped = wait_for(GENEROUS, || {
        let s = status(&lan, 0);
        in_group(&s) && s["sync_groups"]["G1"]["state"] == "MASTER"
    });
    assert!(regrouped.is_some(), "{}\n{}", status(&lan, 0), halo.log());
    let log = halo.log();
    let restarted: Vec<&str> = log.lines().filter(|l| l.contains("restarting it")).collect();
    let members_only = restarted.iter().all(|l| l.contains("instance=VI_1") || l.contains("instance=VI_2"));
    assert!(restarted.len() == 2 && members_only, "VI_1 and VI_2 restart, steady does not: {restarted:#?}");
    assert!(lan.holds(0, "192.0.2.140") && lan.holds(0, VIP_1) && lan.holds_on(0, "eth1", VIP_2), "{log}");
    reload(&lan, "halo", &format!("{steady}{}{group}", members.replace("priority = 150", "priority = 160")));
    assert!(wait_for(GENEROUS, || status(&lan, 0)["vrrp"]["VI_1"]["priority"] == 160).is_some(), "{}", halo.log());
    assert_eq!(halo.log().matches("restarting it").count(), 2, "a priority change is live: {}", halo.log());
    assert_eq!(status(&lan, 0)["sync_groups"]["G1"]["state"], "MASTER");
    assert_eq!(halo.stop(), Some(0));
}

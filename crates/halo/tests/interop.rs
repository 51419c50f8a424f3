//! halo against real keepalived 2.2.7 and against itself, in network namespaces (root; run in
//! CI): a bridge in a "switch" namespace, each router in its own namespace. Failover both ways
//! for VRRPv2 with PASS and v3 over IPv4, an IPv6 case, unicast, halo with halo, the VIP gone
//! after SIGKILL, and tshark decoding halo's adverts with a good checksum.
//! All traffic stays inside the namespaces this test creates; every process is killed by PID.

mod lan;

use std::time::Duration;

use lan::*;

#[test]
fn v3_ipv4_halo_master_keepalived_backup_then_the_reverse() {
    if skip("v3_ipv4_halo_master_keepalived_backup_then_the_reverse") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", "192.0.2.170/24", ""));
    assert_sole_holder(&lan, 0, 1, vip, &[&halo, &keepalived]);

    // tshark, an independent decoder, reads halo's adverts as valid VRRPv3 with a good checksum.
    let rows = lan.capture(
        "ip proto 112",
        5,
        &["ip.src", "ip.ttl", "vrrp.version", "vrrp.prio", "vrrp.checksum.status"],
        &["-o", "vrrp.v3_checksum_as_in_v2:FALSE"],
    );
    let from_halo: Vec<&str> = rows.lines().filter(|l| l.starts_with("192.0.2.11\t")).collect();
    assert!(!from_halo.is_empty(), "no advert from halo captured: {rows}");
    for row in from_halo {
        assert_eq!(row, "192.0.2.11\t255\t3\t200\t1", "ttl 255, version 3, priority 200, checksum good");
    }

    // SIGKILL: halo cannot clean up; its guard process removes the VIP at once.
    halo.signal("KILL");
    let gone = wait_for(GENEROUS, || !lan.holds(0, vip)).expect("the VIP stays on a killed halo");
    eprintln!("VIP gone from the SIGKILLed halo after {gone:?}");
    assert!(gone < Duration::from_millis(1500), "the guard, not the 2 s lifetime, removes the VIP: {gone:?}");
    assert!(
        wait_for(GENEROUS, || halo.log().contains("halo-guard: halo ended holding 192.0.2.170")).is_some(),
        "the guard did not remove the VIP: {}",
        halo.log()
    );
    assert!(wait_for(GENEROUS, || lan.holds(1, vip)).is_some(), "keepalived did not take over: {}", keepalived.log());
    drop(halo);

    // Now keepalived is master and a lower-priority halo its backup; a clean keepalived stop
    // (priority 0) hands the VIP to halo.
    let backup = Daemon::halo(&lan, 0, "halo-backup", &halo_conf(3, 50, "100ms", "192.0.2.170/24", ""));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!lan.holds(0, vip) && lan.holds(1, vip), "halo backup took the VIP from keepalived: {}", backup.log());
    assert_eq!(keepalived.stop(), Some(0));
    let took = wait_for(GENEROUS, || lan.holds(0, vip)).expect("halo takes over after keepalived's priority 0");
    eprintln!("halo took over {took:?} after keepalived stopped");
    assert!(took < Duration::from_secs(3), "a priority-0 advert hands over within skew time, not {took:?}");
    assert_eq!(backup.stop(), Some(0), "halo exits 0 on SIGTERM");
    assert!(!lan.holds(0, vip), "halo removes its VIP on SIGTERM");
}

/// VRRPv2 with PASS authentication (`password` on both sides): halo backs up a keepalived
/// master (it accepts its adverts), takes over when keepalived stops, and keepalived, back with a
/// lower priority, stays backup behind halo (it accepts halo's).
fn v2_pass_both_ways(password: &str) {
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let auth_halo = format!("auth_password = \"{password}\"");
    let auth_keepalived = format!("  authentication {{\n    auth_type PASS\n    auth_pass {password}\n  }}");
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(2, 200, "1", "192.0.2.170/24", &auth_keepalived));
    assert!(wait_for(GENEROUS, || lan.holds(1, vip)).is_some(), "keepalived never took the VIP: {}", keepalived.log());
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(2, 100, "1s", "192.0.2.170/24", &auth_halo));
    std::thread::sleep(Duration::from_secs(5));
    assert!(!lan.holds(0, vip), "halo (backup) took the VIP although keepalived's adverts carry the right password: {}", halo.log());
    assert_eq!(keepalived.stop(), Some(0));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "halo did not take over: {}", halo.log());
    // keepalived back with a lower priority: it stays backup behind halo.
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived-low", &keepalived_conf(2, 50, "1", "192.0.2.170/24", &auth_keepalived));
    std::thread::sleep(Duration::from_secs(5));
    assert!(lan.holds(0, vip) && !lan.holds(1, vip), "keepalived: {}", keepalived.log());
    assert!(keepalived.log().contains("Entering BACKUP STATE"), "{}", keepalived.log());
}

#[test]
fn v2_pass_keepalived_master_halo_backup_then_the_reverse() {
    if skip("v2_pass_keepalived_master_halo_backup_then_the_reverse") {
        return;
    }
    v2_pass_both_ways("42");
}

/// A PASS password of 8 bytes that are not ASCII (`£6nj7^5`: keepalived takes it) is the same on
/// the wire both ways. (halo refused such a password, after `halo import` had written it.)
#[test]
fn v2_pass_with_a_utf8_password_matches_keepalived_both_ways() {
    if skip("v2_pass_with_a_utf8_password_matches_keepalived_both_ways") {
        return;
    }
    v2_pass_both_ways("£6nj7^5");
}

#[test]
fn v3_ipv6_halo_master_keepalived_backup() {
    if skip("v3_ipv6_halo_master_keepalived_backup") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "2001:db8::170";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "2001:db8::170/64", ""));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", "2001:db8::170/64", ""));
    assert_sole_holder(&lan, 0, 1, vip, &[&halo, &keepalived]);
    assert_eq!(halo.stop(), Some(0));
    assert!(wait_for(GENEROUS, || lan.holds(1, vip)).is_some(), "keepalived did not take over: {}", keepalived.log());
}

#[test]
fn halo_with_halo() {
    if skip("halo_with_halo") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let high = Daemon::halo(&lan, 0, "high", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    let low = Daemon::halo(&lan, 1, "low", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert_sole_holder(&lan, 0, 1, vip, &[&high, &low]);
    // Each daemon's status endpoint (default address, its namespace's loopback) says who is who.
    let metrics = |host: usize| {
        String::from_utf8_lossy(&run("ip", &["netns", "exec", lan.host(host), "curl", "-s", "http://127.0.0.1:9470/metrics"]).stdout)
            .to_string()
    };
    assert!(metrics(0).contains("halo_vrrp_state{instance=\"VI_1\",state=\"MASTER\"} 1"), "{}", metrics(0));
    assert!(metrics(1).contains("halo_vrrp_state{instance=\"VI_1\",state=\"BACKUP\"} 1"), "{}", metrics(1));
    assert!(metrics(1).contains("halo_vrrp_adverts_received_total{instance=\"VI_1\"}"), "{}", metrics(1));
    assert_eq!(high.stop(), Some(0));
    let took = wait_for(GENEROUS, || lan.holds(1, vip)).expect("the backup takes over");
    eprintln!("halo backup took over {took:?} after the master's SIGTERM");
    assert!(took < Duration::from_secs(3), "a priority-0 advert hands over within skew time, not {took:?}");
}

#[test]
fn unicast_with_keepalived() {
    if skip("unicast_with_keepalived") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let halo_unicast = "unicast_source = \"192.0.2.11\"\nunicast_peers = [\"192.0.2.12\"]";
    let keepalived_unicast = "  unicast_src_ip 192.0.2.12\n  unicast_peer {\n    192.0.2.11\n  }";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", halo_unicast));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", "192.0.2.170/24", keepalived_unicast));
    assert_sole_holder(&lan, 0, 1, vip, &[&halo, &keepalived]);
    halo.signal("KILL");
    assert!(wait_for(GENEROUS, || lan.holds(1, vip)).is_some(), "keepalived did not take over: {}", keepalived.log());
}

#[test]
fn own_link_down_is_a_fault_that_releases_the_vip() {
    if skip("own_link_down_is_a_fault_that_releases_the_vip") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", master.log());
    run_ok("ip", &["-n", lan.host(0), "link", "set", "eth0", "down"]);
    // The kernel keeps addresses on a down link: only halo's FAULT removes it.
    assert!(wait_for(GENEROUS, || !lan.holds(0, vip)).is_some(), "VIP kept on a down link: {}", master.log());
    assert!(wait_for(GENEROUS, || lan.holds(1, vip)).is_some(), "{}", backup.log());
    assert!(master.log().contains("to=FAULT"), "{}", master.log());
    run_ok("ip", &["-n", lan.host(0), "link", "set", "eth0", "up"]);
    assert!(wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip)).is_some(), "no preemption after recovery: {}", master.log());
}

#[test]
fn script_tracker_weight_hands_the_vip_to_keepalived_and_back() {
    if skip("script_tracker_weight_hands_the_vip_to_keepalived_and_back") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let healthy = lan.dir.path().join("healthy");
    std::fs::write(&healthy, "").expect("flag");
    let tracker = format!(
        "track = [\"flag\"]\n\n[[tracker]]\nname = \"flag\"\nkind = \"script\"\ncommand = [\"/usr/bin/test\", \"-e\", \"{}\"]\ninterval = \"100ms\"\ntimeout = \"1s\"\nweight = -150\nfall = 2\nrise = 2\n",
        healthy.display()
    );
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", &tracker));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", halo.log());
    std::fs::remove_file(&healthy).expect("remove flag");
    let moved = wait_for(GENEROUS, || lan.holds(1, vip) && !lan.holds(0, vip)).expect("keepalived preempts a halo of priority 50");
    eprintln!("tracker failure moved the VIP in {moved:?}");
    assert!(moved < Duration::from_secs(5), "order of magnitude: fall x interval + an advert, not {moved:?}");
    std::fs::write(&healthy, "").expect("flag");
    assert!(wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip)).is_some(), "halo does not take the VIP back: {}", halo.log());
    assert!(halo.log().contains("tracker changed"), "{}", halo.log());
    drop(keepalived);
}

/// nginx as an API-server stand-in in a namespace: TLS on 192.0.2.13:6443, /readyz and /version.
fn nginx(lan: &Lan, host: usize) -> Daemon {
    let (cert, key) = common::certificate(&["kubernetes"]);
    let (cert_file, key_file) = (lan.file("api.crt", &cert), lan.file("api.key", &key));
    let conf = format!(
        "pid {pid};\nmaster_process off;\nerror_log stderr;\nevents {{}}\nhttp {{\n access_log off;\n server {{\n  listen 192.0.2.{ip}:6443 ssl;\n  ssl_certificate {cert};\n  ssl_certificate_key {key};\n  location /readyz {{ return 200 ok; }}\n  location /version {{ return 200 v1.31; }}\n }}\n}}\n",
        pid = lan.dir.path().join("nginx.pid").display(),
        ip = 11 + host,
        cert = cert_file.display(),
        key = key_file.display(),
    );
    let file = lan.file("nginx.conf", &conf);
    let log = lan.dir.path().join("nginx.log");
    let prefix = lan.dir.path().display().to_string();
    Daemon::start(lan.host(host), "nginx", &["-p", &prefix, "-c", &file.to_string_lossy(), "-g", "daemon off;"], log, Vec::new())
}

fn balancer_conf(priority: u8) -> String {
    let vrrp = halo_conf(3, priority, "100ms", "192.0.2.170/24", "track = [\"local-balancer\"]");
    format!(
        "{vrrp}\n[[tracker]]\nname = \"local-balancer\"\nkind = \"balancer\"\nfrontend = \"api\"\nweight = -150\nfall = 2\nrise = 2\ninterval = \"100ms\"\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"0.0.0.0:8443\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\n[backend.health]\nkind = \"https\"\ninterval = \"200ms\"\nfast_interval = \"100ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 2\n\
         [[backend.server]]\nname = \"master01\"\naddress = \"192.0.2.13:6443\"\n"
    )
}

#[test]
fn balancer_tracker_moves_the_vip_when_the_local_balancer_loses_its_backends() {
    if !can_run("balancer_tracker_moves_the_vip_when_the_local_balancer_loses_its_backends", true, &["ip", "nginx", "curl"]) {
        return;
    }
    let lan = Lan::new(4);
    let vip = "192.0.2.170";
    let _api = nginx(&lan, 2);
    // The API server is up before the balancers start (the no-flap property below is about
    // balancers joining a working cluster).
    let api_up = || {
        run("ip", &["netns", "exec", lan.host(3), "curl", "-sk", "--fail", "--max-time", "1", "https://192.0.2.13:6443/readyz"])
            .status
            .success()
    };
    assert!(wait_for(GENEROUS, api_up).is_some(), "nginx never answered");
    // lb1 starts and takes the VIP; lb2 then joins a working pair. (Two routers started at the
    // same moment race by protocol: the higher priority wins the first election only if it
    // starts within the skew difference, otherwise it preempts a moment later.)
    let first = Daemon::halo(&lan, 0, "lb1", &balancer_conf(200));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", first.log());
    let second = Daemon::halo(&lan, 1, "lb2", &balancer_conf(100));
    let get = || {
        let out =
            run("ip", &["netns", "exec", lan.host(3), "curl", "-sk", "--fail", "--max-time", "2", "https://192.0.2.170:8443/version"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(wait_for(GENEROUS, || get() == "v1.31").is_some(), "no answer through the VIP: {}", first.log());
    // No start-up flap: the instances wait for their balancer's first checks before electing, so
    // lb1 became master once, at its full priority, and lb2 never took the VIP while joining.
    wait_for(Duration::from_secs(2), || second.log().contains("tracker settled"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(first.log().matches("to=MASTER").count(), 1, "lb1 flapped at start-up: {}", first.log());
    assert!(!second.log().contains("to=MASTER"), "lb2 held the VIP while joining: {}", second.log());
    // lb1 loses its path to the API server (its balancer has no healthy backend any more):
    // the tracker takes lb1's priority to 50 and lb2 (100) takes over.
    run_ok("ip", &["-n", lan.host(0), "route", "add", "blackhole", "192.0.2.13/32"]);
    let moved =
        wait_for(GENEROUS, || lan.holds(1, vip) && !lan.holds(0, vip)).unwrap_or_else(|| panic!("VIP did not move: {}", first.log()));
    eprintln!("VIP moved {moved:?} after lb1 lost its backends (the seed's script: 30 s)");
    assert!(moved < Duration::from_secs(8), "order of magnitude: checks + tracker + an advert, not the script's 30 s: {moved:?}");
    // Through lb2 as soon as the client's neighbour entry follows the gratuitous ARP.
    assert!(wait_for(Duration::from_secs(5), || get() == "v1.31").is_some(), "no answer through lb2");
    assert!(first.log().contains("server DOWN"), "{}", first.log());
    run_ok("ip", &["-n", lan.host(0), "route", "del", "blackhole", "192.0.2.13/32"]);
    assert!(wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip)).is_some(), "lb1 did not take the VIP back: {}", first.log());
    assert!(wait_for(Duration::from_secs(5), || get() == "v1.31").is_some(), "no answer through lb1 again");
    drop(second);
}

#[test]
fn sighup_applies_priority_and_address_changes_without_a_needless_failover() {
    if skip("sighup_applies_priority_and_address_changes_without_a_needless_failover") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", master.log());
    // Lower the priority (still above the backup's) and add a second address: applied live.
    lan.file("master.toml", &halo_conf(3, 150, "100ms", "192.0.2.170/24\", \"192.0.2.171/24", ""));
    master.signal("HUP");
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.171")).is_some(), "the new address was not added: {}", master.log());
    assert!(lan.holds(0, vip) && !lan.holds(1, vip), "a needless failover happened");
    assert_eq!(master.log().matches("to=MASTER").count(), 1, "{}", master.log());
    // An invalid file changes nothing.
    lan.file("master.toml", "[[vrrp]]\nname = \"VI_1\"\npriority = 999\n");
    master.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(master.log().contains("reload refused"), "{}", master.log());
    assert!(lan.holds(0, vip) && lan.holds(0, "192.0.2.171"));
    // Below the backup: it preempts, as the protocol says.
    lan.file("master.toml", &halo_conf(3, 50, "100ms", "192.0.2.170/24", ""));
    master.signal("HUP");
    assert!(wait_for(GENEROUS, || lan.holds(1, vip) && !lan.holds(0, vip)).is_some(), "{}\n{}", master.log(), backup.log());
}

#[test]
fn wrong_password_adverts_are_dropped_and_counted_and_hook_failures_too() {
    if skip("wrong_password_adverts_are_dropped_and_counted_and_hook_failures_too") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let keepalived_auth = "  authentication {\n    auth_type PASS\n    auth_pass 43\n  }";
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(2, 200, "1", "192.0.2.170/24", keepalived_auth));
    let halo_extra = "auth_password = \"42\"\n\n[vrrp.notify]\nmaster = [\"/bin/false\"]";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(2, 100, "1s", "192.0.2.170/24", halo_extra));
    // halo does not accept keepalived's adverts (another password): it becomes master as well.
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}\n{}", halo.log(), keepalived.log());
    std::thread::sleep(Duration::from_secs(2));
    // The status endpoint shows the hook's outcome (loopback of halo's namespace).
    let conf = lan.dir.path().join("halo.toml");
    let status = run_ok("ip", &["netns", "exec", lan.host(0), env!("CARGO_BIN_EXE_halo"), "status", "-c", &conf.to_string_lossy()]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("last notify hook: /bin/false (MASTER) failed at") && status.contains("(1 failed so far)"), "{status}");
    let log = {
        let log_path = halo.log.clone();
        assert_eq!(halo.stop(), Some(0));
        std::fs::read_to_string(log_path).unwrap_or_default()
    };
    assert!(log.contains("\"auth\": "), "no auth drops counted: {log}");
    assert!(log.contains("hook_failures=1"), "the failing hook was not counted: {log}");
}

#[test]
fn virtual_mac_with_keepalived() {
    if skip("virtual_mac_with_keepalived") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let holds_on_vmac = |host: usize| {
        let out = run("ip", &["-n", lan.host(host), "-o", "addr", "show", "dev", "vrrp.51"]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w.split('/').next() == Some(vip))
    };
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", "virtual_mac = true"));
    let keepalived = Daemon::keepalived(&lan, 1, "keepalived", &keepalived_conf(3, 100, "0.1", "192.0.2.170/24", "  use_vmac"));
    assert!(wait_for(GENEROUS, || holds_on_vmac(0)).is_some(), "halo never put the VIP on vrrp.51: {}", halo.log());
    std::thread::sleep(Duration::from_millis(700));
    assert!(!holds_on_vmac(1), "keepalived holds it too: {}", keepalived.log());
    let link = String::from_utf8_lossy(&run("ip", &["-n", lan.host(0), "-o", "link", "show", "dev", "vrrp.51"]).stdout).to_string();
    assert!(link.contains("00:00:5e:00:01:33"), "vrrp.51 does not carry the virtual MAC: {link}");
    // Adverts leave from the virtual MAC.
    let rows = lan.capture("ip proto 112 and src host 192.0.2.11", 2, &["eth.src", "vrrp.prio"], &[]);
    assert!(rows.lines().count() >= 1 && rows.lines().all(|l| l == "00:00:5e:00:01:33\t200"), "{rows}");
    assert_eq!(halo.stop(), Some(0));
    assert!(run("ip", &["-n", lan.host(0), "link", "show", "dev", "vrrp.51"]).status.code() != Some(0), "vrrp.51 left behind");
    assert!(wait_for(GENEROUS, || holds_on_vmac(1)).is_some(), "keepalived did not take over: {}", keepalived.log());
}

/// Two routers, the master (200) tracking an uplink of its host (up0, a veth pair up) with the
/// tracker settings `extra`; returned once the master holds the VIP alone.
fn tracked_uplink(extra: &str) -> (Lan, Daemon, Daemon) {
    let lan = Lan::new(2);
    run_ok("ip", &["-n", lan.host(0), "link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
    run_ok("ip", &["-n", lan.host(0), "link", "set", "up0", "up"]);
    run_ok("ip", &["-n", lan.host(0), "link", "set", "up0p", "up"]);
    let tracker = format!("track = [\"uplink\"]\n\n[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"up0\"\n{extra}");
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "100ms", "192.0.2.170/24", &tracker));
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert_sole_holder(&lan, 0, 1, "192.0.2.170", &[&master, &backup]);
    (lan, master, backup)
}

#[test]
fn interface_tracker_follows_link_notifications() {
    if skip("interface_tracker_follows_link_notifications") {
        return;
    }
    let vip = "192.0.2.170";
    // An uplink on the master's host, tracked with a weight.
    let (lan, master, _backup) = tracked_uplink("weight = -150\n");
    run_ok("ip", &["-n", lan.host(0), "link", "set", "up0p", "down"]);
    let moved = wait_for(GENEROUS, || lan.holds(1, vip) && !lan.holds(0, vip)).unwrap_or_else(|| panic!("{}", master.log()));
    eprintln!("uplink down moved the VIP in {moved:?}");
    assert!(moved < Duration::from_secs(3), "a link notification acts at once, not after {moved:?}");
    run_ok("ip", &["-n", lan.host(0), "link", "set", "up0p", "up"]);
    assert!(wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip)).is_some(), "{}", master.log());
}

/// An interface tracker follows the link itself, as keepalived's `track_interface` does, with
/// the tracker's default fall and rise: the master goes to FAULT when its tracked link goes down
/// (admin down, then carrier lost) and takes the VIP back each time the link returns. (Each link
/// notification used to count as one result against fall/rise: recovery waited for link changes
/// that never came, and a single one never faulted.)
#[test]
fn interface_tracker_follows_the_link_down_and_back_up() {
    if skip("interface_tracker_follows_the_link_down_and_back_up") {
        return;
    }
    let vip = "192.0.2.170";
    // No weight: FAULT while the link is down; fall and rise left at their defaults.
    let (lan, master, backup) = tracked_uplink("");
    let logs = || format!("{}\n---\n{}", master.log(), backup.log());
    // Admin down twice (a recovery that works once only is no recovery), then the carrier.
    for (device, what) in [("up0", "admin"), ("up0", "admin, again"), ("up0p", "carrier")] {
        run_ok("ip", &["-n", lan.host(0), "link", "set", device, "down"]);
        let moved = wait_for(GENEROUS, || lan.holds(1, vip) && !lan.holds(0, vip));
        assert!(moved.is_some(), "{what}: the link going down did not move the VIP:\n{}", logs());
        run_ok("ip", &["-n", lan.host(0), "link", "set", device, "up"]);
        let back = wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip));
        assert!(back.is_some(), "{what}: the link came back and the master stayed in FAULT:\n{}", logs());
        eprintln!("{what}: down moved the VIP in {:?}, up brought it back in {:?}", moved.unwrap_or_default(), back.unwrap_or_default());
    }
    assert!(master.log().contains("passing=true"), "no tracker recovery logged:\n{}", master.log());
}

/// A tracked interface that does not exist fails (it used to pass silently): the master stays
/// out of the election until the interface appears, then takes the VIP.
#[test]
fn interface_tracker_of_a_missing_interface_fails_until_it_appears() {
    if skip("interface_tracker_of_a_missing_interface_fails_until_it_appears") {
        return;
    }
    let lan = Lan::new(2);
    let vip = "192.0.2.170";
    let tracker = "track = [\"uplink\"]\n\n[[tracker]]\nname = \"uplink\"\nkind = \"interface\"\ninterface = \"late0\"\n";
    let master = Daemon::halo(&lan, 0, "master", &halo_conf(3, 200, "100ms", "192.0.2.170/24", tracker));
    let backup = Daemon::halo(&lan, 1, "backup", &halo_conf(3, 100, "100ms", "192.0.2.170/24", ""));
    assert_sole_holder(&lan, 1, 0, vip, &[&master, &backup]);
    assert!(master.log().contains("late0"), "the missing interface is not named in the log:\n{}", master.log());
    run_ok("ip", &["-n", lan.host(0), "link", "add", "late0", "type", "veth", "peer", "name", "late0p"]);
    run_ok("ip", &["-n", lan.host(0), "link", "set", "late0p", "up"]);
    run_ok("ip", &["-n", lan.host(0), "link", "set", "late0", "up"]);
    let took = wait_for(GENEROUS, || lan.holds(0, vip) && !lan.holds(1, vip));
    assert!(took.is_some(), "the interface appeared and the master stayed in FAULT:\n{}\n---\n{}", master.log(), backup.log());
}

#[test]
fn when_halo_and_its_guard_die_together_the_lifetime_removes_the_vip() {
    if skip("when_halo_and_its_guard_die_together_the_lifetime_removes_the_vip") {
        return;
    }
    let lan = Lan::new(1);
    let vip = "192.0.2.170";
    let halo = Daemon::halo(&lan, 0, "halo", &halo_conf(3, 200, "100ms", "192.0.2.170/24", ""));
    assert!(wait_for(GENEROUS, || lan.holds(0, vip)).is_some(), "{}", halo.log());
    // The guard is halo's child (`halo-guard`); kill it first, then halo: nobody cleans up.
    let pid = halo.child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let guard: Vec<&str> = children
        .split_whitespace()
        .filter(|c| std::fs::read(format!("/proc/{c}/cmdline")).is_ok_and(|cmd| cmd.ends_with(b"guard\0")))
        .collect();
    assert_eq!(guard.len(), 1, "one guard process under halo: children {children:?}");
    run_ok("kill", &["-KILL", guard[0]]);
    halo.signal("KILL");
    let gone = wait_for(GENEROUS, || !lan.holds(0, vip)).expect("the VIP outlived its lifetime");
    eprintln!("VIP gone {gone:?} after halo and its guard were SIGKILLed (kernel lifetime)");
    assert!(gone < Duration::from_secs(5), "the 2 s lifetime removes it, not {gone:?}");
    assert!(!halo.log().contains("halo-guard: halo ended holding"), "{}", halo.log());
}

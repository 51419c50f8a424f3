//! `halo host check|apply` and `halo render network` in network namespaces (root): a "host"
//! namespace whose veth `eth0` has an address, a fixed MAC and a default route toward a "peer"
//! namespace. Check fails as expected; apply moves everything onto br0 while the peer's ping
//! keeps answering; a second apply is a no-op; a failure injected at every step rolls back to
//! exactly the previous state; sysctls are per namespace and per role; the ARP probe finds the
//! peer holding the VIP; rendered network files match golden files and parse.

#![allow(clippy::unwrap_used)]

#[path = "../../config/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Netns, run_ok};

const MAC: &str = "52:54:00:12:34:56";

/// host (10.9.0.2/24, default via .1) <-> peer (10.9.0.1/24).
struct Lan {
    host: Netns,
    peer: Netns,
}

fn lan() -> Lan {
    let (host, peer) = (Netns::new(), Netns::new());
    run_ok("ip", &["link", "add", "eth0", "netns", &host.name, "type", "veth", "peer", "name", "eth0", "netns", &peer.name]);
    for (ns, address) in [(&host, "10.9.0.2/24"), (&peer, "10.9.0.1/24")] {
        if ns.name == host.name {
            run_ok("ip", &["-n", &ns.name, "link", "set", "eth0", "address", MAC]);
        }
        run_ok("ip", &["-n", &ns.name, "addr", "add", address, "dev", "eth0"]);
        run_ok("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
    }
    run_ok("ip", &["-n", &host.name, "route", "add", "default", "via", "10.9.0.1"]);
    Lan { host, peer }
}

fn halo(ns: &Netns, args: &[&str]) -> Output {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_halo")]).args(args);
    command.output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Links, addresses and routes of a namespace, as `ip` shows them (IPv6 link-local aside).
fn state(ns: &Netns) -> String {
    let mut out = String::new();
    for args in [&["-br", "link"][..], &["-br", "-4", "addr"], &["route"], &["-6", "route", "show", "table", "main"]] {
        let mut full = vec!["-n", &ns.name];
        full.extend_from_slice(args);
        out.push_str(&String::from_utf8_lossy(&run_ok("ip", &full).stdout));
    }
    out.lines().filter(|l| !l.contains("fe80::")).map(|l| format!("{}\n", l.split_whitespace().collect::<Vec<_>>().join(" "))).collect()
}

fn sysctl(ns: Option<&Netns>, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match ns {
        Some(ns) => String::from_utf8_lossy(&run_ok("ip", &["netns", "exec", &ns.name, "cat", &path]).stdout).trim().to_string(),
        None => std::fs::read_to_string(path).unwrap_or_default().trim().to_string(),
    }
}

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/network").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{} differs (UPDATE_GOLDEN=1 rewrites it)", path.display());
}

/// The networkd files as systemd would read them: INI sections and keys it knows.
fn parses_as_networkd(file: &Path) {
    let known: &[(&str, &[&str])] = &[
        ("NetDev", &["Name", "Kind", "MACAddress"]),
        ("Bridge", &["STP", "ForwardDelaySec"]),
        ("Match", &["Name", "MACAddress"]),
        ("Network", &["Address", "Gateway", "Bridge"]),
    ];
    let text = std::fs::read_to_string(file).unwrap();
    let mut section = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section =
                Some(known.iter().find(|(s, _)| *s == name).unwrap_or_else(|| panic!("{}: unknown section [{name}]", file.display())));
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{}: not key=value: {line}", file.display()));
        let (name, keys) = section.unwrap_or_else(|| panic!("{}: {line} outside a section", file.display()));
        assert!(keys.contains(&key), "{}: [{name}] has no key {key}", file.display());
        assert!(!value.is_empty(), "{}: empty {key}", file.display());
    }
}

/// A daemon started inside a namespace, ended by PID (and its children by their pid files).
struct Background {
    child: std::process::Child,
    pid_files: Vec<PathBuf>,
}

impl Background {
    fn start(ns: &Netns, program: &str, args: &[&str], pid_files: Vec<PathBuf>) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, pid_files }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!("warning: could not end {}: {e}", self.child.id());
        }
        for file in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
                // Usually gone with its parent already.
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
    }
}

/// Runs `halo host check -c config` until its report contains `needle` (bounded); the report.
fn wait_for_output(ns: &Netns, config: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let out = halo(ns, &["host", "check", "--role", "node", "-c", &config.to_string_lossy()]);
        let report = text(&out);
        if report.contains(needle) {
            assert_eq!(out.status.code(), Some(1), "{report}");
            return report;
        }
        assert!(std::time::Instant::now() < deadline, "never reported `{needle}`:\n{report}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

const CONFIG: &str = r#"
[node]
interface = "br0"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
priority = 101
virtual_addresses = ["VIP/24"]

[[frontend]]
name = "apiserver"
bind = ["VIP:8443"]
backend = "apiserver"

[[backend]]
name = "apiserver"
[[backend.server]]
name = "master01"
address = "10.9.0.50:6443"
"#;

#[test]
fn check_apply_rollback_probe_and_render() {
    if !common::can_run("check_apply_rollback_probe_and_render", true, &["ip", "ping", "haproxy", "keepalived"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let root_arg = root.to_string_lossy().to_string();
    let root_values: Vec<String> = ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"].iter().map(|k| sysctl(None, k)).collect();

    // A failure injected before each step rolls back to exactly the previous state.
    let lan_a = lan();
    let before = state(&lan_a.host);
    let plan = halo(&lan_a.host, &["host", "apply", "--role", "lb", "--dry-run", "--root", &root_arg]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        plan.contains("ip link add br0 address 52:54:00:12:34:56 type bridge") && plan.contains("ip link set eth0 master br0"),
        "{plan}"
    );
    assert!(plan.contains("ip route replace default via 10.9.0.1 dev br0") && plan.contains("ip addr del 10.9.0.2/24 dev eth0"), "{plan}");
    assert_eq!(state(&lan_a.host), before, "--dry-run changed nothing");
    assert!(!root.exists(), "--dry-run wrote nothing");
    let steps = plan.lines().filter(|l| l.starts_with("ip ") || l.starts_with("sysctl ") || l.starts_with("cat ")).count();
    for fail_after in 0..steps {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &lan_a.host.name, env!("CARGO_BIN_EXE_halo"), "host", "apply", "--role", "lb", "--root", &root_arg]);
        let out = command.env("HALO_HOST_APPLY_FAIL_AFTER", fail_after.to_string()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("rolled back: links, addresses and routes are as they were"), "{}", text(&out));
        assert_eq!(state(&lan_a.host), before, "failure after {fail_after} step(s) was not rolled back:\n{}", text(&out));
        assert_eq!(sysctl(Some(&lan_a.host), "net.bridge.bridge-nf-call-iptables"), "1", "sysctls rolled back too");
        assert!(!root.join("etc/sysctl.d/99-halo.conf").exists(), "no file is left by a failed apply");
    }
    drop(lan_a);

    // Check fails on an unprepared host.
    let lan = lan();
    let check = halo(&lan.host, &["host", "check", "--role", "lb"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("FAIL  bridge: br0 does not exist"), "{}", text(&check));
    let json = halo(&lan.host, &["host", "check", "--role", "lb", "--json"]);
    let findings: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(findings.as_array().unwrap().iter().any(|f| f["check"] == "bridge" && f["status"] == "FAIL"), "{findings}");

    // Apply while the peer pings the host's address.
    let ping = Command::new("ip")
        .args(["netns", "exec", &lan.peer.name, "ping", "-n", "-i", "0.01", "-c", "300", "-W", "1", "10.9.0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let apply = halo(&lan.host, &["host", "apply", "--role", "lb", "--root", &root_arg, "--persist", "networkd"]);
    assert!(apply.status.success(), "{}", text(&apply));
    let pinged = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).to_string();
    let summary = pinged.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
    println!("ping during halo host apply: {summary}");
    let received: u32 = summary.split(", ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let last_seq: u32 =
        pinged.lines().filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()).max().unwrap_or(0);
    assert!(received > 250 && last_seq >= 295, "the host kept answering through the move: {summary}");
    let after = state(&lan.host);
    assert!(after.contains("br0 UP 10.9.0.2/24") && after.contains("default via 10.9.0.1 dev br0"), "{after}");
    let link = String::from_utf8_lossy(&run_ok("ip", &["-n", &lan.host.name, "-o", "link", "show", "br0"]).stdout).to_string();
    assert!(link.contains(MAC), "the bridge has the NIC's MAC: {link}");
    let port = String::from_utf8_lossy(&run_ok("ip", &["-n", &lan.host.name, "-o", "link", "show", "eth0"]).stdout).to_string();
    assert!(port.contains("master br0"), "{port}");
    assert_eq!(sysctl(Some(&lan.host), "net.bridge.bridge-nf-call-iptables"), "0");
    for (key, value) in ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"].iter().zip(&root_values) {
        assert_eq!(&sysctl(None, key), value, "{key} of the machine itself is untouched");
    }
    let drop_in = std::fs::read_to_string(root.join("etc/sysctl.d/99-halo.conf")).unwrap();
    assert!(drop_in.contains("net.bridge.bridge-nf-call-arptables = 0"), "{drop_in}");
    for file in ["br0.netdev", "br0.network", "eth0.network"] {
        parses_as_networkd(&root.join("etc/systemd/network").join(file));
    }

    // A second apply changes nothing and says so; check passes.
    let settled = state(&lan.host);
    let again = halo(&lan.host, &["host", "apply", "--role", "lb", "--root", &root_arg, "--persist", "networkd"]);
    assert!(again.status.success() && text(&again).starts_with("nothing to do"), "{}", text(&again));
    assert_eq!(state(&lan.host), settled);
    let check = halo(&lan.host, &["host", "check", "--role", "lb"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // The guide's own file keeps its other lines when it is the one halo updates.
    let guide = root.join("etc/sysctl.d/99-halo.conf");
    std::fs::write(&guide, "# mine\nvm.swappiness = 10\nnet.bridge.bridge-nf-call-iptables = 1\n").unwrap();
    let merged = halo(&lan.host, &["host", "apply", "--role", "lb", "--root", &root_arg]);
    assert!(merged.status.success(), "{}", text(&merged));
    let merged = std::fs::read_to_string(&guide).unwrap();
    assert!(merged.starts_with("# mine\nvm.swappiness = 10\nnet.bridge.bridge-nf-call-iptables = 0\n"), "{merged}");

    // Role node: the same keys at 1, forwarding on; per namespace.
    let node = halo(&lan.host, &["host", "check", "--role", "node"]);
    assert_eq!(node.status.code(), Some(1), "{}", text(&node));
    assert!(text(&node).contains("FAIL  net.bridge.bridge-nf-call-iptables: 0, the role node needs 1"), "{}", text(&node));
    let node = halo(&lan.host, &["host", "apply", "--role", "node", "--root", &root_arg]);
    assert!(node.status.success(), "{}", text(&node));
    assert_eq!(sysctl(Some(&lan.host), "net.bridge.bridge-nf-call-iptables"), "1");
    assert_eq!(sysctl(Some(&lan.host), "net.ipv4.ip_forward"), "1");
    assert_eq!(halo(&lan.host, &["host", "check", "--role", "node"]).status.code(), Some(0));
    for (key, value) in ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"].iter().zip(&root_values) {
        assert_eq!(&sysctl(None, key), value, "{key} of the machine itself is untouched");
    }

    // The ARP probe: the peer holds 10.9.0.100, nobody holds .101.
    run_ok("ip", &["-n", &lan.peer.name, "addr", "add", "10.9.0.100/24", "dev", "eth0"]);
    let peer_mac = String::from_utf8_lossy(&run_ok("ip", &["-n", &lan.peer.name, "-o", "link", "show", "eth0"]).stdout)
        .split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    for (vip, taken) in [("10.9.0.100", true), ("10.9.0.101", false)] {
        let config = dir.path().join(format!("{vip}.toml"));
        std::fs::write(&config, CONFIG.replace("VIP", vip)).unwrap();
        let out = halo(&lan.host, &["host", "check", "--role", "node", "-c", &config.to_string_lossy()]);
        let report = text(&out);
        if taken {
            assert_eq!(out.status.code(), Some(1), "{report}");
            assert!(report.contains(&format!("FAIL  VIP {vip} in use: answered ARP from {peer_mac} on br0")), "{report}");
        } else {
            assert_eq!(out.status.code(), Some(0), "{report}");
            assert!(report.contains(&format!("OK    VIP {vip} in use: no answer")), "{report}");
            assert!(report.contains(&format!("OK    port {vip}:8443: free")), "{report}");
        }
    }

    // Conflicts: a real haproxy on the frontend's port, a real keepalived on the same VRID.
    let config = dir.path().join("10.9.0.101.toml");
    let haproxy_cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&haproxy_cfg, "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\nfrontend f\n  bind *:8443\n  default_backend b\nbackend b\n  server s 10.9.0.50:6443\n").unwrap();
    let haproxy = Background::start(&lan.host, "haproxy", &["-db", "-f", &haproxy_cfg.to_string_lossy()], Vec::new());
    let conflict = wait_for_output(&lan.host, &config, "FAIL  port 10.9.0.101:8443: in use; running here: haproxy (pid");
    assert!(conflict.contains(&format!("haproxy (pid {})", haproxy.pid())), "{conflict}");
    drop(haproxy);
    let keepalived_cfg = dir.path().join("keepalived.conf");
    std::fs::write(
        &keepalived_cfg,
        "vrrp_instance VI_9 {\n  state BACKUP\n  interface br0\n  virtual_router_id 51\n  priority 50\n  advert_int 1\n  virtual_ipaddress {\n    10.9.0.102/24\n  }\n}\n",
    )
    .unwrap();
    let pid_files: Vec<PathBuf> = ["main", "vrrp", "checker"].iter().map(|p| dir.path().join(format!("keepalived.{p}.pid"))).collect();
    let p: Vec<String> = pid_files.iter().map(|p| p.display().to_string()).collect();
    let keepalived = Background::start(
        &lan.host,
        "keepalived",
        &["-n", "-l", "-D", "-P", "-f", &keepalived_cfg.to_string_lossy(), "-p", &p[0], "-r", &p[1], "-c", &p[2]],
        pid_files,
    );
    let conflict = wait_for_output(&lan.host, &config, "keepalived runs VRID 51 on br0, as halo would");
    assert!(conflict.contains("FAIL  keepalived (pid"), "{conflict}");
    drop(keepalived);

    // Rendered network configuration of the prepared host, against golden files.
    for format in ["etcnet", "networkd", "nm"] {
        let out = halo(&lan.host, &["render", "network", "--format", format, "-c", &config.to_string_lossy()]);
        assert!(out.status.success(), "{}", text(&out));
        golden(&format!("{format}.golden"), &String::from_utf8_lossy(&out.stdout));
    }
    let missing = halo(&lan.host, &["render", "network", "-c", &config.to_string_lossy()]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

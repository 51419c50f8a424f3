//! `halo host check|apply` and `halo render network` in network namespaces (root): a "host"
//! namespace whose veth `eth0` has an address, a fixed MAC and a default route toward a "peer"
//! namespace. Check fails as expected; apply moves everything onto br0 while the peer's ping
//! keeps answering; a second apply is a no-op; a failure injected at every step rolls back to
//! exactly the previous state; sysctls are per namespace and per role; the ARP probe finds the
//! peer holding the VIP; check names a haproxy or keepalived in the way; rendered network
//! files match golden files and parse.

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

/// What the tests need besides root.
const TOOLS: &[&str] = &["ip", "ping", "haproxy", "keepalived"];

/// Whether `test` can run here; says why not (or fails under CI) when it cannot.
fn can_run(test: &str) -> bool {
    common::can_run(test, true, TOOLS)
}

/// The sysctls halo sets, as `halo host apply` must leave them in the machine's own namespace.
const MACHINE_SYSCTLS: [&str; 2] = ["net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward"];

fn machine_sysctls() -> Vec<String> {
    MACHINE_SYSCTLS.iter().map(|k| sysctl(None, k)).collect()
}

fn assert_machine_sysctls_are(before: &[String]) {
    for (key, value) in MACHINE_SYSCTLS.iter().zip(before) {
        assert_eq!(&sysctl(None, key), value, "{key} of the machine itself is untouched");
    }
}

/// A scratch directory: `root` stands for the host's file system (`--root`), config files go
/// beside it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn root_arg(&self) -> String {
        self.root().to_string_lossy().to_string()
    }

    /// A halo.toml with the VRRP instance, frontend and backend of [`CONFIG`] on `vip`.
    fn config(&self, vip: &str) -> PathBuf {
        let config = self.dir.path().join(format!("{vip}.toml"));
        std::fs::write(&config, CONFIG.replace("VIP", vip)).unwrap();
        config
    }
}

/// `halo host apply --role <role> --root <scratch root>` and `extra` in the host namespace.
fn apply(lan: &Lan, scratch: &Scratch, role: &str, extra: &[&str]) -> Output {
    let root = scratch.root_arg();
    let mut args = vec!["host", "apply", "--role", role, "--root", &root];
    args.extend_from_slice(extra);
    halo(&lan.host, &args)
}

/// What a test runs on: a LAN, a scratch directory, and the machine's own sysctls from before.
struct Testbed {
    scratch: Scratch,
    lan: Lan,
    machine: Vec<String>,
}

/// For `test`, when it can run: a testbed whose host is as a fresh install leaves it.
fn unprepared(test: &str) -> Option<Testbed> {
    if !can_run(test) {
        return None;
    }
    Some(Testbed { scratch: Scratch::new(), machine: machine_sysctls(), lan: lan() })
}

/// For `test`, when it can run: a testbed whose host `halo host apply --role <role>` moved onto
/// br0.
fn prepared(test: &str, role: &str) -> Option<Testbed> {
    let testbed = unprepared(test)?;
    let applied = apply(&testbed.lan, &testbed.scratch, role, &[]);
    assert!(applied.status.success(), "{}", text(&applied));
    Some(testbed)
}

/// A link as `ip -o link show` shows it.
fn link_line(ns: &Netns, link: &str) -> String {
    String::from_utf8_lossy(&run_ok("ip", &["-n", &ns.name, "-o", "link", "show", link]).stdout).to_string()
}

/// The MAC address of a link.
fn mac_of(ns: &Netns, link: &str) -> String {
    link_line(ns, link).split("link/ether ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string()
}

/// `halo host apply --dry-run` for role lb: the plan, checked to be the guide's move onto br0.
fn dry_run_plan(lan: &Lan, scratch: &Scratch) -> String {
    let plan = apply(lan, scratch, "lb", &["--dry-run"]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(
        plan.contains("ip link add br0 address 52:54:00:12:34:56 type bridge") && plan.contains("ip link set eth0 master br0"),
        "{plan}"
    );
    assert!(plan.contains("ip route replace default via 10.9.0.1 dev br0") && plan.contains("ip addr del 10.9.0.2/24 dev eth0"), "{plan}");
    plan
}

#[test]
fn dry_run_plans_the_move_onto_the_bridge_and_changes_nothing() {
    let Some(Testbed { scratch, lan, .. }) = unprepared("dry_run_plans_the_move_onto_the_bridge_and_changes_nothing") else { return };
    let before = state(&lan.host);
    dry_run_plan(&lan, &scratch);
    assert_eq!(state(&lan.host), before, "--dry-run changed nothing");
    assert!(!scratch.root().exists(), "--dry-run wrote nothing");
}

#[test]
fn a_failure_at_any_step_of_apply_rolls_back_to_the_previous_state() {
    let Some(Testbed { scratch, lan, .. }) = unprepared("a_failure_at_any_step_of_apply_rolls_back_to_the_previous_state") else { return };
    let before = state(&lan.host);
    let plan = dry_run_plan(&lan, &scratch);
    let steps = plan.lines().filter(|l| l.starts_with("ip ") || l.starts_with("sysctl ") || l.starts_with("cat ")).count();
    let root_arg = scratch.root_arg();
    for fail_after in 0..steps {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &lan.host.name, env!("CARGO_BIN_EXE_halo"), "host", "apply", "--role", "lb", "--root", &root_arg]);
        let out = command.env("HALO_HOST_APPLY_FAIL_AFTER", fail_after.to_string()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(text(&out).contains("rolled back: links, addresses and routes are as they were"), "{}", text(&out));
        assert_eq!(state(&lan.host), before, "failure after {fail_after} step(s) was not rolled back:\n{}", text(&out));
        assert_eq!(sysctl(Some(&lan.host), "net.bridge.bridge-nf-call-iptables"), "1", "sysctls rolled back too");
        assert!(!scratch.root().join("etc/sysctl.d/99-halo.conf").exists(), "no file is left by a failed apply");
    }
}

#[test]
fn check_fails_on_an_unprepared_host() {
    let Some(Testbed { lan, .. }) = unprepared("check_fails_on_an_unprepared_host") else { return };
    let check = halo(&lan.host, &["host", "check", "--role", "lb"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    assert!(text(&check).contains("FAIL  bridge: br0 does not exist"), "{}", text(&check));
    let json = halo(&lan.host, &["host", "check", "--role", "lb", "--json"]);
    let findings: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(findings.as_array().unwrap().iter().any(|f| f["check"] == "bridge" && f["status"] == "FAIL"), "{findings}");
}

#[test]
fn apply_moves_the_host_onto_the_bridge_while_it_keeps_answering() {
    let Some(Testbed { scratch, lan, machine }) = unprepared("apply_moves_the_host_onto_the_bridge_while_it_keeps_answering") else {
        return;
    };
    let ping = Command::new("ip")
        .args(["netns", "exec", &lan.peer.name, "ping", "-n", "-i", "0.01", "-c", "300", "-W", "1", "10.9.0.2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let applied = apply(&lan, &scratch, "lb", &["--persist", "networkd"]);
    assert!(applied.status.success(), "{}", text(&applied));
    let pinged = String::from_utf8_lossy(&ping.wait_with_output().unwrap().stdout).to_string();
    let summary = pinged.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
    println!("ping during halo host apply: {summary}");
    let received: u32 = summary.split(", ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let last_seq: u32 =
        pinged.lines().filter_map(|l| l.split("icmp_seq=").nth(1)?.split_whitespace().next()?.parse().ok()).max().unwrap_or(0);
    assert!(received > 250 && last_seq >= 295, "the host kept answering through the move: {summary}");
    let after = state(&lan.host);
    assert!(after.contains("br0 UP 10.9.0.2/24") && after.contains("default via 10.9.0.1 dev br0"), "{after}");
    let link = link_line(&lan.host, "br0");
    assert!(link.contains(MAC), "the bridge has the NIC's MAC: {link}");
    let port = link_line(&lan.host, "eth0");
    assert!(port.contains("master br0"), "{port}");
    assert_eq!(sysctl(Some(&lan.host), "net.bridge.bridge-nf-call-iptables"), "0");
    assert_machine_sysctls_are(&machine);
    let drop_in = std::fs::read_to_string(scratch.root().join("etc/sysctl.d/99-halo.conf")).unwrap();
    assert!(drop_in.contains("net.bridge.bridge-nf-call-arptables = 0"), "{drop_in}");
    for file in ["br0.netdev", "br0.network", "eth0.network"] {
        parses_as_networkd(&scratch.root().join("etc/systemd/network").join(file));
    }
}

#[test]
fn a_second_apply_changes_nothing_and_check_passes() {
    let Some(Testbed { scratch, lan, .. }) = unprepared("a_second_apply_changes_nothing_and_check_passes") else { return };
    let first = apply(&lan, &scratch, "lb", &["--persist", "networkd"]);
    assert!(first.status.success(), "{}", text(&first));
    let settled = state(&lan.host);
    let again = apply(&lan, &scratch, "lb", &["--persist", "networkd"]);
    assert!(again.status.success() && text(&again).starts_with("nothing to do"), "{}", text(&again));
    assert_eq!(state(&lan.host), settled);
    let check = halo(&lan.host, &["host", "check", "--role", "lb"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
}

#[test]
fn apply_keeps_the_other_lines_of_the_sysctl_file_it_updates() {
    let Some(Testbed { scratch, lan, .. }) = prepared("apply_keeps_the_other_lines_of_the_sysctl_file_it_updates", "lb") else { return };
    let guide = scratch.root().join("etc/sysctl.d/99-halo.conf");
    std::fs::write(&guide, "# mine\nvm.swappiness = 10\nnet.bridge.bridge-nf-call-iptables = 1\n").unwrap();
    let merged = apply(&lan, &scratch, "lb", &[]);
    assert!(merged.status.success(), "{}", text(&merged));
    let merged = std::fs::read_to_string(&guide).unwrap();
    assert!(merged.starts_with("# mine\nvm.swappiness = 10\nnet.bridge.bridge-nf-call-iptables = 0\n"), "{merged}");
}

#[test]
fn role_node_sets_bridge_netfilter_and_forwarding_in_the_host_namespace_only() {
    let Some(Testbed { scratch, lan, machine }) =
        prepared("role_node_sets_bridge_netfilter_and_forwarding_in_the_host_namespace_only", "lb")
    else {
        return;
    };
    let node = halo(&lan.host, &["host", "check", "--role", "node"]);
    assert_eq!(node.status.code(), Some(1), "{}", text(&node));
    assert!(text(&node).contains("FAIL  net.bridge.bridge-nf-call-iptables: 0, the role node needs 1"), "{}", text(&node));
    let node = apply(&lan, &scratch, "node", &[]);
    assert!(node.status.success(), "{}", text(&node));
    assert_eq!(sysctl(Some(&lan.host), "net.bridge.bridge-nf-call-iptables"), "1");
    assert_eq!(sysctl(Some(&lan.host), "net.ipv4.ip_forward"), "1");
    assert_eq!(halo(&lan.host, &["host", "check", "--role", "node"]).status.code(), Some(0));
    assert_machine_sysctls_are(&machine);
}

#[test]
fn the_arp_probe_finds_the_peer_holding_a_vip() {
    let Some(Testbed { scratch, lan, .. }) = prepared("the_arp_probe_finds_the_peer_holding_a_vip", "node") else { return };
    // The peer holds 10.9.0.100, nobody holds .101.
    run_ok("ip", &["-n", &lan.peer.name, "addr", "add", "10.9.0.100/24", "dev", "eth0"]);
    let peer_mac = mac_of(&lan.peer, "eth0");
    for (vip, taken) in [("10.9.0.100", true), ("10.9.0.101", false)] {
        let config = scratch.config(vip);
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
}

#[test]
fn check_names_the_haproxy_that_holds_a_frontend_port() {
    let Some(Testbed { scratch, lan, .. }) = prepared("check_names_the_haproxy_that_holds_a_frontend_port", "node") else { return };
    let config = scratch.config("10.9.0.101");
    let haproxy_cfg = scratch.dir.path().join("haproxy.cfg");
    std::fs::write(&haproxy_cfg, "defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\nfrontend f\n  bind *:8443\n  default_backend b\nbackend b\n  server s 10.9.0.50:6443\n").unwrap();
    let haproxy = Background::start(&lan.host, "haproxy", &["-db", "-f", &haproxy_cfg.to_string_lossy()], Vec::new());
    let conflict = wait_for_output(&lan.host, &config, "FAIL  port 10.9.0.101:8443: in use; running here: haproxy (pid");
    assert!(conflict.contains(&format!("haproxy (pid {})", haproxy.pid())), "{conflict}");
}

#[test]
fn check_fails_when_keepalived_runs_the_same_virtual_router() {
    let Some(Testbed { scratch, lan, .. }) = prepared("check_fails_when_keepalived_runs_the_same_virtual_router", "node") else { return };
    let config = scratch.config("10.9.0.101");
    let keepalived_cfg = scratch.dir.path().join("keepalived.conf");
    std::fs::write(
        &keepalived_cfg,
        "vrrp_instance VI_9 {\n  state BACKUP\n  interface br0\n  virtual_router_id 51\n  priority 50\n  advert_int 1\n  virtual_ipaddress {\n    10.9.0.102/24\n  }\n}\n",
    )
    .unwrap();
    let pid_files: Vec<PathBuf> =
        ["main", "vrrp", "checker"].iter().map(|p| scratch.dir.path().join(format!("keepalived.{p}.pid"))).collect();
    let p: Vec<String> = pid_files.iter().map(|p| p.display().to_string()).collect();
    let _keepalived = Background::start(
        &lan.host,
        "keepalived",
        &["-n", "-l", "-D", "-P", "-f", &keepalived_cfg.to_string_lossy(), "-p", &p[0], "-r", &p[1], "-c", &p[2]],
        pid_files,
    );
    let conflict = wait_for_output(&lan.host, &config, "keepalived runs VRID 51 on br0, as halo would");
    assert!(conflict.contains("FAIL  keepalived (pid"), "{conflict}");
}

#[test]
fn rendered_network_files_of_a_prepared_host_match_the_golden_files() {
    let Some(Testbed { scratch, lan, .. }) = prepared("rendered_network_files_of_a_prepared_host_match_the_golden_files", "lb") else {
        return;
    };
    let config = scratch.config("10.9.0.101");
    for format in ["etcnet", "networkd", "nm"] {
        let out = halo(&lan.host, &["render", "network", "--format", format, "-c", &config.to_string_lossy()]);
        assert!(out.status.success(), "{}", text(&out));
        golden(&format!("{format}.golden"), &String::from_utf8_lossy(&out.stdout));
    }
    let missing = halo(&lan.host, &["render", "network", "-c", &config.to_string_lossy()]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

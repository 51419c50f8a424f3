//! Shared by the VRRP tests in network namespaces: a LAN (a bridge in a "switch" namespace,
//! hosts whose eth0, and optionally more interfaces, are ports of it), daemons (halo or real
//! keepalived) started inside host namespaces and killed by PID, bounded waits, config builders.
//! All traffic stays inside the namespaces the tests create.

#![allow(dead_code)]

pub mod client_load;
#[path = "../../../config/tests/common/mod.rs"]
pub mod common;
pub mod ns_server;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use common::{Netns, can_run, run, run_ok};

/// A LAN: a switch namespace with a bridge, and hosts whose eth0 is a port of it.
pub struct Lan {
    /// The switch namespace (bridges br0, br1, ...).
    pub switch: Netns,
    /// The hosts.
    pub hosts: Vec<Netns>,
    /// Files of this LAN (configs, logs).
    pub dir: tempfile::TempDir,
}

impl Lan {
    pub fn new(hosts: usize) -> Self {
        Self::with_interfaces(hosts, 1)
    }

    /// `hosts` hosts, each with `interfaces` interfaces: eth0 on br0 (192.0.2.11+i/24,
    /// 2001:db8::11+i/64), ethK on brK (10.K.0.11+i/24, 2001:db8:K::11+i/64).
    pub fn with_interfaces(hosts: usize, interfaces: usize) -> Self {
        let switch = Netns::new();
        let sw = switch.name.clone();
        for k in 0..interfaces {
            let bridge = format!("br{k}");
            run_ok(
                "ip",
                &["-n", &sw, "link", "add", &bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"],
            );
            run_ok("ip", &["-n", &sw, "link", "set", &bridge, "up"]);
        }
        // Bridged VRRP and ARP frames must not go through netfilter (per namespace on this kernel);
        // without br_netfilter the keys do not exist and bridged frames skip netfilter anyway.
        let keys =
            ["net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-arptables=0", "net.bridge.bridge-nf-call-ip6tables=0"];
        let sysctl = run("ip", &["netns", "exec", &sw, "sysctl", "-qw", keys[0], keys[1], keys[2]]);
        if !sysctl.status.success() {
            eprintln!("note: bridge-nf-call sysctls not set: {}", String::from_utf8_lossy(&sysctl.stderr).trim());
        }
        let mut list = Vec::new();
        for i in 0..hosts {
            let host = Netns::new();
            run_ok(
                "ip",
                &["netns", "exec", &host.name, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv6.conf.all.accept_dad=0"],
            );
            run_ok("ip", &["netns", "exec", &host.name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            for k in 0..interfaces {
                let (port, eth) = (format!("p{i}k{k}"), format!("eth{k}"));
                run_ok("ip", &["link", "add", &port, "netns", &sw, "type", "veth", "peer", "name", &eth, "netns", &host.name]);
                run_ok("ip", &["-n", &sw, "link", "set", &port, "master", &format!("br{k}"), "up"]);
                let (v4, v6) = if k == 0 {
                    (format!("192.0.2.{}/24", 11 + i), format!("2001:db8::{}/64", 11 + i))
                } else {
                    (format!("10.{k}.0.{}/24", 11 + i), format!("2001:db8:{k}::{}/64", 11 + i))
                };
                run_ok("ip", &["-n", &host.name, "addr", "add", &v4, "dev", &eth]);
                run_ok("ip", &["-n", &host.name, "addr", "add", &v6, "dev", &eth, "nodad"]);
                run_ok("ip", &["-n", &host.name, "link", "set", &eth, "up"]);
            }
            list.push(host);
        }
        Self { switch, hosts: list, dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn host(&self, i: usize) -> &str {
        &self.hosts[i].name
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    /// Captures `count` VRRP packets matching `filter` on the switch with tshark (bounded to 5 s)
    /// and returns the requested fields, tab separated, one packet a line.
    pub fn capture(&self, filter: &str, count: usize, fields: &[&str], options: &[&str]) -> String {
        let count = count.to_string();
        let mut args = vec![
            "netns",
            "exec",
            self.switch.name.as_str(),
            "timeout",
            "5",
            "tshark",
            "-i",
            "br0",
            "-f",
            filter,
            "-c",
            &count,
            "-T",
            "fields",
        ];
        for field in fields {
            args.extend(["-e", field]);
        }
        args.extend(options);
        let out = run("ip", &args);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            if out.stdout.is_empty() { String::from_utf8_lossy(&out.stderr).to_string() } else { String::new() }
        )
    }

    /// Whether host `i` has `address` on eth0.
    pub fn holds(&self, i: usize, address: &str) -> bool {
        self.holds_on(i, "eth0", address)
    }

    /// Whether host `i` has `address` on `device` (false when there is no such device).
    pub fn holds_on(&self, i: usize, device: &str, address: &str) -> bool {
        let out = run("ip", &["-n", self.host(i), "-o", "addr", "show", "dev", device]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w.split('/').next() == Some(address))
    }

    /// Runs a command inside host `i`'s namespace; its standard output.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.host(i), program];
        all.extend(args);
        String::from_utf8_lossy(&run("ip", &all).stdout).to_string()
    }
}

/// A daemon in a namespace, killed (by PID) when dropped.
pub struct Daemon {
    /// The process (`ip netns exec` execs, so this is the daemon itself).
    pub child: Child,
    /// Its standard output and error.
    pub log: PathBuf,
    /// keepalived's pid files (its children are ended by them).
    pub pid_files: Vec<PathBuf>,
}

impl Daemon {
    pub fn start(ns: &str, program: &str, args: &[&str], log: PathBuf, pid_files: Vec<PathBuf>) -> Self {
        let out = std::fs::File::create(&log).expect("log");
        let err = out.try_clone().expect("log");
        // `ip netns exec` execs the program: the child's PID is the daemon's own.
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn");
        Self { child, log, pid_files }
    }

    pub fn halo(lan: &Lan, host: usize, name: &str, config: &str) -> Self {
        let file = lan.file(&format!("{name}.toml"), config);
        let log = lan.dir.path().join(format!("{name}.log"));
        let pid = lan.dir.path().join(format!("{name}.pid"));
        Self::start(
            lan.host(host),
            env!("CARGO_BIN_EXE_halo"),
            &["run", "-c", &file.to_string_lossy(), "--pid-file", &pid.to_string_lossy()],
            log,
            Vec::new(),
        )
    }

    pub fn keepalived(lan: &Lan, host: usize, name: &str, config: &str) -> Self {
        let file = lan.file(&format!("{name}.conf"), config);
        let log = lan.dir.path().join(format!("{name}.log"));
        let pids: Vec<PathBuf> = ["main", "vrrp", "checker"].iter().map(|p| lan.dir.path().join(format!("{name}.{p}.pid"))).collect();
        let p: Vec<String> = pids.iter().map(|p| p.display().to_string()).collect();
        let args = ["-n", "-l", "-D", "-P", "-f", &file.to_string_lossy(), "-p", &p[0], "-r", &p[1], "-c", &p[2]];
        let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
        Self::start(lan.host(host), "keepalived", &args, log, pids)
    }

    pub fn signal(&self, signal: &str) {
        run_ok("kill", &[&format!("-{signal}"), &self.child.id().to_string()]);
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub fn stop(mut self) -> Option<i32> {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop))
        {
            eprintln!("warning: could not end daemon {}: {e}", self.child.id());
        }
        // keepalived's VRRP child has its own PID: end it too, by its pid file.
        for file in &self.pid_files {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|p| p.trim().parse::<u32>().ok()) {
                // Usually gone already with its parent: a failed kill is expected then.
                let still_there =
                    Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
                if still_there {
                    eprintln!("note: ended keepalived child {pid}");
                }
            }
        }
    }
}

/// Polls `condition` every 10 ms for at most `limit`; the time it took, or `None`.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

pub const GENEROUS: Duration = Duration::from_secs(10);

/// Waits (bounded) until host `master` holds `vip`, lets the protocol settle, and checks that
/// host `backup` does not hold it too.
pub fn assert_sole_holder(lan: &Lan, master: usize, backup: usize, vip: &str, daemons: &[&Daemon]) {
    let logs = || daemons.iter().map(|d| d.log()).collect::<Vec<_>>().join("\n---\n");
    assert!(wait_for(GENEROUS, || lan.holds(master, vip)).is_some(), "host {master} never took {vip}:\n{}", logs());
    std::thread::sleep(Duration::from_millis(700));
    assert!(!lan.holds(backup, vip), "host {backup} holds {vip} too:\n{}", logs());
}

pub fn halo_conf(version: u8, priority: u8, interval: &str, vip: &str, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = {priority}\nversion = {version}\nadvert_interval = \"{interval}\"\nvirtual_addresses = [\"{vip}\"]\n{extra}\n"
    )
}

pub fn keepalived_conf(version: u8, priority: u8, interval: &str, vip: &str, extra: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  version {version}\n  advert_int {interval}\n  virtual_ipaddress {{\n    {vip}\n  }}\n{extra}\n}}\n"
    )
}

/// Whether this build carries the faults the tests inject (feature `test-hooks`, which the test
/// command turns on); without it a test that needs them says why it skips (and fails under CI).
pub fn has_test_hooks(test: &str) -> bool {
    if cfg!(feature = "test-hooks") {
        return true;
    }
    let why = "built without the test-hooks feature (scripts/test.sh builds with --features halo/test-hooks)";
    assert!(!common::in_ci(), "{test}: cannot run under CI: {why}");
    eprintln!("SKIP {test}: {why}");
    false
}

pub fn skip(test: &str) -> bool {
    !can_run(test, true, &["ip", "keepalived", "tshark"])
}

//! halo announcing the API VIP through real FRR (issue 15), in network namespaces: a client `c`
//! behind an upstream router `r` (FRR bgpd + zebra + bfdd, ECMP over up to 8 paths, L4 hashing),
//! three balancer hosts b1..b3 on a fabric LAN with r (each running FRR configured by
//! `halo render frr`, and `halo run` announcing 10.0.0.100/32 while its balancer tracker passes),
//! an API-server stand-in on a backend LAN that greets every connection with the address of the
//! balancer that opened it. Spread, withdrawal on a failing tracker, SIGKILL, a host crash (BFD),
//! established connections when a balancer withdraws, a clean stop, and bad input. Timing
//! figures belong to bench/bgp.sh; the bounds here only keep a test from hanging.

mod frr;
mod lan;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use frr::{Frr, ResilientMirror, can_run_frr, nexthops, route_nhid, wait_nexthops};
use lan::ns_server::{GreetingServer, in_ns};
use lan::{Daemon, Netns, run, run_ok, wait_for};

const VIP: &str = "10.0.0.100";
const VIP_PREFIX: &str = "10.0.0.100/32";
const PORT: u16 = 8443;
const SERVER: &str = "10.10.0.100";
const ROUTER: &str = "172.31.1.1";
const CLIENT: &str = "10.0.1.2";
const PINNED: &str = "172.31.1.50";
/// Bounds that only keep a test from hanging.
const LONG: Duration = Duration::from_secs(20);

/// Balancer `i`'s address on the fabric LAN (its BGP session and the route's next hop).
fn fabric_address(i: usize) -> String {
    format!("172.31.1.{}", 11 + i)
}

/// Balancer `i`'s address on the backend LAN (what the server sees as its peer).
fn backend_address(i: usize) -> String {
    format!("10.10.0.{}", 11 + i)
}

/// The API-server stand-in greets each connection with the address it came from (a
/// balancer's backend address).
fn peer_address(peer: SocketAddr, _tag: &str) -> String {
    peer.ip().to_string()
}

/// A connection to VIP:8443 made inside `ns`, and the index of the balancer that proxied it.
fn connect(ns: &str) -> Option<(TcpStream, usize)> {
    let target: SocketAddr = format!("{VIP}:{PORT}").parse().expect("address");
    let stream = in_ns(ns, move || TcpStream::connect_timeout(&target, Duration::from_secs(1))).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut greeting = String::new();
    BufReader::new(stream.try_clone().ok()?).read_line(&mut greeting).ok()?;
    let balancer = (0..8).find(|&i| greeting.trim() == backend_address(i))?;
    Some((stream, balancer))
}

/// Whether an established connection still carries bytes both ways (echoed by the server).
fn alive(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut echo = [0u8; 5];
    stream.write_all(b"ping\n").is_ok() && stream.read_exact(&mut echo).is_ok() && &echo == b"ping\n"
}

/// `count` new connections from the client: how many went through each balancer, and failures.
fn spread(ns: &str, balancers: usize, count: usize) -> (Vec<usize>, usize) {
    let mut per = vec![0; balancers];
    let mut failed = 0;
    for _ in 0..count {
        match connect(ns) {
            Some((_, b)) if b < balancers => per[b] += 1,
            _ => failed += 1,
        }
    }
    (per, failed)
}

/// The PIDs of a process's children (halo's guard), from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What the topology is built with.
struct Options {
    balancers: usize,
    /// The balancers r has a neighbour statement for (all when `None`).
    router_peers: Option<Vec<usize>>,
    /// `drain_timeout` of the balancers' backend.
    drain_timeout: &'static str,
    /// The neighbour address the balancers peer with.
    neighbor: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self { balancers: 3, router_peers: None, drain_timeout: "30s", neighbor: ROUTER }
    }
}

/// The whole topology. Processes are fields before namespaces: they end first.
struct Fabric {
    halos: Vec<Option<Daemon>>,
    frrs: Vec<Option<Frr>>,
    router: Frr,
    _servers: Vec<GreetingServer>,
    balancers: Vec<Netns>,
    client: Netns,
    pinned: Netns,
    _server: Netns,
    r: Netns,
    switch: Netns,
    dir: tempfile::TempDir,
}

impl Fabric {
    fn new(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let switch = Netns::new();
        let sw = switch.name.clone();
        for bridge in ["br0", "br1"] {
            run_ok(
                "ip",
                &["-n", &sw, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"],
            );
            run_ok("ip", &["-n", &sw, "link", "set", bridge, "up"]);
        }
        let keys = ["net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-arptables=0"];
        let _optional = run("ip", &["netns", "exec", &sw, "sysctl", "-qw", keys[0], keys[1]]);
        let host = || {
            let ns = Netns::new();
            run_ok(
                "ip",
                &["netns", "exec", &ns.name, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
            );
            ns
        };
        // A port of bridge `bridge` named `port` on the switch, `eth` in `ns`, with `address`.
        let plug = |ns: &str, port: &str, eth: &str, bridge: &str, address: &str| {
            run_ok("ip", &["link", "add", port, "netns", &sw, "type", "veth", "peer", "name", eth, "netns", ns]);
            run_ok("ip", &["-n", &sw, "link", "set", port, "master", bridge, "up"]);
            run_ok("ip", &["-n", ns, "addr", "add", address, "dev", eth]);
            run_ok("ip", &["-n", ns, "link", "set", eth, "up"]);
        };
        let (r, client, pinned, server) = (host(), host(), host(), host());
        plug(&r.name, "p-r", "eth0", "br0", &format!("{ROUTER}/24"));
        plug(&pinned.name, "p-p", "eth0", "br0", &format!("{PINNED}/24"));
        plug(&server.name, "p-s", "eth0", "br1", &format!("{SERVER}/24"));
        run_ok("ip", &["netns", "exec", &r.name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"]);
        // The client's link to the router; the client reaches the VIPs' /24 through r only.
        run_ok("ip", &["link", "add", "ethc", "netns", &r.name, "type", "veth", "peer", "name", "eth0", "netns", &client.name]);
        run_ok("ip", &["-n", &r.name, "addr", "add", "10.0.1.1/24", "dev", "ethc"]);
        run_ok("ip", &["-n", &r.name, "link", "set", "ethc", "up"]);
        run_ok("ip", &["-n", &client.name, "addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]);
        run_ok("ip", &["-n", &client.name, "link", "set", "eth0", "up"]);
        run_ok("ip", &["-n", &client.name, "route", "add", "10.0.0.0/24", "via", "10.0.1.1"]);
        let mut balancers = Vec::new();
        for i in 0..options.balancers {
            let b = host();
            plug(&b.name, &format!("p-b{i}"), "eth0", "br0", &format!("{}/24", fabric_address(i)));
            plug(&b.name, &format!("q-b{i}"), "eth1", "br1", &format!("{}/24", backend_address(i)));
            // halo's FRR takes no route from the fabric (route-map in): the way back is static.
            run_ok("ip", &["-n", &b.name, "route", "add", "10.0.1.0/24", "via", ROUTER]);
            balancers.push(b);
        }
        // The pinned client goes to b1 whatever r does (a path that has not converged yet).
        run_ok("ip", &["-n", &pinned.name, "route", "add", VIP_PREFIX, "via", &fabric_address(0)]);

        let servers = vec![GreetingServer::start(&server.name, &format!("{SERVER}:6443"), peer_address, "")];
        let peers = options.router_peers.clone().unwrap_or_else(|| (0..options.balancers).collect());
        let router = Frr::start(&r.name, &router_config(&peers), dir.path());
        let mut fabric = Self {
            halos: Vec::new(),
            frrs: Vec::new(),
            router,
            _servers: servers,
            balancers,
            client,
            pinned,
            _server: server,
            r,
            switch,
            dir,
        };
        for i in 0..options.balancers {
            let config = fabric.write_config(i, &options);
            let rendered = render_frr(&config);
            let frr = Frr::start(&fabric.balancers[i].name, &rendered, fabric.dir.path());
            fabric.frrs.push(Some(frr));
            fabric.halos.push(Some(fabric.start_halo(i)));
        }
        fabric
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("b{}.toml", i + 1))
    }

    fn write_config(&self, i: usize, options: &Options) -> PathBuf {
        let path = self.config_path(i);
        std::fs::write(&path, balancer_config(i, options)).expect("config");
        path
    }

    fn start_halo(&self, i: usize) -> Daemon {
        let log = self.dir.path().join(format!("b{}.halo.log", i + 1));
        let pid = self.dir.path().join(format!("b{}.halo.pid", i + 1));
        let (config, pid) = (self.config_path(i).display().to_string(), pid.display().to_string());
        Daemon::start(&self.balancers[i].name, env!("CARGO_BIN_EXE_halo"), &["run", "-c", &config, "--pid-file", &pid], log, Vec::new())
    }

    fn b(&self, i: usize) -> &str {
        &self.balancers[i].name
    }

    fn frr(&self, i: usize) -> &Frr {
        self.frrs[i].as_ref().expect("FRR running")
    }

    /// The gateways r forwards the VIP to, sorted.
    fn nexthops(&self) -> Vec<String> {
        nexthops(&self.r.name, VIP_PREFIX)
    }

    /// Waits (bounded) until r forwards the VIP to exactly the balancers `which`.
    fn wait_routed_to(&self, which: &[usize], limit: Duration) -> Option<Duration> {
        let mut wanted: Vec<String> = which.iter().map(|&i| fabric_address(i)).collect();
        wanted.sort();
        wait_nexthops(&self.r.name, VIP_PREFIX, limit, |now| now == wanted.as_slice())
    }

    /// Waits until every balancer's session is up and r forwards the VIP to all of them.
    fn wait_ready(&self) {
        let peers: Vec<String> = (0..self.balancers.len()).map(fabric_address).collect();
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        let up = self.router.wait_established(&peers, LONG);
        assert!(
            up.is_some(),
            "sessions never came up: {:?}\n{}",
            peers.iter().map(|p| self.router.bgp_state(p)).collect::<Vec<_>>(),
            self.logs()
        );
        // BFD comes up after the session (which it may reset once as it does).
        let bfd = wait_for(LONG, || {
            peers.iter().all(|p| self.router.bfd_status(p) == "up") && peers.iter().all(|p| self.router.bgp_state(p) == "Established")
        });
        assert!(
            bfd.is_some(),
            "BFD sessions never came up: {:?}\n{}",
            peers.iter().map(|p| self.router.bfd_status(p)).collect::<Vec<_>>(),
            self.logs()
        );
        // A fresh session may still be reset once (bgpd ending it with "BFD Down" while BFD
        // comes up, or a connection collision): the route counts once it stayed for 2 s.
        let all: Vec<usize> = (0..self.balancers.len()).collect();
        let settled = wait_for(LONG, || {
            let Some(id) = self.wait_routed_to(&all, LONG).and_then(|_| route_nhid(&self.r.name, VIP_PREFIX)) else { return false };
            std::thread::sleep(Duration::from_secs(2));
            route_nhid(&self.r.name, VIP_PREFIX) == Some(id) && peers.iter().all(|p| self.router.bfd_status(p) == "up")
        });
        assert!(settled.is_some(), "r's route to the VIP never settled on every balancer: {:?}\n{}", self.nexthops(), self.logs());
    }

    /// Whether balancer `i` holds the VIP on lo (announces it).
    fn holds(&self, i: usize) -> bool {
        let out = run("ip", &["-n", self.b(i), "-o", "addr", "show", "dev", "lo"]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == VIP_PREFIX)
    }

    /// `/status` of balancer `i`'s halo, as JSON (Null when it does not answer).
    fn status(&self, i: usize) -> serde_json::Value {
        let config = self.config_path(i);
        let out = run("ip", &["netns", "exec", self.b(i), env!("CARGO_BIN_EXE_halo"), "status", "--json", "-c", &config.to_string_lossy()]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The announcement named `api` in balancer `i`'s status.
    fn announcement(&self, i: usize) -> serde_json::Value {
        self.status(i)["announce"]["api"].clone()
    }

    /// A host crash of balancer `i`: its cable pulled (r's port stays up: only BFD can tell),
    /// then halo's guard, halo and FRR SIGKILLed so nothing cleans up.
    fn crash(&mut self, i: usize) {
        run_ok("ip", &["-n", &self.switch.name, "link", "set", &format!("p-b{i}"), "down"]);
        if let Some(halo) = self.halos[i].take() {
            for guard in children(halo.child.id()) {
                let _gone = run("kill", &["-KILL", &guard.to_string()]);
            }
            drop(halo);
        }
        if let Some(frr) = self.frrs[i].as_mut() {
            frr.kill();
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for (i, halo) in self.halos.iter().enumerate() {
            if let Some(h) = halo {
                all += &format!("--- halo b{}\n{}", i + 1, h.log());
            }
        }
        all += &format!("--- router\n{}", self.router.vtysh("show bgp summary"));
        all += &self.router.vtysh("show bfd peers brief");
        all
    }
}

/// The upstream router: eBGP with each balancer (AS 65001), BFD 100 ms x 3, ECMP over up to
/// 8 paths. Written by hand: it is the fabric's side, not halo's.
fn router_config(peers: &[usize]) -> String {
    let mut text = String::from(
        "frr defaults datacenter\nhostname r\n!\nbfd\n profile halo\n  detect-multiplier 3\n  receive-interval 100\n  transmit-interval 100\n exit\nexit\n!\n\
         router bgp 65000\n bgp router-id 172.31.1.1\n no bgp ebgp-requires-policy\n timers bgp 3 9\n neighbor B peer-group\n neighbor B remote-as 65001\n neighbor B bfd profile halo\n",
    );
    for &i in peers {
        text += &format!(" neighbor {} peer-group B\n", fabric_address(i));
    }
    text += " address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\nexit\n";
    text
}

/// Balancer `i`'s halo.toml: the frontend on every address, one API server, the balancer
/// tracker, the VIP announced while it passes, and the session to r.
fn balancer_config(i: usize, options: &Options) -> String {
    format!(
        "[status]\nlisten = \"127.0.0.1:9470\"\n\n\
         [bgp]\nasn = 65001\nrouter_id = \"{id}\"\n[[bgp.neighbor]]\naddress = \"{neighbor}\"\nasn = 65000\n\n\
         [[announce]]\nname = \"api\"\naddress = \"{VIP_PREFIX}\"\ntrack = [\"local-balancer\"]\n\n\
         [[tracker]]\nname = \"local-balancer\"\nkind = \"balancer\"\nfrontend = \"api\"\ninterval = \"100ms\"\nfall = 2\nrise = 2\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"0.0.0.0:{PORT}\"]\nbackend = \"api\"\nfirst_byte_timeout = \"0s\"\n\n\
         [[backend]]\nname = \"api\"\nconnect_timeout = \"1s\"\ndrain_timeout = \"{drain}\"\n\
         [backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\nfast_interval = \"100ms\"\ntimeout = \"200ms\"\nfall = 2\nrise = 1\n\
         [[backend.server]]\nname = \"s1\"\naddress = \"{SERVER}:6443\"\n",
        id = fabric_address(i),
        neighbor = options.neighbor,
        drain = options.drain_timeout,
    )
}

/// `halo render frr -c CONFIG`: the FRR configuration the balancer runs with.
fn render_frr(config: &std::path::Path) -> String {
    let out = run(env!("CARGO_BIN_EXE_halo"), &["render", "frr", "-c", &config.to_string_lossy()]);
    assert!(out.status.success(), "halo render frr failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `halo host check -c CONFIG --frr-vty-socket DIR` inside balancer `i`'s namespace, DIR being
/// its FRR's pathspace; the exit code and the output.
fn host_check(fabric: &Fabric, i: usize) -> (Option<i32>, String) {
    let (config, vty) = (fabric.config_path(i).display().to_string(), format!("/var/run/frr/{}", fabric.b(i)));
    let out =
        run("ip", &["netns", "exec", fabric.b(i), env!("CARGO_BIN_EXE_halo"), "host", "check", "-c", &config, "--frr-vty-socket", &vty]);
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn skip(test: &str) -> bool {
    !can_run_frr(test)
}

#[test]
fn the_vip_is_reachable_and_new_connections_spread_over_the_three_balancers() {
    if skip("the_vip_is_reachable_and_new_connections_spread_over_the_three_balancers") {
        return;
    }
    let fabric = Fabric::new(Options::default());
    fabric.wait_ready();
    for i in 0..3 {
        assert!(fabric.holds(i), "b{} does not hold the VIP:\n{}", i + 1, fabric.logs());
        let a = fabric.announcement(i);
        assert_eq!(a["announced"], true, "b{}: {a}\n{}", i + 1, fabric.logs());
    }
    // halo host check agrees: FRR answers, the session is up, the address held and in BGP; a
    // routed balancer needs no bridge, so nothing FAILs.
    let (code, out) = host_check(&fabric, 0);
    assert_eq!(code, Some(0), "{out}");
    for check in ["FRR", &format!("BGP session to {ROUTER}"), &format!("announce api ({VIP})")] {
        let line = out.lines().find(|l| l.contains(check)).unwrap_or_else(|| panic!("no line about {check}:\n{out}"));
        assert!(line.trim_start().starts_with("OK"), "{line}\n{out}");
    }
    let (per, failed) = spread(&fabric.client.name, 3, 60);
    eprintln!("60 new connections: {per:?} per balancer, {failed} failed");
    assert_eq!(failed, 0, "{per:?}\n{}", fabric.logs());
    assert!(per.iter().all(|&n| n > 0), "not spread over the three balancers: {per:?}\n{}", fabric.logs());
    // The metric says the same.
    let config = fabric.config_path(0);
    let out = run("ip", &["netns", "exec", fabric.b(0), "curl", "-s", "http://127.0.0.1:9470/metrics"]);
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.lines().any(|l| l.starts_with("halo_announce_announced{") && l.contains(VIP) && l.ends_with(" 1")),
        "{}:\n{metrics}",
        config.display()
    );
}

#[test]
fn a_balancer_whose_tracker_fails_withdraws_and_the_others_keep_serving() {
    if skip("a_balancer_whose_tracker_fails_withdraws_and_the_others_keep_serving") {
        return;
    }
    let fabric = Fabric::new(Options::default());
    fabric.wait_ready();
    // b1 loses its path to the API server: its checks fail, then its balancer tracker.
    run_ok("ip", &["-n", fabric.b(0), "route", "add", "blackhole", &format!("{SERVER}/32")]);
    let withdrawn = fabric.wait_routed_to(&[1, 2], LONG);
    assert!(withdrawn.is_some(), "r still routes to b1: {:?}\n{}", fabric.nexthops(), fabric.logs());
    eprintln!("b1 withdrawn at r {:?} after its path to the server was cut", withdrawn.unwrap_or_default());
    assert!(!fabric.holds(0), "b1 still holds the VIP on lo");
    let a = fabric.announcement(0);
    assert_eq!(a["announced"], false, "{a}");
    assert!(a["reason"].as_str().is_some_and(|r| r.contains("local-balancer")), "the reason names the tracker: {a}");
    // The session stays up: withdrawing is not leaving the fabric.
    assert_eq!(fabric.router.bgp_state(&fabric_address(0)), "Established");
    let (per, failed) = spread(&fabric.client.name, 3, 40);
    eprintln!("40 new connections after the withdrawal: {per:?}, {failed} failed");
    assert_eq!(failed, 0, "{per:?}\n{}", fabric.logs());
    assert_eq!(per[0], 0, "{per:?}");
    assert!(per[1] > 0 && per[2] > 0, "{per:?}");

    // The path comes back: b1 announces again.
    run_ok("ip", &["-n", fabric.b(0), "route", "del", "blackhole", &format!("{SERVER}/32")]);
    assert!(fabric.wait_routed_to(&[0, 1, 2], LONG).is_some(), "b1 never announced again: {:?}\n{}", fabric.nexthops(), fabric.logs());
    assert_eq!(fabric.announcement(0)["announced"], true);
}

#[test]
fn halo_sigkilled_on_a_balancer_loses_its_address_and_frr_withdraws() {
    if skip("halo_sigkilled_on_a_balancer_loses_its_address_and_frr_withdraws") {
        return;
    }
    let mut fabric = Fabric::new(Options::default());
    fabric.wait_ready();
    let halo = fabric.halos[0].take().expect("halo");
    halo.signal("KILL");
    let gone = wait_for(LONG, || !fabric.holds(0));
    assert!(gone.is_some(), "the VIP stayed on b1's lo after halo was SIGKILLed");
    let withdrawn = fabric.wait_routed_to(&[1, 2], LONG);
    assert!(withdrawn.is_some(), "r still routes to b1: {:?}\n{}", fabric.nexthops(), fabric.logs());
    eprintln!("after SIGKILL: address gone in {:?}, withdrawn at r in {:?}", gone.unwrap_or_default(), withdrawn.unwrap_or_default());
    // Only halo died: b1's FRR and its session stay.
    assert_eq!(fabric.router.bgp_state(&fabric_address(0)), "Established");
    let (per, failed) = spread(&fabric.client.name, 3, 30);
    assert_eq!(failed, 0, "{per:?}\n{}", fabric.logs());
    assert_eq!(per[0], 0, "{per:?}");
    drop(halo);
}

#[test]
fn a_crashed_balancer_host_is_removed_by_bfd() {
    if skip("a_crashed_balancer_host_is_removed_by_bfd") {
        return;
    }
    let mut fabric = Fabric::new(Options::default());
    fabric.wait_ready();
    let peer = fabric_address(0);
    assert_eq!(fabric.router.bfd_status(&peer), "up", "{}", fabric.logs());
    let (_, sent_before) = fabric.router.last_notification(&peer);
    let cut = Instant::now();
    fabric.crash(0);
    let withdrawn = fabric.wait_routed_to(&[1, 2], LONG);
    assert!(withdrawn.is_some(), "r still routes to the crashed b1: {:?}\n{}", fabric.nexthops(), fabric.logs());
    // BFD, not the BGP hold time (9 s), took the session down.
    let (reason, sent) = fabric.router.last_notification(&peer);
    assert!(sent > sent_before && reason == "Cease/BFD Down", "the session did not end by BFD ({reason:?}):\n{}", fabric.logs());
    assert_ne!(fabric.router.bfd_status(&peer), "up");
    // New connections succeed again: 20 in a row, within a bound.
    let recovered = wait_for(LONG, || (0..20).all(|_| connect(&fabric.client.name).is_some()));
    assert!(recovered.is_some(), "{}", fabric.logs());
    eprintln!("crash of b1: withdrawn at r after {:?}, 20 connections in a row after {:?}", withdrawn.unwrap_or_default(), cut.elapsed());
}

/// Opens `count` connections from the client and withdraws b1 by its tracker; returns how many
/// of those that went through b2 and b3 still work, out of how many, and the same for b1's.
fn survivors_of_a_withdrawal(fabric: &Fabric, count: usize) -> ((usize, usize), (usize, usize)) {
    let mut open: Vec<(TcpStream, usize)> = Vec::new();
    for _ in 0..count {
        open.push(connect(&fabric.client.name).expect("a connection before the withdrawal"));
    }
    run_ok("ip", &["-n", fabric.b(0), "route", "add", "blackhole", &format!("{SERVER}/32")]);
    assert!(fabric.wait_routed_to(&[1, 2], LONG).is_some(), "b1 never withdrew: {:?}\n{}", fabric.nexthops(), fabric.logs());
    std::thread::sleep(Duration::from_millis(200));
    let (mut others, mut others_alive, mut b1, mut b1_alive) = (0, 0, 0, 0);
    for (stream, balancer) in &mut open {
        let ok = alive(stream);
        if *balancer == 0 {
            b1 += 1;
            b1_alive += usize::from(ok);
        } else {
            others += 1;
            others_alive += usize::from(ok);
        }
    }
    run_ok("ip", &["-n", fabric.b(0), "route", "del", "blackhole", &format!("{SERVER}/32")]);
    ((others_alive, others), (b1_alive, b1))
}

#[test]
fn established_connections_through_the_surviving_balancers_outlive_a_withdrawal() {
    if skip("established_connections_through_the_surviving_balancers_outlive_a_withdrawal") {
        return;
    }
    let fabric = Fabric::new(Options::default());
    fabric.wait_ready();
    // The fabric as FRR programs it: a hash-threshold group. Measured, not judged: which flows
    // move depends on the hash and on which member goes.
    let ((alive, of), (b1_alive, b1)) = survivors_of_a_withdrawal(&fabric, 60);
    eprintln!(
        "hash-threshold ECMP (FRR's own group): {alive} of {of} connections through b2/b3 survived b1's withdrawal; {b1_alive} of {b1} through b1"
    );
    assert!(fabric.wait_routed_to(&[0, 1, 2], LONG).is_some(), "b1 never came back:\n{}", fabric.logs());

    // A resilient group (what a data-centre fabric configures): no surviving flow moves.
    let gateways: Vec<String> = (0..3).map(fabric_address).collect();
    let mirror = ResilientMirror::start(&fabric.r.name, VIP_PREFIX, &gateways.iter().map(String::as_str).collect::<Vec<_>>(), "eth0");
    assert!(wait_for(LONG, || mirror.gateways().len() == 3).is_some(), "the resilient group never held three gateways");
    let ((alive, of), (b1_alive, b1)) = survivors_of_a_withdrawal(&fabric, 60);
    eprintln!("resilient group: {alive} of {of} connections through b2/b3 survived b1's withdrawal; {b1_alive} of {b1} through b1");
    assert!(of > 0, "no connection went through b2 or b3");
    assert_eq!(alive, of, "with a resilient group every connection through a surviving balancer survives:\n{}", fabric.logs());
    drop(mirror);
}

/// SIGTERM to b1's halo while the pinned client has a connection through it: waits (bounded)
/// until r no longer routes to b1, checking that halo is still running then; returns the time
/// of the signal and of the withdrawal (after the signal).
fn stop_b1(fabric: &Fabric, halo: &mut Daemon) -> (Instant, Duration) {
    let stop = Instant::now();
    halo.signal("TERM");
    let mut withdrawn_at = None;
    while stop.elapsed() < LONG && withdrawn_at.is_none() {
        let running = matches!(halo.child.try_wait(), Ok(None));
        if !fabric.nexthops().contains(&fabric_address(0)) {
            withdrawn_at = Some(stop.elapsed());
        }
        assert!(running, "halo exited before r withdrew its route:\n{}", halo.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    let withdrawn_at = withdrawn_at.unwrap_or_else(|| panic!("b1 never withdrew on SIGTERM:\n{}", halo.log()));
    (stop, withdrawn_at)
}

#[test]
fn a_clean_stop_withdraws_first_and_drains_established_connections() {
    if skip("a_clean_stop_withdraws_first_and_drains_established_connections") {
        return;
    }
    let mut fabric = Fabric::new(Options { drain_timeout: "5s", ..Options::default() });
    fabric.wait_ready();

    // 1. The connection ends before drain_timeout: halo exits when it ends.
    let (mut pinned, via) = connect(&fabric.pinned.name).expect("the pinned client's connection");
    assert_eq!(via, 0, "the pinned client goes through b1");
    let mut halo = fabric.halos[0].take().expect("halo");
    let (stop, withdrawn) = stop_b1(&fabric, &mut halo);
    assert!(!fabric.holds(0), "the VIP is still on b1's lo after the withdrawal");
    // New connections through r go to b2 and b3, none fails.
    let (per, failed) = spread(&fabric.client.name, 3, 20);
    assert_eq!((failed, per[0]), (0, 0), "{per:?}\n{}", halo.log());
    // Past the routers' settling second halo stopped accepting; the established connection
    // still works (the local route accepts the VIP's packets without the address).
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(stop.elapsed()));
    assert!(alive(&mut pinned), "the pinned connection broke during the drain:\n{}", halo.log());
    assert!(matches!(halo.child.try_wait(), Ok(None)), "halo did not wait for its connection to end:\n{}", halo.log());
    let local = run("ip", &["-n", fabric.b(0), "route", "show", "table", "local", VIP]);
    assert!(!local.stdout.is_empty(), "no local route for the VIP on b1 while draining");
    drop(pinned);
    let exited = wait_for(Duration::from_secs(3), || matches!(halo.child.try_wait(), Ok(Some(_))));
    assert!(exited.is_some(), "halo still draining after its last connection ended:\n{}", halo.log());
    assert_eq!(halo.child.try_wait().ok().flatten().and_then(|s| s.code()), Some(0), "{}", halo.log());
    let local = run("ip", &["-n", fabric.b(0), "route", "show", "table", "local", VIP]);
    assert!(local.stdout.is_empty(), "the local route outlived halo");
    eprintln!("clean stop: withdrawn at r {withdrawn:?} after SIGTERM; halo exited {:?} after it", stop.elapsed());
    drop(halo);

    // 2. The connection outlives drain_timeout: halo closes it and exits then.
    fabric.halos[0] = Some(fabric.start_halo(0));
    assert!(fabric.wait_routed_to(&[0, 1, 2], LONG).is_some(), "b1 never announced again after its restart:\n{}", fabric.logs());
    let (mut pinned, _) = connect(&fabric.pinned.name).expect("the pinned client's connection");
    let mut halo = fabric.halos[0].take().expect("halo");
    let (stop, _) = stop_b1(&fabric, &mut halo);
    let exited = wait_for(LONG, || matches!(halo.child.try_wait(), Ok(Some(_))));
    let took = stop.elapsed();
    assert!(exited.is_some(), "halo never exited:\n{}", halo.log());
    // One settling second, then 5 s of drain.
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(12), "exited {took:?} after SIGTERM:\n{}", halo.log());
    assert!(!alive(&mut pinned), "the connection survived drain_timeout");
    assert!(halo.log().contains("drain timeout"), "{}", halo.log());
}

#[test]
fn a_neighbour_that_never_comes_up_leaves_halo_serving_and_host_check_says_so() {
    if skip("a_neighbour_that_never_comes_up_leaves_halo_serving_and_host_check_says_so") {
        return;
    }
    // r has no neighbour statement for the balancer: its session never comes up.
    let mut fabric = Fabric::new(Options { balancers: 1, router_peers: Some(Vec::new()), ..Options::default() });
    let announced = wait_for(LONG, || fabric.announcement(0)["announced"] == true);
    assert!(announced.is_some(), "{}", fabric.logs());
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(fabric.frr(0).bgp_state(ROUTER), "Established");
    assert!(fabric.nexthops().is_empty(), "r routes the VIP: {:?}", fabric.nexthops());
    // halo serves whoever reaches it.
    assert_eq!(connect(&fabric.pinned.name).map(|(_, b)| b), Some(0), "{}", fabric.logs());
    let (code, out) = host_check(&fabric, 0);
    assert_eq!(code, Some(1), "{out}");
    let line = out.lines().find(|l| l.contains(ROUTER)).unwrap_or_else(|| panic!("no line about the neighbour {ROUTER}:\n{out}"));
    assert!(line.contains("FAIL"), "{out}");
    eprintln!("halo host check, the neighbour never up: {}", line.trim());

    // FRR not running at all: said clearly, and halo still serves.
    if let Some(frr) = fabric.frrs[0].as_mut() {
        frr.kill();
    }
    let (code, out) = host_check(&fabric, 0);
    assert_eq!(code, Some(1), "{out}");
    let line = out.lines().find(|l| l.contains("FAIL") && l.contains("FRR")).unwrap_or_else(|| panic!("no FAIL line about FRR:\n{out}"));
    eprintln!("halo host check, FRR not running: {}", line.trim());
    assert_eq!(connect(&fabric.pinned.name).map(|(_, b)| b), Some(0), "{}", fabric.logs());
    assert_eq!(fabric.announcement(0)["announced"], true);
}

#[test]
fn overlapping_vips_between_vrrp_and_announce_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("halo.toml");
    let text = format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\npriority = 100\nvirtual_addresses = [\"{VIP}/24\"]\n\n\
         [bgp]\nasn = 65001\n[[bgp.neighbor]]\naddress = \"{ROUTER}\"\nasn = 65000\n\n\
         [[announce]]\nname = \"api\"\naddress = \"{VIP_PREFIX}\"\n"
    );
    std::fs::write(&file, &text).expect("config");
    let line = text.lines().position(|l| l.starts_with("address = \"10.0.0.100/32\"")).expect("line") + 1;
    let out = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["check", "-c", &file.to_string_lossy()])
        .stdin(Stdio::null())
        .output()
        .expect("halo check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let at = format!("{}:{line}:", file.display());
    assert!(stderr.lines().any(|l| l.starts_with(&at) && l.contains(VIP) && l.contains("vrrp")), "no error at {at}:\n{stderr}");
}

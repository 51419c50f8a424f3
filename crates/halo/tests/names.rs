//! Servers given by name, resolved at run time through the system resolver, in a network
//! namespace whose `/etc/hosts` (and `nsswitch.conf`: files only, so no lookup ever leaves)
//! is a file the test rewrites: a name that moves while a long connection stays up, a name that
//! stops resolving, a name that never resolved at start. Servers and clients are sockets of
//! this process made inside the namespace (a thread that entered it); halo runs inside it.

mod lan;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lan::ns_server::{GreetingServer, in_ns};
use lan::{Daemon, Netns, can_run, run_ok, wait_for};

/// The servers greet with their own name.
fn named(_peer: SocketAddr, name: &str) -> String {
    name.to_string()
}

/// A connection through halo's frontend, made inside `ns`, and the greeting it got.
fn connect(ns: &str) -> Option<(TcpStream, String)> {
    let stream = in_ns(ns, || TcpStream::connect_timeout(&"127.0.0.1:8443".parse().expect("address"), Duration::from_secs(1))).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut greeting = String::new();
    BufReader::new(stream.try_clone().ok()?).read_line(&mut greeting).ok()?;
    Some((stream, greeting.trim().to_string())).filter(|(_, g)| !g.is_empty())
}

/// The greeting a new connection gets, `None` when none came.
fn greeting(ns: &str) -> Option<String> {
    connect(ns).map(|(_, g)| g)
}

/// A namespace with two server addresses on its loopback, a hosts file, and halo's config.
struct Setup {
    ns: Netns,
    dir: tempfile::TempDir,
    hosts: PathBuf,
    nsswitch: PathBuf,
    _servers: Vec<GreetingServer>,
}

impl Setup {
    fn new(hosts: &str) -> Self {
        let ns = Netns::new();
        for address in ["10.99.0.1/32", "10.99.0.2/32"] {
            run_ok("ip", &["-n", &ns.name, "addr", "add", address, "dev", "lo"]);
        }
        let servers = vec![
            GreetingServer::start(&ns.name, "10.99.0.1:6443", named, "one"),
            GreetingServer::start(&ns.name, "10.99.0.2:6443", named, "two"),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let (hosts_file, nsswitch) = (dir.path().join("hosts"), dir.path().join("nsswitch.conf"));
        std::fs::write(&nsswitch, "hosts: files\n").expect("nsswitch");
        let setup = Self { ns, dir, hosts: hosts_file, nsswitch, _servers: servers };
        setup.set_hosts(hosts);
        setup
    }

    /// Rewrites the hosts file in place (the bind mount follows the inode).
    fn set_hosts(&self, text: &str) {
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&self.hosts).expect("hosts");
        file.write_all(format!("127.0.0.1 localhost\n{text}").as_bytes()).expect("hosts");
    }

    fn config(&self, servers: &str) -> PathBuf {
        let text = format!(
            "[status]\nlisten = \"127.0.0.1:9470\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:8443\"]\nbackend = \"api\"\nfirst_byte_timeout = \"0s\"\n\n\
             [[backend]]\nname = \"api\"\nresolve_interval = \"300ms\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"200ms\"\n\
             fast_interval = \"100ms\"\nfall = 2\nrise = 1\n{servers}"
        );
        let file = self.dir.path().join("halo.toml");
        std::fs::write(&file, text).expect("config");
        file
    }

    /// `halo ARGS` inside the namespace, with the hosts and nsswitch files bind-mounted in a
    /// private mount namespace.
    fn halo_command(&self, args: &str) -> String {
        format!(
            "mount --bind {} /etc/hosts && mount --bind {} /etc/nsswitch.conf && exec {} {args}",
            self.hosts.display(),
            self.nsswitch.display(),
            env!("CARGO_BIN_EXE_halo")
        )
    }

    fn run(&self, config: &Path) -> Daemon {
        let script = self.halo_command(&format!("run -c {}", config.display()));
        let log = self.dir.path().join("halo.log");
        Daemon::start(&self.ns.name, "unshare", &["--mount", "--propagation", "private", "sh", "-c", &script], log, Vec::new())
    }
}

fn server(name: &str, address: &str) -> String {
    format!("\n[[backend.server]]\nname = \"{name}\"\naddress = \"{address}\"\n")
}

#[test]
fn a_name_that_moves_takes_new_connections_along_and_leaves_open_ones_alone() {
    if !can_run("a_name_that_moves_takes_new_connections_along_and_leaves_open_ones_alone", true, &["ip", "unshare"]) {
        return;
    }
    let setup = Setup::new("10.99.0.1 master1\n");
    let daemon = setup.run(&setup.config(&server("m1", "master1:6443")));
    let ns = setup.ns.name.clone();
    let first = wait_for(Duration::from_secs(10), || greeting(&ns).as_deref() == Some("one"));
    assert!(first.is_some(), "never served through master1: {}", daemon.log());
    let (mut long, greeted) = connect(&ns).expect("a long connection");
    assert_eq!(greeted, "one");

    setup.set_hosts("10.99.0.2 master1\n");
    let moved = wait_for(Duration::from_secs(10), || greeting(&ns).as_deref() == Some("two"));
    assert!(moved.is_some(), "new connections never reached the new address: {}", daemon.log());
    // The connection opened before the move still talks to the old address.
    long.write_all(b"still here").expect("write on the long connection");
    let mut echo = [0u8; 10];
    long.read_exact(&mut echo).expect("echo on the long connection");
    assert_eq!(&echo, b"still here");
    let log = daemon.log();
    assert_eq!(log.matches("server address changed").count(), 1, "{log}");
}

#[test]
fn a_name_that_stops_resolving_keeps_its_last_address() {
    if !can_run("a_name_that_stops_resolving_keeps_its_last_address", true, &["ip", "unshare"]) {
        return;
    }
    let setup = Setup::new("10.99.0.1 master1\n");
    let daemon = setup.run(&setup.config(&server("m1", "master1:6443")));
    let ns = setup.ns.name.clone();
    assert!(wait_for(Duration::from_secs(10), || greeting(&ns).as_deref() == Some("one")).is_some(), "{}", daemon.log());
    setup.set_hosts("");
    let noticed = wait_for(Duration::from_secs(10), || daemon.log().contains("does not resolve: keeping its last address"));
    assert!(noticed.is_some(), "{}", daemon.log());
    // Several resolve intervals later, new connections still reach the last address.
    std::thread::sleep(Duration::from_millis(1000));
    for _ in 0..5 {
        assert_eq!(greeting(&ns).as_deref(), Some("one"), "{}", daemon.log());
    }
    let log = daemon.log();
    assert_eq!(log.matches("does not resolve").count(), 1, "one line, not one per lookup: {log}");
    assert!(!log.contains("server DOWN"), "{log}");
}

#[test]
fn a_name_that_never_resolved_is_down_with_the_reason_until_it_resolves() {
    if !can_run("a_name_that_never_resolved_is_down_with_the_reason_until_it_resolves", true, &["ip", "unshare"]) {
        return;
    }
    let setup = Setup::new("10.99.0.1 master1\n");
    let config = setup.config(&(server("m1", "master1:6443") + &server("ghost", "ghost:6443")));
    // `halo check` warns (and passes): the name may resolve on the host the file is for.
    let script = setup.halo_command(&format!("check -c {}", config.display()));
    let out = setup.ns.sh(&script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("server `ghost`: DNS: ghost"), "{stderr}");

    let daemon = setup.run(&config);
    let ns = setup.ns.name.clone();
    let down = wait_for(Duration::from_secs(10), || daemon.log().contains("server name does not resolve: server DOWN until it does"));
    assert!(down.is_some(), "{}", daemon.log());
    // The daemon serves through the server that resolves (once its first check has passed:
    // the DOWN line can come before it).
    let serving = wait_for(Duration::from_secs(10), || greeting(&ns).as_deref() == Some("one"));
    assert!(serving.is_some(), "{}", daemon.log());
    for _ in 0..4 {
        assert_eq!(greeting(&ns).as_deref(), Some("one"), "{}", daemon.log());
    }
    setup.set_hosts("10.99.0.1 master1\n10.99.0.2 ghost\n");
    let joined = wait_for(Duration::from_secs(10), || greeting(&ns).as_deref() == Some("two"));
    assert!(joined.is_some(), "ghost never took traffic after it resolved: {}", daemon.log());
    assert!(daemon.log().contains("server name resolves again"), "{}", daemon.log());
}

/// Names whose nameserver never answers (a UDP socket inside the namespace that reads nothing;
/// the resolver waits 30 s a query): each lookup halo gives up on after its 5 s keeps a thread
/// of the blocking pool until getaddrinfo returns, and every server looks up again each interval.
/// The threads such lookups hold are bounded: 20 servers for 14 s leave the daemon with fewer
/// than 40 threads (unbounded: one more per server every 5 s, some 70).
#[test]
fn lookups_a_nameserver_never_answers_hold_a_bounded_number_of_threads() {
    if !can_run("lookups_a_nameserver_never_answers_hold_a_bounded_number_of_threads", true, &["ip", "unshare"]) {
        return;
    }
    let setup = Setup::new("");
    std::fs::write(&setup.nsswitch, "hosts: files dns\n").expect("nsswitch");
    let resolv = setup.dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.53\noptions timeout:30 attempts:1\n").expect("resolv.conf");
    let ns = setup.ns.name.clone();
    // Bound inside the namespace, never read: the queries wait in its buffer, unanswered.
    let silent = in_ns(&ns, || std::net::UdpSocket::bind("127.0.0.53:53").expect("a silent nameserver"));
    let servers: String = (0..20).map(|i| server(&format!("m{i}"), &format!("master{i}.cluster.test:6443"))).collect();
    let config = setup.config(&servers);
    let script =
        format!("mount --bind {} /etc/resolv.conf && {}", resolv.display(), setup.halo_command(&format!("run -c {}", config.display())));
    let log = setup.dir.path().join("halo.log");
    let daemon = Daemon::start(&ns, "unshare", &["--mount", "--propagation", "private", "sh", "-c", &script], log, Vec::new());
    let threads = || std::fs::read_dir(format!("/proc/{}/task", daemon.child.id())).map_or(0, |d| d.count());
    let started = wait_for(Duration::from_secs(10), || daemon.log().contains("halo running"));
    assert!(started.is_some(), "{}", daemon.log());
    let mut most = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(14);
    while std::time::Instant::now() < deadline {
        most = most.max(threads());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("halo's threads with 20 names unanswered for 14 s: at most {most}");
    assert!(daemon.log().contains("no answer within"), "the lookups never timed out: {}", daemon.log());
    assert!(most < 40, "{most} threads: timed-out lookups pile up");
    drop(silent);
}

//! The VRRP side on its own thread (root, network namespaces, run in CI): every instance's
//! driver runs on the daemon's `halo-vrrp` thread, apart from the balancer's workers (after a
//! reload too), and a master whose balancer is saturated by a connection flood and bulk
//! transfers from a client namespace keeps its VIP: no transition, the backup never takes it.

mod lan;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lan::client_load::{spawn_in_ns, streams};
use lan::ns_server::{GreetingServer, in_ns};
use lan::*;

const VIP: &str = "192.0.2.170";
/// The thread the daemon runs its VRRP side on.
const VRRP_THREAD: &str = "halo-vrrp";

/// Names of the threads of process `pid`, as the kernel keeps them (`comm`).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).map(|c| c.trim().to_string()).collect()
}

/// The threads the log says instance `name`'s driver ran on, one per start.
fn driver_threads(log: &str, name: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("VRRP driver running") && l.contains(&format!("instance={name}")))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("thread=")).map(str::to_string))
        .collect()
}

fn instance(name: &str, vrid: u8, priority: u8, vip: &str, extra: &str) -> String {
    format!(
        "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\npriority = {priority}\nadvert_interval = \"100ms\"\nvirtual_addresses = [\"{vip}/24\"]\n{extra}\n"
    )
}

/// A frontend on every address at `port` for the backend of the same name, one server.
fn balanced(name: &str, port: u16, server: &str) -> String {
    format!(
        "[[frontend]]\nname = \"{name}\"\nbind = [\"0.0.0.0:{port}\"]\nbackend = \"{name}\"\nfirst_byte_timeout = \"0s\"\n\n[[backend]]\nname = \"{name}\"\n[backend.health]\nkind = \"tcp\"\ninterval = \"500ms\"\n[[backend.server]]\nname = \"s1\"\naddress = \"{server}\"\n\n"
    )
}

#[test]
fn vrrp_drivers_run_on_their_own_thread_apart_from_the_balancer() {
    if skip("vrrp_drivers_run_on_their_own_thread_apart_from_the_balancer") {
        return;
    }
    let lan = Lan::new(1);
    let weight = lan.file("weight", "0\n");
    let tracker = format!("[[tracker]]\nname = \"weight\"\nkind = \"file\"\npath = \"{}\"\nweight = 1\n\n", weight.display());
    let first = instance("VI_1", 51, 150, VIP, "track = [\"weight\"]");
    let config = format!("{first}{tracker}{}", balanced("api", 6443, "192.0.2.13:6443"));
    let daemon = Daemon::halo(&lan, 0, "halo", &config);
    assert!(wait_for(GENEROUS, || lan.holds(0, VIP)).is_some(), "halo never took {VIP}:\n{}", daemon.log());
    let threads = thread_names(daemon.child.id());
    assert_eq!(threads.iter().filter(|t| *t == VRRP_THREAD).count(), 1, "one {VRRP_THREAD} thread: {threads:?}");
    assert!(threads.iter().any(|t| t.starts_with("tokio-r")), "the balancer's workers: {threads:?}");
    assert_eq!(driver_threads(&daemon.log(), "VI_1"), [VRRP_THREAD], "{}", daemon.log());

    // An instance a reload adds starts on the same thread, not on the run loop's.
    std::fs::write(lan.dir.path().join("halo.toml"), format!("{config}{}", instance("VI_2", 52, 150, "192.0.2.171", ""))).expect("config");
    daemon.signal("HUP");
    assert!(wait_for(GENEROUS, || lan.holds(0, "192.0.2.171")).is_some(), "the reload's instance never came up:\n{}", daemon.log());
    assert_eq!(driver_threads(&daemon.log(), "VI_2"), [VRRP_THREAD], "{}", daemon.log());
    assert_eq!(thread_names(daemon.child.id()).iter().filter(|t| *t == VRRP_THREAD).count(), 1);
    assert_eq!(daemon.stop(), Some(0));
}

/// A server in namespace `ns` that sends zeros on every connection until the peer closes or
/// `limit` has passed; stops accepting when `stop` is set.
fn bulk_server(ns: &str, address: &str, limit: Duration, stop: Arc<AtomicBool>) {
    let address: SocketAddr = address.parse().expect("address");
    let listener = in_ns(ns, move || TcpListener::bind(address).expect("bind in namespace"));
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    std::thread::spawn(move || {
                        let (start, chunk) = (Instant::now(), [0u8; 64 * 1024]);
                        let _ = stream.set_nonblocking(false);
                        while start.elapsed() < limit && stream.write_all(&chunk).is_ok() {}
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// What the load did: bytes read by the bulk readers, flood connections greeted and not.
#[derive(Debug, Default)]
struct Load {
    bytes: AtomicU64,
    greeted: AtomicU64,
    failed: AtomicU64,
}

/// From namespace `ns` until `until`: `readers` connections to `bulk` each reading as fast as it
/// can, and `flooders` threads each opening connections to `api` one after another (at most
/// `per_flooder`), reading the greeting and closing.
fn saturate(
    ns: &str,
    (bulk, api): (SocketAddr, SocketAddr),
    (readers, flooders, per_flooder): (usize, usize, u64),
    until: Instant,
) -> (Arc<Load>, Vec<std::thread::JoinHandle<()>>) {
    let load = Arc::new(Load::default());
    let mut handles = Vec::new();
    for _ in 0..readers {
        let load = Arc::clone(&load);
        handles.push(spawn_in_ns(ns, move || {
            let Ok(mut stream) = TcpStream::connect_timeout(&bulk, Duration::from_secs(2)) else { return };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; 64 * 1024];
            while Instant::now() < until {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => load.bytes.fetch_add(n as u64, Ordering::Relaxed),
                };
            }
        }));
    }
    for _ in 0..flooders {
        let load = Arc::clone(&load);
        handles.push(spawn_in_ns(ns, move || {
            for _ in 0..per_flooder {
                if Instant::now() >= until {
                    return;
                }
                let greeted = TcpStream::connect_timeout(&api, Duration::from_secs(2)).and_then(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut line = String::new();
                    BufReader::new(s).read_line(&mut line).map(|n| n > 0)
                });
                let counter = if matches!(greeted, Ok(true)) { &load.greeted } else { &load.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    (load, handles)
}

/// tshark on the switch for at most `seconds`: the source of every VRRP packet, one a line.
fn capture_sources(lan: &Lan, seconds: u64) -> std::process::Child {
    let out = std::fs::File::create(lan.dir.path().join("adverts")).expect("capture file");
    let duration = format!("duration:{seconds}");
    std::process::Command::new("ip")
        .args(["netns", "exec", &lan.switch.name, "tshark", "-i", "br0", "-f", "ip proto 112", "-l", "-n", "-a", &duration])
        .args(["-T", "fields", "-e", "ip.src", "-e", "vrrp.prio"])
        .stdout(out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tshark")
}

#[test]
fn a_saturated_balancer_does_not_move_the_vip() {
    if skip("a_saturated_balancer_does_not_move_the_vip") {
        return;
    }
    // Hosts: 0 the master, 1 the backup, 2 the servers, 3 the client.
    let lan = Lan::new(4);
    let stop_servers = Arc::new(AtomicBool::new(false));
    let _api = GreetingServer::start(lan.host(2), "192.0.2.13:6443", |_, tag| tag.to_string(), "api");
    bulk_server(lan.host(2), "192.0.2.13:9000", Duration::from_secs(30), Arc::clone(&stop_servers));
    let config = |priority| {
        format!(
            "{}{}{}",
            instance("VI_1", 51, priority, VIP, ""),
            balanced("api", 6443, "192.0.2.13:6443"),
            balanced("bulk", 8080, "192.0.2.13:9000")
        )
    };
    let master = Daemon::halo(&lan, 0, "master", &config(200));
    let backup = Daemon::halo(&lan, 1, "backup", &config(100));
    assert_sole_holder(&lan, 0, 1, VIP, &[&master, &backup]);
    let changes = |d: &Daemon| d.log().lines().filter(|l| l.contains("state changed")).count();
    let before = (changes(&master), changes(&backup));
    let mut tshark = capture_sources(&lan, 40);
    std::thread::sleep(Duration::from_secs(2));

    // 15 s of load through the VIP: bulk readers, a connection flood, idle connections held.
    let until = Instant::now() + Duration::from_secs(15);
    let targets = (format!("{VIP}:8080").parse().expect("address"), format!("{VIP}:6443").parse().expect("address"));
    let (load, loading) = saturate(lan.host(3), targets, (8, 8, 20_000), until);
    let stop_held = Arc::new(AtomicBool::new(false));
    let (held, holding) = streams(lan.host(3), targets.1, 64, Duration::from_millis(200), Duration::from_secs(20), Arc::clone(&stop_held));
    let (mut samples, mut moved) = (0, Vec::new());
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(250));
        samples += 1;
        if !lan.holds(0, VIP) || lan.holds(1, VIP) {
            moved.push(samples);
        }
    }
    for h in loading {
        h.join().expect("load");
    }
    stop_held.store(true, Ordering::Relaxed);
    for h in holding {
        h.join().expect("held connection");
    }
    stop_servers.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    if let Err(e) = tshark.kill().and_then(|()| tshark.wait().map(drop)) {
        eprintln!("warning: could not end tshark {}: {e}", tshark.id());
    }

    let logs = || format!("{}\n---\n{}", master.log(), backup.log());
    eprintln!(
        "load: {load:?}; held: {} alive, {} echoes, cut: {:?}; {samples} samples",
        held.alive.load(Ordering::Relaxed),
        held.echoed.load(Ordering::Relaxed),
        held.cut.lock().expect("lock").iter().take(3).collect::<Vec<_>>()
    );
    assert!(load.bytes.load(Ordering::Relaxed) > 0 && load.greeted.load(Ordering::Relaxed) > 0, "no load went through: {load:?}");
    assert!(moved.is_empty(), "the VIP left the master (samples {moved:?} of {samples}):\n{}", logs());
    assert_eq!((changes(&master), changes(&backup)), before, "a state changed under load:\n{}", logs());
    let adverts = std::fs::read_to_string(lan.dir.path().join("adverts")).unwrap_or_default();
    let rows: Vec<&str> = adverts.lines().collect();
    assert!(rows.len() > 10, "tshark captured nothing: {adverts}");
    assert!(rows.iter().all(|r| *r == "192.0.2.11\t200"), "an advert from the backup or at another priority:\n{adverts}");
}

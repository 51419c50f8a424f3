//! The connection log (`[log] connections = true`, haproxy's `option tcplog`) of the real
//! binary on loopback: one JSON line per connection with the client, the server, the bytes each
//! way and how it ended; a refused connection says so; a flood is cut at the rate limit and the
//! loss is counted in a line of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Halo(Child);

impl Drop for Halo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()
}

/// A server that reads 5 bytes, answers 11, and closes.
fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 5];
                if stream.read_exact(&mut buf).is_ok() {
                    let _ = stream.write_all(b"hello world");
                }
            });
        }
    });
    address
}

fn start(dir: &std::path::Path, servers: &[SocketAddr]) -> (Halo, SocketAddr, std::path::PathBuf) {
    let port = free_port();
    let mut text = format!(
        "[status]\nlisten = \"127.0.0.1:{}\"\n\n[log]\nformat = \"json\"\nconnections = true\n\n\
         [[frontend]]\nname = \"api\"\nbind = [\"127.0.0.1:{port}\"]\nbackend = \"api\"\n\n\
         [[backend]]\nname = \"api\"\nretries = 0\nredispatch = false\n[backend.health]\nkind = \"none\"\n",
        free_port()
    );
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!("\n[[backend.server]]\nname = \"s{i}\"\naddress = \"{s}\"\n"));
    }
    let file = dir.join("halo.toml");
    std::fs::write(&file, text).expect("config");
    let log = dir.join("halo.log");
    let child = Command::new(env!("CARGO_BIN_EXE_halo"))
        .args(["run", "-c", &file.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn halo");
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    // Waits for the daemon's word, not with a connection (that would be logged too).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("halo running") {
        assert!(Instant::now() < deadline, "halo never started: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    (Halo(child), front, log)
}

/// The JSON lines of the connection log.
fn connection_lines(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "connection" && v["fields"]["message"] == "connection")
        .collect()
}

fn exchange(front: SocketAddr) -> (u16, Vec<u8>) {
    let mut client = TcpStream::connect(front).expect("connect");
    client.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let port = client.local_addr().expect("local").port();
    client.write_all(b"hello").expect("write");
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    (port, answer)
}

#[test]
fn each_connection_is_one_line_with_client_server_bytes_and_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = server();
    let (_halo, front, log) = start(dir.path(), &[backend]);
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (port, answer) = exchange(front);
        assert_eq!(answer, b"hello world");
        ports.push(port);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while connection_lines(&log).len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = connection_lines(&log);
    assert_eq!(lines.len(), 3, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    for (line, port) in lines.iter().zip(&ports) {
        let f = &line["fields"];
        assert_eq!(f["client"], format!("127.0.0.1:{port}"), "{line}");
        assert_eq!(f["frontend"], "api");
        assert_eq!(f["server"], "s0");
        assert_eq!(f["server_address"], backend.to_string());
        assert_eq!(f["bytes_up"], 5);
        assert_eq!(f["bytes_down"], 11);
        assert_eq!(f["ended"], "closed");
        assert!(f["duration_ms"].as_u64().is_some() && f["connect_ms"].as_u64().is_some(), "{line}");
    }
}

/// `count` refused connections from four threads, as fast as they go (bounded in count and in
/// `limit`): the unix second in which each was answered, for those that connected.
fn flood(front: SocketAddr, count: usize, limit: Duration) -> Vec<u64> {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut seconds = Vec::new();
                while seconds.len() < count / 4 && started.elapsed() < limit {
                    let Ok(mut c) = TcpStream::connect(front) else { continue };
                    // A client speaks first (a TLS hello): halo connects to a server only then.
                    let _ = c.write_all(b"x");
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = c.read_to_end(&mut Vec::new());
                    seconds.push(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
                }
                seconds
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().expect("flood thread")).collect()
}

/// The most entries any one value has.
fn busiest<T: Ord>(values: impl IntoIterator<Item = T>) -> usize {
    let mut counts = std::collections::BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// A refused connection is one line saying so; a flood faster than the rate limit (checked: the
/// clients had more than 1 200 connections answered in one second) gets at most the limit's
/// lines in any second of the log, and every connection is either written or counted in the
/// loss lines (`suppressed`). (Its bound used to hold only when the flood was fast: it passed with
/// the limit removed.)
#[test]
fn a_refused_connection_and_a_flood_are_logged_within_the_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A server address nothing listens on: every connection is refused by the balancer.
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_halo, front, log) = start(dir.path(), &[dead]);
    let _ = exchange(front);
    let deadline = Instant::now() + Duration::from_secs(5);
    while connection_lines(&log).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = connection_lines(&log);
    assert_eq!(first.len(), 1, "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert_eq!(first[0]["fields"]["ended"], "no_server");
    assert_eq!(first[0]["fields"]["server"], "-");
    let answered = flood(front, 6000, Duration::from_secs(20));
    let fastest = busiest(answered.iter().copied());
    assert!(fastest > 1200, "the flood never beat the rate limit (at best {fastest} connections in a second): nothing was tested");
    // The loss of the flood's last second comes out within a second or two.
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let all_told = || {
        let lines = lines();
        let values: Vec<serde_json::Value> = lines.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let written = values.iter().filter(|v| v["target"] == "connection" && v["fields"]["message"] == "connection").count();
        let suppressed: u64 = values.iter().filter_map(|v| v["fields"]["suppressed"].as_u64()).sum();
        (written, suppressed)
    };
    let made = answered.len() + 1;
    let deadline = Instant::now() + Duration::from_secs(5);
    let told = || {
        let (written, suppressed) = all_told();
        written + usize::try_from(suppressed).unwrap_or(usize::MAX)
    };
    while told() < made && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (written, suppressed) = all_told();
    assert_eq!(written as u64 + suppressed, made as u64, "{written} written + {suppressed} counted as lost, of {made} connections");
    assert!(suppressed > 0, "a flood of {fastest} a second lost no line");
    // The limiter's seconds start when halo did, not on the clock's: some phase of one-second
    // windows must hold at most the limit each (give or take what the 10 ms grid of phases cuts).
    let times: Vec<f64> = connection_lines(&log).iter().filter_map(|v| seconds(v["timestamp"].as_str()?)).collect();
    let best = (0..100).map(|phase| busiest(times.iter().map(|t| ((t - f64::from(phase) / 100.0).floor()) as i64))).min().unwrap_or(0);
    assert!(best <= 1020, "in every phase, some second of the log has more than the limit of 1000 lines: at best {best}");
}

/// A log timestamp (`2026-12-05T20:02:57.266479Z`) as seconds, counted from the start of its
/// month (all a flood of seconds needs).
fn seconds(timestamp: &str) -> Option<f64> {
    let (date, time) = timestamp.trim_end_matches('Z').split_once('T')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut parts = time.split(':');
    let (h, m, s): (f64, f64, f64) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    Some(day * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

#[test]
fn the_loss_of_a_flood_is_reported_without_waiting_for_another_connection() {
    // After a flood, a quiet frontend may see no connection for hours: the count of the lines
    // the rate limit dropped must come out within a second or two all the same, not with the
    // next connection (then long after, and never if none comes).
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (_halo, front, log) = start(dir.path(), &[dead]);
    let started = Instant::now();
    let mut made = 0;
    while made < 2500 && started.elapsed() < Duration::from_secs(20) {
        if let Ok(mut c) = TcpStream::connect(front) {
            // A client speaks first (a TLS hello): halo connects to a server only then.
            let _ = c.write_all(b"x");
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let mut sink = Vec::new();
            let _ = c.read_to_end(&mut sink);
        }
        made += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    let reported = || std::fs::read_to_string(&log).unwrap_or_default().contains("connection lines over the rate limit were not written");
    while !reported() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let written = connection_lines(&log).len();
    if written < made {
        assert!(reported(), "{written} of {made} lines written, and the loss was never reported");
    }
}

//! `probe`, the benchmarks' client and server, in plain std so that its timing is predictable.
//!
//! `probe listen ADDR` accepts connections, writes "ok\n" and closes them, forever.
//! `probe connect ADDR EVERY_MS FOR_MS TIMEOUT_MS` connects every EVERY_MS for FOR_MS (bounded
//! in count and time) and prints one line per attempt: `<µs since start> ok|fail`. An attempt
//! is ok only when the listener's first byte arrives within the timeout: a proxy that accepts
//! but cannot reach a server counts as a failure, end to end.
//! `probe rate ADDR THREADS FOR_MS TIMEOUT_MS`: THREADS clients connect, read the first byte and
//! close, back to back, for FOR_MS; prints `<ok> <failed> <ok per second>`.
//! `probe echo-serve ADDR` greets every connection with the address it came from, then echoes.
//! `probe hold ADDR CONNECTIONS WAIT_MS` opens CONNECTIONS connections to an echo-serve (through
//! a proxy: the greeting names the proxy), waits WAIT_MS, then checks that each still echoes;
//! prints `<greeting> <still working> <opened>`, one line per greeting.
//! `probe storm ADDR CONNECTIONS FOR_MS` holds CONNECTIONS long-lived connections to an
//! echo-serve (through a proxy) for FOR_MS, each sending a heartbeat byte every second and
//! reconnecting the moment one goes unanswered or the connection breaks, as API clients do after
//! a failover. Prints `<µs> up <id> <refused> <timed out> <other failures>` each time a
//! connection is (re-)established, with the failed attempts before it, and `<µs> lost <id>`.
//! `probe bulk-serve ADDR` sends zeros on every connection until the peer goes.
//! `probe bulk-get ADDR CONNECTIONS FOR_MS` reads from CONNECTIONS connections at once for
//! FOR_MS; prints `<bytes> <Mbit/s> <connections that got bytes>`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["listen", address] => listen(address),
        ["connect", address, every, total, timeout] => connect(address, every, total, timeout),
        ["rate", address, threads, total, timeout] => rate(address, threads, total, timeout),
        ["bulk-serve", address] => bulk_serve(address),
        ["echo-serve", address] => echo_serve(address),
        ["hold", address, connections, wait] => hold(address, connections, wait),
        ["bulk-get", address, connections, total] => bulk_get(address, connections, total),
        ["storm", address, connections, total] => storm(address, connections, total),
        _ => Err("usage: probe listen ADDR | probe connect ADDR EVERY_MS FOR_MS TIMEOUT_MS | probe rate ADDR THREADS FOR_MS TIMEOUT_MS | probe bulk-serve ADDR | probe bulk-get ADDR CONNECTIONS FOR_MS | probe echo-serve ADDR | probe hold ADDR CONNECTIONS WAIT_MS | probe storm ADDR CONNECTIONS FOR_MS".to_string()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe: {e}");
            ExitCode::from(2)
        }
    }
}

/// Listens with the backlog an API server has (the kernel's usual maximum, 4096), not std's 128,
/// which would make the stand-in, not the balancer, the bottleneck of a reconnect storm.
fn bind(address: &str) -> Result<TcpListener, String> {
    let parsed: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let socket = Socket::new(Domain::for_address(parsed), Type::STREAM, None).map_err(|e| format!("socket: {e}"))?;
    socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    socket.bind(&parsed.into()).map_err(|e| format!("bind {address}: {e}"))?;
    socket.listen(4096).map_err(|e| format!("listen {address}: {e}"))?;
    Ok(socket.into())
}

/// Threads of the servers and the storm client: thousands of them, each needing little stack.
fn small_thread() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(64 * 1024)
}

fn listen(address: &str) -> Result<(), String> {
    let listener = bind(address)?;
    for mut stream in listener.incoming().flatten() {
        // A client gone already is not the listener's problem.
        let _answered = stream.write_all(b"ok\n");
    }
    Ok(())
}

/// Connects and reads the listener's first byte, both within `timeout`.
fn reached(address: SocketAddr, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else { return false };
    let mut byte = [0u8; 1];
    stream.set_read_timeout(Some(timeout)).is_ok() && matches!(stream.read(&mut byte), Ok(1))
}

fn millis(text: &str) -> Result<Duration, String> {
    text.parse().map(Duration::from_millis).map_err(|_| format!("`{text}` is not a number of milliseconds"))
}

fn connect(address: &str, every: &str, total: &str, timeout: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let (every, total, timeout) = (millis(every)?, millis(total)?, millis(timeout)?);
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut next = start;
    // Bounded in time and therefore in count (at most total / every attempts).
    while start.elapsed() < total {
        let at = start.elapsed().as_micros();
        let ok = reached(address, timeout);
        writeln!(out, "{at} {}", if ok { "ok" } else { "fail" }).map_err(|e| e.to_string())?;
        next += every;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn count(text: &str) -> Result<usize, String> {
    text.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(|| format!("`{text}` is not a count from 1 to 1024"))
}

fn rate(address: &str, threads: &str, total: &str, timeout: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let (threads, total, timeout) = (count(threads)?, millis(total)?, millis(timeout)?);
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                // Bounded in time; each attempt is bounded by the timeout.
                while start.elapsed() < total {
                    if reached(address, timeout) {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.join().map_err(|_| "a client thread panicked".to_string())?;
        ok += o;
        failed += f;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{ok} {failed} {:.0}", ok as f64 / seconds);
    Ok(())
}

fn bulk_serve(address: &str) -> Result<(), String> {
    let listener = bind(address)?;
    for mut stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let zeros = [0u8; 65536];
            // Ends when the peer goes (a write fails).
            while stream.write_all(&zeros).is_ok() {}
        });
    }
    Ok(())
}

fn bulk_get(address: &str, connections: &str, total: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let (connections, total) = (count(connections)?, millis(total)?);
    let start = Instant::now();
    let readers: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else { return 0u64 };
                let _bounded = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = vec![0u8; 65536];
                let mut bytes = 0u64;
                while start.elapsed() < total {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => bytes += n as u64,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                bytes
            })
        })
        .collect();
    let mut per: Vec<u64> = Vec::new();
    for reader in readers {
        per.push(reader.join().map_err(|_| "a reader thread panicked".to_string())?);
    }
    let bytes: u64 = per.iter().sum();
    let seconds = start.elapsed().as_secs_f64();
    println!("{bytes} {:.0} {}", bytes as f64 * 8.0 / seconds / 1e6, per.iter().filter(|&&b| b > 0).count());
    Ok(())
}

fn echo_serve(address: &str) -> Result<(), String> {
    let listener = bind(address)?;
    for mut stream in listener.incoming().flatten() {
        // A thread that cannot start drops its connection: the client sees it and counts it.
        let _started = small_thread().spawn(move || {
            let Ok(peer) = stream.peer_addr() else { return };
            if writeln!(stream, "{}", peer.ip()).is_err() {
                return;
            }
            let mut buf = [0u8; 512];
            // Ends when the peer goes.
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// The greeting line of a new connection (one byte at a time: nothing after it is consumed).
fn greeting(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 64 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => return String::from_utf8(line).ok(),
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    None
}

fn hold(address: &str, connections: &str, wait: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let (connections, wait) = (count(connections)?, millis(wait)?);
    let timeout = Duration::from_secs(1);
    let mut open: Vec<(TcpStream, String)> = Vec::new();
    for _ in 0..connections {
        let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else { continue };
        if stream.set_read_timeout(Some(timeout)).is_err() {
            continue;
        }
        if let Some(greeted) = greeting(&mut stream) {
            open.push((stream, greeted));
        }
    }
    std::thread::sleep(wait);
    let mut per: std::collections::BTreeMap<String, (usize, usize)> = std::collections::BTreeMap::new();
    for (mut stream, greeted) in open {
        let mut echo = [0u8; 5];
        let alive = stream.write_all(b"ping\n").is_ok() && stream.read_exact(&mut echo).is_ok() && &echo == b"ping\n";
        let entry = per.entry(greeted).or_default();
        entry.0 += usize::from(alive);
        entry.1 += 1;
    }
    for (greeted, (alive, opened)) in per {
        println!("{greeted} {alive} {opened}");
    }
    Ok(())
}

/// What a storm client reports to the printer.
enum StormEvent {
    /// Connection `id` is established, after these failed attempts.
    Up { at: Duration, id: usize, failures: Failures },
    /// Connection `id` broke or its heartbeat went unanswered.
    Lost { at: Duration, id: usize },
}

/// Failed connection attempts, by how they failed.
#[derive(Default, Clone, Copy)]
struct Failures {
    refused: u32,
    timed_out: u32,
    other: u32,
}

/// Heartbeat period of a storm connection, and how long its echo may take.
const BEAT: Duration = Duration::from_secs(1);
/// How long a connect, and then the greeting, may take: an API client's TLS handshake timeout. A
/// shorter one makes clients give up on connections the balancer has not accepted yet and queue
/// new ones behind them, a collapse of the bench's making.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two failed attempts of one client (the first retry is immediate).
const RETRY: Duration = Duration::from_millis(100);

fn storm(address: &str, connections: &str, total: &str) -> Result<(), String> {
    let address: SocketAddr = address.parse().map_err(|_| format!("`{address}` is not ip:port"))?;
    let connections: usize = connections
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| format!("`{connections}` is not a count from 1 to 10000"))?;
    let total = millis(total)?;
    let start = Instant::now();
    let (events, received) = std::sync::mpsc::channel();
    for id in 0..connections {
        let events = events.clone();
        // Heartbeats spread over the second, as independent clients' are.
        let phase = BEAT.mul_f64(id as f64 / connections as f64);
        small_thread().spawn(move || storm_client(id, address, start, total, phase, &events)).map_err(|e| format!("thread {id}: {e}"))?;
    }
    drop(events);
    let mut out = std::io::stdout().lock();
    for event in received {
        let line = match event {
            StormEvent::Up { at, id, failures } => {
                format!("{} up {id} {} {} {}", at.as_micros(), failures.refused, failures.timed_out, failures.other)
            }
            StormEvent::Lost { at, id } => format!("{} lost {id}", at.as_micros()),
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One storm connection until `total`: connect (retrying), then heartbeats until one fails.
fn storm_client(
    id: usize,
    address: SocketAddr,
    start: Instant,
    total: Duration,
    phase: Duration,
    events: &std::sync::mpsc::Sender<StormEvent>,
) {
    while start.elapsed() < total {
        let mut failures = Failures::default();
        let mut stream = loop {
            match storm_open(address) {
                Ok(stream) => break stream,
                Err(kind) => {
                    match kind {
                        std::io::ErrorKind::ConnectionRefused => failures.refused += 1,
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => failures.timed_out += 1,
                        _ => failures.other += 1,
                    }
                    if start.elapsed() >= total {
                        return;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        };
        if events.send(StormEvent::Up { at: start.elapsed(), id, failures }).is_err() {
            return;
        }
        // The first beat at this client's phase of the second, then one every BEAT.
        let mut next = Instant::now() + phase;
        loop {
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            next += BEAT;
            if start.elapsed() >= total {
                return;
            }
            let mut echo = [0u8; 2];
            if stream.write_all(b"h\n").is_err() || stream.read_exact(&mut echo).is_err() {
                let _sent = events.send(StormEvent::Lost { at: start.elapsed(), id });
                break;
            }
        }
    }
}

/// Connects and reads the echo server's greeting, each within `OPEN_TIMEOUT`; then echoes must
/// come within `BEAT`.
fn storm_open(address: SocketAddr) -> Result<TcpStream, std::io::ErrorKind> {
    let mut stream = TcpStream::connect_timeout(&address, OPEN_TIMEOUT).map_err(|e| e.kind())?;
    stream.set_read_timeout(Some(OPEN_TIMEOUT)).map_err(|e| e.kind())?;
    // The greeting, a byte at a time up to its newline: closed before it is an "other" failure.
    let mut byte = [0u8; 1];
    for _ in 0..64 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => {
                stream.set_read_timeout(Some(BEAT)).map_err(|e| e.kind())?;
                return Ok(stream);
            }
            Ok(1) => {}
            Ok(_) => return Err(std::io::ErrorKind::UnexpectedEof),
            Err(e) => return Err(e.kind()),
        }
    }
    Err(std::io::ErrorKind::InvalidData)
}

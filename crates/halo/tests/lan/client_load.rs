//! Client load from inside a network namespace, bounded in count and time: a connector opening
//! a new connection every period (each must be greeted within a timeout), and long-lived streams
//! sending a byte every period and expecting it back. Each counts what failed and when.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spawns `f` on a thread that entered the namespace `ns` (its sockets belong there).
pub fn spawn_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// What the connector saw.
#[derive(Debug, Default)]
pub struct Connects {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Milliseconds since the start of each failure, and why.
    pub failures: Mutex<Vec<(u128, String)>>,
}

/// Opens a connection to `target` every `every`, until `stop` or `limit` attempts; each must
/// be greeted (one line) within `timeout`.
pub fn connector(
    ns: &str,
    target: SocketAddr,
    every: Duration,
    limit: u64,
    stop: Arc<AtomicBool>,
) -> (Arc<Connects>, std::thread::JoinHandle<()>) {
    let seen = Arc::new(Connects::default());
    let counted = Arc::clone(&seen);
    let handle = spawn_in_ns(ns, move || {
        let start = Instant::now();
        let timeout = Duration::from_secs(2);
        for attempt in 0..limit {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let due = start + every * attempt as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let greeted = TcpStream::connect_timeout(&target, timeout).and_then(|s| {
                s.set_read_timeout(Some(timeout))?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                if line.is_empty() { Err(std::io::Error::other("closed without a greeting")) } else { Ok(()) }
            });
            match greeted {
                Ok(()) => counted.ok.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    counted.failures.lock().expect("lock").push((start.elapsed().as_millis(), e.to_string()));
                    counted.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    });
    (seen, handle)
}

/// What the streams saw.
#[derive(Debug, Default)]
pub struct Streams {
    /// Streams that were greeted and echoed until told to stop.
    pub alive: AtomicU64,
    /// Streams cut (or never opened), with when (ms since start) and why.
    pub cut: Mutex<Vec<(usize, u128, String)>>,
    /// Bytes echoed, all streams together.
    pub echoed: AtomicU64,
}

/// `count` streams to `target`, each sending a byte every `every` and expecting it back, until
/// `stop` (or `limit` has passed); then each closes.
pub fn streams(
    ns: &str,
    target: SocketAddr,
    count: usize,
    every: Duration,
    limit: Duration,
    stop: Arc<AtomicBool>,
) -> (Arc<Streams>, Vec<std::thread::JoinHandle<()>>) {
    let seen = Arc::new(Streams::default());
    let handles = (0..count)
        .map(|i| {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            spawn_in_ns(ns, move || {
                let start = Instant::now();
                let outcome = (|| -> std::io::Result<()> {
                    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
                    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    let mut greeting = String::new();
                    reader.read_line(&mut greeting)?;
                    let mut writer = stream;
                    while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
                        writer.write_all(b"b")?;
                        let mut byte = [0u8; 1];
                        reader.read_exact(&mut byte)?;
                        seen.echoed.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(every);
                    }
                    Ok(())
                })();
                match outcome {
                    Ok(()) => {
                        seen.alive.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => seen.cut.lock().expect("lock").push((i, start.elapsed().as_millis(), e.to_string())),
                }
            })
        })
        .collect();
    (seen, handles)
}

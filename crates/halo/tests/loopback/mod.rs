//! Shared by the tests of one daemon on loopback: the daemon (started with its config and pid
//! file, its output in a log, ended by its PID when dropped), free ports, bounded waits, and a
//! request to its status endpoint. Loopback only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `halo run` of a test, ended by its PID when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Runs `halo run -c config --pid-file pid_file`, its output in `log`.
    pub fn start(config: &Path, pid_file: &Path, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(["run", "-c", &config.to_string_lossy(), "--pid-file", &pid_file.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn halo");
        Self { child, log }
    }

    /// What it wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.child.kill().and_then(|()| self.child.wait().map(drop)) {
            eprintln!("warning: could not end halo {}: {e}", self.child.id());
        }
    }
}

/// A loopback port free now.
pub fn free() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

/// Polls `condition` every 20 ms for at most `limit`.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A GET of the status endpoint, with the bearer token when given: (status code, body).
pub fn get(status: SocketAddr, path: &str, token: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(status).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    (head.split_whitespace().nth(1).unwrap_or("").to_string(), body.to_string())
}

/// A server that answers each connection's first line with its name, then echoes; it stops
/// accepting (its port closed) when `open` turns false, and listens again when it turns true.
pub struct NamedServer {
    pub address: SocketAddr,
    pub open: Arc<AtomicBool>,
}

impl NamedServer {
    pub fn start(name: &'static str) -> Self {
        let address = free();
        let open = Arc::new(AtomicBool::new(true));
        let listening = Arc::clone(&open);
        std::thread::spawn(move || {
            loop {
                if !listening.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let Ok(listener) = TcpListener::bind(address) else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                listener.set_nonblocking(true).expect("nonblocking");
                while listening.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            std::thread::spawn(move || serve(stream, name));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Self { address, open }
    }
}

fn serve(stream: TcpStream, name: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        if writer.write_all(format!("{name} {line}").as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

//! Sockets of the test process made inside a network namespace (a thread that entered it),
//! and a TCP server there that greets each connection with a line and then echoes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Runs `f` on a thread that entered the namespace `ns`: sockets it makes belong to `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// A server inside a namespace: greets each connection with `greeting(peer)`, then echoes
/// until the client closes (or 60 s pass quiet). Stops accepting when dropped.
pub struct GreetingServer {
    stop: Arc<AtomicBool>,
}

impl GreetingServer {
    pub fn start(ns: &str, address: &str, greeting: fn(SocketAddr, &str) -> String, tag: &'static str) -> Self {
        let address: SocketAddr = address.parse().expect("address");
        let listener = in_ns(ns, move || TcpListener::bind(address).expect("bind in namespace"));
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        std::thread::spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                            let _ = writeln!(stream, "{}", greeting(peer, tag));
                            let mut buf = [0u8; 256];
                            while let Ok(n) = stream.read(&mut buf) {
                                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { stop }
    }
}

impl Drop for GreetingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

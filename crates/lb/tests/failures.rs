//! Connect failures on the data path: a connect that timed out goes to another server at once
//! (the path is gone: retrying it doubles the client's wait), a refused one is retried on the
//! same server first; neither flips the server's health by itself, they make its check run now.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use halo_config::{Balance, CheckKind};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// A server on loopback that accepts while `accepting`, then stops: its accept queue (one entry)
/// fills and further connects to it hang until they time out, a black hole inside loopback.
struct BlackHole {
    address: SocketAddr,
    accepting: Arc<AtomicBool>,
    filler: Vec<std::net::TcpStream>,
}

impl BlackHole {
    fn start() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("bind");
        socket.listen(1).expect("listen");
        socket.set_nonblocking(true).expect("non-blocking");
        let listener: std::net::TcpListener = socket.into();
        let address = listener.local_addr().expect("address");
        let accepting = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&accepting);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: 60 s at most.
            for _ in 0..6000 {
                if !flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok((stream, _)) = listener.accept() {
                    held.push(stream);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Keeps the listener open (and its queue full) until the thread ends.
            std::thread::sleep(Duration::from_secs(30));
        });
        Self { address, accepting, filler: Vec::new() }
    }

    /// Stops accepting and fills the accept queue.
    fn close(&mut self) {
        self.accepting.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..4 {
            let connected = std::net::TcpStream::connect_timeout(&self.address, Duration::from_millis(200));
            match connected {
                Ok(stream) => self.filler.push(stream),
                Err(_) => return,
            }
        }
    }
}

async fn echo_through(front: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(front).await.map_err(|e| e.to_string())?;
    stream.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut byte))
        .await
        .map_err(|_| "no echo".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[tokio::test]
async fn a_connect_that_times_out_goes_to_another_server_at_once() {
    let mut hole = BlackHole::start();
    let (echo, _task) = echo_server().await;
    let mut check = health(CheckKind::Tcp);
    check.interval = Duration::from_secs(60);
    check.fall = 3;
    let mut config = config(&[("hole", hole.address, 1), ("echo", echo, 1)], Balance::RoundRobin, check);
    config.backends[0].retries = 1;
    config.backends[0].redispatch = true;
    config.backends[0].connect_timeout = Duration::from_millis(300);
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 2).await;
    hole.close();
    let front = config.frontends[0].binds[0];
    for i in 0..4 {
        echo_through(front).await.unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    let hole_stats = &balancer.backends[0].servers[0].stats;
    assert!(hole_stats.connect_errors.load(Ordering::Relaxed) >= 1, "no request met the black hole");
    assert_eq!(hole_stats.retries.load(Ordering::Relaxed), 0, "a timed-out connect was retried on the same server");
    assert!(hole_stats.redispatches.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_failed_connect_does_not_mark_the_server_down_by_itself_but_checks_it_now() {
    // A server that refuses (nothing listens), marked UP from a check long ago: a client's failed
    // connects (more than `fall`) make its check run at once, and the check marks it DOWN.
    let (echo, task) = echo_server().await;
    let mut check = health(CheckKind::Tcp);
    check.interval = Duration::from_secs(60);
    check.fall = 2;
    let mut config = config(&[("a", echo, 1)], Balance::RoundRobin, check);
    config.backends[0].retries = 3;
    config.backends[0].redispatch = false;
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let server = Arc::clone(&balancer.backends[0].servers[0]);
    assert_eq!(server.stats.flips.load(Ordering::Relaxed), 1);
    task.abort();
    // The stand-in's listener is gone with its task: connects are refused.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let front = config.frontends[0].binds[0];
    assert!(echo_through(front).await.is_err());
    // Four refused connects (1 + 3 retries) > fall, but they only ask for a check, and the
    // check (fast interval while in doubt) decides.
    for _ in 0..200 {
        if !server.is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!server.is_healthy(), "the check did not run at once: {}", server.reason());
    assert_eq!(server.reason(), "connect: refused");
}

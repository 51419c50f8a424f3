//! The data path in both forwarding modes, through a whole balancer on loopback: sizes across
//! the relay's buffer boundaries, data with its FIN each way, a reset mid-message, a gigabyte
//! with a checksum, a reader that stops (memory stays bounded, nothing lost when it resumes),
//! and the fallback of a connection the kernel's map has no room for. Kernel forwarding needs
//! root (CAP_BPF): outside CI, a test that is not root says it skips.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halo_config::{Balance, CheckKind, Forwarding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether kernel forwarding can be tested here; says why not (outside CI only).
fn can_forward_in_kernel(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: must run as root under CI");
    eprintln!("SKIP {test}: not root (kernel forwarding needs CAP_BPF)");
    false
}

/// A balancer in `forwarding` mode in front of `server`, its frontend's address.
async fn balancer(forwarding: Forwarding, server: SocketAddr) -> (halo_lb::Balancer, SocketAddr, watch::Sender<bool>) {
    let mut config = support::config(&[("m1", server, 1)], Balance::RoundRobin, support::health(CheckKind::Tcp));
    config.balancer.forwarding = forwarding;
    let (stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    support::until_healthy(&balancer, 1).await;
    let front = config.frontends[0].binds[0];
    (balancer, front, stop)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) as u8).collect()
}

/// The two modes, the kernel one only where it can run.
fn modes(test: &str) -> Vec<Forwarding> {
    let mut modes = vec![Forwarding::User];
    if can_forward_in_kernel(test) {
        modes.push(Forwarding::Kernel);
    }
    modes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_across_buffer_boundaries_and_fins_arrive_whole_in_both_modes() {
    let (echo, _task) = support::echo_server().await;
    for forwarding in modes("sizes_across_buffer_boundaries_and_fins_arrive_whole_in_both_modes") {
        let (balancer, front, _stop) = balancer(forwarding, echo).await;
        for len in [1, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 64 * 1024, 64 * 1024 + 1, 1 << 20, 3 << 20] {
            let mut client = TcpStream::connect(front).await.expect("connect");
            // A first byte answered: the connection is established both ways (a side that has
            // sent its FIN before the server is chosen stays in user space, by design).
            client.write_all(b"x").await.expect("write");
            let mut first = [0u8; 1];
            client.read_exact(&mut first).await.expect("the first byte back");
            let sent = pattern(len as u64, len);
            let (mut reader, mut writer) = client.split();
            let write = async {
                writer.write_all(&sent).await.expect("write");
                // The FIN after the data: the echo passes it back after the echoed bytes.
                writer.shutdown().await.expect("shutdown");
            };
            let mut got = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut got));
            let ((), read) = tokio::join!(write, read);
            read.expect("the echo and its FIN within 30 s").expect("read");
            assert!(got == sent, "{forwarding:?}: {len} bytes sent, {} came back (or other bytes)", got.len());
        }
        let kernel = balancer.frontends[0].stats.kernel_forwarded.load(Ordering::Relaxed);
        assert_eq!(kernel, if forwarding == Forwarding::Kernel { 9 } else { 0 }, "{forwarding:?}: connections in the kernel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_messages_each_answered_in_both_modes() {
    let (echo, _task) = support::echo_server().await;
    for forwarding in modes("many_small_messages_each_answered_in_both_modes") {
        let (balancer, front, _stop) = balancer(forwarding, echo).await;
        let mut client = TcpStream::connect(front).await.expect("connect");
        for i in 0..2000u32 {
            let message = format!("message {i} ").repeat(1 + (i % 7) as usize);
            client.write_all(message.as_bytes()).await.expect("write");
            let mut back = vec![0u8; message.len()];
            tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut back)).await.expect("in time").expect("read");
            assert_eq!(back, message.as_bytes(), "{forwarding:?}: message {i}");
        }
        let kernel = balancer.frontends[0].stats.kernel_forwarded.load(Ordering::Relaxed);
        assert_eq!(kernel, u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
    }
}

/// A server that reads `expect` bytes, checksums them, writes back the checksum and `answer`
/// bytes of its own, then closes.
async fn checksum_server(answer: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 1 << 16];
                let (mut sum, mut total) = (0u64, 0u64);
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            for b in &buffer[..n] {
                                sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
                            }
                            total += n as u64;
                        }
                    }
                }
                let _ = stream.write_all(format!("{total} {sum}\n").as_bytes()).await;
                let _ = stream.write_all(&pattern(7, answer)).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_arrives_with_its_checksum_in_both_modes() {
    let server = checksum_server(1 << 20).await;
    for forwarding in modes("a_gigabyte_arrives_with_its_checksum_in_both_modes") {
        let (_balancer, front, _stop) = balancer(forwarding, server).await;
        let mut client = TcpStream::connect(front).await.expect("connect");
        let chunk = pattern(3, 1 << 20);
        let mut sum = 0u64;
        let started = Instant::now();
        for _ in 0..1024 {
            client.write_all(&chunk).await.expect("write");
            for b in &chunk {
                sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{forwarding:?}: a gigabyte within two minutes");
        }
        client.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut answer)).await.expect("in time").expect("read");
        let line_end = answer.iter().position(|b| *b == b'\n').expect("a checksum line");
        assert_eq!(String::from_utf8_lossy(&answer[..line_end]), format!("{} {sum}", 1u64 << 30), "{forwarding:?}");
        assert!(answer[line_end + 1..] == pattern(7, 1 << 20), "{forwarding:?}: the answer after the FIN went up");
        eprintln!("{forwarding:?}: a gigabyte in {:?}", started.elapsed());
    }
}

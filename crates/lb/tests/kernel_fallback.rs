//! The kernel data path's map full: a connection it has no room for is relayed in user space,
//! whole, beside the one the kernel forwards, and the room comes back when that one ends. A test
//! binary of its own: the map's size comes from `HALO_TEST_KERNEL_SOCKETS` (test builds only),
//! which is process-wide. Needs root (CAP_BPF): outside CI, a test that is not root says it skips.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halo_config::{Balance, CheckKind, Forwarding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

#[test]
#[allow(unsafe_code)]
fn a_connection_the_map_has_no_room_for_stays_in_user_space() {
    if !support::can_forward_in_kernel("a_connection_the_map_has_no_room_for_stays_in_user_space") {
        return;
    }
    // SAFETY: the one test of this binary, before it starts a thread of its own: nothing reads
    // or writes the environment meanwhile. Room for one connection (two sockets).
    unsafe { std::env::set_var("HALO_TEST_KERNEL_SOCKETS", "2") };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(one_in_the_kernel_one_in_user_space());
}

async fn one_in_the_kernel_one_in_user_space() {
    let (echo, _task) = support::echo_server().await;
    let mut config = support::config(&[("m1", echo, 1)], Balance::RoundRobin, support::health(CheckKind::Tcp));
    config.balancer.forwarding = Forwarding::Kernel;
    config.balancer.kernel_after = Duration::ZERO;
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    support::until_healthy(&balancer, 1).await;
    let front = config.frontends[0].binds[0];
    let stats = &balancer.frontends[0].stats;
    let kernel = || stats.kernel_forwarded.load(Ordering::Relaxed);

    let mut first = TcpStream::connect(front).await.expect("connect");
    round_trip(&mut first, b"first").await;
    assert!(until(Duration::from_secs(5), || kernel() == 1).await, "the first connection is not in the kernel: {}", kernel());
    // The second one, while the first fills the map: its echo comes back all the same.
    let mut second = TcpStream::connect(front).await.expect("connect");
    round_trip(&mut second, b"second").await;
    // Its join was refused before its relay started: had it joined, the count says so by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(kernel(), 1, "connections in the kernel with room for one");
    assert_eq!(stats.current.load(Ordering::Relaxed), 2, "both open");
    let (a, b) = tokio::join!(exchange(first, 1), exchange(second, 2));
    assert!(a && b, "the first connection's echo whole: {a}; the second's: {b}");
    assert_eq!(kernel(), 1, "connections in the kernel with room for one");
    assert!(until(Duration::from_secs(10), || stats.current.load(Ordering::Relaxed) == 0).await, "both ended");

    // The first one's room is free again.
    let mut third = TcpStream::connect(front).await.expect("connect");
    round_trip(&mut third, b"third").await;
    assert!(until(Duration::from_secs(5), || kernel() == 2).await, "the third connection is not in the kernel: {}", kernel());
    assert!(exchange(third, 3).await, "the third connection's echo whole");
}

/// Waits (at most `limit`, every 10 ms) until `condition` holds; whether it did.
async fn until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// Writes `message` and reads it back from the echo (bounded).
async fn round_trip(client: &mut TcpStream, message: &[u8]) {
    client.write_all(message).await.expect("write");
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back)).await.expect("the echo in 5 s").expect("read");
    assert_eq!(back, message);
}

/// Sends 3 MiB of a pattern of its own and the FIN through the echo: whether exactly those came
/// back before the FIN (within 30 s).
async fn exchange(mut client: TcpStream, seed: u64) -> bool {
    let sent: Vec<u8> = (0..3u64 << 17).flat_map(|word| mix((seed << 40) + word).to_le_bytes()).collect();
    let back = support::echo_through(&mut client, &sent).await;
    let whole = back.as_ref().is_ok_and(|got| *got == sent);
    if !whole {
        eprintln!("seed {seed}: {} of {} bytes back", back.as_ref().map_or_else(|e| e.clone(), |g| g.len().to_string()), sent.len());
    }
    whole
}

/// splitmix64: one word of a pattern that repeats nowhere.
fn mix(word: u64) -> u64 {
    let mut z = word.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

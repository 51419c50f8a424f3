//! The data path in both forwarding modes, through a whole balancer on loopback: sizes across
//! the relay's buffer boundaries, data with its FIN each way, a reset mid-message either way, a
//! gigabyte with a checksum, a reader that stops (memory stays bounded, nothing lost when it
//! resumes), the idle timeout, and the server's byte counters. (A connection the kernel's map has
//! no room for: kernel_fallback.rs.) Kernel forwarding needs root (CAP_BPF): outside CI, a test
//! that is not root says it skips.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use halo_config::{Balance, CheckKind, Config, Forwarding};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A balancer in `forwarding` mode in front of `server`, its frontend's address.
async fn balancer(forwarding: Forwarding, server: SocketAddr) -> (halo_lb::Balancer, SocketAddr, watch::Sender<bool>) {
    balancer_with(forwarding, server, |_| {}).await
}

/// As [`balancer`], the config changed by `tweak` first.
async fn balancer_with(
    forwarding: Forwarding,
    server: SocketAddr,
    tweak: impl FnOnce(&mut Config),
) -> (halo_lb::Balancer, SocketAddr, watch::Sender<bool>) {
    let mut config = support::config(&[("m1", server, 1)], Balance::RoundRobin, support::health(CheckKind::Tcp));
    config.balancer.forwarding = forwarding;
    // Every connection joins the kernel path at once (the default waits a second).
    config.balancer.kernel_after = Duration::ZERO;
    tweak(&mut config);
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
    if support::can_forward_in_kernel(test) {
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
            let got = support::echo_through(&mut client, &sent).await.unwrap_or_else(|e| panic!("{forwarding:?}: {len} bytes: {e}"));
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

/// Waits (bounded) until the balancer holds no connection of its frontend.
async fn until_no_connection(balancer: &halo_lb::Balancer, forwarding: Forwarding) {
    let current = &balancer.frontends[0].stats.current;
    let ended = until(Duration::from_secs(10), || current.load(Ordering::Relaxed) == 0).await;
    assert!(ended, "{forwarding:?}: {} connections still open 10 s later", current.load(Ordering::Relaxed));
}

/// How many connections of the balancer went into the kernel.
fn kernel_forwarded(balancer: &halo_lb::Balancer) -> u64 {
    balancer.frontends[0].stats.kernel_forwarded.load(Ordering::Relaxed)
}

/// splitmix64: one word of the test stream.
fn mix(word: u64) -> u64 {
    let mut z = word.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` bytes of an endless stream from `offset` on; no part of it repeats another, so a byte
/// lost, repeated or moved shows where it happened.
fn stream_at(offset: u64, len: usize) -> Vec<u8> {
    let start = offset & !7;
    let words = (offset + len as u64).div_ceil(8) - start / 8;
    let mut bytes = Vec::with_capacity(words as usize * 8);
    for word in 0..words {
        bytes.extend_from_slice(&mix(start / 8 + word).to_le_bytes());
    }
    let skip = (offset - start) as usize;
    bytes[skip..skip + len].to_vec()
}

/// What a connection to [`stalled_server`] received: how many bytes, the offset of the first that
/// is not the stream's, and the read error that ended it, if one did.
#[derive(Debug, PartialEq, Eq)]
struct Received {
    bytes: u64,
    first_wrong: Option<u64>,
    error: Option<String>,
}

/// A server whose connections read nothing until `reading` turns true, then read to their end,
/// comparing each byte with [`stream_at`]; each connection that brought bytes reports.
async fn stalled_server(reading: watch::Receiver<bool>) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (report, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (mut reading, report) = (reading.clone(), report.clone());
            tokio::spawn(async move {
                if reading.wait_for(|r| *r).await.is_err() {
                    return;
                }
                let mut buffer = vec![0u8; 1 << 16];
                let mut received = Received { bytes: 0, first_wrong: None, error: None };
                // At most 1 GiB of 1-byte reads: a stream that never ends is cut.
                for _ in 0..(1u64 << 30) {
                    match stream.read(&mut buffer).await {
                        Ok(0) => break,
                        Err(e) => {
                            received.error = Some(e.to_string());
                            break;
                        }
                        Ok(n) => {
                            if received.first_wrong.is_none()
                                && let Some(i) = buffer[..n].iter().zip(stream_at(received.bytes, n)).position(|(got, want)| *got != want)
                            {
                                received.first_wrong = Some(received.bytes + i as u64);
                            }
                            received.bytes += n as u64;
                        }
                    }
                }
                if received.bytes > 0 {
                    let _ = report.send(received);
                }
            });
        }
    });
    (address, reports)
}

/// What the client may have written while its server read nothing: far below what an unbounded
/// kernel queue takes in 3 s (gigabytes), above what the sockets' own buffers hold.
const STALLED_BOUND: u64 = 64 << 20;
/// What the client writes in all.
const STALLED_TOTAL: u64 = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_keeps_memory_bounded_and_loses_nothing_in_both_modes() {
    for forwarding in modes("a_reader_that_stops_keeps_memory_bounded_and_loses_nothing_in_both_modes") {
        let (resume, reading) = watch::channel(false);
        let (server, mut reports) = stalled_server(reading).await;
        let (balancer, front, _stop) = balancer(forwarding, server).await;
        // Non-blocking (as `into_std` leaves it): the client writes what the path takes, no more.
        let client = TcpStream::connect(front).await.expect("connect").into_std().expect("std");
        let started = Instant::now();
        let mut written = 0u64;
        let mut pending = Vec::new();
        while started.elapsed() < Duration::from_secs(3) && written <= STALLED_BOUND {
            if pending.is_empty() {
                pending = stream_at(written, 1 << 16);
            }
            match (&client).write(&pending) {
                Ok(n) => {
                    written += n as u64;
                    pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("{forwarding:?}: write after {written} bytes: {e}"),
            }
        }
        eprintln!(
            "{forwarding:?}: with the server reading nothing for 3 s, the client wrote {written} bytes ({:.1} MiB)",
            written as f64 / f64::from(1 << 20)
        );
        assert!(written <= STALLED_BOUND, "{forwarding:?}: the client wrote {written} bytes to a server that reads nothing");
        assert_eq!(kernel_forwarded(&balancer), u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
        resume.send(true).expect("the server listens");
        let mut client = TcpStream::from_std(client).expect("tokio");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while written < STALLED_TOTAL {
            let chunk = stream_at(written, (STALLED_TOTAL - written).min(1 << 20) as usize);
            let wrote = tokio::time::timeout_at(deadline, client.write_all(&chunk)).await;
            wrote.unwrap_or_else(|_| panic!("{forwarding:?}: {written} of {STALLED_TOTAL} bytes written in 60 s")).expect("write");
            written += chunk.len() as u64;
        }
        client.shutdown().await.expect("shutdown");
        let received =
            tokio::time::timeout(Duration::from_secs(60), reports.recv()).await.expect("the server's end within 60 s").expect("a report");
        assert_eq!(received, Received { bytes: STALLED_TOTAL, first_wrong: None, error: None }, "{forwarding:?}");
        until_no_connection(&balancer, forwarding).await;
    }
}

/// A server whose connections read `cut` bytes, then reset (`SO_LINGER` 0, closed); each
/// connection that got that far says so.
async fn resetting_server(cut: usize) -> (SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (report, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let report = report.clone();
            tokio::spawn(async move {
                let mut part = vec![0u8; cut];
                // Health checks connect and close: they never get that far.
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut part)).await {
                    socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("linger");
                    drop(stream);
                    let _ = report.send(());
                }
            });
        }
    });
    (address, reports)
}

/// A server that, once a connection has sent 2 bytes, writes [`stream_at`] (its first MiB over
/// and over, up to a gigabyte) while it reads; each such connection reports how that ended.
async fn talking_server() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (report, reports) = mpsc::unbounded_channel();
    let chunk = std::sync::Arc::new(stream_at(0, 1 << 20));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (report, chunk) = (report.clone(), std::sync::Arc::clone(&chunk));
            tokio::spawn(async move {
                let mut request = [0u8; 2];
                if stream.read_exact(&mut request).await.is_err() {
                    return;
                }
                let (mut reader, mut writer) = stream.into_split();
                let writing = async {
                    for _ in 0..1024 {
                        writer.write_all(&chunk).await?;
                    }
                    Ok::<_, std::io::Error>(())
                };
                let reading = async {
                    let mut buffer = [0u8; 1024];
                    for _ in 0..(1 << 20) {
                        match reader.read(&mut buffer).await {
                            Ok(0) => return "the read found the end".to_string(),
                            Err(e) => return format!("the read failed: {e}"),
                            Ok(_) => {}
                        }
                    }
                    "the client kept writing".to_string()
                };
                let ended = tokio::time::timeout(Duration::from_secs(60), async {
                    tokio::select! {
                        written = writing => match written {
                            Ok(()) => "the server wrote a whole gigabyte".to_string(),
                            Err(e) => format!("the write failed: {e}"),
                        },
                        read = reading => read,
                    }
                })
                .await;
                let _ = report.send(ended.unwrap_or_else(|_| "nothing ended in 60 s".to_string()));
            });
        }
    });
    (address, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mid_message_ends_both_sides_in_both_modes() {
    /// A message smaller than the sockets' buffers.
    const SHORT: usize = 100 * 1024;
    const CUT: usize = 1000;
    let (resetting, mut resets) = resetting_server(CUT).await;
    let (talking, mut talks) = talking_server().await;
    for forwarding in modes("a_reset_mid_message_ends_both_sides_in_both_modes") {
        // The server resets after reading part of a message the client is still writing.
        let (first, front, stop) = balancer(forwarding, resetting).await;
        // A message that fits the sockets' buffers: written whole, then only read, so that the
        // reset reaches the read (a writer half would take it first and leave the read a bare end).
        let mut client = TcpStream::connect(front).await.expect("connect");
        tokio::time::timeout(Duration::from_secs(10), client.write_all(&stream_at(0, SHORT)))
            .await
            .expect("written in 10 s")
            .expect("write");
        tokio::time::timeout(Duration::from_secs(10), resets.recv()).await.expect("the server read its part in 10 s").expect("reset");
        let reset = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
        let read = read.unwrap_or_else(|_| panic!("{forwarding:?}: the client's read still open 10 s after the server's reset"));
        eprintln!("{forwarding:?}: the server reset; the client's read ended in {:?}: {read:?}", reset.elapsed());
        assert!(got.is_empty(), "{forwarding:?}: the client read {} bytes the server never sent", got.len());
        // A reset, not a FIN: a FIN would pass for the end of a message.
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{forwarding:?}: the server's reset reached the client as {read:?}"
        );
        until_no_connection(&first, forwarding).await;
        let kernel = kernel_forwarded(&first);
        assert_eq!(kernel, u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
        drop((first, stop));

        // The client resets while the server is sending.
        let (balancer, front, _stop) = balancer(forwarding, talking).await;
        let mut client = TcpStream::connect(front).await.expect("connect");
        client.write_all(b"go").await.expect("write");
        let mut part = vec![0u8; 100 * 1024];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut part)).await.expect("a part in 10 s").expect("read");
        assert!(part == stream_at(0, part.len()), "{forwarding:?}: the part read is not what the server sent");
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger");
        drop(client);
        let reset = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), talks.recv()).await;
        let ended =
            ended.unwrap_or_else(|_| panic!("{forwarding:?}: the server still sending 10 s after the client's reset")).expect("a report");
        eprintln!("{forwarding:?}: the client reset; the server's side ended in {:?}: {ended}", reset.elapsed());
        assert!(
            ended.starts_with("the read failed") || ended.starts_with("the write failed"),
            "{forwarding:?}: the client's reset reached the server as: {ended}"
        );
        until_no_connection(&balancer, forwarding).await;
        let kernel = kernel_forwarded(&balancer);
        assert_eq!(kernel, u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kernel_connections_are_closed_after_the_idle_timeout() {
    let (echo, _task) = support::echo_server().await;
    for forwarding in modes("idle_kernel_connections_are_closed_after_the_idle_timeout") {
        let (balancer, front, _stop) =
            balancer_with(forwarding, echo, |config| config.backends[0].idle_timeout = Duration::from_secs(1)).await;
        let mut client = TcpStream::connect(front).await.expect("connect");
        client.write_all(b"hello").await.expect("write");
        let mut back = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut back)).await.expect("the echo in 5 s").expect("read");
        assert_eq!(&back, b"hello", "{forwarding:?}");
        let quiet = Instant::now();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got)).await;
        let after = quiet.elapsed();
        let read = read.unwrap_or_else(|_| panic!("{forwarding:?}: an idle connection still open 10 s later"));
        eprintln!("{forwarding:?}: an idle connection ended {after:?} after its last byte: {read:?}");
        assert!(read.is_ok() && got.is_empty(), "{forwarding:?}: not an end of file: {read:?}, {} bytes", got.len());
        assert!(
            after >= Duration::from_millis(900) && after <= Duration::from_secs(6),
            "{forwarding:?}: closed {after:?} after its last byte, idle timeout 1 s"
        );
        assert_eq!(kernel_forwarded(&balancer), u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
        until_no_connection(&balancer, forwarding).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_byte_counters_are_the_bytes_each_way_in_both_modes() {
    const UP: usize = (1 << 20) + 123;
    const ANSWER: usize = 300_001;
    let server = checksum_server(ANSWER).await;
    let sent = stream_at(0, UP);
    let sum = sent.iter().fold(0u64, |sum, b| sum.wrapping_mul(31).wrapping_add(u64::from(*b)));
    let mut expected = format!("{UP} {sum}\n").into_bytes();
    expected.extend_from_slice(&pattern(7, ANSWER));
    for forwarding in modes("the_servers_byte_counters_are_the_bytes_each_way_in_both_modes") {
        let (balancer, front, _stop) = balancer(forwarding, server).await;
        let mut client = TcpStream::connect(front).await.expect("connect");
        client.write_all(&sent[..1]).await.expect("write");
        // In the kernel before its FIN: a side that has finished before it joins stays in user space.
        let joined = until(Duration::from_secs(5), || kernel_forwarded(&balancer) == u64::from(forwarding == Forwarding::Kernel)).await;
        assert!(joined, "{forwarding:?}: {} connections in the kernel", kernel_forwarded(&balancer));
        client.write_all(&sent[1..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut answer)).await.expect("the answer in 30 s").expect("read");
        assert!(answer == expected, "{forwarding:?}: {} bytes came back, {} expected (or other bytes)", answer.len(), expected.len());
        let stats = &balancer.backends[0].servers[0].stats;
        let counted = || (stats.bytes_up.load(Ordering::Relaxed), stats.bytes_down.load(Ordering::Relaxed));
        until(Duration::from_secs(10), || counted() == (UP as u64, expected.len() as u64)).await;
        assert_eq!(counted(), (UP as u64, expected.len() as u64), "{forwarding:?}: the server's (bytes_up, bytes_down) 10 s after the end");
        until_no_connection(&balancer, forwarding).await;
        assert_eq!(kernel_forwarded(&balancer), u64::from(forwarding == Forwarding::Kernel), "{forwarding:?}: connections in the kernel");
    }
}

/// With the default `kernel_after` (1 s), a short connection never joins the kernel path and a
/// long one joins it while bytes flow both ways, none lost, duplicated or reordered at the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_joins_the_kernel_path_after_kernel_after_without_losing_a_byte() {
    if !support::can_forward_in_kernel("a_connection_joins_the_kernel_path_after_kernel_after_without_losing_a_byte") {
        return;
    }
    let (echo, _task) = support::echo_server().await;
    let (balancer, front, _stop) = balancer_with(Forwarding::Kernel, echo, |c| c.balancer.kernel_after = halo_config::KERNEL_AFTER).await;
    let mut short = TcpStream::connect(front).await.expect("connect");
    short.write_all(b"ping").await.expect("write");
    let mut back = [0u8; 4];
    short.read_exact(&mut back).await.expect("read");
    drop(short);
    assert_eq!(kernel_forwarded(&balancer), 0, "a connection shorter than kernel_after joined the kernel path");
    // A stream of numbered messages for 2.5 s: the switch happens in the middle of it.
    let mut client = TcpStream::connect(front).await.expect("connect");
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_millis(2500) && i < 1_000_000 {
        let message = format!("{i:012}").repeat(1 + (i % 50) as usize);
        client.write_all(message.as_bytes()).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut echoed)).await.expect("in time").expect("read");
        assert!(echoed == message.as_bytes(), "message {i} came back as something else");
        i += 1;
    }
    assert!(i > 100, "only {i} messages in 2.5 s");
    assert_eq!(kernel_forwarded(&balancer), 1, "the long connection joined the kernel path after {i} messages");
    // And a burst in flight at once, checked whole.
    let burst = pattern(11, 4 << 20);
    let (mut reader, mut writer) = client.split();
    let mut got = vec![0u8; burst.len()];
    let (wrote, read) = tokio::join!(writer.write_all(&burst), tokio::time::timeout(Duration::from_secs(30), reader.read_exact(&mut got)));
    wrote.expect("write");
    read.expect("in time").expect("read");
    assert!(got == burst, "the burst after the switch came back altered");
}

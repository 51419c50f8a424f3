//! The data path on its own, in both modes (splice through a pipe, and the copy fallback):
//! bytes both ways intact, FIN passed on in each direction, the idle timeout, a reset.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use halo_lb::proxy::{Ended, Mode, Pause, relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// No pause is ever asked for.
fn never() -> Pause {
    tokio::sync::watch::channel(false).1
}

/// Two connected pairs: (client, proxy's client side) and (proxy's server side, server).
async fn pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
    let (upstream, accepted_server) = tokio::join!(TcpStream::connect(address), listener.accept());
    (client.expect("client"), accepted.expect("accept").0, upstream.expect("upstream"), accepted_server.expect("accept").0)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn both_ways(mode: Mode) {
    const LEN: usize = 32 << 20;
    let (mut client, proxy_client, proxy_server, mut server) = pairs().await;
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (u, d) = (Arc::clone(&up), Arc::clone(&down));
    let relay = tokio::spawn(async move { relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&u, &d), mode, &never()).await });
    let (to_server, to_client) = (pattern(1, LEN), pattern(2, LEN));
    let (a, b) = (to_server.clone(), to_client.clone());
    let client_side = tokio::spawn(async move {
        let (mut r, mut w) = client.split();
        let send = async {
            w.write_all(&a).await.expect("client write");
            w.shutdown().await.expect("client FIN");
        };
        let mut got = Vec::new();
        let receive = r.read_to_end(&mut got);
        let ((), received) = tokio::join!(send, receive);
        received.expect("client read");
        got
    });
    let server_side = tokio::spawn(async move {
        let (mut r, mut w) = server.split();
        let send = async {
            w.write_all(&b).await.expect("server write");
            w.shutdown().await.expect("server FIN");
        };
        let mut got = Vec::new();
        let receive = r.read_to_end(&mut got);
        let ((), received) = tokio::join!(send, receive);
        received.expect("server read");
        got
    });
    let (at_client, at_server) = (client_side.await.expect("client"), server_side.await.expect("server"));
    assert!(at_server == to_server, "{mode:?}: server got other bytes");
    assert!(at_client == to_client, "{mode:?}: client got other bytes");
    let relayed = relay.await.expect("relay");
    assert_eq!(relayed.ended, Ended::Closed);
    // The connection's own counts match the shared counters it added to.
    assert_eq!((relayed.up, relayed.down), (LEN as u64, LEN as u64));
    assert_eq!(up.load(std::sync::atomic::Ordering::Relaxed), LEN as u64);
    assert_eq!(down.load(std::sync::atomic::Ordering::Relaxed), LEN as u64);
}

/// 32 MB each way, the relay paused once a megabyte has gone up (as for an upgrade) and a second relay started on
/// the same sockets (as the new process does): every byte arrives once, in order, and the two
/// relays' counts add up to all of them.
async fn paused_midway(mode: Mode) {
    const LEN: usize = 32 << 20;
    let (mut client, proxy_client, proxy_server, mut server) = pairs().await;
    let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (u, d) = (Arc::clone(&up), Arc::clone(&down));
    let (ask, pause) = tokio::sync::watch::channel(false);
    // The ends hold their writes (they go on reading) from the pause until the first relay has
    // returned: a relay pauses when both directions rest at once, which a stream that never stops
    // in either direction may not give it.
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = Arc::clone(&hold);
    let relays = tokio::spawn(async move {
        let first = relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&u, &d), mode, &pause).await;
        held.store(false, std::sync::atomic::Ordering::SeqCst);
        let second = relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&u, &d), mode, &never()).await;
        (first, second)
    });
    let (to_server, to_client) = (pattern(3, LEN), pattern(4, LEN));
    let (a, b) = (to_server.clone(), to_client.clone());
    let ends = [client_end(&mut client, a, &hold), client_end(&mut server, b, &hold)];
    // Paused once a megabyte has gone up: mid-stream, whatever the machine's speed.
    let pausing = async {
        while up.load(std::sync::atomic::Ordering::Relaxed) < 1 << 20 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        hold.store(true, std::sync::atomic::Ordering::SeqCst);
        ask.send_replace(true);
    };
    let ([at_client, at_server], ()) = tokio::join!(futures_join(ends), pausing);
    assert!(at_server == to_server, "{mode:?}: server got other bytes across the pause");
    assert!(at_client == to_client, "{mode:?}: client got other bytes across the pause");
    let (first, second) = relays.await.expect("relays");
    assert_eq!(first.ended, Ended::Paused, "{mode:?}: the pause came after the end: nothing was tested");
    assert!(first.up < LEN as u64, "{mode:?}: paused after the whole upload: not midway");
    assert_eq!(second.ended, Ended::Closed);
    assert_eq!((first.up + second.up, first.down + second.down), (LEN as u64, LEN as u64));
}

/// One end of a stream: sends `bytes` (64 KiB at a time, none while `hold` is set) then FIN, and
/// reads everything until the other's FIN.
async fn client_end(stream: &mut TcpStream, bytes: Vec<u8>, hold: &std::sync::atomic::AtomicBool) -> Vec<u8> {
    let (mut r, mut w) = stream.split();
    let send = async {
        for chunk in bytes.chunks(64 << 10) {
            while hold.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            w.write_all(chunk).await.expect("write");
        }
        w.shutdown().await.expect("FIN");
    };
    let mut got = Vec::new();
    let ((), received) = tokio::join!(send, r.read_to_end(&mut got));
    received.expect("read");
    got
}

async fn futures_join<F: std::future::Future<Output = Vec<u8>>>([a, b]: [F; 2]) -> [Vec<u8>; 2] {
    let (a, b) = tokio::join!(a, b);
    [a, b]
}

/// A pause asked while one direction cannot reach rest (its reader takes nothing and 32 MB wait
/// for it) does not stop the other: the server still reaches the client; called off, the relay
/// goes on to its end with every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_that_one_direction_cannot_reach_stops_neither() {
    const LEN: usize = 32 << 20;
    let (mut client, proxy_client, proxy_server, mut server) = pairs().await;
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (ask, pause) = tokio::sync::watch::channel(false);
    let relaying = relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&up, &down), Mode::Splice, &pause);
    let upload = pattern(5, LEN);
    let scenario = async {
        let (mut client_read, mut client_write) = client.split();
        let sending = async {
            client_write.write_all(&upload).await.expect("client write");
            client_write.shutdown().await.expect("client FIN");
        };
        let rest = async {
            // The server reads nothing yet: once every buffer on the way is full, the upload's
            // direction is stuck holding bytes it read (the count stops growing).
            let mut last = u64::MAX;
            while up.load(std::sync::atomic::Ordering::Relaxed) != last {
                last = up.load(std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            ask.send_replace(true);
            tokio::time::sleep(Duration::from_millis(200)).await;
            server.write_all(b"still here").await.expect("server write");
            let mut ten = [0u8; 10];
            let heard = tokio::time::timeout(Duration::from_secs(5), client_read.read_exact(&mut ten)).await;
            assert!(matches!(heard, Ok(Ok(_))) && &ten == b"still here", "the server's direction stopped at the pause: {heard:?}");
            ask.send_replace(false);
            let mut got = Vec::new();
            server.shutdown().await.expect("server FIN");
            server.read_to_end(&mut got).await.expect("server read");
            assert!(got == upload, "the upload lost bytes");
        };
        tokio::join!(sending, rest);
    };
    let (relayed, ()) = tokio::join!(relaying, scenario);
    assert_eq!(relayed.ended, Ended::Closed);
    assert_eq!(relayed.up, LEN as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_paused_midway_hands_over_every_byte_splice() {
    paused_midway(Mode::Splice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_paused_midway_hands_over_every_byte_copy() {
    paused_midway(Mode::Copy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_moves_bytes_both_ways_and_passes_fin() {
    both_ways(Mode::Splice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fallback_moves_bytes_both_ways_and_passes_fin() {
    both_ways(Mode::Copy).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout() {
    for mode in [Mode::Splice, Mode::Copy] {
        let (mut client, proxy_client, proxy_server, mut server) = pairs().await;
        let counters = (AtomicU64::new(0), AtomicU64::new(0));
        let started = std::time::Instant::now();
        let pause = never();
        let relaying = relay((&proxy_client, &proxy_server), Duration::from_millis(300), (&counters.0, &counters.1), mode, &pause);
        let traffic = async {
            client.write_all(b"ping").await.expect("write");
            let mut four = [0u8; 4];
            server.read_exact(&mut four).await.expect("read");
        };
        let (ended, ()) = tokio::join!(relaying, traffic);
        // The relay's owner closes both sockets once it returns.
        drop((proxy_client, proxy_server));
        assert_eq!(ended.ended, Ended::Idle, "{mode:?}");
        assert!(started.elapsed() >= Duration::from_millis(300), "{mode:?}: {:?}", started.elapsed());
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.map(|_| rest.len()).unwrap_or(0), 0, "the client is closed");
    }
}

#[tokio::test]
async fn a_reset_ends_both_sides() {
    for mode in [Mode::Splice, Mode::Copy] {
        let (client, proxy_client, proxy_server, mut server) = pairs().await;
        let counters = (AtomicU64::new(0), AtomicU64::new(0));
        // SO_LINGER 0: closing sends RST instead of FIN.
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger");
        drop(client);
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&counters.0, &counters.1), mode, &never()),
        )
        .await
        .expect("no hang");
        // The relay's owner closes both sockets once it returns.
        drop((proxy_client, proxy_server));
        assert_eq!(ended.ended, Ended::Error, "{mode:?}");
        // The server side is closed too (EOF or reset, either is fine), not left hanging.
        let mut rest = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut rest)).await;
        assert!(outcome.is_ok(), "{mode:?}: the server side was left open");
        assert!(rest.is_empty(), "{mode:?}");
    }
}

/// Small messages, as API traffic is: each is read whole into the small buffer and the side goes
/// back to waiting at once. Every one of a thousand request/answer exchanges of growing size
/// must arrive (none stranded by a readiness cleared too early), and a last message sent
/// together with the FIN must arrive before the FIN, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_and_a_message_with_its_fin_all_arrive() {
    for mode in [Mode::Splice, Mode::Copy] {
        let (mut client, proxy_client, proxy_server, mut server) = pairs().await;
        let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let relay =
            tokio::spawn(async move { relay((&proxy_client, &proxy_server), Duration::from_secs(30), (&up, &down), mode, &never()).await });
        let echo = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0;
            loop {
                let n = server.read(&mut buf).await.expect("server read");
                if n == 0 {
                    server.shutdown().await.expect("server FIN");
                    return total;
                }
                total += n;
                server.write_all(&buf[..n]).await.expect("server write");
            }
        });
        let mut sent = 0;
        for round in 0..1000usize {
            // 1 byte to a little over the small buffer, so both paths are taken.
            let message = pattern(round as u8, 1 + (round * 37) % (20 * 1024));
            client.write_all(&message).await.expect("client write");
            let mut answer = vec![0u8; message.len()];
            let answered = tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer)).await;
            assert!(matches!(answered, Ok(Ok(_))), "{mode:?}: round {round} ({} bytes) got no answer", message.len());
            assert!(answer == message, "{mode:?}: round {round} answered other bytes");
            sent += message.len();
        }
        // The last message and the FIN leave together.
        let last = pattern(7, 300);
        client.write_all(&last).await.expect("client write");
        client.shutdown().await.expect("client FIN");
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await;
        assert!(matches!(ended, Ok(Ok(_))), "{mode:?}: the FIN after the last message never came back");
        assert!(rest == last, "{mode:?}: the last message did not come back whole before the FIN");
        assert_eq!(echo.await.expect("echo"), sent + last.len());
        assert_eq!(relay.await.expect("relay").ended, Ended::Closed);
    }
}

//! The balancer on loopback against API-server stand-ins with real TLS: spread and weights,
//! least connections, the server answering /readyz with 500 taken out of rotation, redispatch
//! with no client error while a server is dead (its checks decide its health), check failure reasons, half-close, a large
//! stream both ways byte for byte, the connection cap and its queue, no server at all.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use halo_config::{Balance, CheckKind, TlsVerify};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn counts(stand_ins: &[&StandIn]) -> Vec<u64> {
    stand_ins.iter().map(|s| s.requests()).collect()
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_by_weight() {
    let pki = pki(&["kubernetes"]);
    let (a, b, c) = (StandIn::start("a", &pki).await, StandIn::start("b", &pki).await, StandIn::start("c", &pki).await);
    let config = config(&[("a", a.address, 1), ("b", b.address, 1), ("c", c.address, 2)], Balance::RoundRobin, health(CheckKind::Https));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 3).await;
    let front = config.frontends[0].binds[0];
    for _ in 0..40 {
        get(front, "/version").await.expect("request");
    }
    assert_eq!(counts(&[&a, &b, &c]), [10, 10, 20]);
}

#[tokio::test]
async fn a_server_answering_500_on_readyz_gets_no_traffic() {
    let pki = pki(&["kubernetes"]);
    let (a, b, c) = (StandIn::start("a", &pki).await, StandIn::start("b", &pki).await, StandIn::start("c", &pki).await);
    // TLS and TCP keep working on b: only the HTTP check can see that it is sick.
    b.set(Mode::Sick);
    let config = config(&[("a", a.address, 1), ("b", b.address, 1), ("c", c.address, 1)], Balance::RoundRobin, health(CheckKind::Https));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 2).await;
    let front = config.frontends[0].binds[0];
    for _ in 0..30 {
        get(front, "/version").await.expect("request");
    }
    assert_eq!(counts(&[&a, &b, &c]), [15, 0, 15]);
    assert_eq!(balancer.backends[0].servers[1].reason(), "HTTP 500");
    // Healthy again: back in rotation after `rise` passing checks.
    b.set(Mode::Healthy);
    until_healthy(&balancer, 3).await;
    for _ in 0..30 {
        get(front, "/version").await.expect("request");
    }
    assert!(b.requests() > 0, "{:?}", counts(&[&a, &b, &c]));
}

#[tokio::test]
async fn check_failures_say_why() {
    let pki = pki(&["kubernetes"]);
    let other_ca = support::pki(&["kubernetes"]);
    let (hang, reset) = (StandIn::start("hang", &pki).await, StandIn::start("reset", &pki).await);
    hang.set(Mode::Hang);
    reset.set(Mode::Reset);
    let dead = StandIn::start("dead", &pki).await;
    dead.die();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ca_dir = tempfile::tempdir().expect("dir");
    let ca_file = ca_dir.path().join("ca.crt");
    std::fs::write(&ca_file, &other_ca.ca_pem).expect("ca");
    let good = StandIn::start("good", &pki).await;
    let mut check = health(CheckKind::Https);
    check.timeout = Duration::from_millis(300);
    let mut config =
        config(&[("hang", hang.address, 1), ("reset", reset.address, 1), ("dead", dead.address, 1)], Balance::RoundRobin, check.clone());
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped.clone()).expect("start");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reasons: Vec<String> = balancer.backends[0].servers.iter().map(|s| s.reason()).collect();
    assert_eq!(reasons[0], "timeout after 300ms");
    assert_eq!(reasons[1], "TLS: connection closed during the handshake");
    assert_eq!(reasons[2], "connect: refused");
    // Verified against a CA that did not sign the server's certificate.
    check.verify = TlsVerify::Ca { ca_file: ca_file.clone(), server_name: Some("kubernetes".to_string()) };
    config = support::config(&[("good", good.address, 1)], Balance::RoundRobin, check.clone());
    let wrong_ca = halo_lb::Balancer::start(&config, stopped.clone()).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wrong_ca.backends[0].servers[0].reason(), "TLS: unknown CA");
    // And against the right CA, with the name in the certificate.
    std::fs::write(&ca_file, &pki.ca_pem).expect("ca");
    let right_ca =
        halo_lb::Balancer::start(&support::config(&[("good", good.address, 1)], Balance::RoundRobin, check), stopped).expect("start");
    until_healthy(&right_ca, 1).await;
}

#[tokio::test]
async fn redispatch_hides_a_dead_server_from_every_client() {
    let pki = pki(&["kubernetes"]);
    let (a, b, c) = (StandIn::start("a", &pki).await, StandIn::start("b", &pki).await, StandIn::start("c", &pki).await);
    let mut check = health(CheckKind::Https);
    // Slow checks: the data path meets the dead server before the checker does.
    check.interval = Duration::from_secs(30);
    check.fast_interval = Duration::from_secs(30);
    let config = config(&[("a", a.address, 1), ("b", b.address, 1), ("c", c.address, 1)], Balance::RoundRobin, check);
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 3).await;
    c.die();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let front = config.frontends[0].binds[0];
    let mut failures = 0;
    for _ in 0..60 {
        if get(front, "/version").await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 0, "a client saw the dead server");
    assert_eq!(a.requests() + b.requests(), 60);
    let dead = &balancer.backends[0].servers[2];
    assert!(dead.stats.redispatches.load(Ordering::Relaxed) >= 1);
    // Clients' failed connects do not decide the server's health (only checks do, and they are
    // 30 s apart here): each asks for a check, no sooner than the fast interval.
    assert!(dead.stats.connect_errors.load(Ordering::Relaxed) >= 1);
}

/// One short connection through the balancer: connect, one byte echoed, closed; returns once
/// the balancer counts `open` connections again (bounded).
async fn one_short_connection(balancer: &halo_lb::Balancer, front: std::net::SocketAddr, open: u64) {
    let mut s = TcpStream::connect(front).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await.expect("echo");
    drop(s);
    let servers = &balancer.backends[0].servers;
    for _ in 0..200 {
        if servers.iter().map(|s| s.stats.current.load(Ordering::Relaxed)).sum::<u64>() == open {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the balancer still counts the closed connection");
}

/// Least connections sends new connections to the server with fewer open ones (while one server
/// holds a long connection, every short one goes to the other: round robin would alternate),
/// and takes turns among servers as loaded as each other (20 short connections one after the
/// other to two idle servers all went to the first).
#[tokio::test]
async fn least_connections_prefers_the_idle_server_and_takes_turns_on_ties() {
    let (echo_a, _ta) = echo_server().await;
    let (echo_b, _tb) = echo_server().await;
    let config = config(&[("a", echo_a, 1), ("b", echo_b, 1)], Balance::LeastConn, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 2).await;
    let front = config.frontends[0].binds[0];
    let servers = &balancer.backends[0].servers;
    let totals = || servers.iter().map(|s| s.stats.total.load(Ordering::Relaxed)).collect::<Vec<u64>>();
    let mut held = TcpStream::connect(front).await.expect("connect");
    held.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    held.read_exact(&mut one).await.expect("echo");
    let busy = servers.iter().position(|s| s.stats.current.load(Ordering::Relaxed) == 1).expect("the held connection's server");
    for _ in 0..4 {
        one_short_connection(&balancer, front, 1).await;
    }
    let after_held = totals();
    assert_eq!(after_held[busy], 1, "a short connection went to the busy server: {after_held:?}");
    assert_eq!(after_held[1 - busy], 4, "{after_held:?}");
    drop(held);
    for _ in 0..200 {
        if servers.iter().map(|s| s.stats.current.load(Ordering::Relaxed)).sum::<u64>() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..20 {
        one_short_connection(&balancer, front, 0).await;
    }
    let turns: Vec<u64> = totals().iter().zip(&after_held).map(|(now, before)| now - before).collect();
    assert!(turns.iter().all(|n| (9..=11).contains(n)), "idle servers did not take turns: {turns:?}");
}

#[tokio::test]
async fn half_close_is_passed_on() {
    let (echo, _task) = echo_server().await;
    let config = config(&[("echo", echo, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let mut s = TcpStream::connect(config.frontends[0].binds[0]).await.expect("connect");
    s.write_all(b"last words").await.expect("write");
    // FIN from the client: the server sees EOF, still answers, then closes its side.
    s.shutdown().await.expect("shutdown");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.expect("no hang").expect("read");
    assert_eq!(answer, b"last words");
}

/// A reproducible byte stream (xorshift), so both ends can compare without storing it.
fn stream_bytes(seed: u64, chunk: &mut [u8], state: &mut u64) {
    if *state == 0 {
        *state = seed;
    }
    for b in chunk.iter_mut() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *b = *state as u8;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_both_ways_arrives_intact() {
    const TOTAL: usize = 1 << 30;
    let (echo, _task) = echo_server().await;
    let config = config(&[("echo", echo, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let stream = TcpStream::connect(config.frontends[0].binds[0]).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        let (mut chunk, mut state) = (vec![0u8; 256 * 1024], 0u64);
        let mut sent = 0;
        while sent < TOTAL {
            stream_bytes(7, &mut chunk, &mut state);
            w.write_all(&chunk).await.expect("write");
            sent += chunk.len();
        }
        w.shutdown().await.expect("shutdown");
    });
    let (mut expected, mut state, mut got) = (vec![0u8; 256 * 1024], 0u64, vec![0u8; 256 * 1024]);
    let mut received = 0;
    let mut pending = 0; // bytes of `expected` already compared
    stream_bytes(7, &mut expected, &mut state);
    loop {
        let n = r.read(&mut got).await.expect("read");
        if n == 0 {
            break;
        }
        let mut offset = 0;
        while offset < n {
            let take = (expected.len() - pending).min(n - offset);
            assert_eq!(&got[offset..offset + take], &expected[pending..pending + take], "byte {} differs", received + offset);
            offset += take;
            pending += take;
            if pending == expected.len() {
                stream_bytes(7, &mut expected, &mut state);
                pending = 0;
            }
        }
        received += n;
    }
    writer.await.expect("writer");
    assert_eq!(received, TOTAL);
    let server = &balancer.backends[0].servers[0];
    assert_eq!(server.stats.bytes_up.load(Ordering::Relaxed), TOTAL as u64);
    assert_eq!(server.stats.bytes_down.load(Ordering::Relaxed), TOTAL as u64);
    eprintln!("1 GiB each way through the balancer in {:?}", started.elapsed());
}

#[tokio::test]
async fn the_connection_cap_queues_then_drops() {
    let (echo, _task) = echo_server().await;
    let mut config = config(&[("echo", echo, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    config.frontends[0].max_connections = 1;
    config.frontends[0].queue_timeout = Duration::from_millis(300);
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let front = config.frontends[0].binds[0];
    let mut first = TcpStream::connect(front).await.expect("connect");
    first.write_all(b"1").await.expect("write");
    let mut one = [0u8; 1];
    first.read_exact(&mut one).await.expect("served");
    let mut second = TcpStream::connect(front).await.expect("connect");
    second.write_all(b"2").await.expect("write");
    let mut buf = [0u8; 1];
    let outcome = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await.expect("closed, not hung");
    assert!(matches!(outcome, Ok(0) | Err(_)), "the queued connection was served: {outcome:?}");
    assert_eq!(balancer.frontends[0].stats.queue_drops.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn no_healthy_server_closes_the_client_at_once() {
    let pki = pki(&["kubernetes"]);
    let sick = StandIn::start("sick", &pki).await;
    sick.set(Mode::Sick);
    let config = config(&[("sick", sick.address, 1)], Balance::RoundRobin, health(CheckKind::Https));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(config.frontends[0].binds[0]).await.expect("connect");
    let mut buf = [0u8; 1];
    let outcome = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed");
    assert!(matches!(outcome, Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(balancer.frontends[0].stats.no_server.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains() {
    let (echo, _task) = echo_server().await;
    let config = config(&[("echo", echo, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let front = config.frontends[0].binds[0];
    let mut open = TcpStream::connect(front).await.expect("connect");
    open.write_all(b"x").await.expect("write");
    let mut one = [0u8; 1];
    open.read_exact(&mut one).await.expect("echo");
    stop.send(true).expect("stop");
    let drain = tokio::spawn(balancer.drain(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(front).await.is_err(), "still accepting after shutdown");
    // The established connection still works, then closes; the drain ends with it.
    open.write_all(b"y").await.expect("write");
    open.read_exact(&mut one).await.expect("still served");
    open.shutdown().await.expect("shutdown");
    let left = tokio::time::timeout(Duration::from_secs(5), drain).await.expect("drained").expect("task");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_client_certificate_passes_a_server_with_anonymous_auth_off() {
    let pki = pki(&["kubernetes"]);
    let strict = StandIn::start_requiring_client_cert("strict", &pki).await;
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, &pki.client_cert_pem).expect("cert");
    std::fs::write(&key, &pki.client_key_pem).expect("key");
    let (_stop, stopped) = watch::channel(false);
    // Without a certificate the server refuses the handshake.
    let anonymous = config(&[("strict", strict.address, 1)], Balance::RoundRobin, health(CheckKind::Https));
    let refused = halo_lb::Balancer::start(&anonymous, stopped.clone()).expect("start");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reason = refused.backends[0].servers[0].reason();
    assert!(!refused.backends[0].servers[0].is_healthy());
    assert_eq!(reason, "TLS: the server requires a client certificate");
    // With the client certificate it passes.
    let mut check = health(CheckKind::Https);
    check.client_cert = Some(halo_config::ClientCert { cert_file: cert, key_file: key });
    let with_cert =
        halo_lb::Balancer::start(&config(&[("strict", strict.address, 1)], Balance::RoundRobin, check), stopped).expect("start");
    until_healthy(&with_cert, 1).await;
}

/// A `tls` check (handshake only) fails against a server that requires a client certificate
/// when the check has none, and passes with one; against an ordinary server it passes. (TLS 1.3
/// refuses the missing certificate after the client's side of the handshake is done: the check
/// used to call that server up.)
#[tokio::test]
async fn a_tls_check_without_a_client_certificate_fails_a_server_that_requires_one() {
    let pki = pki(&["kubernetes"]);
    let strict = StandIn::start_requiring_client_cert("strict", &pki).await;
    let open = StandIn::start("open", &pki).await;
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, &pki.client_cert_pem).expect("cert");
    std::fs::write(&key, &pki.client_key_pem).expect("key");
    let (_stop, stopped) = watch::channel(false);
    let anonymous = config(&[("strict", strict.address, 1), ("open", open.address, 1)], Balance::RoundRobin, health(CheckKind::Tls));
    let balancer = halo_lb::Balancer::start(&anonymous, stopped.clone()).expect("start");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let servers = &balancer.backends[0].servers;
    assert!(!servers[0].is_healthy(), "a tls check without a certificate called the strict server up: {}", servers[0].reason());
    assert_eq!(servers[0].reason(), "TLS: the server requires a client certificate");
    assert!(servers[1].is_healthy(), "the ordinary server: {}", servers[1].reason());
    let mut check = health(CheckKind::Tls);
    check.client_cert = Some(halo_config::ClientCert { cert_file: cert, key_file: key });
    let with_cert = config(&[("strict", strict.address, 1)], Balance::RoundRobin, check);
    let passing = halo_lb::Balancer::start(&with_cert, stopped).expect("start");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(passing.backends[0].servers[0].is_healthy(), "{}", passing.backends[0].servers[0].reason());
}

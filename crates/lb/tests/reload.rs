//! Reload: a new config applied in place. The listener keeps its socket, established
//! connections keep flowing, removed servers drain, added binds and servers take traffic, a
//! config that cannot be applied changes nothing, and a steady stream of clients sees no failure
//! across repeated reloads.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use halo_config::{Balance, CheckKind, Server};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

async fn echo(stream: &mut TcpStream, byte: u8) -> std::io::Result<()> {
    stream.write_all(&[byte]).await?;
    let mut got = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    if got[0] == byte { Ok(()) } else { Err(std::io::Error::other("wrong byte")) }
}

fn server(name: &str, address: SocketAddr) -> Server {
    Server { name: name.to_string(), address: address.into(), weight: 1, backup: false, disabled: false }
}

#[tokio::test]
async fn reload_keeps_connections_drains_removed_servers_and_adds_binds() {
    let (e1, _t1) = echo_server().await;
    let (e2, _t2) = echo_server().await;
    let (e3, _t3) = echo_server().await;
    let mut config = config(&[("e1", e1, 1), ("e2", e2, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    config.backends[0].drain_timeout = Duration::from_millis(300);
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 2).await;
    let front = config.frontends[0].binds[0];
    let (mut first, mut second) = (TcpStream::connect(front).await.expect("connect"), TcpStream::connect(front).await.expect("connect"));
    echo(&mut first, 1).await.expect("first");
    echo(&mut second, 2).await.expect("second");

    // e2 leaves, e3 joins, a second bind appears.
    let extra =
        SocketAddr::from(([127, 0, 0, 1], std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port()));
    config.backends[0].servers = vec![server("e1", e1), server("e3", e3)];
    config.frontends[0].binds.push(extra);
    let changes = balancer.reload(&config).expect("reload");
    assert_eq!(
        (changes.listeners_kept, changes.listeners_added, changes.servers_kept, changes.servers_removed),
        (1, 1, 1, 1),
        "{changes:?}"
    );
    // The connection on e1 is untouched; the one on e2 works until its drain timeout.
    echo(&mut first, 3).await.expect("kept connection");
    let e2_conn = if echo(&mut second, 4).await.is_ok() { &mut second } else { &mut first };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let servers = &balancer.backends[0].servers;
    assert_eq!(servers.iter().map(|s| s.config.name.as_str()).collect::<Vec<_>>(), ["e1", "e3"]);
    let mut closed = [0u8; 1];
    let drained = tokio::time::timeout(Duration::from_secs(2), e2_conn.read(&mut closed)).await.expect("closed after the drain timeout");
    assert!(matches!(drained, Ok(0) | Err(_)), "the removed server's connection outlived its drain timeout");
    until_healthy(&balancer, 2).await;
    for address in [front, extra] {
        let mut s = TcpStream::connect(address).await.expect("connect");
        echo(&mut s, 5).await.expect("new connection after the reload");
    }
}

#[tokio::test]
async fn a_reload_that_cannot_be_applied_changes_nothing() {
    let (e1, _t1) = echo_server().await;
    let config = config(&[("e1", e1, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    // A bind that is taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut bad = config.clone();
    bad.frontends[0].binds.push(taken.local_addr().expect("address"));
    bad.backends[0].servers.push(server("e9", SocketAddr::from(([127, 0, 0, 1], 9))));
    assert!(balancer.reload(&bad).is_err());
    assert_eq!(balancer.backends[0].servers.len(), 1, "the old backend stays");
    let mut s = TcpStream::connect(config.frontends[0].binds[0]).await.expect("connect");
    echo(&mut s, 7).await.expect("still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_clients_see_no_failure_across_reloads() {
    let (e1, _t1) = echo_server().await;
    let (e2, _t2) = echo_server().await;
    let mut config = config(&[("e1", e1, 1), ("e2", e2, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 2).await;
    let front = config.frontends[0].binds[0];
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (done, finished) = watch::channel(false);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (ok, failed, finished) = (Arc::clone(&ok), Arc::clone(&failed), finished.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: stops when told, and after at most 5 000 connections.
            for _ in 0..5_000 {
                if *finished.borrow() {
                    break;
                }
                let outcome = async {
                    let mut s = TcpStream::connect(front).await?;
                    echo(&mut s, 9).await
                }
                .await;
                let counter = if outcome.is_ok() { &ok } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for round in 0..10 {
        config.backends[0].servers[0].weight = 1 + round % 3;
        config.frontends[0].max_connections = 1000 + round;
        balancer.reload(&config).expect("reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.send(true).expect("stop clients");
    for client in clients {
        client.await.expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{ok} connections across 10 reloads, {failed} failed");
    assert!(ok > 100, "too few connections to mean anything: {ok}");
    assert_eq!(failed, 0);
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port")
}

/// Frontends named and bound as given, all on the one backend.
fn frontends(config: &mut halo_config::Config, shape: &[(&str, &[SocketAddr])]) {
    let template = config.frontends[0].clone();
    config.frontends = shape
        .iter()
        .map(|(name, binds)| halo_config::Frontend { name: name.to_string(), binds: binds.to_vec(), ..template.clone() })
        .collect();
}

/// A bind that moves to another frontend, or whose frontend is renamed, or that swaps with
/// another's, is served throughout: every configured bind answers after each reload, and a
/// client connecting all along to every port sees no refused connection.
#[tokio::test]
async fn binds_that_move_between_frontends_are_served_throughout() {
    let (e1, _t1) = echo_server().await;
    let mut config = config(&[("e1", e1, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    frontends(&mut config, &[("one", &[p1]), ("two", &[p2])]);
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;

    let (failures, attempts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (done, mut finished) = watch::channel(false);
    let client = {
        let (failures, attempts) = (Arc::clone(&failures), Arc::clone(&attempts));
        let ports: Vec<SocketAddr> = vec![p1, p2];
        tokio::spawn(async move {
            // Bounded: at most 20 000 connections, and it stops when the test is done.
            for round in 0..10_000u32 {
                if *finished.borrow_and_update() {
                    break;
                }
                let address = ports[round as usize % ports.len()];
                attempts.fetch_add(1, Ordering::Relaxed);
                let ok = match TcpStream::connect(address).await {
                    Ok(mut stream) => echo(&mut stream, 7).await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let serves = |address: SocketAddr| async move {
        let mut stream = TcpStream::connect(address).await.map_err(|e| format!("{address}: {e}"))?;
        echo(&mut stream, 9).await.map_err(|e| format!("{address}: {e}"))
    };
    let shapes: [&[(&str, &[SocketAddr])]; 3] = [
        // The frontend on p1 is renamed.
        &[("uno", &[p1]), ("two", &[p2])],
        // p1 moves to the other frontend; the renamed one gets a new port.
        &[("uno", &[p3]), ("two", &[p2, p1])],
        // The two frontends swap their ports.
        &[("uno", &[p2, p1]), ("two", &[p3])],
    ];
    for shape in shapes {
        tokio::time::sleep(Duration::from_millis(100)).await;
        frontends(&mut config, shape);
        balancer.reload(&config).unwrap_or_else(|e| panic!("reload to {shape:?}: {e}"));
        for (name, binds) in shape {
            for bind in *binds {
                serves(*bind).await.unwrap_or_else(|e| panic!("after the reload to {shape:?}, {name} does not serve: {e}"));
            }
            let frontend = balancer.frontend(name).expect("frontend");
            assert!(frontend.is_listening(), "{name} is not listening after the reload to {shape:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.send_replace(true);
    client.await.expect("client");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "of {} connections through the reloads", attempts.load(Ordering::Relaxed));
}

/// A port nothing listens on: connects to it are refused.
fn dead_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port")
}

#[tokio::test]
async fn a_reload_to_kind_none_puts_a_server_down_by_checks_back_in_service() {
    // `kind = "none"` means every enabled server takes traffic. A server the old checks had put
    // DOWN, and that stays in the new config unchanged, must not stay DOWN for ever with no check
    // left to bring it back.
    let dead = dead_port();
    let mut config = config(&[("dead", dead, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    for _ in 0..200 {
        if balancer.backends[0].checked() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(balancer.backends[0].healthy_servers(), 0, "the dead server is DOWN under tcp checks");
    config.backends[0].health.kind = CheckKind::None;
    balancer.reload(&config).expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = &balancer.backends[0].servers[0];
    assert!(server.is_healthy(), "kind = none after a reload: the server takes traffic ({})", server.reason());
}

#[tokio::test]
async fn a_reload_from_kind_none_to_checks_takes_a_dead_server_out() {
    // The other way: a server that was never checked (UP because kind = none) must be checked
    // once the backend has checks, and go DOWN when they fail.
    let dead = dead_port();
    let mut config = config(&[("dead", dead, 1)], Balance::RoundRobin, health(CheckKind::None));
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    assert_eq!(balancer.backends[0].healthy_servers(), 1, "kind = none: up without a check");
    config.backends[0].health.kind = CheckKind::Tcp;
    balancer.reload(&config).expect("reload");
    let mut down = false;
    for _ in 0..300 {
        if balancer.backends[0].healthy_servers() == 0 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = &balancer.backends[0].servers[0];
    assert!(down, "failing tcp checks after the reload never took the server out ({})", server.reason());
}

#[tokio::test]
async fn a_reload_that_changes_fall_applies_it_to_servers_that_stay() {
    // A server whose own settings are unchanged keeps its runtime across a reload; the backend's
    // new check thresholds must still reach it. Here fall goes from 1000 (never DOWN in this
    // test) to 2: a server that stops answering must then go DOWN within a few checks.
    let (e1, task) = echo_server().await;
    let mut check = health(CheckKind::Tcp);
    check.fall = 1000;
    let mut config = config(&[("e1", e1, 1)], Balance::RoundRobin, check);
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    config.backends[0].health.fall = 2;
    balancer.reload(&config).expect("reload");
    task.abort();
    let _ = task.await;
    let mut down = false;
    for _ in 0..300 {
        if balancer.backends[0].healthy_servers() == 0 {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(down, "fall = 2 after the reload, yet the dead server stayed UP ({})", balancer.backends[0].servers[0].reason());
}

#[tokio::test]
async fn a_backend_without_checks_is_checked_as_soon_as_its_addresses_are_known() {
    // The balancer tracker waits for `checked()` before it settles; a kind = none backend has no
    // check to wait for, so it must count as checked, or the tracker never settles (VRRP starts
    // on a guess after its settle timeout and the tracker never reports anything).
    let (e1, _t1) = echo_server().await;
    let config = config(&[("e1", e1, 1)], Balance::RoundRobin, health(CheckKind::None));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(balancer.backends[0].checked(), "a backend with kind = none never counts as checked");
}

/// A connection cap lowered by a reload is the configured one whatever was open: 1000 -> 10 with
/// 50 open serves no new connection until fewer than 10 are open, then only up to 10 in all.
/// (The new cap used to be the old one less what was open at the reload: here 50.)
#[tokio::test]
async fn a_lowered_connection_cap_is_the_configured_one_whatever_was_open() {
    let (e1, _t1) = echo_server().await;
    let mut config = config(&[("e1", e1, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
    config.frontends[0].max_connections = 1000;
    config.frontends[0].queue_timeout = Duration::from_millis(200);
    let (_stop, stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    let front = config.frontends[0].binds[0];
    let mut held = Vec::new();
    for i in 0..50u8 {
        let mut s = TcpStream::connect(front).await.expect("connect");
        echo(&mut s, i).await.expect("served under the old cap");
        held.push(s);
    }
    config.frontends[0].max_connections = 10;
    balancer.reload(&config).expect("reload");
    for _ in 0..5 {
        let mut s = TcpStream::connect(front).await.expect("connect");
        assert!(echo(&mut s, 99).await.is_err(), "served with 50 open under a cap of 10");
    }
    held.truncate(5);
    let open = || balancer.frontends[0].stats.current.load(Ordering::Relaxed);
    for _ in 0..200 {
        if open() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..5u8 {
        let mut s = TcpStream::connect(front).await.expect("connect");
        echo(&mut s, i).await.expect("served: fewer than 10 open");
        held.push(s);
    }
    let mut eleventh = TcpStream::connect(front).await.expect("connect");
    assert!(echo(&mut eleventh, 42).await.is_err(), "an 11th connection was served under a cap of 10");
}

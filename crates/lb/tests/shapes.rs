//! Backend shapes found in real haproxy files, on loopback: servers that are never probed
//! (haproxy's `server` without `check`), plain-HTTP checks (`option httpchk` without
//! `check-ssl`), the PROXY protocol header (`send-proxy`, `send-proxy-v2`), and a backend with no
//! server at all (a template a tool fills later).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use halo_config::{Balance, CheckKind, ProxyProtocol};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP server that counts the connections it accepts and keeps the first bytes of each.
struct Recorder {
    address: SocketAddr,
    accepted: Arc<AtomicU64>,
    first_bytes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicU64::new(0));
        let first_bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, bytes) = (Arc::clone(&accepted), Arc::clone(&first_bytes));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let bytes = Arc::clone(&bytes);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256];
                    let mut got = Vec::new();
                    // Reads until the client's marker arrives (or the stream ends).
                    while !got.ends_with(b"hello") {
                        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    bytes.lock().expect("lock").push(got);
                    let _answered = stream.write_all(b"bye").await;
                });
            }
        });
        Self { address, accepted, first_bytes }
    }
}

/// A plain HTTP server answering every request with `status`.
async fn http_server(status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _read = stream.read(&mut buf).await;
                let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _written = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

/// Sends "hello" through the frontend and reads the answer (bounded).
async fn hello(front: SocketAddr) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(front).await.map_err(|e| format!("connect: {e}"))?;
    stream.write_all(b"hello").await.map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => Ok(answer),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("read: timeout".to_string()),
    }
}

#[tokio::test]
async fn an_unchecked_backend_serves_at_once_and_is_never_probed() {
    let server = Recorder::start().await;
    let config = config(&[("iperf", server.address, 1)], Balance::RoundRobin, health(CheckKind::None));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    // No wait for a check: the server is up from the start.
    assert_eq!(balancer.backends[0].healthy_servers(), 1);
    let answer = hello(config.frontends[0].binds[0]).await.expect("proxied");
    assert_eq!(answer, b"bye");
    // Ten check intervals later the server has still seen only the client's connection.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(server.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(balancer.backends[0].servers[0].reason(), "not checked (kind = none)");
}

#[tokio::test]
async fn a_plain_http_check_takes_a_server_answering_500_out() {
    let (good, sick) = (http_server(200).await, http_server(500).await);
    let config = config(&[("good", good, 1), ("sick", sick, 1)], Balance::RoundRobin, health(CheckKind::Http));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    until_healthy(&balancer, 1).await;
    for _ in 0..100 {
        if balancer.backends[0].servers[1].reason() == "HTTP 500" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(balancer.backends[0].servers[0].is_healthy());
    assert!(!balancer.backends[0].servers[1].is_healthy());
    assert_eq!(balancer.backends[0].servers[1].reason(), "HTTP 500");
}

#[tokio::test]
async fn send_proxy_puts_the_client_address_before_its_bytes() {
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let server = Recorder::start().await;
        let mut config = config(&[("ingress", server.address, 1)], Balance::RoundRobin, health(CheckKind::Tcp));
        config.backends[0].send_proxy = Some(version);
        let (_stop, stopped) = watch::channel(false);
        let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
        until_healthy(&balancer, 1).await;
        let front = config.frontends[0].binds[0];
        let mut client = TcpStream::connect(front).await.expect("connect");
        let client_port = client.local_addr().expect("local").port();
        client.write_all(b"hello").await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut answer)).await.expect("bounded").expect("read");
        assert_eq!(answer, b"bye");
        let got = server.first_bytes.lock().expect("lock").iter().find(|b| b.ends_with(b"hello")).cloned().expect("the client's bytes");
        let header = &got[..got.len() - 5];
        match version {
            ProxyProtocol::V1 => {
                let expected = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client_port} {}\r\n", front.port());
                assert_eq!(String::from_utf8_lossy(header), expected);
            }
            ProxyProtocol::V2 => {
                assert_eq!(header.len(), 28, "{header:?}");
                assert_eq!(&header[12..16], &[0x21, 0x11, 0, 12]);
                assert_eq!(u16::from_be_bytes([header[24], header[25]]), client_port);
                assert_eq!(u16::from_be_bytes([header[26], header[27]]), front.port());
            }
        }
    }
}

#[tokio::test]
async fn a_backend_without_servers_refuses_at_once() {
    let config = config(&[], Balance::RoundRobin, health(CheckKind::Tcp));
    let (_stop, stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
    let started = std::time::Instant::now();
    let answer = hello(config.frontends[0].binds[0]).await;
    // Closed without a byte (or reset), well before any timeout of the balancer.
    assert!(answer.as_ref().map_or(true, Vec::is_empty), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let frontend = balancer.frontend("api").expect("frontend");
    assert_eq!(frontend.stats.no_server.load(Ordering::Relaxed), 1);
}

/// A plain HTTP server behind the PROXY protocol (nginx's `listen ... proxy_protocol`): a
/// connection that does not start with a PROXY header is closed without an answer. Keeps the
/// first 32 bytes of each header it got.
async fn http_server_requiring_proxy() -> (SocketAddr, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let headers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&headers);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.ok().and_then(Result::ok).unwrap_or(0);
                let v1 = buf[..n].starts_with(b"PROXY ");
                let v2 = buf[..n].starts_with(b"\r\n\r\n\0\r\nQUIT\n");
                if v1 || v2 {
                    seen.lock().expect("lock").push(buf[..n.min(32)].to_vec());
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _written = stream.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    (address, headers)
}

#[tokio::test]
async fn checks_of_a_backend_with_send_proxy_send_the_header_too() {
    // haproxy sends the PROXY header on health checks of a `send-proxy` server (unless the check
    // goes to another port or address): a server that requires it would fail every check
    // otherwise, and an imported `send-proxy` + `option httpchk` backend would be all DOWN.
    // In v2 a check is the LOCAL command (0x20), as the specification says and haproxy 2.2+ does.
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let (server, headers) = http_server_requiring_proxy().await;
        let mut config = config(&[("ingress", server, 1)], Balance::RoundRobin, health(CheckKind::Http));
        config.backends[0].send_proxy = Some(version);
        let (_stop, stopped) = watch::channel(false);
        let balancer = halo_lb::Balancer::start(&config, stopped).expect("start");
        until_healthy(&balancer, 1).await;
        let first = headers.lock().expect("lock")[0].clone();
        match version {
            ProxyProtocol::V1 => assert!(first.starts_with(b"PROXY TCP4 127.0.0.1 "), "{first:?}"),
            ProxyProtocol::V2 => assert_eq!(first[12], 0x20, "{first:?}"),
        }
    }
}

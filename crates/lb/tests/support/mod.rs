//! Test support: an API-server stand-in (real TLS from a CA of its own; /healthz /readyz /livez
//! /version; switchable to answer 500, hang, reset or die), a TCP echo server, clients, and
//! a config builder. Everything listens on loopback only.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use halo_config::{Backend, Balance, CheckKind, Config, Frontend, HealthCheck, Log, Node, Server, Status, TlsVerify};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How a stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 everywhere.
    Healthy,
    /// 500 on the health endpoints, 200 on /version.
    Sick,
    /// Accepts and never answers.
    Hang,
    /// Closes every connection at once.
    Reset,
}

/// A certificate authority and a server certificate it signed, PEM.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// A client certificate signed by the same CA, for servers that require one.
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

pub fn pki(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("halo test CA {n}"));
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let client_key = rcgen::KeyPair::generate().expect("key");
    let client =
        rcgen::CertificateParams::new(vec!["halo".to_string()]).expect("params").signed_by(&client_key, &issuer).expect("client cert");
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An API-server stand-in on 127.0.0.1.
pub struct StandIn {
    pub name: String,
    pub address: SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    pub version_requests: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl StandIn {
    pub async fn start(name: &str, pki: &Pki) -> Self {
        Self::start_with(name, pki, false).await
    }

    /// A stand-in that refuses clients without a certificate from the CA (anonymous auth off).
    pub async fn start_requiring_client_cert(name: &str, pki: &Pki) -> Self {
        Self::start_with(name, pki, true).await
    }

    async fn start_with(name: &str, pki: &Pki, client_auth: bool) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            rustls::pki_types::pem::PemObject::pem_slice_iter(pki.cert_pem.as_bytes()).collect::<Result<_, _>>().expect("cert");
        let key: PrivateKeyDer<'static> = rustls::pki_types::pem::PemObject::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().expect("versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for ca in rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(ca.expect("ca")).expect("root");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().expect("verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder.with_single_cert(certs, key).expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mode = Arc::new(Mutex::new(Mode::Healthy));
        let version_requests = Arc::new(Mutex::new(0));
        let (m, v, n) = (Arc::clone(&mode), Arc::clone(&version_requests), name.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (acceptor, m, v, n) = (acceptor.clone(), Arc::clone(&m), Arc::clone(&v), n.clone());
                tokio::spawn(async move { serve(stream, acceptor, m, v, n).await });
            }
        });
        Self { name: name.to_string(), address, mode, version_requests, task }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    pub fn requests(&self) -> u64 {
        *self.version_requests.lock().expect("count")
    }

    /// Stops listening: connects are refused from now on.
    pub fn die(&self) {
        self.task.abort();
    }
}

async fn serve(stream: TcpStream, acceptor: tokio_rustls::TlsAcceptor, mode: Arc<Mutex<Mode>>, versions: Arc<Mutex<u64>>, name: String) {
    let current = *mode.lock().expect("mode");
    match current {
        Mode::Reset => return,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        _ => {}
    }
    let Ok(mut tls) = acceptor.accept(stream).await else { return };
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        match tls.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]).to_string();
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, body) = match path.as_str() {
        "/healthz" | "/readyz" | "/livez" if current == Mode::Sick => (500, "[-]etcd failed".to_string()),
        "/healthz" | "/readyz" | "/livez" => (200, "ok".to_string()),
        "/version" => {
            *versions.lock().expect("count") += 1;
            (200, format!("{{\"server\":\"{name}\"}}"))
        }
        _ => (404, "not found".to_string()),
    };
    let response = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _written = tls.write_all(response.as_bytes()).await;
    let _closed = tls.shutdown().await;
}

/// A TCP server that echoes everything, and passes a FIN back after the data.
pub async fn echo_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _closed = w.shutdown().await;
                }
            });
        }
    });
    (address, task)
}

/// An HTTPS GET through `address` (TLS end to end with the stand-in); the body, or why not.
pub async fn get(address: SocketAddr, path: &str) -> Result<String, String> {
    let check = health(CheckKind::Https);
    let config = halo_lb::tls::client_config(&check).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(address).await.map_err(|e| format!("connect: {e}"))?;
    let mut tls = connector.connect(ServerName::IpAddress(address.ip().into()), stream).await.map_err(|e| format!("tls: {e}"))?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.map_err(|e| format!("read: {e}"))?;
    answer.split("\r\n\r\n").nth(1).map(str::to_string).ok_or_else(|| format!("no body in {answer:?}"))
}

/// A fast health check for tests.
pub fn health(kind: CheckKind) -> HealthCheck {
    HealthCheck {
        kind,
        path: "/readyz".to_string(),
        expect_status: 200,
        verify: TlsVerify::None,
        client_cert: None,
        interval: Duration::from_millis(100),
        fast_interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        fall: 2,
        rise: 1,
    }
}

/// One frontend on a free loopback port in front of `servers`.
pub fn config(servers: &[(&str, SocketAddr, u32)], balance: Balance, check: HealthCheck) -> Config {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    Config {
        node: Node::default(),
        status: Status::default(),
        log: Log::default(),
        balancer: Default::default(),
        vrrp: Vec::new(),
        trackers: Vec::new(),
        sync_groups: Vec::new(),
        announce: Vec::new(),
        bgp: None,
        frontends: vec![Frontend {
            name: "api".to_string(),
            binds: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            backend: "api".to_string(),
            max_connections: 10_000,
            queue_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(5),
            allow: Vec::new(),
        }],
        backends: vec![Backend {
            name: "api".to_string(),
            balance,
            servers: servers
                .iter()
                .map(|(n, a, w)| Server { name: n.to_string(), address: (*a).into(), weight: *w, backup: false, disabled: false })
                .collect(),
            health: check,
            retries: 1,
            redispatch: true,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
            drain_timeout: Duration::from_secs(5),
            resolve_interval: halo_config::defaults::RESOLVE_INTERVAL,
            resolve_prefer: halo_config::AddressFamily::Ipv4,
            send_proxy: None,
        }],
    }
}

/// Waits (bounded) until the backend has `n` healthy servers.
pub async fn until_healthy(balancer: &halo_lb::Balancer, n: usize) {
    let backend = &balancer.backends[0];
    for _ in 0..500 {
        if backend.healthy_servers() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let states: Vec<String> = backend.servers.iter().map(|s| format!("{}: {} ({})", s.config.name, s.is_healthy(), s.reason())).collect();
    panic!("never {n} healthy servers: {states:?}");
}

/// Writes `sent` and then the FIN through `client`, an echo behind it, while reading to the
/// echoed FIN: what came back, or why not (within 30 s).
pub async fn echo_through(client: &mut TcpStream, sent: &[u8]) -> Result<Vec<u8>, String> {
    let (mut reader, mut writer) = client.split();
    let write = async {
        writer.write_all(sent).await?;
        // The FIN after the data: the echo passes it back after the echoed bytes.
        writer.shutdown().await
    };
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), reader.read_to_end(&mut got));
    let (written, read) = tokio::join!(write, read);
    written.map_err(|e| format!("write: {e}"))?;
    read.map_err(|_| format!("no echoed FIN within 30 s ({} bytes back)", got.len()))?.map_err(|e| format!("read: {e}"))?;
    Ok(got)
}

/// Whether kernel forwarding can be tested here (root: CAP_BPF); says why not, and skips, outside
/// CI only.
pub fn can_forward_in_kernel(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: must run as root under CI");
    eprintln!("SKIP {test}: not root (kernel forwarding needs CAP_BPF)");
    false
}

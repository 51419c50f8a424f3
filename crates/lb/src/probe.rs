//! One health probe of one server: TCP connect; then for `http` a `GET <path>`; for `tls` a TLS
//! handshake, and for `https` the handshake and a `GET <path>`
//! whose status must be the expected one. Returns the reason a human wants to read on failure
//! ("connect: refused", "TLS: unknown CA", "HTTP 500", "timeout after 1s").

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use halo_config::{CheckKind, HealthCheck, ProxyProtocol, TlsVerify};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A duration as people write it: "1s", "250ms".
pub fn short(d: Duration) -> String {
    if d.subsec_nanos() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// "connect: refused" and friends.
pub fn connect_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: refused".to_string(),
        std::io::ErrorKind::TimedOut => "connect: timed out".to_string(),
        std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => "connect: unreachable".to_string(),
        _ => format!("connect: {e}"),
    }
}

fn tls_reason(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match inner {
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "TLS: unknown CA".to_string(),
        Some(Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
            "TLS: certificate not valid for the name".to_string()
        }
        Some(Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "TLS: certificate expired".to_string()
        }
        Some(Error::AlertReceived(rustls::AlertDescription::CertificateRequired)) => {
            "TLS: the server requires a client certificate".to_string()
        }
        Some(other) => format!("TLS: {other}"),
        None if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => {
            "TLS: connection closed during the handshake".to_string()
        }
        None => format!("TLS: {e}"),
    }
}

/// Why a check or a connect failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, for logs and status.
    pub reason: String,
    /// halo's own trouble (out of descriptors, ephemeral ports, buffers, memory): it says
    /// nothing about the server and never counts against it.
    pub local: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self { reason, local: false }
    }
}

impl From<&str> for Failure {
    fn from(reason: &str) -> Self {
        Self { reason: reason.to_string(), local: false }
    }
}

impl Failure {
    /// A failed connect: the server's, unless the error is halo's own.
    pub fn of_connect(e: &std::io::Error) -> Self {
        Self { reason: connect_reason(e), local: local_error(e) }
    }
}

/// Errors that come from this host's resources, not from the server: out of descriptors
/// (EMFILE, ENFILE), memory or buffers (ENOMEM, ENOBUFS), or local ports (EADDRNOTAVAIL).
pub fn local_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(12 | 23 | 24 | 99 | 105))
}

/// Local errors that no other server would escape: out of descriptors. Others (local ports are
/// per destination, buffers and memory may come back) leave other servers worth a try.
pub fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Probes `address` once; `Ok(latency)` or why not. `name` is the server's host name when it is
/// given by name: the TLS name verified (unless `server_name` is set) and the HTTP `Host`.
/// With `send_proxy` (the backend's), the probe starts with a PROXY header, as haproxy's checks
/// of a `send-proxy` server do: a server that requires the header would refuse a probe
/// without it.
pub async fn probe(
    check: &HealthCheck,
    tls: Option<&TlsConnector>,
    address: SocketAddr,
    name: Option<&str>,
    send_proxy: Option<ProxyProtocol>,
) -> Result<Duration, Failure> {
    let started = Instant::now();
    match tokio::time::timeout(check.timeout, probe_inner(check, tls, address, name, send_proxy)).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(format!("timeout after {}", short(check.timeout)).into()),
    }
}

async fn probe_inner(
    check: &HealthCheck,
    tls: Option<&TlsConnector>,
    address: SocketAddr,
    name: Option<&str>,
    send_proxy: Option<ProxyProtocol>,
) -> Result<(), Failure> {
    let mut stream = TcpStream::connect(address).await.map_err(|e| Failure::of_connect(&e))?;
    if let (Some(version), Ok(local)) = (send_proxy, stream.local_addr()) {
        // v1: the probe's own connection, halo as the client; v2: the LOCAL command, meant for
        // connections a proxy makes on its own (health checks), as haproxy 2.2 and later send.
        let destination = (version == ProxyProtocol::V1).then_some(address);
        let header = crate::proxy_protocol::header(version, local, destination);
        stream.write_all(&header).await.map_err(|e| format!("PROXY header: {e}"))?;
    }
    let host = match (name, address) {
        (Some(name), _) => name.to_string(),
        (None, SocketAddr::V4(v4)) => v4.ip().to_string(),
        (None, SocketAddr::V6(v6)) => format!("[{}]", v6.ip()),
    };
    match check.kind {
        CheckKind::None | CheckKind::Tcp => Ok(()),
        CheckKind::Http => http_get(&mut stream, check, &host).await,
        CheckKind::Tls | CheckKind::Https => {
            let connector = tls.ok_or("TLS: no client settings")?;
            let configured = match &check.verify {
                TlsVerify::Ca { server_name: Some(n), .. } => Some(n.as_str()),
                _ => None,
            };
            let server_name = match configured.or(name) {
                Some(n) => ServerName::try_from(n.to_string()).map_err(|e| format!("TLS: server name {n}: {e}"))?,
                None => ServerName::IpAddress(address.ip().into()),
            };
            let mut stream = connector.connect(server_name, stream).await.map_err(|e| tls_reason(&e))?;
            if check.kind == CheckKind::Tls {
                return tls_verdict(&mut stream).await;
            }
            http_get(&mut stream, check, &host).await
        }
    }
}

/// The server's verdict on a handshake-only check. With TLS 1.3 the server judges the client's
/// certificate (or its absence) after the client's side of the handshake is done, and answers with
/// an alert: so the check ends the session (close_notify) and reads what the server says, its own
/// close_notify, the end of the connection, or an alert. Only an alert fails the check.
async fn tls_verdict<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S) -> Result<(), Failure> {
    if let Err(e) = stream.shutdown().await {
        return if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) { Err(tls_reason(&e).into()) } else { Ok(()) };
    }
    let mut answer = [0u8; 256];
    match stream.read(&mut answer).await {
        // Its close_notify, or data of a server that speaks first: it took the session.
        Ok(_) => Ok(()),
        Err(e) if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) => Err(tls_reason(&e).into()),
        // A server that drops the connection without its close_notify said nothing against us.
        Err(_) => Ok(()),
    }
}

/// `GET <path>` on an open stream (plain or TLS); the status must be the expected one.
async fn http_get<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S, check: &HealthCheck, host: &str) -> Result<(), Failure> {
    let request =
        format!("GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: halo-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n", check.path);
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("HTTP: sending the request: {e}"))?;
    let status = read_status(stream).await?;
    if status == check.expect_status { Ok(()) } else { Err(format!("HTTP {status}").into()) }
}

/// Reads the status line ("HTTP/1.1 200 OK"), at most 8 KiB. Written here rather than taken
/// from httparse (which hyper brings along): httparse parses a whole header block, and the check
/// needs the first line only; it must not wait for, or be held by, headers it would ignore.
async fn read_status<S: AsyncReadExt + Unpin>(stream: &mut S) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        if buf.len() > 8192 {
            return Err("HTTP: status line too long".to_string());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| {
            // With TLS 1.3 the server judges the client certificate after the handshake: its
            // verdict arrives as an alert on the first read.
            if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) { tls_reason(&e) } else { format!("HTTP: reading the answer: {e}") }
        })?;
        if n == 0 {
            return Err("HTTP: connection closed before a status line".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse::<u16>().ok())) {
        (Some(version), Some(status)) if version.starts_with("HTTP/1.") => Ok(status),
        _ => Err("HTTP: not an HTTP/1 answer".to_string()),
    }
}

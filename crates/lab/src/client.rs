//! The lab's client: from its own namespace, one new TLS connection and `GET /version` to the
//! VIP every `period`, each with a deadline, verified against the lab CA with the VIP as the name
//! (as kubectl would). One line per request in `client.log`: `start_unix_ms latency_ms outcome
//! server`, outcome `ok`, `http-NNN`, `timeout` or the error. Bounded in count and time.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request not answered within this counts as failed.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// The client never runs longer than this, nor sends more than `MAX_REQUESTS`.
const MAX_RUN: Duration = Duration::from_secs(900);
const MAX_REQUESTS: u64 = 20_000;

/// The lab CA as the only trusted root. (The balancer has its own loader; the lab keeps this one
/// so that it depends on no crate of the daemon.)
fn root_store(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(certificate.with_context(|| format!("a certificate in {}", ca.display()))?)?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", ca.display());
    Ok(roots)
}

/// Sends requests until killed or bounded out.
pub fn run(target: SocketAddr, dir: &Path, period: Duration) -> anyhow::Result<()> {
    let roots = root_store(&dir.join("ca.pem")).context("the lab CA")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("client.log")).context("opening client.log")?;
    let log = Arc::new(std::sync::Mutex::new(log));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let started = Instant::now();
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for _ in 0..MAX_REQUESTS {
            ticker.tick().await;
            if started.elapsed() > MAX_RUN {
                break;
            }
            let (connector, log) = (connector.clone(), Arc::clone(&log));
            tokio::spawn(async move {
                let start_ms = super::unix_ms();
                let began = Instant::now();
                let (outcome, server) = match tokio::time::timeout(DEADLINE, request(&connector, target)).await {
                    Ok(Ok((200, server))) => ("ok".to_string(), server),
                    Ok(Ok((code, server))) => (format!("http-{code}"), server),
                    Ok(Err(e)) => (e, "-".to_string()),
                    Err(_) => ("timeout".to_string(), "-".to_string()),
                };
                let line = format!("{start_ms} {} {outcome} {server}\n", began.elapsed().as_millis());
                let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Err(e) = log.write_all(line.as_bytes()) {
                    eprintln!("client: cannot log: {e}");
                }
            });
        }
        anyhow::Ok(())
    })
}

/// One request; the status code and the answering server's name, or a one-word error.
async fn request(connector: &tokio_rustls::TlsConnector, target: SocketAddr) -> Result<(u16, String), String> {
    let word = |what: &str, e: &dyn std::fmt::Display| format!("{what}:{}", e.to_string().replace(' ', "-"));
    let tcp = tokio::net::TcpStream::connect(target).await.map_err(|e| word("connect", &e))?;
    let name = ServerName::IpAddress(target.ip().into());
    let mut tls = connector.connect(name, tcp).await.map_err(|e| word("tls", &e))?;
    let request = format!("GET /version HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.map_err(|e| word("write", &e))?;
    let mut answer = Vec::new();
    // A peer that closes without close_notify still gave us its answer.
    if let Err(e) = tls.read_to_end(&mut answer).await
        && answer.is_empty()
    {
        return Err(word("read", &e));
    }
    let text = String::from_utf8_lossy(&answer);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| "read:no-answer".to_string())?;
    let server = text.split("\"server\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("-").to_string();
    Ok((code, server))
}

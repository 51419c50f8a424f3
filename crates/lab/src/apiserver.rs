//! An API-server stand-in for the lab: HTTPS with the lab CA's certificate, answering
//! `/healthz`, `/readyz`, `/livez` and `/version` like kube-apiserver does, or HTTP 500 to all
//! of them while the file `NAME.fail` exists in the lab directory (a sick master). Every request
//! other than a probe is logged to `NAME.requests` as `unix_ms peer path status`, so the lab can
//! prove which balancer sent what, and when.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Paths balancers probe; not logged (they would drown the client's requests).
const PROBES: [&str; 3] = ["/healthz", "/readyz", "/livez"];

struct StandIn {
    name: String,
    fail_flag: PathBuf,
    log: Mutex<std::fs::File>,
}

impl StandIn {
    fn answer(&self, peer: SocketAddr, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let sick = self.fail_flag.exists();
        let (status, body) = match path {
            _ if sick => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"[-]etcd failed\",\"server\":\"{}\"}}\n", self.name),
            ),
            p if PROBES.contains(&p) => (StatusCode::OK, "ok".to_string()),
            "/version" => (
                StatusCode::OK,
                format!(
                    "{{\"major\":\"1\",\"minor\":\"31\",\"gitVersion\":\"v1.31.0-halo-lab\",\"platform\":\"linux/amd64\",\"server\":\"{}\"}}\n",
                    self.name
                ),
            ),
            _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        };
        if !PROBES.contains(&path) {
            let line = format!("{} {} {path} {}\n", super::unix_ms(), peer.ip(), status.as_u16());
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = log.write_all(line.as_bytes()) {
                eprintln!("{}: cannot log a request: {e}", self.name);
            }
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    }
}

/// Serves forever (the lab ends it by PID).
pub fn run(name: &str, listen: SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let cert_file = dir.join(format!("{name}.pem"));
    let key_file = dir.join(format!("{name}.key"));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("reading {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_file).with_context(|| format!("reading {}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .context("TLS settings")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.requests")))
        .context("opening the request log")?;
    let stand_in = Arc::new(StandIn { name: name.to_string(), fail_flag: dir.join(format!("{name}.fail")), log: Mutex::new(log) });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let (acceptor, stand_in) = (acceptor.clone(), Arc::clone(&stand_in));
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(5), acceptor.accept(stream)).await else { return };
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = stand_in.answer(peer, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                // Errors here are clients going away mid-request; nothing to report.
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
            });
        }
    })
}

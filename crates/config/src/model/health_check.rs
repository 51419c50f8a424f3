//! A backend's active health check (`[backend.health]`): the probe's kind, its timing, and the
//! certificates it verifies and presents.

use std::path::PathBuf;
use std::time::Duration;

/// An active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: CheckKind,
    /// HTTP path for `http` and `https` checks.
    pub path: String,
    /// HTTP status a healthy server answers.
    pub expect_status: u16,
    /// How the server's certificate is verified (`tls` and `https`).
    pub verify: TlsVerify,
    /// Client certificate for clusters with anonymous auth off.
    pub client_cert: Option<ClientCert>,
    /// Period between probes of a stable server.
    pub interval: Duration,
    /// Period while a server is changing state (between its first opposite result and the flip).
    pub fast_interval: Duration,
    /// A probe not done after this fails.
    pub timeout: Duration,
    /// Consecutive failures that mark a server down.
    pub fall: u32,
    /// Consecutive successes that mark it up.
    pub rise: u32,
}

/// Kind of health probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// No probe: every enabled server takes traffic (haproxy's `server` line without `check`),
    /// for services a probe would disturb. A failed connect still goes to the next server.
    None,
    /// TCP connect.
    Tcp,
    /// Plain HTTP: `GET <path>`, expecting `expect_status`.
    Http,
    /// TCP connect and a full TLS handshake.
    Tls,
    /// TLS, then `GET <path>`, expecting `expect_status`.
    Https,
}

/// Server certificate verification for checks.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsVerify {
    /// Accept any certificate. The probe then proves liveness, not identity; proxied traffic is
    /// unaffected (TLS runs end to end between client and API server).
    None,
    /// Verify against a CA bundle (the cluster CA, `/etc/kubernetes/pki/ca.crt`).
    Ca {
        /// PEM bundle.
        ca_file: PathBuf,
        /// Name expected in the certificate; when unset, the server's name if it is given by
        /// name, its IP address otherwise.
        server_name: Option<String>,
    },
}

/// A client certificate and its key, PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

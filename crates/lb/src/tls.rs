//! TLS client settings for health checks (rustls): verification against a CA bundle with a
//! server name, or none; an optional client certificate.

use std::path::Path;
use std::sync::Arc;

use halo_config::{HealthCheck, TlsVerify};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Why TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

fn pem_error(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem { path: path.display().to_string(), reason: e.to_string() }
}

/// Accepts any server certificate: the probe then proves liveness, not identity.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificates of a CA bundle (PEM), as trust anchors; an empty file is an error.
pub fn root_store(ca_file: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(pem_error(ca_file))? {
        roots.add(cert.map_err(pem_error(ca_file))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem { path: ca_file.display().to_string(), reason: "no certificate in the file".to_string() });
    }
    Ok(roots)
}

/// The client configuration a backend's checks use.
pub fn client_config(check: &HealthCheck) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let builder = match &check.verify {
        TlsVerify::None => builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))),
        TlsVerify::Ca { ca_file, .. } => builder.with_root_certificates(root_store(ca_file)?),
    };
    let config = match &check.client_cert {
        Some(client) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&client.cert_file)
                .map_err(pem_error(&client.cert_file))?
                .collect::<Result<_, _>>()
                .map_err(pem_error(&client.cert_file))?;
            let key = PrivateKeyDer::from_pem_file(&client.key_file).map_err(pem_error(&client.key_file))?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

//! The lab's own certificate authority: one CA, and per API-server stand-in a certificate
//! naming its address, the VIP and `kubernetes` (as kubeadm's certificates do), so that clients
//! verify through the VIP and halo's checks verify each server by its address.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Writes `ca.pem` and, for each stand-in, `NAME.pem` and `NAME.key` into `dir`.
pub fn write(dir: &Path, servers: &[(String, Ipv4Addr)], vip: Ipv4Addr) -> anyhow::Result<()> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "halo lab CA");
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).context("writing ca.pem")?;
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, address) in servers {
        let names = vec![address.to_string(), vip.to_string(), "kubernetes".to_string(), name.clone()];
        let mut params = CertificateParams::new(names).context("server certificate parameters")?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        let key = KeyPair::generate().context("server key")?;
        let cert = params.signed_by(&key, &issuer).context("server certificate")?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).with_context(|| format!("writing {name}.pem"))?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).with_context(|| format!("writing {name}.key"))?;
    }
    Ok(())
}

//! Config -> /etc/sysctl.d drop-in for a balancer host.

use super::Rendered;
use super::write::line;
use crate::model::Config;

/// Renders the kernel settings a balancer (or hypervisor) host needs.
pub fn sysctl(config: &Config) -> Rendered {
    let mut out = String::new();
    line(
        &mut out,
        format_args!("# /etc/sysctl.d/99-halo.conf rendered by `halo render sysctl`; apply with `sysctl -p /etc/sysctl.d/99-halo.conf`."),
    );
    line(&mut out, format_args!("# For a hypervisor or a dedicated balancer host only: a Kubernetes node needs these at 1."));
    line(&mut out, format_args!("# Bridged frames between VMs must not go through the host's netfilter (the keys exist while"));
    line(&mut out, format_args!("# br_netfilter is loaded; without it bridged traffic skips netfilter anyway)."));
    for key in ["arptables", "ip6tables", "iptables"] {
        line(&mut out, format_args!("net.bridge.bridge-nf-call-{key} = 0"));
    }
    let vips: Vec<std::net::IpAddr> = config.vrrp.iter().flat_map(|v| v.virtual_addresses.iter().map(|a| a.addr())).collect();
    let binds_vip = |v4: bool| config.frontends.iter().flat_map(|f| &f.binds).any(|b| b.is_ipv4() == v4 && vips.contains(&b.ip()));
    if binds_vip(true) || binds_vip(false) {
        line(&mut out, format_args!("# A frontend binds a virtual address: let haproxy bind it on a backup, before it holds it."));
        line(&mut out, format_args!("# (halo itself needs no sysctl for this: it binds with IP_FREEBIND.)"));
    }
    if binds_vip(true) {
        line(&mut out, format_args!("net.ipv4.ip_nonlocal_bind = 1"));
    }
    if binds_vip(false) {
        line(&mut out, format_args!("net.ipv6.ip_nonlocal_bind = 1"));
    }
    Rendered { text: out, losses: Vec::new() }
}

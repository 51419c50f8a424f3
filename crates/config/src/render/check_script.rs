//! Config -> check_apiserver.sh for keepalived's `vrrp_script`, with the guide's defects fixed:
//! the right VIP, `curl --fail`, a whole-word address match, and the real health path.

use std::net::{IpAddr, SocketAddr};

use super::Rendered;
use super::write::line;
use crate::model::{CheckKind, Config, TrackerKind};

/// Where the rendered keepalived.conf expects the script.
pub const CHECK_SCRIPT_PATH: &str = "/etc/keepalived/check_apiserver.sh";

/// The address a local client reaches a bind on.
fn local_address(bind: SocketAddr) -> IpAddr {
    match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        other => other,
    }
}

fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Renders the script for the first balancer tracker (or the first frontend).
pub fn check_script(config: &Config) -> Rendered {
    let mut losses = Vec::new();
    let tracked = config.trackers.iter().find_map(|t| match &t.kind {
        TrackerKind::Balancer { frontend, .. } => Some(frontend.clone()),
        _ => None,
    });
    let frontend = tracked.as_deref().and_then(|name| config.frontend(name)).or(config.frontends.first());
    let mut out = String::new();
    line(&mut out, format_args!("#!/bin/sh"));
    line(&mut out, format_args!("# check_apiserver.sh rendered by `halo render check-script`; edit halo.toml, not this file."));
    let Some(frontend) = frontend else {
        line(&mut out, format_args!("echo '*** halo.toml has no frontend to check' >&2\nexit 1"));
        losses.push("no frontend: the script always fails".to_string());
        return Rendered { text: out, losses };
    };
    let Some(bind) = frontend.binds.first().copied() else {
        return Rendered { text: out, losses };
    };
    let path = config
        .backend(&frontend.backend)
        .filter(|b| b.health.kind == CheckKind::Https)
        .map_or("/healthz".to_string(), |b| b.health.path.clone());
    let vip = config.vrrp.iter().flat_map(|v| &v.virtual_addresses).map(|a| a.addr()).find(|a| a.is_ipv4() == bind.is_ipv4());
    line(&mut out, format_args!("# Exits 0 when the balancer's frontend `{}` answers GET {path} with a 2xx status,", frontend.name));
    line(&mut out, format_args!("# locally and, while this host holds the virtual address, through it too."));
    line(&mut out, format_args!("# --insecure: the API server's certificate does not name localhost; the check proves the path."));
    line(&mut out, format_args!("set -u\n\nAPISERVER_DEST_PORT={}", bind.port()));
    line(&mut out, format_args!("LOCAL_ADDRESS={}", url_host(local_address(bind))));
    if let Some(vip) = vip {
        line(&mut out, format_args!("APISERVER_VIP={vip}"));
    }
    line(&mut out, format_args!("\nerrorExit() {{\n    echo \"*** $*\" 1>&2\n    exit 1\n}}\n"));
    line(
        &mut out,
        format_args!(
            "check() {{\n    curl --fail --silent --show-error --max-time 2 --insecure \"https://$1:${{APISERVER_DEST_PORT}}{path}\" -o /dev/null \\\n        || errorExit \"Error GET https://$1:${{APISERVER_DEST_PORT}}{path}\"\n}}\n"
        ),
    );
    line(&mut out, format_args!("check \"${{LOCAL_ADDRESS}}\""));
    if vip.is_some() {
        line(&mut out, format_args!("if ip -o addr show | grep -qwF \"${{APISERVER_VIP}}\"; then\n    check \"${{APISERVER_VIP}}\"\nfi"));
    }
    Rendered { text: out, losses }
}

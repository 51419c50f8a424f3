//! `halo check`: runs the daemon's loader and prints all problems, or what would run.

use std::path::Path;
use std::process::ExitCode;

use halo_config::{CheckKind, Config, TlsVerify, TrackerKind};

/// Validates the file; exit 0 with a summary, 1 with every error, 2 when unreadable.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    crate::files::print_diagnostics(&loaded.warnings);
    let missing_files = crate::files::host_file_problems(&loaded, false);
    crate::files::print_diagnostics(&missing_files);
    // The file may be checked on another host than the one it is for: a warning, not an error.
    if let Err(e) = crate::daemon::exec::check_script_user(loaded.config.node.script_user.as_deref()) {
        eprintln!("{}: warning: {e:#} (halo run will refuse to start)", path.display());
    }
    let unresolved = unresolved_names(&loaded.config);
    for (backend, server, reason) in &unresolved {
        eprintln!(
            "{}: warning: backend `{backend}` server `{server}`: {reason}: `halo run` starts it DOWN until the name resolves",
            path.display()
        );
    }
    let exposed = crate::files::token_readable_by_others(&loaded.config.status);
    if let Some(token) = &exposed {
        eprintln!("{}: warning: status token {} is readable by others: chmod 600 it", path.display(), token.display());
    }
    let missing = missing_tracked_interfaces(&loaded.config);
    for (tracker, interface) in &missing {
        eprintln!(
            "{}: warning: tracker `{tracker}`: interface `{interface}` does not exist on this host: the tracker fails until it appears",
            path.display()
        );
    }
    let warnings = loaded.warnings.len() + missing_files.len() + unresolved.len() + missing.len() + usize::from(exposed.is_some());
    print!("{}", summary(path, &loaded.config, warnings));
    Ok(ExitCode::SUCCESS)
}

/// Interface trackers whose interface this host (its network namespace) does not have:
/// (tracker, interface). Checked on another host than the one it is for, the file may be right:
/// a warning.
fn missing_tracked_interfaces(config: &Config) -> Vec<(String, String)> {
    config
        .trackers
        .iter()
        .filter_map(|t| match &t.kind {
            TrackerKind::Interface { interface } => Some((t.name.clone(), interface.clone())),
            _ => None,
        })
        .filter(|(_, interface)| !std::path::Path::new("/sys/class/net").join(interface).exists())
        .collect()
}

/// Servers given by a name the system resolver cannot turn into an address here and now:
/// (backend, server, reason). The file may be checked on another host than the one it is for,
/// so this is a warning.
fn unresolved_names(config: &Config) -> Vec<(String, String, String)> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for b in &config.backends {
        for s in &b.servers {
            let Some(host) = s.address.host_name() else { continue };
            let reason = match (host, s.address.port()).to_socket_addrs() {
                Ok(records) if records.len() > 0 => continue,
                Ok(_) => format!("DNS: {host}: no address"),
                Err(e) => format!("DNS: {host}: {e}"),
            };
            out.push((b.name.clone(), s.name.clone(), reason));
        }
    }
    out
}

/// A few lines saying what `halo run` would start.
pub fn summary(path: &Path, config: &Config, warnings: usize) -> String {
    let plural = if warnings == 1 { "" } else { "s" };
    let mut lines = vec![format!("{}: valid ({warnings} warning{plural})", path.display())];
    for v in &config.vrrp {
        let vips: Vec<String> = v.virtual_addresses.iter().map(ToString::to_string).collect();
        let every = humantime::format_duration(v.advert_interval.as_duration());
        let mut line = format!(
            "  vrrp {}: {} id {} priority {} v{} every {every}, addresses {}",
            v.name,
            v.interface,
            v.virtual_router_id,
            v.priority,
            v.version,
            vips.join(" ")
        );
        if !v.track.is_empty() {
            line.push_str(&format!(", tracking {}", v.track.join(" ")));
        }
        lines.push(line);
    }
    for g in &config.sync_groups {
        let tracking = if g.track.is_empty() { String::new() } else { format!(", tracking {}", g.track.join(" ")) };
        lines.push(format!("  sync group {}: {} change state together{tracking}", g.name, g.instances.join(" ")));
    }
    for t in &config.trackers {
        let what = match &t.kind {
            TrackerKind::Balancer { frontend, min_healthy, .. } => {
                format!("frontend {frontend} with at least {min_healthy} healthy server(s)")
            }
            TrackerKind::Script { command, .. } => format!("script {}", command.join(" ")),
            TrackerKind::Interface { interface } => format!("link of {interface}"),
            TrackerKind::File { path } => format!("weight from {}", path.display()),
        };
        let effect = t.weight.map_or("fault when failing".to_string(), |w| format!("weight {w:+}"));
        lines.push(format!("  tracker {}: {what}, {effect}", t.name));
    }
    for a in &config.announce {
        let track = if a.track.is_empty() { "always (no trackers)".to_string() } else { format!("while {} pass", a.track.join(", ")) };
        lines.push(format!("  announce {}: {} on {} by BGP (FRR), {track}", a.name, a.address, a.interface));
    }
    if let Some(bgp) = &config.bgp {
        let neighbors: Vec<String> =
            bgp.neighbors.iter().map(|n| format!("{} (AS {}{})", n.address, n.asn, if n.bfd { ", BFD" } else { "" })).collect();
        lines.push(format!("  bgp: AS {} to {} (halo render frr writes FRR's configuration)", bgp.asn, neighbors.join(", ")));
    }
    for f in &config.frontends {
        let binds: Vec<String> = f.binds.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "  frontend {}: {} -> backend {}, at most {} connections",
            f.name,
            binds.join(" "),
            f.backend,
            f.max_connections
        ));
    }
    for b in &config.backends {
        let check = match b.health.kind {
            CheckKind::None => "no check".to_string(),
            CheckKind::Tcp => "tcp connect".to_string(),
            CheckKind::Http => format!("http GET {} expecting {}", b.health.path, b.health.expect_status),
            CheckKind::Tls => "TLS handshake".to_string(),
            CheckKind::Https => format!("https GET {} expecting {}", b.health.path, b.health.expect_status),
        };
        let verify = match (&b.health.kind, &b.health.verify) {
            (CheckKind::None | CheckKind::Tcp | CheckKind::Http, _) => "",
            (_, TlsVerify::None) => ", certificate not verified",
            (_, TlsVerify::Ca { .. }) => ", certificate verified",
        };
        let balance = format!("{:?}", b.balance).to_lowercase();
        let every = match b.health.kind {
            CheckKind::None => String::new(),
            _ => format!(" every {}", humantime::format_duration(b.health.interval)),
        };
        lines.push(format!("  backend {}: {balance} over {} server(s), {check}{verify}{every}", b.name, b.servers.len()));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

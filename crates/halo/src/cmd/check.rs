//! `halo check`: runs the daemon's loader and prints all problems, or what would run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use halo_config::{CheckKind, Config, TlsVerify, TrackerKind};

/// Validates the file; exit 0 with a summary, 1 with every error, 2 when unreadable.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match super::load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    super::print_diagnostics(&loaded.warnings);
    print!("{}", summary(path, &loaded.config, loaded.warnings.len()));
    Ok(ExitCode::SUCCESS)
}

/// A few lines saying what `halo run` would start.
pub fn summary(path: &Path, config: &Config, warnings: usize) -> String {
    let mut out = String::new();
    let plural = if warnings == 1 { "" } else { "s" };
    let _ = writeln!(out, "{}: valid ({warnings} warning{plural})", path.display());
    for v in &config.vrrp {
        let vips: Vec<String> = v.virtual_addresses.iter().map(ToString::to_string).collect();
        let _ = write!(
            out,
            "  vrrp {}: {} id {} priority {} v{} every {}, addresses {}",
            v.name,
            v.interface,
            v.virtual_router_id,
            v.priority,
            v.version,
            humantime::format_duration(v.advert_interval.as_duration()),
            vips.join(" ")
        );
        if !v.track.is_empty() {
            let _ = write!(out, ", tracking {}", v.track.join(" "));
        }
        out.push('\n');
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
        let _ = writeln!(out, "  tracker {}: {what}, {effect}", t.name);
    }
    for f in &config.frontends {
        let binds: Vec<String> = f.binds.iter().map(ToString::to_string).collect();
        let _ =
            writeln!(out, "  frontend {}: {} -> backend {}, at most {} connections", f.name, binds.join(" "), f.backend, f.max_connections);
    }
    for b in &config.backends {
        let check = match b.health.kind {
            CheckKind::Tcp => "tcp connect".to_string(),
            CheckKind::Tls => "TLS handshake".to_string(),
            CheckKind::Https => format!("https GET {} expecting {}", b.health.path, b.health.expect_status),
        };
        let verify = match (&b.health.kind, &b.health.verify) {
            (CheckKind::Tcp, _) => "",
            (_, TlsVerify::None) => ", certificate not verified",
            (_, TlsVerify::Ca { .. }) => ", certificate verified",
        };
        let _ = writeln!(
            out,
            "  backend {}: {} over {} server(s), {check}{verify} every {}",
            b.name,
            format!("{:?}", b.balance).to_lowercase(),
            b.servers.len(),
            humantime::format_duration(b.health.interval)
        );
    }
    out
}

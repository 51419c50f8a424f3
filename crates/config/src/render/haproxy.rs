//! Config -> haproxy.cfg, with the classic stack's defects corrected: a real HTTPS health check
//! (`check-ssl` with `verify none` or a CA file), tunnel timeouts long enough for API streams.

use super::Rendered;
use super::write::{haproxy_time, line};
use crate::model::{Backend, Balance, CheckKind, Config, TlsVerify};

/// Renders every frontend and backend.
pub fn haproxy(config: &Config) -> Rendered {
    let mut out = String::new();
    let mut losses = Vec::new();
    line(&mut out, format_args!("# haproxy.cfg rendered by `halo render haproxy`; edit halo.toml, not this file."));
    let maxconn: u64 = config.frontends.iter().map(|f| u64::from(f.max_connections)).sum::<u64>().max(1);
    line(&mut out, format_args!("global\n    log /dev/log local0\n    maxconn {maxconn}\n"));
    // halo's connection log is haproxy's `option tcplog`.
    let tcplog = if config.log.connections { "    option tcplog\n" } else { "" };
    line(&mut out, format_args!("defaults\n    mode tcp\n    log global\n{tcplog}    option dontlognull\n"));
    for f in &config.frontends {
        let idle = config.backend(&f.backend).map(|b| b.idle_timeout);
        line(&mut out, format_args!("frontend {}", f.name));
        for bind in &f.binds {
            let v6only = if bind.is_ipv6() { " v6only" } else { "" };
            line(&mut out, format_args!("    bind {bind}{v6only}"));
        }
        line(&mut out, format_args!("    mode tcp\n    maxconn {}", f.max_connections));
        if f.first_byte_timeout != crate::defaults::FIRST_BYTE_TIMEOUT {
            losses
                .push(format!("frontend {}: first_byte_timeout has no haproxy equivalent (haproxy connects to a server at once)", f.name));
        }
        if let Some(idle) = idle {
            line(&mut out, format_args!("    timeout client {}", haproxy_time(idle)));
        }
        if !f.allow.is_empty() {
            let sources: Vec<String> = f.allow.iter().map(ToString::to_string).collect();
            line(&mut out, format_args!("    tcp-request connection reject if !{{ src {} }}", sources.join(" ")));
        }
        line(&mut out, format_args!("    default_backend {}\n", f.backend));
    }
    for b in &config.backends {
        let queue: Vec<_> = config.frontends.iter().filter(|f| f.backend == b.name).map(|f| f.queue_timeout).collect();
        if queue.windows(2).any(|w| w[0] != w[1]) {
            losses.push(format!("backend {}: frontends with different queue timeouts share it; haproxy keeps one (the first)", b.name));
        }
        backend(&mut out, b, queue.first().copied(), &mut losses);
    }
    Rendered { text: out, losses }
}

fn backend(out: &mut String, b: &Backend, queue: Option<std::time::Duration>, losses: &mut Vec<String>) {
    let balance = match b.balance {
        Balance::RoundRobin => "roundrobin",
        Balance::LeastConn => "leastconn",
        Balance::First => "first",
    };
    // haproxy's retries count the redispatched attempt too (see `retries` in docs/config.md).
    let retries = if b.redispatch { b.retries + 1 } else { b.retries };
    line(out, format_args!("backend {}\n    mode tcp\n    balance {balance}\n    retries {retries}", b.name));
    line(out, format_args!("    {}option redispatch", if b.redispatch { "" } else { "no " }));
    line(out, format_args!("    timeout connect {}", haproxy_time(b.connect_timeout)));
    let idle = haproxy_time(b.idle_timeout);
    line(out, format_args!("    timeout server {idle}\n    timeout tunnel {idle}"));
    if let Some(queue) = queue {
        line(out, format_args!("    timeout queue {}", haproxy_time(queue)));
    }
    let h = &b.health;
    line(out, format_args!("    timeout check {}", haproxy_time(h.timeout)));
    if matches!(h.kind, CheckKind::Http | CheckKind::Https) {
        line(out, format_args!("    option httpchk\n    http-check send meth GET uri {}", h.path));
        line(out, format_args!("    http-check expect status {}", h.expect_status));
    }
    let mut server =
        format!("check inter {} fastinter {} fall {} rise {}", haproxy_time(h.interval), haproxy_time(h.fast_interval), h.fall, h.rise);
    if h.kind == CheckKind::None {
        // Every enabled server takes traffic: haproxy's server lines without `check`.
        server.clear();
    }
    if matches!(h.kind, CheckKind::Tls | CheckKind::Https) {
        server.push_str(" check-ssl");
        match &h.verify {
            TlsVerify::None => server.push_str(" verify none"),
            TlsVerify::Ca { ca_file, server_name } => {
                server.push_str(&format!(" verify required ca-file {}", ca_file.display()));
                if let Some(name) = server_name {
                    server.push_str(&format!(" check-sni {name}"));
                }
            }
        }
        if let Some(c) = &h.client_cert {
            if c.cert_file != c.key_file {
                losses.push(format!(
                    "backend {}: haproxy reads the client key from the certificate file {}; append {} to it",
                    b.name,
                    c.cert_file.display(),
                    c.key_file.display()
                ));
            }
            server.push_str(&format!(" crt {}", c.cert_file.display()));
        }
    }
    if b.drain_timeout != crate::defaults::DRAIN_TIMEOUT {
        losses.push(format!("backend {}: drain_timeout has no per-backend haproxy equivalent (see hard-stop-after)", b.name));
    }
    if !server.is_empty() {
        line(out, format_args!("    default-server {server}"));
    }
    for s in &b.servers {
        let mut extra = String::new();
        if s.weight != 1 {
            extra.push_str(&format!(" weight {}", s.weight));
        }
        if s.backup {
            extra.push_str(" backup");
        }
        if s.disabled {
            extra.push_str(" disabled");
        }
        line(out, format_args!("    server {} {}{extra}", s.name, s.address));
    }
    out.push('\n');
}

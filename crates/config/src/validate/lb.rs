//! Validation of the balancer side: `[[frontend]]` and `[[backend]]` with servers and health.

use std::net::SocketAddr;
use std::time::Duration;

use super::{binds_conflict, choice, count, count_or, duration_or, positive_duration_or, socket_addr, unique_names};
use crate::defaults as d;
use crate::diag::{Hint, Report};
use crate::model::{
    AddressFamily, Backend, Balance, CheckKind, ClientCert, Frontend, HealthCheck, ProxyProtocol, Server, ServerAddress, TlsVerify,
};
use crate::raw::{RawBackend, RawFrontend, RawHealth, RawServer, RawVrrp};

/// Below this, an idle timeout cuts API streams (watches, logs -f, exec) in normal use.
const SHORT_IDLE: Duration = Duration::from_secs(300);

pub(super) fn frontends(report: &mut Report<'_>, raw: &[RawFrontend], backends: &[RawBackend]) -> Option<Vec<Frontend>> {
    unique_names(report, "frontend", raw.iter().map(|f| &f.name));
    let mut binds_seen: Vec<(SocketAddr, std::ops::Range<usize>)> = Vec::new();
    let mut out = Vec::new();
    for f in raw {
        if !backends.iter().any(|b| b.name.get_ref() == f.backend.get_ref()) {
            report
                .error(f.backend.span(), format!("frontend `{}` sends to unknown backend `{}`", f.name.get_ref(), f.backend.get_ref()))
                .hint(format!("known backends: {}", names(backends.iter().map(|b| b.name.get_ref()))));
        }
        if f.bind.get_ref().is_empty() {
            report.error(f.bind.span(), format!("frontend `{}` has no bind address", f.name.get_ref())).hint("bind = [\"0.0.0.0:8443\"]");
        }
        let mut binds = Vec::new();
        for bind in f.bind.get_ref() {
            let Some(addr) = socket_addr(report, bind, "bind") else {
                continue;
            };
            if let Some((other, _)) = binds_seen.iter().find(|(seen, _)| binds_conflict(*seen, addr)) {
                let message = if *other == addr {
                    format!("bind {addr} is listed twice")
                } else {
                    format!("bind {addr} overlaps {other}: the kernel refuses both listening on port {}", addr.port())
                };
                report
                    .error(bind.span(), message)
                    .hint("each address:port may be bound once; a wildcard covers every address of its family");
            }
            binds_seen.push((addr, bind.span()));
            binds.push(addr);
        }
        let max_connections = count_or(report, &f.max_connections, "max_connections", 1..=1_000_000, d::MAX_CONNECTIONS);
        let queue_timeout = duration_or(report, &f.queue_timeout, "queue_timeout", d::QUEUE_TIMEOUT);
        let first_byte_timeout = duration_or(report, &f.first_byte_timeout, "first_byte_timeout", d::FIRST_BYTE_TIMEOUT);
        let allow = allow_list(report, f.allow.as_deref().unwrap_or_default());
        out.push(Frontend {
            name: f.name.get_ref().clone(),
            binds,
            backend: f.backend.get_ref().clone(),
            max_connections: max_connections?,
            queue_timeout: queue_timeout?,
            first_byte_timeout: first_byte_timeout?,
            allow,
        });
    }
    Some(out)
}

/// `allow`: networks (`10.150.0.0/24`) or single addresses (`10.150.0.5`), host bits refused;
/// each error at its place.
fn allow_list(report: &mut Report<'_>, raw: &[crate::raw::Text]) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for text in raw {
        let value = text.get_ref();
        let parsed = value.parse::<ipnet::IpNet>().or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            // halo's IPv6 listeners take IPv6 clients only: an IPv4-mapped network matches nobody.
            Ok(ipnet::IpNet::V6(net)) if net.addr().to_ipv4_mapped().is_some() => {
                report
                    .error(text.span(), format!("allow {value:?} is an IPv4-mapped IPv6 network, which no client of halo has"))
                    .hint("write the IPv4 network itself");
            }
            Ok(net) if net.trunc() != net => {
                report
                    .error(text.span(), format!("allow {value:?} has host bits set"))
                    .hint(format!("did you mean {}? (or the address alone)", net.trunc()));
            }
            Ok(net) => out.push(net),
            Err(_) => {
                report
                    .error(text.span(), format!("allow {value:?} is not a network or an address"))
                    .hint("like \"10.150.0.0/24\" or \"2001:db8::/64\"");
            }
        }
    }
    out
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = it.map(String::as_str).collect();
    if all.is_empty() { "none".to_string() } else { all.join(", ") }
}

pub(super) fn backends(report: &mut Report<'_>, raw: &[RawBackend]) -> Option<Vec<Backend>> {
    unique_names(report, "backend", raw.iter().map(|b| &b.name));
    let mut out = Some(Vec::new());
    for b in raw {
        let backend = backend(report, b);
        out = out.zip(backend).map(|(mut v, b)| {
            v.push(b);
            v
        });
    }
    out
}

fn backend(report: &mut Report<'_>, b: &RawBackend) -> Option<Backend> {
    let balance = match &b.balance {
        Some(t) => choice(
            report,
            t,
            "balance",
            &[("roundrobin", Balance::RoundRobin), ("leastconn", Balance::LeastConn), ("first", Balance::First)],
        ),
        None => Some(Balance::default()),
    };
    if b.server.get_ref().is_empty() {
        report
            .warning(b.name.span(), format!("backend `{}` has no servers: its frontends refuse every connection", b.name.get_ref()))
            .hint("add [[backend.server]] tables (a template that a tool fills later may leave it empty)");
    }
    unique_names(report, "server", b.server.get_ref().iter().map(|s| &s.get_ref().name));
    let mut servers = Some(Vec::new());
    let mut addresses: Vec<ServerAddress> = Vec::new();
    for s in b.server.get_ref() {
        let parsed = server(report, s.get_ref());
        if let Some(server) = &parsed {
            if addresses.contains(&server.address) {
                report.error(
                    s.get_ref().address.span(),
                    format!("server address {} is listed twice in backend `{}`", server.address, b.name.get_ref()),
                );
            }
            addresses.push(server.address.clone());
        }
        servers = servers.zip(parsed).map(|(mut v, s)| {
            v.push(s);
            v
        });
    }
    if b.server.get_ref().iter().all(|s| s.get_ref().backup.as_ref().is_some_and(|f| *f.get_ref())) && !b.server.get_ref().is_empty() {
        report
            .warning(b.server.span(), format!("every server of backend `{}` is a backup", b.name.get_ref()))
            .hint("backup servers are used only when no primary is up; mark at least one as primary");
    }
    let health = match &b.health {
        Some(h) => health(report, h.get_ref()),
        None => Some(HealthCheck::default_https()),
    };
    let idle_timeout = positive_duration_or(report, &b.idle_timeout, "idle_timeout", d::IDLE_TIMEOUT);
    if let (Some(idle), Some(t)) = (idle_timeout, &b.idle_timeout)
        && idle < SHORT_IDLE
    {
        report
            .warning(
                t.span(),
                format!("idle_timeout {} cuts `kubectl logs -f`, `exec` and watches that are quiet for that long", t.get_ref()),
            )
            .hint("API streams stay silent for minutes; use \"1h\" (the default) unless this backend is not an API server");
    }
    let resolve_interval = positive_duration_or(report, &b.resolve_interval, "resolve_interval", d::RESOLVE_INTERVAL);
    let resolve_prefer = match &b.resolve_prefer {
        Some(t) => choice(report, t, "resolve_prefer", &[("ipv4", AddressFamily::Ipv4), ("ipv6", AddressFamily::Ipv6)]),
        None => Some(AddressFamily::default()),
    };
    let send_proxy = match &b.send_proxy {
        Some(t) => choice(report, t, "send_proxy", &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)]).map(Some),
        None => Some(None),
    };
    Some(Backend {
        name: b.name.get_ref().clone(),
        balance: balance?,
        servers: servers?,
        health: health?,
        retries: count_or(report, &b.retries, "retries", 0..=100, d::RETRIES)?,
        redispatch: b.redispatch.as_ref().is_none_or(|f| *f.get_ref()),
        connect_timeout: positive_duration_or(report, &b.connect_timeout, "connect_timeout", d::CONNECT_TIMEOUT)?,
        idle_timeout: idle_timeout?,
        drain_timeout: duration_or(report, &b.drain_timeout, "drain_timeout", d::DRAIN_TIMEOUT)?,
        resolve_interval: resolve_interval?,
        resolve_prefer: resolve_prefer?,
        send_proxy: send_proxy?,
    })
}

fn server(report: &mut Report<'_>, s: &RawServer) -> Option<Server> {
    let address = server_address(report, &s.address);
    let weight = match &s.weight {
        Some(w) if *w.get_ref() == 0 => {
            report.error(w.span(), "server weight 0").hint("weights are 1..=256; to take a server out of rotation set `disabled = true`");
            None
        }
        Some(w) => count(report, w, "weight", 1..=256),
        None => Some(d::SERVER_WEIGHT),
    };
    Some(Server {
        name: s.name.get_ref().clone(),
        address: address?,
        weight: weight?,
        backup: s.backup.as_ref().is_some_and(|f| *f.get_ref()),
        disabled: s.disabled.as_ref().is_some_and(|f| *f.get_ref()),
    })
}

/// `ip:port`, or `name:port` with a valid DNS name (RFC 1123 labels; a trailing dot allowed).
fn server_address(report: &mut Report<'_>, text: &crate::raw::Text) -> Option<ServerAddress> {
    let s = text.get_ref();
    let looks_like_name = s.rsplit_once(':').is_some_and(|(host, _)| {
        !host.contains(':')
            && !host.starts_with('[')
            && host.parse::<std::net::IpAddr>().is_err()
            && host.chars().any(|c| c.is_ascii_alphabetic())
    });
    if !looks_like_name {
        return socket_addr(report, text, "server address").map(ServerAddress::Ip);
    }
    let (host, port) = s.rsplit_once(':').unwrap_or((s, ""));
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => {
            report.error(text.span(), format!("server address: `{port}` in `{s}` is not a port")).hint("like \"master1:6443\"");
            return None;
        }
        Ok(port) => port,
    };
    if !is_host_name(host) {
        report
            .error(text.span(), format!("server address: `{host}` is neither an IP address nor a host name"))
            .hint("a host name is letters, digits, `-` and `.` (\"master1\", \"cp0.example.com\"); an address is \"10.0.0.1:6443\"");
        return None;
    }
    Some(ServerAddress::Name { host: host.to_string(), port })
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, 1..=63
/// bytes each, 253 in all; one trailing dot allowed.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl HealthCheck {
    /// The check halo runs when a backend says nothing: HTTPS `GET /readyz` expecting 200.
    pub fn default_https() -> Self {
        HealthCheck {
            kind: CheckKind::Https,
            path: d::CHECK_PATH.to_string(),
            expect_status: d::CHECK_STATUS,
            verify: TlsVerify::None,
            client_cert: None,
            interval: d::CHECK_INTERVAL,
            fast_interval: d::CHECK_FAST_INTERVAL,
            timeout: d::CHECK_TIMEOUT,
            fall: d::CHECK_FALL,
            rise: d::CHECK_RISE,
        }
    }
}

/// `health.kind`, https when absent.
fn check_kind(report: &mut Report<'_>, h: &RawHealth) -> Option<CheckKind> {
    match &h.kind {
        Some(t) => choice(
            report,
            t,
            "health.kind",
            &[
                ("none", CheckKind::None),
                ("tcp", CheckKind::Tcp),
                ("http", CheckKind::Http),
                ("tls", CheckKind::Tls),
                ("https", CheckKind::Https),
            ],
        ),
        None => Some(CheckKind::Https),
    }
}

/// The keys of other kinds (`path` for a TCP check, `ca_file` for a plain HTTP one) are errors.
fn keys_fit_the_kind(report: &mut Report<'_>, h: &RawHealth, kind: CheckKind) {
    let span = |v: &Option<toml::Spanned<String>>| v.as_ref().map(|t| t.span());
    let http_only = [(span(&h.path), "path"), (h.expect_status.as_ref().map(|s| s.span()), "expect_status")];
    for (at, key) in http_only {
        if let (Some(at), false) = (at, matches!(kind, CheckKind::Http | CheckKind::Https)) {
            report
                .error(at, format!("health.{key} is used only by `http` and `https` checks"))
                .hint("set kind = \"http\" or \"https\", or remove the key");
        }
    }
    let tls_only = [
        (span(&h.ca_file), "ca_file"),
        (span(&h.server_name), "server_name"),
        (span(&h.client_cert), "client_cert"),
        (span(&h.client_key), "client_key"),
    ];
    for (at, key) in tls_only {
        if let (Some(at), false) = (at, matches!(kind, CheckKind::Tls | CheckKind::Https)) {
            report
                .error(at, format!("health.{key} is used only by `tls` and `https` checks"))
                .hint("set kind = \"tls\" or \"https\", or remove the key");
        }
    }
}

fn health(report: &mut Report<'_>, h: &RawHealth) -> Option<HealthCheck> {
    let kind = check_kind(report, h);
    if let Some(kind) = kind {
        keys_fit_the_kind(report, h, kind);
    }
    let path = h.path.as_ref().map_or(d::CHECK_PATH.to_string(), |p| p.get_ref().clone());
    if let Some(p) = &h.path
        && (!p.get_ref().starts_with('/') || p.get_ref().chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        report.error(p.span(), format!("health.path `{}` is not an absolute request path", p.get_ref())).hint("like \"/readyz\"");
    }
    let expect_status = match &h.expect_status {
        Some(s) => count(report, s, "health.expect_status", 100..=599).map(|s| s as u16),
        None => Some(d::CHECK_STATUS),
    };
    let verify = match (&h.ca_file, &h.server_name) {
        (Some(ca), name) => Some(TlsVerify::Ca { ca_file: ca.get_ref().into(), server_name: name.as_ref().map(|n| n.get_ref().clone()) }),
        (None, Some(name)) => {
            report
                .error(name.span(), "health.server_name is used only to verify against health.ca_file")
                .hint("add ca_file = \"/etc/kubernetes/pki/ca.crt\"");
            None
        }
        (None, None) => Some(TlsVerify::None),
    };
    let client_cert = match (&h.client_cert, &h.client_key) {
        (Some(c), Some(k)) => Some(Some(ClientCert { cert_file: c.get_ref().into(), key_file: k.get_ref().into() })),
        (None, None) => Some(None),
        (Some(v), None) | (None, Some(v)) => {
            report.error(v.span(), "health.client_cert and health.client_key go together").hint("give both files, or neither");
            None
        }
    };
    let interval = positive_duration_or(report, &h.interval, "health.interval", d::CHECK_INTERVAL);
    let fast_interval = positive_duration_or(
        report,
        &h.fast_interval,
        "health.fast_interval",
        d::CHECK_FAST_INTERVAL.min(interval.unwrap_or(d::CHECK_FAST_INTERVAL)),
    );
    let timeout = positive_duration_or(report, &h.timeout, "health.timeout", d::CHECK_TIMEOUT);
    if let (Some(i), Some(f), Some(t)) = (interval, fast_interval, &h.fast_interval)
        && f > i
    {
        report
            .error(t.span(), "health.fast_interval is longer than health.interval")
            .hint("the fast interval is used while a server changes state; make it shorter");
    }
    if let (Some(i), Some(t), Some(raw)) = (interval, timeout, &h.timeout)
        && t > i
    {
        report.warning(raw.span(), "health.timeout is longer than health.interval: a hung server is noticed only after the timeout");
    }
    Some(HealthCheck {
        kind: kind?,
        path,
        expect_status: expect_status?,
        verify: verify?,
        client_cert: client_cert?,
        interval: interval?,
        fast_interval: fast_interval?,
        timeout: timeout?,
        fall: count_or(report, &h.fall, "health.fall", 1..=100, d::CHECK_FALL)?,
        rise: count_or(report, &h.rise, "health.rise", 1..=100, d::CHECK_RISE)?,
    })
}

/// A virtual address that is also a server address would send the VIP's traffic to itself.
pub(super) fn no_vip_is_a_server(report: &mut Report<'_>, vrrp: &[RawVrrp], backends: &[RawBackend]) {
    for b in backends {
        for s in b.server.get_ref() {
            let Ok(addr) = s.get_ref().address.get_ref().parse::<SocketAddr>() else {
                continue;
            };
            for v in vrrp {
                let is_vip = v
                    .virtual_addresses
                    .get_ref()
                    .iter()
                    .any(|a| super::parse_virtual_address(a.get_ref()).is_some_and(|n| n.addr() == addr.ip()));
                if is_vip {
                    report
                        .error(
                            s.get_ref().address.span(),
                            format!(
                                "server `{}` has the virtual address {} of vrrp `{}`",
                                s.get_ref().name.get_ref(),
                                addr.ip(),
                                v.name.get_ref()
                            ),
                        )
                        .hint("servers are the masters' own addresses; the VIP is the balancer's");
                }
            }
        }
    }
}

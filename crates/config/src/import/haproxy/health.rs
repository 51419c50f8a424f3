//! The health check of a backend: haproxy's check options (`option httpchk`, `ssl-hello-chk`,
//! `tcp-check`, the last one winning) and its servers' check keywords -> halo's one check per
//! backend.

use std::time::Duration;

use super::parse::{self, At, CheckOption, Proxy};
use crate::defaults as d;
use crate::import::{Sink, Source};
use crate::model::{CheckKind, ClientCert, HealthCheck, TlsVerify};

/// The Kubernetes API server's port: always TLS.
const API_SERVER_PORT: u16 = 6443;

/// What of a server's options shapes its check, for comparing servers.
#[allow(clippy::type_complexity)]
fn check_settings(s: &parse::ServerParams) -> (bool, [Option<&str>; 4], [Option<Duration>; 2], [Option<u32>; 2]) {
    fn value(v: &At<String>) -> Option<&str> {
        v.as_ref().map(|(v, _)| v.as_str())
    }
    (
        s.check_ssl.is_some(),
        [value(&s.verify), value(&s.ca_file), value(&s.crt), value(&s.sni)],
        [s.inter.map(|v| v.0), s.fastinter.map(|v| v.0)],
        [s.fall.map(|v| v.0), s.rise.map(|v| v.0)],
    )
}

/// The backend's one check: the kind its check options and TLS settings make, with the settings
/// of the first checked server (a warning for each server checked otherwise).
pub(super) fn health(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> HealthCheck {
    let item = format!("backend {name}");
    let Some(first) = first_checked(p, &item, sink) else {
        return HealthCheck { kind: CheckKind::None, ..HealthCheck::default_https() };
    };
    warn_unlike_servers(src, p, &first, sink);
    let tls = first.check_ssl.is_some() || p.connect_ssl.is_some();
    let http_path = p.checks.iter().rev().find_map(|(c, l)| match c {
        CheckOption::HttpChk { path } => Some((path.clone(), *l)),
        _ => None,
    });
    let path = p.send_path.clone().map(|(p, _)| p).or_else(|| http_path.clone().and_then(|(p, _)| p)).unwrap_or_else(|| "/".to_string());
    let kind = check_kind(src, name, p, tls, &path, http_path.map(|(_, l)| l), sink);
    if kind == CheckKind::Https && path == "/healthz" {
        sink.note(item.clone(), "/healthz stays OK while an API server drains; /readyz (halo's default) turns 503 first.".to_string());
    }
    let verify = tls_verify(&first, tls || kind == CheckKind::Https, &item, sink);
    let timeout = p.timeout("check").map(|t| t.0).or(first.inter.map(|i| i.0)).unwrap_or(d::CHECK_TIMEOUT);
    let interval = first.inter.map_or(d::CHECK_INTERVAL, |i| i.0);
    HealthCheck {
        kind,
        path: if matches!(kind, CheckKind::Http | CheckKind::Https) { path } else { d::CHECK_PATH.to_string() },
        expect_status: p.expect_status.map_or(d::CHECK_STATUS, |(s, _)| s),
        verify,
        client_cert: first.crt.map(|(c, _)| ClientCert { cert_file: c.clone().into(), key_file: c.into() }),
        interval,
        fast_interval: first.fastinter.map_or(interval.min(d::CHECK_FAST_INTERVAL), |f| f.0.min(interval)),
        timeout,
        fall: first.fall.map_or(d::CHECK_FALL, |f| f.0.clamp(1, 100)),
        rise: first.rise.map_or(d::CHECK_RISE, |r| r.0.clamp(1, 100)),
    }
}

/// The settings of the first server haproxy checks (an unchecked one has none to give; the
/// defaults when there is no server), or `None` when servers exist and haproxy checks none of
/// them: then halo probes none either.
fn first_checked(p: &Proxy, item: &str, sink: &mut Sink) -> Option<parse::ServerParams> {
    let checked = p.servers.iter().filter(|(_, _, s, _)| s.check).count();
    if checked == 0 && !p.servers.is_empty() {
        sink.note(item, "No server had `check`: haproxy never probed them; kind = \"none\" keeps that.".to_string());
        return None;
    }
    Some(p.servers.iter().find(|(_, _, s, _)| s.check).map(|(_, _, s, _)| s.clone()).unwrap_or_default())
}

/// A warning for each server that haproxy did not check, or checked unlike the first checked
/// server: halo checks all servers of a backend alike.
fn warn_unlike_servers(src: Source<'_>, p: &Proxy, first: &parse::ServerParams, sink: &mut Sink) {
    for (server_name, _, s, l) in &p.servers {
        if !s.check {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has no `check`: haproxy sent it traffic without ever checking it"),
                "halo checks all servers of a backend alike when any of them has `check`",
            );
        } else if check_settings(s) != check_settings(first) {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has check settings unlike the first checked server's"),
                "halo checks all servers of a backend alike; the first checked server's settings are used",
            );
        }
    }
}

/// The kind of check, from the last check option and whether the servers speak TLS; where
/// haproxy's check never asked the API server what halo asks (`ssl-hello-chk` over `httpchk`,
/// plain HTTP to the API server's TLS port), a warning and the real check.
fn check_kind(src: Source<'_>, name: &str, p: &Proxy, tls: bool, path: &str, http_line: Option<usize>, sink: &mut Sink) -> CheckKind {
    match p.checks.last() {
        Some((CheckOption::SslHello, ssl_line)) => {
            if let Some(http_line) = http_line {
                sink.warn(
                    src.file,
                    *ssl_line,
                    format!("backend `{name}`: `option ssl-hello-chk` replaces `option httpchk` (line {http_line}): haproxy never sends GET {path}, so a server answering 500 stays in rotation"),
                    format!("halo runs the real check: TLS, then GET {path} expecting the status"),
                );
                sink.note(
                    format!("backend {name}"),
                    format!("The classic config's ssl-hello-chk overrode httpchk: {path} was never requested. halo requests it over TLS."),
                );
                CheckKind::Https
            } else {
                CheckKind::Tls
            }
        }
        Some((CheckOption::HttpChk { .. }, _)) if tls => CheckKind::Https,
        Some((CheckOption::HttpChk { .. }, l)) if p.servers.iter().all(|(_, a, _, _)| a.port() == API_SERVER_PORT) => {
            sink.warn(src.file, *l, format!("backend `{name}`: httpchk without check-ssl sends plain HTTP to the API server's TLS port; it answers 400 and every check fails"), "halo runs the check over TLS (kind = \"https\")");
            CheckKind::Https
        }
        Some((CheckOption::HttpChk { .. }, _)) => CheckKind::Http,
        Some((CheckOption::TcpCheck, _)) | None if tls => CheckKind::Tls,
        Some((CheckOption::TcpCheck, _)) | None => CheckKind::Tcp,
    }
}

/// How server certificates are verified: against the first checked server's `ca-file` (with its
/// `sni`), or not at all (noted when the check speaks TLS).
fn tls_verify(first: &parse::ServerParams, speaks_tls: bool, item: &str, sink: &mut Sink) -> TlsVerify {
    match (&first.verify, &first.ca_file) {
        (_, Some((ca, _))) => TlsVerify::Ca { ca_file: ca.into(), server_name: first.sni.as_ref().map(|s| s.0.clone()) },
        (Some((v, _)), None) if v == "none" => TlsVerify::None,
        (_, None) => {
            if speaks_tls {
                sink.note(
                    item,
                    "Server certificates are not verified; set health.ca_file = \"/etc/kubernetes/pki/ca.crt\" to verify them.".to_string(),
                );
            }
            TlsVerify::None
        }
    }
}

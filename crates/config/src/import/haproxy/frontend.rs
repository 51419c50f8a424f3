//! `frontend` and `listen` sections -> halo's frontends: binds, the backend each sends to, the
//! connection limit; and the binds a wildcard of another frontend covers.

use super::parse::{At, Proxy, tcp_mode};
use crate::defaults as d;
use crate::import::{Sink, Source};
use crate::model::Frontend;

/// A frontend from a `frontend` section, or from a `listen` one (`listen` set), which is its own
/// backend when it names no other, servers or not.
pub(super) fn frontend(
    src: Source<'_>,
    (name, listen): (&str, bool),
    line: usize,
    p: &Proxy,
    sink: &mut Sink,
    global_maxconn: At<u32>,
) -> Option<Frontend> {
    tcp_mode(src, name, p, sink);
    if p.binds.is_empty() {
        sink.error(src.file, line, format!("frontend `{name}` has no bind"), "");
        return None;
    }
    let backend = match (&p.default_backend, p.conditional_backends.first()) {
        (Some((b, _)), _) => b.clone(),
        (None, _) if listen || !p.servers.is_empty() => name.to_string(),
        (None, Some((b, at))) => {
            sink.warn(
                src.file,
                *at,
                format!("frontend `{name}` has only conditional `use_backend` rules: every connection goes to `{b}`, the first"),
                "halo balances TCP without content rules; set default_backend to choose another",
            );
            b.clone()
        }
        (None, None) => {
            sink.error(src.file, line, format!("frontend `{name}` has no default_backend"), "");
            return None;
        }
    };
    for (other, at) in &p.conditional_backends {
        if p.default_backend.is_some() || p.conditional_backends.first().is_some_and(|(first, _)| first != other) {
            sink.warn(
                src.file,
                *at,
                format!("frontend `{name}`: the conditional `use_backend {other}` is not imported: every connection goes to `{backend}`"),
                "halo balances TCP without content rules",
            );
        }
    }
    let maxconn = p.maxconn.or(global_maxconn).map_or(d::MAX_CONNECTIONS, |(m, _)| m.clamp(1, 1_000_000));
    Some(Frontend {
        name: name.to_string(),
        binds: p.binds.iter().map(|(a, _)| *a).collect(),
        backend,
        max_connections: maxconn,
        queue_timeout: p.timeout("queue").map_or(d::QUEUE_TIMEOUT, |(t, _)| t),
        first_byte_timeout: d::FIRST_BYTE_TIMEOUT,
        allow: p.allow.clone().map(|(nets, _)| nets).unwrap_or_default(),
    })
}

/// haproxy binds `*:p` and `127.0.0.1:p` at once (SO_REUSEPORT); the kernel refuses halo that,
/// and the wildcard accepts the specific address's connections anyway: a bind covered by a
/// wildcard of its family and port is dropped, with a warning.
pub(super) fn covered_binds(src: Source<'_>, frontends: &mut [(Frontend, usize)], sink: &mut Sink) {
    let wildcards: Vec<(std::net::SocketAddr, String)> =
        frontends.iter().flat_map(|(f, _)| f.binds.iter().filter(|b| b.ip().is_unspecified()).map(move |b| (*b, f.name.clone()))).collect();
    for (f, line) in frontends.iter_mut() {
        f.binds.retain(|b| {
            let cover = wildcards.iter().find(|(w, _)| !b.ip().is_unspecified() && w.port() == b.port() && w.is_ipv4() == b.is_ipv4());
            if let Some((wildcard, owner)) = cover {
                sink.warn(
                    src.file,
                    *line,
                    format!("frontend `{}`: bind {b} is covered by {wildcard} (frontend `{owner}`): dropped", f.name),
                    "the wildcard listener accepts connections to that address too",
                );
            }
            cover.is_none()
        });
    }
}

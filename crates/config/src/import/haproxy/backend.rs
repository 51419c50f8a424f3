//! `backend` sections (and `listen` ones) -> halo's backends: servers with their options,
//! balancing, retries and timeouts, the PROXY header and address family; their health check is
//! in `health`.

use std::time::Duration;

use super::health::health;
use super::parse::{self, Proxy, tcp_mode};
use crate::defaults as d;
use crate::import::{Sink, Source};
use crate::model::{AddressFamily, Backend, Balance, Server, ServerAddress};

/// A backend from a `backend` or `listen` section: its servers (weight 0 is disabled), their
/// check, balancing, retries and timeouts.
pub(super) fn backend(src: Source<'_>, name: &str, line: usize, p: &Proxy, sink: &mut Sink) -> Option<Backend> {
    tcp_mode(src, name, p, sink);
    if p.servers.is_empty() {
        sink.warn(
            src.file,
            line,
            format!("backend `{name}` has no server: its frontends will refuse every connection"),
            "imported as it is (a template a tool fills later); add servers before it takes traffic",
        );
    }
    let servers = p
        .servers
        .iter()
        .map(|(server_name, address, s, _)| {
            let weight = s.weight.map_or(d::SERVER_WEIGHT, |(w, _)| w);
            if let Some((0, l)) = s.weight {
                sink.warn(src.file, l, format!("server `{server_name}` has weight 0"), "imported as `disabled = true`");
            }
            server_options(src, server_name, address, s, sink);
            Server {
                name: server_name.clone(),
                address: address.clone(),
                weight: weight.clamp(1, 256),
                backup: s.backup,
                disabled: s.disabled || weight == 0,
            }
        })
        .collect();
    let health = health(src, name, p, sink);
    let idle = idle_timeout(src, name, p, sink);
    let redispatch = p.redispatch.is_some_and(|(r, _)| r);
    let retries = retries(name, p, redispatch, sink);
    Some(Backend {
        name: name.to_string(),
        balance: balance(src, name, p, sink),
        servers,
        health,
        retries,
        redispatch,
        connect_timeout: p.timeout("connect").map_or(d::CONNECT_TIMEOUT, |(t, _)| t),
        idle_timeout: idle,
        drain_timeout: d::DRAIN_TIMEOUT,
        resolve_interval: d::RESOLVE_INTERVAL,
        resolve_prefer: resolve_prefer(src, name, p, sink),
        send_proxy: send_proxy(src, name, p, sink),
    })
}

/// `balance`: halo's three, and `source` (client-address affinity), which halo does not have.
fn balance(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> Balance {
    match &p.balance {
        Some((parse::Balancing::Known(b), _)) => *b,
        Some((parse::Balancing::Other(algo), at)) => {
            sink.warn(
                src.file,
                *at,
                format!("backend `{name}`: `balance {algo}` has no halo equivalent; roundrobin is used"),
                "halo balances roundrobin, leastconn or first; a client's connections may reach different servers (the API server keeps no session state per connection)",
            );
            Balance::RoundRobin
        }
        None => Balance::RoundRobin,
    }
}

/// Per-server resolution and connection options: what halo maps, and what it says about the rest.
fn server_options(src: Source<'_>, server: &str, address: &ServerAddress, s: &parse::ServerParams, sink: &mut Sink) {
    if let Some((resolvers, at)) = &s.resolvers {
        sink.warn(
            src.file,
            *at,
            format!("server `{server}`: `resolvers {resolvers}` is not imported; halo asks the system resolver (getaddrinfo: /etc/hosts, nsswitch, resolv.conf)"),
            "the nameservers of the resolvers section are not used; put them in /etc/resolv.conf if the system does not use them already",
        );
    }
    if let Some((init, at)) = &s.init_addr {
        let known = init.split(',').all(|m| ["last", "libc", "none"].contains(&m));
        if !known {
            sink.warn(
                src.file,
                *at,
                format!("server `{server}`: `init-addr {init}`: halo resolves at start through the system resolver and starts the server DOWN if that fails"),
                "as `init-addr last,libc,none`: halo keeps no state file of last addresses",
            );
        }
    }
    if address.host_name().is_none() && (s.resolvers.is_some() || s.resolve_prefer.is_some()) {
        sink.warn(
            src.file,
            s.resolvers.as_ref().map(|r| r.1).or(s.resolve_prefer.map(|r| r.1)).unwrap_or_default(),
            format!("server `{server}` has an IP address: the resolution options do nothing"),
            "",
        );
    }
    if let Some((maxconn, at)) = s.maxconn {
        sink.unmapped(
            src.file,
            at,
            &format!("server `{server}` maxconn {maxconn}"),
            "halo caps connections per frontend (`max_connections`), not per server",
        );
    }
}

/// `resolve-prefer` of the backend's servers (one value for the backend in halo).
fn resolve_prefer(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> AddressFamily {
    let named = p.servers.iter().filter(|(_, a, _, _)| a.host_name().is_some());
    let mut chosen: Option<(AddressFamily, usize)> = None;
    for (_, _, s, line) in named {
        let family = s.resolve_prefer.map_or(AddressFamily::Ipv6, |(f, _)| f); // haproxy's default
        match chosen {
            None => chosen = Some((family, *line)),
            Some((first, _)) if first != family => sink.warn(
                src.file,
                *line,
                format!("backend `{name}`: servers prefer different address families; the first server's is used"),
                "halo has one `resolve_prefer` per backend",
            ),
            Some(_) => {}
        }
    }
    if chosen.is_some_and(|(f, _)| f == AddressFamily::Ipv6) && p.servers.iter().all(|(_, _, s, _)| s.resolve_prefer.is_none()) {
        sink.note(format!("backend {name}"), "resolve_prefer = \"ipv6\" keeps haproxy's default; halo's own is ipv4.".to_string());
    }
    chosen.map_or(AddressFamily::default(), |(f, _)| f)
}

/// `send-proxy` / `send-proxy-v2`: one setting per backend in halo.
fn send_proxy(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> Option<crate::model::ProxyProtocol> {
    let first = p.servers.first().and_then(|(_, _, s, _)| s.send_proxy.map(|(v, _)| v));
    for (server, _, s, line) in &p.servers {
        if s.send_proxy.map(|(v, _)| v) != first {
            let (written, kept) = match first {
                Some(v) => ("without the PROXY header", format!("send_proxy = \"{}\"", format!("{v:?}").to_lowercase())),
                None => ("with the PROXY header", "no PROXY header".to_string()),
            };
            sink.warn(
                src.file,
                *line,
                format!("backend `{name}`: server `{server}` is written {written}, unlike the first server: imported with the first server's setting ({kept})"),
                "halo has one `send_proxy` per backend",
            );
        }
    }
    first
}

/// haproxy's `retries N` counts every new attempt, and with `option redispatch` the last one goes
/// to another server: N - 1 on the same server, then another. halo's `retries` are the attempts
/// on the same server before redispatching, so that is `N - 1` with redispatch and `N` without.
fn retries(name: &str, p: &Proxy, redispatch: bool, sink: &mut Sink) -> u32 {
    // haproxy's default is 3 as well.
    let n = p.retries.map_or(3, |(n, _)| n).min(100);
    if p.retries.is_none() && !redispatch {
        return d::RETRIES;
    }
    if redispatch && n > 0 {
        sink.note(
            format!("backend {name}"),
            format!("haproxy `retries {n}` with `option redispatch` = {} on the same server, then another server", n - 1),
        );
        n - 1
    } else {
        n
    }
}

/// In TCP mode, `timeout tunnel` rules an established connection; without it the shorter of
/// client and server timeouts cuts an idle one.
fn idle_timeout(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> Duration {
    let tunnel = p.timeout("tunnel");
    let shorter = match (p.timeout("client"), p.timeout("server")) {
        (Some(c), Some(s)) => Some(if c.0 <= s.0 { c } else { s }),
        (one, other) => one.or(other),
    };
    let Some((idle, line)) = tunnel.or(shorter) else {
        return d::IDLE_TIMEOUT;
    };
    if idle < Duration::from_secs(300) {
        let shown = humantime::format_duration(idle);
        sink.warn(
            src.file,
            line,
            format!("backend `{name}`: connections idle for {shown} are cut; kubectl logs -f, exec, port-forward and watches are silent for longer and break"),
            "imported as is; halo's default idle_timeout is 1h (delete the line to use it)",
        );
        sink.note(format!("backend {name}"), format!("idle_timeout imported as {shown}: it cuts long API streams; halo's default is 1h."));
    }
    idle
}

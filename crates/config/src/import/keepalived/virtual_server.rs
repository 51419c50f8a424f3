//! keepalived as the balancer itself: an LVS `virtual_server` with its `real_server`s and their
//! checks becomes a halo frontend (bound on the virtual address and port) and a backend. halo
//! proxies TCP where LVS forwarded packets, so what depends on forwarding (DR/TUN return paths,
//! the client's address at the server, per-client persistence) is said in a warning.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::parse::Node;
use super::{integer, seconds};
use crate::defaults as d;
use crate::import::Sink;
use crate::model::{Backend, Balance, CheckKind, Frontend, HealthCheck, Server, TlsVerify};

/// A `virtual_server IP PORT { ... }` block: the frontend and backend it becomes.
pub(super) fn virtual_server(node: &Node, sink: &mut Sink) -> Option<(Frontend, Backend)> {
    let bind = endpoint(node, 1, sink)?;
    let name = format!("vs-{}-{}", bind.ip(), bind.port()).replace([':', '.'], "-");
    let mut backend = Backend {
        name: name.clone(),
        balance: Balance::RoundRobin,
        servers: Vec::new(),
        health: HealthCheck { kind: CheckKind::None, ..HealthCheck::default_https() },
        retries: d::RETRIES,
        redispatch: true,
        connect_timeout: d::CONNECT_TIMEOUT,
        idle_timeout: d::IDLE_TIMEOUT,
        drain_timeout: d::DRAIN_TIMEOUT,
        resolve_interval: d::RESOLVE_INTERVAL,
        resolve_prefer: crate::model::AddressFamily::default(),
        send_proxy: None,
    };
    let mut interval = None;
    for c in node.children() {
        match c.keyword() {
            "delay_loop" => interval = seconds(c, 1, sink),
            "lb_algo" | "lvs_sched" => backend.balance = balance(c, sink),
            "lb_kind" | "lvs_method" => sink.warn(
                &c.file,
                c.line,
                format!("lb_kind {}: halo proxies the connection, so the servers see the balancer's address, not the client's", c.arg(1)),
                "the servers need no virtual address on their loopback any more, and replies return through halo",
            ),
            "persistence_timeout" | "persistence_granularity" => sink.warn(
                &c.file,
                c.line,
                format!("`{}` is not imported: halo keeps no per-client affinity", c.keyword()),
                "the API server keeps no per-connection session state: any server may answer any client",
            ),
            "protocol" if c.arg(1).eq_ignore_ascii_case("tcp") => {}
            "protocol" => {
                sink.error(&c.file, c.line, format!("protocol {}: halo balances TCP only", c.arg(1)), "");
                return None;
            }
            "real_server" => backend.servers.extend(real_server(c, backend.servers.len(), &mut backend.health, sink)),
            "sorry_server" => {
                if let Some(address) = endpoint(c, 1, sink) {
                    let name = format!("sorry-{}", backend.servers.len() + 1);
                    backend.servers.push(Server { name, address: address.into(), weight: 1, backup: true, disabled: false });
                }
            }
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    if let Some(interval) = interval {
        backend.health.interval = interval;
    }
    backend.health.fast_interval = backend.health.fast_interval.min(backend.health.interval);
    if backend.health.timeout > backend.health.interval {
        backend.health.timeout = backend.health.interval;
    }
    sink.note(
        format!("frontend {name}"),
        "Imported from an LVS virtual_server: halo proxies what LVS forwarded (the servers see the balancer's address).".to_string(),
    );
    let frontend = Frontend {
        name: name.clone(),
        binds: vec![bind],
        backend: name,
        max_connections: d::MAX_CONNECTIONS,
        queue_timeout: d::QUEUE_TIMEOUT,
        first_byte_timeout: d::FIRST_BYTE_TIMEOUT,
        allow: Vec::new(),
    };
    Some((frontend, backend))
}

/// `IP PORT` from word `first` on.
fn endpoint(node: &Node, first: usize, sink: &mut Sink) -> Option<SocketAddr> {
    let (ip, port) = (node.arg(first), node.arg(first + 1));
    match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
        (Ok(ip), Ok(port)) if port != 0 => Some(SocketAddr::new(ip, port)),
        _ => {
            let hint = if ip == "fwmark" || ip == "group" { "halo binds an address and a port: list the address" } else { "IP PORT" };
            sink.error(&node.file, node.line, format!("`{}` needs an address and a port, got `{ip} {port}`", node.keyword()), hint);
            None
        }
    }
}

fn balance(c: &Node, sink: &mut Sink) -> Balance {
    match c.arg(1) {
        "rr" | "wrr" => Balance::RoundRobin,
        "lc" | "wlc" => Balance::LeastConn,
        other => {
            sink.warn(
                &c.file,
                c.line,
                format!("lb_algo {other} has no halo equivalent: roundrobin is used"),
                "halo balances roundrobin, leastconn or first",
            );
            Balance::RoundRobin
        }
    }
}

/// A `real_server IP PORT { weight N; TCP_CHECK|HTTP_GET|SSL_GET { ... } }`; its check becomes
/// the backend's (halo checks all servers of a backend alike: the last one read wins).
fn real_server(node: &Node, index: usize, health: &mut HealthCheck, sink: &mut Sink) -> Option<Server> {
    let address = endpoint(node, 1, sink)?;
    let mut weight = 1;
    for c in node.children() {
        match c.keyword() {
            "weight" => weight = integer(c, 1, sink).unwrap_or(1),
            "TCP_CHECK" => check(c, CheckKind::Tcp, health, sink),
            "HTTP_GET" => check(c, CheckKind::Http, health, sink),
            "SSL_GET" => check(c, CheckKind::Https, health, sink),
            "inhibit_on_failure" => {}
            other => sink.unmapped(&c.file, c.line, other, "halo checks with TCP, HTTP or HTTPS"),
        }
    }
    if weight == 0 {
        sink.warn(&node.file, node.line, format!("real_server {address} has weight 0"), "imported as `disabled = true`");
    }
    Some(Server {
        name: format!("rs{}", index + 1),
        address: address.into(),
        weight: weight.clamp(1, 256) as u32,
        backup: false,
        disabled: weight == 0,
    })
}

fn check(node: &Node, kind: CheckKind, health: &mut HealthCheck, sink: &mut Sink) {
    health.kind = kind;
    health.verify = TlsVerify::None;
    for c in node.children() {
        match c.keyword() {
            "connect_timeout" => health.timeout = seconds(c, 1, sink).unwrap_or(health.timeout).max(Duration::from_millis(1)),
            "retry" | "nb_get_retry" => health.fall = integer(c, 1, sink).map_or(health.fall, |r| r.clamp(1, 99) as u32),
            "delay_before_retry" => {
                health.fast_interval = seconds(c, 1, sink).unwrap_or(health.fast_interval).max(Duration::from_millis(1))
            }
            "url" => {
                for u in c.children() {
                    match u.keyword() {
                        "path" => health.path = u.arg(1).to_string(),
                        "status_code" => health.expect_status = integer(u, 1, sink).map_or(d::CHECK_STATUS, |s| s.clamp(100, 599) as u16),
                        other => sink.unmapped(&u.file, u.line, other, "halo checks the status code"),
                    }
                }
            }
            "connect_port" | "connect_ip" | "bindto" => {
                sink.unmapped(&c.file, c.line, c.keyword(), "halo checks the server's own address and port")
            }
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
}

//! Reading haproxy.cfg directives into per-proxy settings: lines, sections' keywords, server
//! options, bind addresses, and the one warning every proxy section shares (a `mode` other than
//! `tcp`). Mapping them to halo's model is in the sibling modules.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::super::lines::haproxy_time;
use super::super::{Sink, Source};
use crate::model::{AddressFamily, Balance, ServerAddress};

/// One directive line.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub number: usize,
    pub words: Vec<String>,
}

impl Line {
    pub(super) fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

/// A value with the line that set it.
pub(super) type At<T> = Option<(T, usize)>;

/// Which health-check option was set; haproxy keeps only the last.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum CheckOption {
    HttpChk { path: Option<String> },
    SslHello,
    TcpCheck,
}

/// A `balance` algorithm: one halo has, or another (mapped with a warning).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Balancing {
    Known(Balance),
    Other(String),
}

/// Server keywords as haproxy reads them (from `default-server` or `server`).
#[derive(Debug, Clone, Default)]
pub(super) struct ServerParams {
    pub(super) check: bool,
    pub(super) check_ssl: At<()>,
    pub(super) verify: At<String>,
    pub(super) ca_file: At<String>,
    pub(super) crt: At<String>,
    pub(super) sni: At<String>,
    pub(super) inter: At<Duration>,
    pub(super) fastinter: At<Duration>,
    pub(super) fall: At<u32>,
    pub(super) rise: At<u32>,
    pub(super) weight: At<u32>,
    pub(super) backup: bool,
    pub(super) disabled: bool,
    pub(super) resolve_prefer: At<AddressFamily>,
    pub(super) init_addr: At<String>,
    pub(super) resolvers: At<String>,
    pub(super) maxconn: At<u32>,
    pub(super) send_proxy: At<crate::model::ProxyProtocol>,
}

/// What a proxy section (or a `defaults` section) accumulates.
#[derive(Debug, Clone, Default)]
pub(super) struct Proxy {
    pub(super) mode: At<String>,
    pub(super) balance: At<Balancing>,
    pub(super) timeouts: Vec<(String, Duration, usize)>,
    pub(super) retries: At<u32>,
    pub(super) redispatch: At<bool>,
    pub(super) maxconn: At<u32>,
    pub(super) checks: Vec<(CheckOption, usize)>,
    pub(super) send_path: At<String>,
    pub(super) expect_status: At<u16>,
    pub(super) connect_ssl: At<()>,
    pub(super) default_server: ServerParams,
    pub(super) default_backend: At<String>,
    /// `use_backend NAME if|unless ...`, in order.
    pub(super) conditional_backends: Vec<(String, usize)>,
    /// `option tcplog` in effect.
    pub(super) tcplog: At<bool>,
    pub(super) binds: Vec<(SocketAddr, usize)>,
    pub(super) servers: Vec<(String, ServerAddress, ServerParams, usize)>,
    /// `acl NAME src NET...` seen so far: what an allow rule may name.
    pub(super) source_acls: Vec<(String, Vec<ipnet::IpNet>)>,
    /// The networks `tcp-request connection reject` lets through (the rest rejected).
    pub(super) allow: At<Vec<ipnet::IpNet>>,
}

impl Proxy {
    pub(super) fn timeout(&self, name: &str) -> At<Duration> {
        self.timeouts.iter().rev().find(|(n, _, _)| n == name).map(|(_, d, l)| (*d, *l))
    }
}

pub(super) fn number_at(src: Source<'_>, line: &Line, i: usize, sink: &mut Sink) -> Option<u32> {
    let word = line.word(i);
    let value = word.parse().ok();
    if value.is_none() {
        sink.error(src.file, line.number, format!("`{}` needs a number, got `{word}`", line.word(0)), "");
    }
    value
}

fn time_at(src: Source<'_>, line: &Line, i: usize, sink: &mut Sink) -> Option<Duration> {
    let word = line.word(i);
    let value = haproxy_time(word);
    if value.is_none() {
        sink.error(src.file, line.number, format!("`{word}` is not a haproxy time"), "a number with an optional unit: 500ms, 5s, 1m, 1h");
    }
    value
}

pub(super) fn directive(src: Source<'_>, line: &Line, in_defaults: bool, p: &mut Proxy, sink: &mut Sink) {
    let n = line.number;
    match (line.word(0), line.word(1)) {
        ("mode", mode) => p.mode = Some((mode.to_string(), n)),
        ("balance", algo) => {
            let balance = match algo {
                "roundrobin" | "static-rr" => Balancing::Known(Balance::RoundRobin),
                "leastconn" => Balancing::Known(Balance::LeastConn),
                "first" => Balancing::Known(Balance::First),
                _ => Balancing::Other(line.words[1..].join(" ")),
            };
            p.balance = Some((balance, n));
        }
        ("timeout", which) => {
            let known = ["connect", "client", "server", "tunnel", "queue", "check", "client-fin", "server-fin"];
            if known.contains(&which) {
                if let Some(t) = time_at(src, line, 2, sink) {
                    // halo takes no duration over a week: a longer one (haproxy's "forever") is
                    // capped, so that the imported file passes `halo check`.
                    let cap = crate::model::MAX_DURATION;
                    if t > cap {
                        sink.warn(src.file, n, format!("`timeout {which}` over 7 days is imported as 7 days"), "halo's longest duration");
                    }
                    p.timeouts.push((which.to_string(), t.min(cap), n));
                }
            } else {
                sink.unmapped(src.file, n, &format!("timeout {which}"), "");
            }
        }
        ("retries", _) => p.retries = number_at(src, line, 1, sink).map(|r| (r, n)),
        ("option", "redispatch") => p.redispatch = Some((true, n)),
        ("no", "option") if line.word(2) == "redispatch" => p.redispatch = Some((false, n)),
        ("maxconn", _) => p.maxconn = number_at(src, line, 1, sink).map(|m| (m, n)),
        ("option", "httpchk") => {
            // `option httpchk [<method>] [<uri>] [<version>]`; one word means the URI.
            let path = match line.words.len() {
                2 => None,
                3 => Some(line.word(2).to_string()),
                _ => Some(line.word(3).to_string()),
            };
            p.checks.push((CheckOption::HttpChk { path }, n));
        }
        ("option", "ssl-hello-chk") => p.checks.push((CheckOption::SslHello, n)),
        ("option", "tcp-check") => p.checks.push((CheckOption::TcpCheck, n)),
        ("http-check", "send") => {
            let uri = line.words.iter().position(|w| w == "uri").and_then(|i| line.words.get(i + 1));
            match uri {
                Some(uri) => p.send_path = Some((uri.clone(), n)),
                None => sink.unmapped(src.file, n, "http-check send without uri", "halo sends GET <path>"),
            }
        }
        ("http-check", "expect") => match (line.word(2), line.word(3).parse::<u16>()) {
            ("status", Ok(code)) if line.words.len() == 4 => p.expect_status = Some((code, n)),
            _ => sink.unmapped(src.file, n, &line.words.join(" "), "halo expects one exact status (`health.expect_status`)"),
        },
        ("http-check", "connect") if line.words.iter().any(|w| w == "ssl") => p.connect_ssl = Some(((), n)),
        ("default-server", _) => {
            let mut params = p.default_server.clone();
            server_params(src, line, 1, &mut params, sink);
            p.default_server = params;
        }
        ("default_backend", name) => p.default_backend = Some((name.to_string(), n)),
        ("use_backend", name) if line.words.len() == 2 => p.default_backend = Some((name.to_string(), n)),
        ("use_backend", name) => p.conditional_backends.push((name.to_string(), n)),
        ("option", "tcplog") => p.tcplog = Some((true, n)),
        ("no", "option") if line.word(2) == "tcplog" => p.tcplog = Some((false, n)),
        ("server-template", _) if !in_defaults => server_template(src, line, p, sink),
        ("acl" | "tcp-request", _) if source_rule(src, line, p, sink) => {}
        ("tcp-request" | "tcp-response", _) if line.words.iter().any(|w| w == "reject") => sink.warn(
            src.file,
            n,
            format!("`{}` is not imported: halo accepts every client this rule rejected", line.words.join(" ")),
            "halo has no client access rules: restrict who reaches the frontend with a firewall (nftables) or bind it to an internal address",
        ),
        ("bind", _) if !in_defaults => bind(src, line, 1, p, sink),
        ("server", _) if !in_defaults => server(src, line, p, sink),
        (keyword, _) => sink.unmapped(src.file, n, &line.words.join(" "), &format!("halo does not know `{keyword}` in this place")),
    }
}

/// Takes `acl NAME src NET...` and a `tcp-request connection reject` rule naming the sources it
/// lets through (see [`allowed_sources`]); whether the line was one of them.
fn source_rule(src: Source<'_>, line: &Line, p: &mut Proxy, sink: &mut Sink) -> bool {
    if line.word(0) == "acl" && line.word(2) == "src" {
        let Some(nets) = line.words.get(3..).and_then(networks) else { return false };
        p.source_acls.push((line.word(1).to_string(), nets));
        return true;
    }
    if line.word(1) != "connection" {
        return false;
    }
    let Some(nets) = allowed_sources(line, &p.source_acls) else { return false };
    if p.allow.is_some() {
        sink.warn(
            src.file,
            line.number,
            "a second `tcp-request connection reject` rule: imported as the last one alone",
            "halo keeps one allow list per frontend",
        );
    }
    p.allow = Some((nets, line.number));
    true
}

/// Networks (`10.0.0.0/8`) or addresses, every one of them; `None` if any is something else
/// (or there is none).
fn networks(words: &[String]) -> Option<Vec<ipnet::IpNet>> {
    let nets: Option<Vec<ipnet::IpNet>> = words
        .iter()
        .map(|w| w.parse::<ipnet::IpNet>().map(|n| n.trunc()).or_else(|_| w.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).ok())
        .map(|net| net.map(unmapped))
        .collect();
    nets.filter(|n| !n.is_empty())
}

/// An IPv4-mapped IPv6 network (haproxy's dual-stack listeners see IPv4 clients so) as the IPv4
/// network it is: halo's IPv6 listeners are IPv6-only, its IPv4 clients come as IPv4.
fn unmapped(net: ipnet::IpNet) -> ipnet::IpNet {
    match net {
        ipnet::IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, ipnet::IpNet::V4),
            None => net,
        },
        other => other,
    }
}

/// The sources a `tcp-request connection reject` rule lets through, in its forms that name
/// them: `if !{ src NET... }`, `unless { src NET... }`, `if !ACL` and `unless ACL` with `acl ACL
/// src NET...`. `None` for any other rule.
fn allowed_sources(line: &Line, acls: &[(String, Vec<ipnet::IpNet>)]) -> Option<Vec<ipnet::IpNet>> {
    let words: Vec<&str> = line.words.iter().map(String::as_str).collect();
    let condition = match words.get(2..4)? {
        ["reject", "if"] => words.get(4..)?.to_vec(),
        ["reject", "unless"] => std::iter::once("!").chain(words.get(4..)?.iter().copied()).collect(),
        _ => return None,
    };
    // `!{ src ... }` (the `!` may stand alone or stick to the brace), or `!ACL`.
    let joined = condition.join(" ").replace("! {", "!{").replace("! ", "!");
    if let Some(inner) = joined.strip_prefix("!{").and_then(|rest| rest.strip_suffix('}')) {
        let inner: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
        return if inner.first().map(String::as_str) == Some("src") { networks(&inner[1..]) } else { None };
    }
    // Lines of one name add up (haproxy ORs them).
    let name = joined.strip_prefix('!')?;
    let nets: Vec<ipnet::IpNet> = acls.iter().filter(|(acl, _)| acl == name).flat_map(|(_, nets)| nets.iter().copied()).collect();
    (!nets.is_empty()).then_some(nets)
}

/// `bind ADDR[,ADDR...] [options]`
pub(super) fn bind(src: Source<'_>, line: &Line, first: usize, p: &mut Proxy, sink: &mut Sink) {
    let v6only = line.words.iter().any(|w| w == "v6only");
    for address in line.word(first).split(',') {
        match haproxy_address(address, true) {
            // haproxy's `:::P` takes IPv4 clients too (unless v6only); halo's IPv6 listeners are
            // IPv6-only, so IPv4's wildcard is bound beside it.
            Some(addr) if addr.is_ipv6() && addr.ip().is_unspecified() && !v6only => {
                p.binds.push((addr, line.number));
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                if !p.binds.iter().any(|(b, _)| *b == v4) {
                    sink.note(
                        "header",
                        format!("`bind {address}` takes IPv4 clients too: imported as [::]:{0} and 0.0.0.0:{0}.", addr.port()),
                    );
                    p.binds.push((v4, line.number));
                }
            }
            Some(addr) => p.binds.push((addr, line.number)),
            None => sink.error(
                src.file,
                line.number,
                format!("cannot read bind address `{address}`"),
                "halo binds IP:port, *:port or [IPv6]:port",
            ),
        }
    }
    for option in line.words.get(first + 1..).unwrap_or_default() {
        match option.as_str() {
            "v6only" | "v4v6" | "transparent" => {}
            // `interface eth0`: the option and its value, one warning.
            "interface" => {}
            other if line.words.get(first + 1..).unwrap_or_default().windows(2).any(|w| w[0] == "interface" && w[1] == *other) => sink
                .unmapped(
                    src.file,
                    line.number,
                    &format!("bind option interface {other}"),
                    "halo binds the address on every interface that has it",
                ),
            other => sink.unmapped(
                src.file,
                line.number,
                &format!("bind option {other}"),
                "halo binds plain TCP; TLS stays end to end between client and API server",
            ),
        }
    }
}

/// `*:8443`, `:8443`, `10.0.0.1:8443`, `[::]:8443`, `:::8443`, `ipv4@...`, `ipv6@...`.
fn haproxy_address(s: &str, wildcard_ok: bool) -> Option<SocketAddr> {
    let s = s.strip_prefix("ipv4@").or_else(|| s.strip_prefix("ipv6@")).unwrap_or(s);
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let ip: IpAddr = match host {
        "" | "*" if wildcard_ok => IpAddr::from([0, 0, 0, 0]),
        "::" | "[::]" if wildcard_ok => IpAddr::from([0u16; 8]),
        h => h.trim_start_matches('[').trim_end_matches(']').parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

fn server(src: Source<'_>, line: &Line, p: &mut Proxy, sink: &mut Sink) {
    let (name, address) = (line.word(1), line.word(2));
    let Some(addr) = server_address(src, line, address, sink) else {
        return;
    };
    if let Some((_, _, _, first)) = p.servers.iter().find(|(n, _, _, _)| n == name) {
        sink.error(
            src.file,
            line.number,
            format!("server `{name}` is defined twice (line {first}): haproxy refuses the file"),
            "give each server its own name",
        );
        return;
    }
    let mut params = p.default_server.clone();
    server_params(src, line, 3, &mut params, sink);
    p.servers.push((name.to_string(), addr, params, line.number));
}

/// `server-template PREFIX NUM|LOW-HIGH NAME:PORT [params]`: haproxy fills the slots with the
/// records a name resolves to. halo resolves a name to one address, so the template becomes one
/// server, with a warning.
fn server_template(src: Source<'_>, line: &Line, p: &mut Proxy, sink: &mut Sink) {
    let (prefix, count, address) = (line.word(1), line.word(2), line.word(3));
    let Some(addr) = server_address(src, line, address, sink) else {
        return;
    };
    sink.warn(
        src.file,
        line.number,
        format!("server-template `{prefix}` ({count} slots) is imported as one server `{prefix}` with the address {addr}"),
        "halo resolves a name to one address (the first of the preferred family); list one server per master to balance over several",
    );
    let mut params = p.default_server.clone();
    server_params(src, line, 4, &mut params, sink);
    p.servers.push((prefix.to_string(), addr, params, line.number));
}

/// A server's address: `IP:PORT`, or `NAME:PORT`, which halo resolves at run time.
fn server_address(src: Source<'_>, line: &Line, address: &str, sink: &mut Sink) -> Option<ServerAddress> {
    if let Some(addr) = haproxy_address(address, false) {
        return Some(ServerAddress::Ip(addr));
    }
    let name = line.word(1);
    let bare = address.strip_prefix("ipv4@").or_else(|| address.strip_prefix("ipv6@")).unwrap_or(address);
    match bare.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) && host.parse::<IpAddr>().is_err() => {
            Some(ServerAddress::Name { host: host.to_string(), port: port.parse().unwrap_or_default() })
        }
        _ => {
            let hint = if bare.parse::<IpAddr>().is_ok() || !bare.contains(':') {
                "give the port: halo does not take it from the frontend"
            } else {
                "halo takes IP:PORT or NAME:PORT"
            };
            sink.error(src.file, line.number, format!("server `{name}`: cannot use address `{address}`"), hint);
            None
        }
    }
}

fn server_params(src: Source<'_>, line: &Line, first: usize, s: &mut ServerParams, sink: &mut Sink) {
    let n = line.number;
    let mut i = first;
    while i < line.words.len() {
        let word = line.word(i);
        let value = line.word(i + 1).to_string();
        let mut takes_value = true;
        match word {
            "check" => (s.check, takes_value) = (true, false),
            "no-check" => (s.check, takes_value) = (false, false),
            "check-ssl" => (s.check_ssl, takes_value) = (Some(((), n)), false),
            "backup" => (s.backup, takes_value) = (true, false),
            "disabled" => (s.disabled, takes_value) = (true, false),
            "enabled" => (s.disabled, takes_value) = (false, false),
            "verify" => s.verify = Some((value.clone(), n)),
            "ca-file" => s.ca_file = Some((value.clone(), n)),
            "crt" => s.crt = Some((value.clone(), n)),
            "sni" | "check-sni" => s.sni = Some((value.trim_start_matches("str(").trim_end_matches(')').to_string(), n)),
            "inter" => s.inter = time_value(src, n, word, &value, sink),
            "fastinter" => s.fastinter = time_value(src, n, word, &value, sink),
            "fall" => s.fall = count_value(src, n, word, &value, sink),
            "rise" => s.rise = count_value(src, n, word, &value, sink),
            "weight" => s.weight = count_value(src, n, word, &value, sink),
            "ssl" => {
                takes_value = false;
                sink.unmapped(src.file, n, "server option ssl", "halo does not re-encrypt: clients talk TLS to the API server end to end");
            }
            "resolve-prefer" => match value.as_str() {
                "ipv4" => s.resolve_prefer = Some((AddressFamily::Ipv4, n)),
                "ipv6" => s.resolve_prefer = Some((AddressFamily::Ipv6, n)),
                other => sink.error(src.file, n, format!("resolve-prefer `{other}`"), "ipv4 or ipv6"),
            },
            "init-addr" => s.init_addr = Some((value.clone(), n)),
            "resolvers" => s.resolvers = Some((value.clone(), n)),
            "maxconn" => s.maxconn = count_value(src, n, word, &value, sink),
            "send-proxy" => (s.send_proxy, takes_value) = (Some((crate::model::ProxyProtocol::V1, n)), false),
            "send-proxy-v2" => (s.send_proxy, takes_value) = (Some((crate::model::ProxyProtocol::V2, n)), false),
            "no-send-proxy" | "no-send-proxy-v2" => (s.send_proxy, takes_value) = (None, false),
            "downinter" | "slowstart" | "port" | "addr" | "observe" | "on-error" | "hold" | "agent-inter" | "agent-port"
            | "error-limit" | "id" | "cookie" | "minconn" | "maxqueue" | "pool-max-conn" => {
                sink.unmapped(src.file, n, &format!("server option {word} {value}"), "");
            }
            other => {
                takes_value = false;
                sink.unmapped(src.file, n, &format!("server option {other}"), "");
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
}

fn time_value(src: Source<'_>, line: usize, keyword: &str, value: &str, sink: &mut Sink) -> At<Duration> {
    let parsed = haproxy_time(value).map(|t| (t, line));
    if parsed.is_none() {
        sink.error(src.file, line, format!("`{keyword}` needs a time, got `{value}`"), "a number with an optional unit: 500ms, 2s");
    }
    parsed
}

fn count_value(src: Source<'_>, line: usize, keyword: &str, value: &str, sink: &mut Sink) -> At<u32> {
    let parsed = value.parse().ok().map(|v| (v, line));
    if parsed.is_none() {
        sink.error(src.file, line, format!("`{keyword}` needs a number, got `{value}`"), "");
    }
    parsed
}

/// A proxy whose `mode` is not `tcp`: its HTTP processing is not imported.
pub(super) fn tcp_mode(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) {
    if let Some((mode, line)) = &p.mode
        && mode != "tcp"
    {
        sink.unmapped(
            src.file,
            *line,
            &format!("mode {mode} (in effect for `{name}`)"),
            "halo balances TCP; HTTP-mode processing is not imported and traffic is passed through as TCP",
        );
    }
}

//! haproxy.cfg -> frontends and backends. Follows haproxy's own rules where they matter: a
//! `defaults` section applies to the proxies after it, and of `option httpchk`,
//! `option ssl-hello-chk` and `option tcp-check` the last one wins.

mod parse;

use std::time::Duration;

use self::parse::{At, CheckOption, Line, Proxy, bind, directive, number_at};
use super::lines::words;
use super::{Sink, Source};
use crate::defaults as d;
use crate::model::{AddressFamily, Backend, Balance, CheckKind, ClientCert, Frontend, HealthCheck, Server, ServerAddress, TlsVerify};

/// What haproxy.cfg gives halo.
#[derive(Debug, Default)]
pub(super) struct Imported {
    pub frontends: Vec<Frontend>,
    pub backends: Vec<Backend>,
    /// `option tcplog` was in effect for an imported frontend: halo's connection log.
    pub connection_log: bool,
}

/// Directives that only matter for logging or HTTP mode: noted once, never errors.
const NOTED: &[&str] = &[
    "log",
    "option httplog",
    "option dontlognull",
    "option http-server-close",
    "option forwardfor",
    "timeout http-request",
    "timeout http-keep-alive",
    "option httpclose",
    "option http-keep-alive",
    "option logasap",
    "log-format",
    "option log-health-checks",
    "daemon",
    "chroot",
    "user",
    "group",
    "pidfile",
    "stats",
    "nbthread",
    "master-worker",
    "ssl-default-bind-ciphers",
    "ssl-default-bind-options",
    "ssl-default-server-ciphers",
    "ssl-default-server-options",
    "ca-base",
    "crt-base",
    "tune.ssl.default-dh-param",
    "description",
    "option dontlog-normal",
    "unique-id-format",
    "errorfile",
];

/// The Kubernetes API server's port: always TLS.
const API_SERVER_PORT: u16 = 6443;

/// Sections that hold proxies or process settings: each one ends the section before it.
const PROXY_SECTIONS: &[&str] = &["global", "defaults", "frontend", "backend", "listen"];

/// Sections halo has no equivalent for: their directives are skipped.
const FOREIGN_SECTIONS: &[&str] = &["userlist", "peers", "resolvers", "mailers", "program", "http-errors", "ring", "cache"];

/// Reads haproxy.cfg line by line, section by section; the frontends and backends it defines.
pub(super) fn import(src: Source<'_>, sink: &mut Sink) -> Imported {
    let mut reader = Reader::new(src);
    reader.status_pages = status_pages(src.text);
    for (index, raw_line) in src.text.lines().enumerate() {
        let number = index + 1;
        let Some(ws) = words(raw_line, &['#']) else {
            sink.error(src.file, number, "unterminated quote", "close the quote or escape it with a backslash");
            continue;
        };
        // haproxy ignores a `;` ending a word (`bind :::6443;`, written by some templates).
        let ws: Vec<String> =
            ws.into_iter().map(|w| w.strip_suffix(';').map_or_else(|| w.clone(), str::to_string)).filter(|w| !w.is_empty()).collect();
        if ws.is_empty() {
            continue;
        }
        reader.read(Line { number, words: ws }, sink);
    }
    reader.close_section(sink);
    reader.report_noted(sink);
    reader.link_frontends(sink)
}

/// The lines of the proxy sections that serve haproxy's own pages (`stats enable`, `stats uri`,
/// `monitor-uri`, the prometheus exporter): halo answers those questions on its status endpoint.
fn status_pages(text: &str) -> Vec<usize> {
    let mut pages = Vec::new();
    let mut section: Option<usize> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let Some(ws) = words(raw_line, &['#']) else {
            continue;
        };
        let first = ws.first().map_or("", String::as_str);
        if PROXY_SECTIONS.contains(&first) || FOREIGN_SECTIONS.contains(&first) {
            section = ["frontend", "listen", "backend"].contains(&first).then_some(index + 1);
            continue;
        }
        let serves_page = first == "stats" && ws.get(1).is_some_and(|w| w != "socket" && w != "timeout")
            || first == "monitor-uri"
            || ws.iter().any(|w| w == "prometheus-exporter");
        if let (true, Some(start)) = (serves_page, section)
            && !pages.contains(&start)
        {
            pages.push(start);
        }
    }
    pages
}

/// The section being read: its keyword (`global`, `frontend`, ...), its name and its line.
struct Section {
    kind: String,
    name: String,
    line: usize,
}

/// The state of a pass over haproxy.cfg: the section being read with its proxy settings, and
/// what the sections read so far produced.
struct Reader<'a> {
    src: Source<'a>,
    /// The settings of the last `defaults` section, inherited by the proxies after it.
    defaults: Proxy,
    current: Option<Section>,
    /// The settings of the current section.
    proxy: Proxy,
    /// Each frontend (`None` when it could not be imported) with the line of its section.
    frontends: Vec<(Option<Frontend>, usize)>,
    backends: Vec<Backend>,
    /// `timeout queue` of each backend that sets it.
    backend_queue: Vec<(String, Duration)>,
    /// Lines of the directives that are noted once, never imported.
    noted: Vec<usize>,
    global_maxconn: At<u32>,
    /// Inside a section halo skips.
    skipping: bool,
    /// Header lines of the sections that serve haproxy's status pages.
    status_pages: Vec<usize>,
    /// Names of the sections skipped as status pages.
    skipped_pages: Vec<String>,
    /// `option tcplog` in effect for an imported frontend.
    tcplog: bool,
}

impl<'a> Reader<'a> {
    fn new(src: Source<'a>) -> Self {
        Self {
            src,
            defaults: Proxy::default(),
            current: None,
            proxy: Proxy::default(),
            frontends: Vec::new(),
            backends: Vec::new(),
            backend_queue: Vec::new(),
            noted: Vec::new(),
            global_maxconn: None,
            skipping: false,
            status_pages: Vec::new(),
            skipped_pages: Vec::new(),
            tcplog: false,
        }
    }

    /// One non-empty line: a section header, or a directive of the current section.
    fn read(&mut self, line: Line, sink: &mut Sink) {
        let keyword = line.word(0);
        if ["<<<<<<<", "=======", ">>>>>>>"].iter().any(|m| keyword.starts_with(m)) {
            sink.error(self.src.file, line.number, "a merge conflict marker: haproxy refuses the file", "resolve the conflict first");
            return;
        }
        if PROXY_SECTIONS.contains(&keyword) {
            self.open_section(&line, sink);
        } else if FOREIGN_SECTIONS.contains(&keyword) {
            self.skip_section(&line, sink);
        } else if !self.skipping {
            self.directive(&line, sink);
        }
    }

    /// A `global`, `defaults`, `frontend`, `backend` or `listen` header: ends the section before
    /// it and starts from the defaults in effect.
    fn open_section(&mut self, line: &Line, sink: &mut Sink) {
        let (keyword, number) = (line.word(0), line.number);
        self.close_section(sink);
        if keyword == "defaults" {
            self.defaults = Proxy::default();
        }
        self.proxy = self.defaults.clone();
        self.proxy.binds.clear();
        self.proxy.servers.clear();
        self.skipping = false;
        if keyword == "global" || keyword == "defaults" {
            self.current = Some(Section { kind: keyword.to_string(), name: String::new(), line: number });
            return;
        }
        let name = line.word(1).to_string();
        if name.is_empty() {
            sink.error(self.src.file, number, format!("`{keyword}` without a name"), "");
        }
        if self.status_pages.contains(&number) {
            let why = "halo serves its state on its own endpoint: /status (JSON) and /metrics (Prometheus), see [status]";
            if sink.strict {
                sink.error(self.src.file, number, format!("`{keyword} {name}` serves haproxy's status page; halo has no such page"), why);
            } else {
                sink.warn(self.src.file, number, format!("`{keyword} {name}` serves haproxy's status page: skipped"), why);
            }
            self.skipping = true;
            self.skipped_pages.push(name);
            return;
        }
        self.current = Some(Section { kind: keyword.to_string(), name, line: number });
        if keyword == "listen" && line.words.len() > 2 {
            bind(self.src, line, 2, &mut self.proxy, sink);
        }
    }

    /// A section halo has no equivalent for: ends the section before it, skips its directives.
    fn skip_section(&mut self, line: &Line, sink: &mut Sink) {
        self.close_section(sink);
        let keyword = line.word(0);
        sink.unmapped(self.src.file, line.number, &format!("{keyword} section"), "halo has no equivalent; its directives are skipped");
        self.skipping = true;
    }

    /// A directive of the current section.
    fn directive(&mut self, line: &Line, sink: &mut Sink) {
        let (keyword, number) = (line.word(0), line.number);
        let Some(Section { kind, .. }) = &self.current else {
            sink.error(
                self.src.file,
                number,
                format!("`{keyword}` outside of any section"),
                "directives go under global, defaults, frontend, backend or listen",
            );
            return;
        };
        let two = format!("{} {}", keyword, line.word(1));
        if NOTED.contains(&keyword) || NOTED.contains(&two.as_str()) {
            self.noted.push(number);
            return;
        }
        let (in_global, in_defaults) = (kind == "global", kind == "defaults");
        if in_global {
            self.global_directive(line, sink);
            return;
        }
        directive(self.src, line, in_defaults, &mut self.proxy, sink);
        if in_defaults {
            self.defaults = self.proxy.clone();
        }
    }

    /// A directive of `global`: only `maxconn` means something to halo.
    fn global_directive(&mut self, line: &Line, sink: &mut Sink) {
        let keyword = line.word(0);
        if keyword == "nbproc" {
            // haproxy 2.5 and later refuse it too.
            sink.error(
                self.src.file,
                line.number,
                "`nbproc` was removed from haproxy (2.5); haproxy refuses this file",
                "delete the line (threads replaced processes)",
            );
        } else if keyword == "maxconn" {
            self.global_maxconn = number_at(self.src, line, 1, sink).map(|n| (n, line.number));
        } else {
            sink.unmapped(self.src.file, line.number, keyword, "a process setting halo does not have");
        }
    }

    /// Ends the current section: a frontend, a backend, or both (`listen`) from its settings.
    fn close_section(&mut self, sink: &mut Sink) {
        let Some(Section { kind, name, line }) = self.current.take() else {
            return;
        };
        if kind == "frontend" || kind == "listen" {
            let imported = frontend(self.src, (&name, kind == "listen"), line, &self.proxy, sink, self.global_maxconn);
            self.tcplog |= imported.is_some() && self.proxy.tcplog.is_some_and(|(on, _)| on);
            self.frontends.push((imported, line));
        }
        if kind == "backend" || kind == "listen" {
            if let Some((queue, _)) = self.proxy.timeout("queue") {
                self.backend_queue.push((name.clone(), queue));
            }
            if let Some(b) = backend(self.src, &name, line, &self.proxy, sink) {
                self.backends.push(b);
            }
        }
    }

    /// One warning for every logging, process and HTTP-mode directive that was left out.
    fn report_noted(&self, sink: &mut Sink) {
        let Some(first) = self.noted.first() else {
            return;
        };
        let list: Vec<String> = self.noted.iter().map(ToString::to_string).collect();
        sink.warn(
            self.src.file,
            *first,
            format!("logging, process and HTTP-mode directives are not imported (lines {})", list.join(", ")),
            "they mean nothing for halo's TCP balancer, which logs through its own `[log]` settings",
        );
    }

    /// The imported frontends and backends: each frontend takes its backend's `timeout queue`,
    /// and a frontend whose backend is not defined is an error.
    fn link_frontends(self, sink: &mut Sink) -> Imported {
        let Self { src, frontends, backends, backend_queue, tcplog, skipped_pages, .. } = self;
        let mut frontends: Vec<(Frontend, usize)> = frontends
            .into_iter()
            .filter_map(|(f, line)| {
                let mut f = f?;
                if skipped_pages.contains(&f.backend) {
                    sink.warn(
                        src.file,
                        line,
                        format!("frontend `{}` sends to `{}`, a status page that was skipped: skipped too", f.name, f.backend),
                        "halo serves its state on its own endpoint: /status and /metrics",
                    );
                    return None;
                }
                // haproxy keeps `timeout queue` on the backend side; halo keeps it on the frontend.
                if let Some((_, queue)) = backend_queue.iter().find(|(name, _)| *name == f.backend) {
                    f.queue_timeout = *queue;
                }
                if !backends.iter().any(|b| b.name == f.backend) {
                    sink.error(src.file, line, format!("frontend `{}` uses backend `{}`, which is not defined", f.name, f.backend), "");
                }
                Some((f, line))
            })
            .collect();
        if tcplog {
            sink.note("header", "`option tcplog` became [log] connections: one line per connection when it ends.");
        }
        covered_binds(src, &mut frontends, sink);
        Imported { frontends: frontends.into_iter().map(|(f, _)| f).collect(), backends, connection_log: tcplog }
    }
}

/// haproxy binds `*:p` and `127.0.0.1:p` at once (SO_REUSEPORT); the kernel refuses halo that,
/// and the wildcard accepts the specific address's connections anyway: a bind covered by a
/// wildcard of its family and port is dropped, with a warning.
fn covered_binds(src: Source<'_>, frontends: &mut [(Frontend, usize)], sink: &mut Sink) {
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

/// A frontend from a `frontend` section, or from a `listen` one (`listen` set), which is its own
/// backend when it names no other, servers or not.
fn frontend(
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
    })
}

fn tcp_mode(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) {
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

fn backend(src: Source<'_>, name: &str, line: usize, p: &Proxy, sink: &mut Sink) -> Option<Backend> {
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

fn health(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> HealthCheck {
    let item = format!("backend {name}");
    // The settings of the first server haproxy checks: an unchecked one has none to give.
    let first = p.servers.iter().find(|(_, _, s, _)| s.check).map(|(_, _, s, _)| s.clone()).unwrap_or_default();
    let checked = p.servers.iter().filter(|(_, _, s, _)| s.check).count();
    if checked == 0 && !p.servers.is_empty() {
        sink.note(item, "No server had `check`: haproxy never probed them; kind = \"none\" keeps that.".to_string());
        return HealthCheck { kind: CheckKind::None, ..HealthCheck::default_https() };
    }
    for (server_name, _, s, l) in &p.servers {
        if !s.check {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has no `check`: haproxy sent it traffic without ever checking it"),
                "halo checks all servers of a backend alike when any of them has `check`",
            );
        } else if check_settings(s) != check_settings(&first) {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has check settings unlike the first checked server's"),
                "halo checks all servers of a backend alike; the first checked server's settings are used",
            );
        }
    }
    let tls = first.check_ssl.is_some() || p.connect_ssl.is_some();
    let last_option = p.checks.last().cloned();
    let http_path = p.checks.iter().rev().find_map(|(c, l)| match c {
        CheckOption::HttpChk { path } => Some((path.clone(), *l)),
        _ => None,
    });
    let path = p.send_path.clone().map(|(p, _)| p).or_else(|| http_path.clone().and_then(|(p, _)| p)).unwrap_or_else(|| "/".to_string());
    let kind = match &last_option {
        Some((CheckOption::SslHello, ssl_line)) => {
            if let Some((_, http_line)) = &http_path {
                sink.warn(
                    src.file,
                    *ssl_line,
                    format!("backend `{name}`: `option ssl-hello-chk` replaces `option httpchk` (line {http_line}): haproxy never sends GET {path}, so a server answering 500 stays in rotation"),
                    format!("halo runs the real check: TLS, then GET {path} expecting the status"),
                );
                sink.note(
                    item.clone(),
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
    };
    if kind == CheckKind::Https && path == "/healthz" {
        sink.note(item.clone(), "/healthz stays OK while an API server drains; /readyz (halo's default) turns 503 first.".to_string());
    }
    let verify = match (&first.verify, &first.ca_file) {
        (_, Some((ca, _))) => TlsVerify::Ca { ca_file: ca.into(), server_name: first.sni.as_ref().map(|s| s.0.clone()) },
        (Some((v, _)), None) if v == "none" => TlsVerify::None,
        (_, None) => {
            if tls || kind == CheckKind::Https {
                sink.note(
                    item.clone(),
                    "Server certificates are not verified; set health.ca_file = \"/etc/kubernetes/pki/ca.crt\" to verify them.".to_string(),
                );
            }
            TlsVerify::None
        }
    };
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

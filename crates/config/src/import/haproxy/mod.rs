//! haproxy.cfg -> frontends and backends. Follows haproxy's own rules where they matter: a
//! `defaults` section applies to the proxies after it, and of `option httpchk`,
//! `option ssl-hello-chk` and `option tcp-check` the last one wins.

mod parse;

use std::time::Duration;

use self::parse::{At, CheckOption, Line, Proxy, bind, directive, number_at};
use super::lines::words;
use super::{Sink, Source};
use crate::defaults as d;
use crate::model::{Backend, Balance, CheckKind, ClientCert, Frontend, HealthCheck, Server, TlsVerify};

/// Directives that only matter for logging or HTTP mode: noted once, never errors.
const NOTED: &[&str] = &[
    "log",
    "option httplog",
    "option tcplog",
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
    "nbproc",
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

/// Sections that hold proxies or process settings: each one ends the section before it.
const PROXY_SECTIONS: &[&str] = &["global", "defaults", "frontend", "backend", "listen"];

/// Sections halo has no equivalent for: their directives are skipped.
const FOREIGN_SECTIONS: &[&str] = &["userlist", "peers", "resolvers", "mailers", "program", "http-errors", "ring", "cache"];

/// Reads haproxy.cfg line by line, section by section; the frontends and backends it defines.
pub(super) fn import(src: Source<'_>, sink: &mut Sink) -> (Vec<Frontend>, Vec<Backend>) {
    let mut reader = Reader::new(src);
    for (index, raw_line) in src.text.lines().enumerate() {
        let number = index + 1;
        let Some(ws) = words(raw_line, &['#']) else {
            sink.error(src.file, number, "unterminated quote", "close the quote or escape it with a backslash");
            continue;
        };
        if ws.is_empty() {
            continue;
        }
        reader.read(Line { number, words: ws }, sink);
    }
    reader.close_section(sink);
    reader.report_noted(sink);
    reader.link_frontends(sink)
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
        }
    }

    /// One non-empty line: a section header, or a directive of the current section.
    fn read(&mut self, line: Line, sink: &mut Sink) {
        let keyword = line.word(0);
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
        if keyword == "maxconn" {
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
            self.frontends.push((frontend(self.src, &name, line, &self.proxy, sink, self.global_maxconn), line));
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
    fn link_frontends(self, sink: &mut Sink) -> (Vec<Frontend>, Vec<Backend>) {
        let Self { src, frontends, backends, backend_queue, .. } = self;
        let frontends = frontends
            .into_iter()
            .filter_map(|(f, line)| {
                let mut f = f?;
                // haproxy keeps `timeout queue` on the backend side; halo keeps it on the frontend.
                if let Some((_, queue)) = backend_queue.iter().find(|(name, _)| *name == f.backend) {
                    f.queue_timeout = *queue;
                }
                if !backends.iter().any(|b| b.name == f.backend) {
                    sink.error(src.file, line, format!("frontend `{}` uses backend `{}`, which is not defined", f.name, f.backend), "");
                }
                Some(f)
            })
            .collect();
        (frontends, backends)
    }
}

fn frontend(src: Source<'_>, name: &str, line: usize, p: &Proxy, sink: &mut Sink, global_maxconn: At<u32>) -> Option<Frontend> {
    tcp_mode(src, name, p, sink);
    if p.binds.is_empty() {
        sink.error(src.file, line, format!("frontend `{name}` has no bind"), "");
        return None;
    }
    let backend = match &p.default_backend {
        Some((b, _)) => b.clone(),
        None if !p.servers.is_empty() => name.to_string(), // a listen section
        None => {
            sink.error(src.file, line, format!("frontend `{name}` has no default_backend"), "");
            return None;
        }
    };
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
        sink.error(src.file, line, format!("backend `{name}` has no server"), "");
        return None;
    }
    let servers = p
        .servers
        .iter()
        .map(|(server_name, address, s, _)| {
            let weight = s.weight.map_or(d::SERVER_WEIGHT, |(w, _)| w);
            if let Some((0, l)) = s.weight {
                sink.warn(src.file, l, format!("server `{server_name}` has weight 0"), "imported as `disabled = true`");
            }
            Server {
                name: server_name.clone(),
                address: *address,
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
        balance: p.balance.map_or(Balance::RoundRobin, |(b, _)| b),
        servers,
        health,
        retries,
        redispatch,
        connect_timeout: p.timeout("connect").map_or(d::CONNECT_TIMEOUT, |(t, _)| t),
        idle_timeout: idle,
        drain_timeout: d::DRAIN_TIMEOUT,
    })
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

fn health(src: Source<'_>, name: &str, p: &Proxy, sink: &mut Sink) -> HealthCheck {
    let item = format!("backend {name}");
    let first = p.servers.first().map(|(_, _, s, _)| s.clone()).unwrap_or_default();
    for (server_name, _, s, l) in &p.servers {
        if !s.check {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has no `check`: haproxy sent it traffic without ever checking it"),
                "halo checks every server",
            );
        }
        if s.ca_file.as_ref().map(|c| &c.0) != first.ca_file.as_ref().map(|c| &c.0) || s.inter.map(|i| i.0) != first.inter.map(|i| i.0) {
            sink.warn(
                src.file,
                *l,
                format!("server `{server_name}` has check settings unlike the first server's"),
                "halo checks all servers of a backend alike; the first server's settings are used",
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
        Some((CheckOption::HttpChk { .. }, l)) => {
            if !tls {
                sink.warn(src.file, *l, format!("backend `{name}`: httpchk without check-ssl sends plain HTTP to a TLS port; the API server answers 400 and every check fails"), "halo runs the check over TLS");
            }
            CheckKind::Https
        }
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
        path: if kind == CheckKind::Https { path } else { d::CHECK_PATH.to_string() },
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

//! haproxy.cfg -> frontends and backends. Follows haproxy's own rules where they matter: a
//! `defaults` section applies to the proxies after it, and of `option httpchk`,
//! `option ssl-hello-chk` and `option tcp-check` the last one wins. Here: the pass over the file,
//! section by section, with `global`, `defaults`, the sections skipped and the directives noted;
//! each proxy section is turned into halo's model by `frontend` and `backend`.

mod backend;
mod frontend;
mod health;
mod parse;

use std::time::Duration;

use self::backend::backend;
use self::frontend::{covered_binds, frontend};
use self::parse::{At, Line, Proxy, bind, directive, number_at};
use super::lines::words;
use super::{Sink, Source};
use crate::model::{Backend, Frontend};

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

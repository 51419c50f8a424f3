//! Importers: the classic stack's haproxy.cfg, keepalived.conf and check script turned into one
//! typed [`Config`], with a diagnostic (file:line) for everything that could not be carried over
//! as it was and for each known defect of the classic setup.

mod check_script;
mod fs;
mod haproxy;
mod keepalived;
mod lines;
mod names;

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Location, Severity};
use crate::model::{Config, Log, Node, Status};

pub use fs::FsResolver;
pub use lines::Resolver;

/// One input file, already read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The name used in diagnostics.
    pub file: &'a str,
    /// The file's text.
    pub text: &'a str,
}

/// What `halo import` reads; at least one of `haproxy` and `keepalived`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Inputs<'a> {
    /// haproxy.cfg
    pub haproxy: Option<Source<'a>>,
    /// keepalived.conf
    pub keepalived: Option<Source<'a>>,
    /// The track script that checks the local balancer.
    pub check_script: Option<Source<'a>>,
    /// Unmappable directives are errors, not warnings.
    pub strict: bool,
    /// keepalived's config id (its `-i`, the short host name by default): decides the lines
    /// written `@host ...`.
    pub config_id: Option<&'a str>,
}

/// Comments to write above items of the generated halo.toml, keyed by item (`"vrrp VI_1"`,
/// `"backend apiserver"`, `"tracker check_apiserver"`, `"frontend apiserver"`, `"header"`).
pub type Notes = BTreeMap<String, Vec<String>>;

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The configuration.
    pub config: Config,
    /// Warnings (and, when `config` must not be used, errors), in input order.
    pub diagnostics: Vec<Diagnostic>,
    /// Comments for the generated file.
    pub notes: Notes,
}

impl Imported {
    /// True when an error was found: the configuration must not be written.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Collects diagnostics and notes while importing.
#[derive(Debug, Default)]
pub(crate) struct Sink {
    pub diagnostics: Vec<Diagnostic>,
    pub notes: Notes,
    pub strict: bool,
}

impl Sink {
    fn push(&mut self, severity: Severity, file: &str, line: usize, message: String, hint: Option<String>) {
        let location = Some(Location { file: file.to_string(), line, column: 0 });
        self.diagnostics.push(Diagnostic { severity, location, message, hint });
    }

    /// A defect or risk carried over; never an error.
    pub fn warn(&mut self, file: &str, line: usize, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Warning, file, line, message.into(), Some(hint.into()).filter(|h: &String| !h.is_empty()));
    }

    /// A warning about an input file as a whole (no line to point at).
    pub fn warn_file(&mut self, file: &str, message: impl Into<String>, hint: impl Into<String>) {
        let hint = Some(hint.into()).filter(|h: &String| !h.is_empty());
        self.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            location: None,
            message: format!("{file}: {}", message.into()),
            hint,
        });
    }

    /// Something that makes a correct import impossible.
    pub fn error(&mut self, file: &str, line: usize, message: impl Into<String>, hint: impl Into<String>) {
        self.push(Severity::Error, file, line, message.into(), Some(hint.into()).filter(|h: &String| !h.is_empty()));
    }

    /// A directive with no halo equivalent: a warning, an error under `--strict`.
    pub fn unmapped(&mut self, file: &str, line: usize, directive: &str, why: &str) {
        let severity = if self.strict { Severity::Error } else { Severity::Warning };
        let hint = if why.is_empty() { None } else { Some(why.to_string()) };
        self.push(severity, file, line, format!("`{directive}` has no halo equivalent and is not imported"), hint);
    }

    /// A comment line for an item of the output.
    pub fn note(&mut self, item: impl Into<String>, text: impl Into<String>) {
        self.notes.entry(item.into()).or_default().push(text.into());
    }
}

/// Imports the given files. `resolver` reads keepalived `include` targets.
pub fn import(inputs: &Inputs<'_>, resolver: &dyn Resolver) -> Imported {
    let mut sink = Sink { strict: inputs.strict, ..Sink::default() };
    let mut config = Config {
        node: Node::default(),
        status: Status::default(),
        log: Log::default(),
        balancer: Default::default(),
        vrrp: Vec::new(),
        trackers: Vec::new(),
        sync_groups: Vec::new(),
        announce: Vec::new(),
        bgp: None,
        frontends: Vec::new(),
        backends: Vec::new(),
    };
    let mut header = vec!["Imported by `halo import` from:".to_string()];
    if let Some(src) = inputs.haproxy {
        header.push(format!("  {} (frontends, backends, health checks)", src.file));
        let imported = haproxy::import(src, &mut sink);
        config.frontends = imported.frontends;
        config.backends = imported.backends;
        config.log.connections = imported.connection_log;
    }
    let script = inputs.check_script.map(|src| check_script::analyse(src, &mut sink));
    if let Some(src) = inputs.keepalived {
        header.push(format!("  {} (VRRP instances, trackers)", src.file));
        let imported = keepalived::import(src, resolver, script.as_ref(), &config.frontends, inputs.config_id, &mut sink);
        config.node.name = imported.router_id;
        config.node.script_user = imported.script_user;
        config.vrrp = imported.instances;
        config.trackers = imported.trackers;
        config.frontends.extend(imported.frontends);
        config.backends.extend(imported.backends);
        config.sync_groups = imported.sync_groups;
    }
    let files = (inputs.keepalived.map_or("keepalived.conf", |s| s.file), inputs.haproxy.map_or("haproxy.cfg", |s| s.file));
    names::make_safe(&mut config, &mut sink, files);
    if let (Some(script), Some(src)) = (&script, inputs.check_script) {
        header.push(format!("  {} (replaced by the built-in balancer tracker)", src.file));
        check_script::compare(script, src, &config, &mut sink);
    }
    header.push("Review the warnings `halo import` printed, then run `halo check -c` on this file.".to_string());
    let later = sink.notes.remove("header").unwrap_or_default();
    header.extend(later);
    sink.notes.insert("header".to_string(), header);
    // Group by file in the order the files were read, then by line.
    let mut files: Vec<String> = Vec::new();
    for d in &sink.diagnostics {
        let file = d.location.as_ref().map_or(String::new(), |l| l.file.clone());
        if !files.contains(&file) {
            files.push(file);
        }
    }
    let rank = |d: &Diagnostic| {
        let file = d.location.as_ref().map_or("", |l| l.file.as_str());
        (files.iter().position(|f| f == file), d.location.as_ref().map_or(0, |l| l.line))
    };
    sink.diagnostics.sort_by_key(rank);
    Imported { config, diagnostics: sink.diagnostics, notes: sink.notes }
}

//! Reading `halo.toml`: TOML syntax, then each section deserialized on its own into the raw
//! structs, so that one bad section does not hide the problems of the others.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::{Diagnostic, Hint, Report};
use crate::raw::RawConfig;
use crate::validate::validate;
use crate::{Config, LoadError};

/// The largest file accepted: a real halo.toml is a few kilobytes.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// A configuration that passed validation, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Problems that did not prevent loading.
    pub warnings: Vec<Diagnostic>,
    /// The host's files it names (see [`crate::host_files`]).
    pub host_files: Vec<crate::host_files::HostFile>,
}

/// Reads and validates a file: the one loader the daemon, `halo check` and the tests share.
pub fn load_file(path: &Path) -> Result<Loaded, LoadError> {
    let bytes = read_bounded(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| LoadError::NotUtf8 { path: path.display().to_string(), offset: e.utf8_error().valid_up_to() })?;
    load_str(&path.display().to_string(), &text)
}

/// Reads a file of at most [`MAX_CONFIG_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io { path: path.display().to_string(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge { path: path.display().to_string(), limit: MAX_CONFIG_BYTES });
    }
    Ok(bytes)
}

/// Validates text already in memory; `file` names it in diagnostics.
pub fn load_str(file: &str, text: &str) -> Result<Loaded, LoadError> {
    let mut report = Report::new(file, text);
    let raw = parse(&mut report, text);
    let host_files = raw.as_ref().map(|raw| crate::host_files::host_files(&mut report, raw)).unwrap_or_default();
    let config = raw.and_then(|raw| validate(&mut report, raw));
    let mut diagnostics = report.diagnostics;
    diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
    match config {
        Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(Loaded { config, warnings: diagnostics, host_files }),
        _ => Err(LoadError::Invalid(diagnostics)),
    }
}

const SECTIONS: &str = "node, status, log, balancer, vrrp, tracker, frontend, backend, sync_group, announce, bgp";

/// TOML syntax and types. `None` when the syntax is broken (later errors would be noise).
fn parse(report: &mut Report<'_>, text: &str) -> Option<RawConfig> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            report_toml_error(report, &error, "TOML syntax: ");
        }
        return None;
    }
    let mut raw = RawConfig::default();
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "node" => raw.node = section(report, value).unwrap_or_default(),
            "status" => raw.status = section(report, value).unwrap_or_default(),
            "log" => raw.log = section(report, value).unwrap_or_default(),
            "balancer" => raw.balancer = section(report, value).unwrap_or_default(),
            "vrrp" => raw.vrrp = array_section(report, "vrrp", value),
            "tracker" => raw.tracker = array_section(report, "tracker", value),
            "frontend" => raw.frontend = array_section(report, "frontend", value),
            "backend" => raw.backend = array_section(report, "backend", value),
            "sync_group" => raw.sync_group = array_section(report, "sync_group", value),
            "announce" => raw.announce = array_section(report, "announce", value),
            "bgp" => raw.bgp = section(report, value),
            other => {
                report.error(key_span, format!("unknown section `{other}`")).hint(format!("the sections are {SECTIONS}"));
            }
        }
    }
    Some(raw)
}

fn section<T: for<'de> Deserialize<'de>>(report: &mut Report<'_>, value: Spanned<DeValue<'_>>) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            report_toml_error(report, &error, "");
            None
        }
    }
}

fn array_section<T: for<'de> Deserialize<'de>>(report: &mut Report<'_>, name: &str, value: Spanned<DeValue<'_>>) -> Vec<T> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().filter_map(|item| section(report, item)).collect(),
        _ => {
            report
                .error(span, format!("`{name}` must be an array of tables"))
                .hint(format!("write each entry under its own `[[{name}]]` header"));
            Vec::new()
        }
    }
}

fn report_toml_error(report: &mut Report<'_>, error: &toml::de::Error, prefix: &str) {
    let message = format!("{prefix}{}", error.message().trim_end());
    let hint = hint_for(&message);
    let diagnostic = report.push(crate::diag::Severity::Error, error.span(), message);
    if let Some(hint) = hint {
        diagnostic.hint(hint);
    }
}

/// Hints for serde's terse messages.
fn hint_for(message: &str) -> Option<&'static str> {
    if message.contains("unknown field") {
        Some("check the spelling; halo.toml rejects keys it does not know rather than ignore them")
    } else if message.contains("missing field") {
        Some("this key is required in this table")
    } else if message.contains("invalid type") {
        Some("durations and addresses are strings (\"2s\", \"10.0.0.1:6443\"); counts are integers")
    } else {
        None
    }
}

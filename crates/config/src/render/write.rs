//! How values are written in the rendered formats: lines, durations, halo.toml's strings, lists
//! and comments, keepalived's words, commands and blocks. Every renderer writes through these;
//! they know no renderer.

use std::fmt::Display;
use std::time::Duration;

use crate::import::Notes;

/// Appends one formatted line (writing to a String cannot fail).
pub(super) fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    out.push_str(&std::fmt::format(args));
    out.push('\n');
}

/// Whole seconds, rounding a fraction up (classic formats often take integers only).
pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A duration in haproxy's format: milliseconds unless whole seconds.
pub(super) fn haproxy_time(d: Duration) -> String {
    match (d.subsec_nanos(), d.as_secs()) {
        (0, s) if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        (0, s) if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        (0, s) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

/// keepalived seconds, fractional when needed ("1", "0.1").
pub(super) fn keepalived_seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        let text = format!("{}.{:06}", d.as_secs(), d.subsec_micros());
        text.trim_end_matches('0').to_string()
    }
}

/// A halo.toml string, quoted and escaped.
pub(super) fn quote(s: &str) -> String {
    ::toml::Value::String(s.to_string()).to_string()
}

/// A halo.toml array of strings.
pub(super) fn list<T: Display>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A halo.toml duration, as a human-readable string.
pub(super) fn dur(d: Duration) -> String {
    quote(&humantime::format_duration(d).to_string())
}

/// The notes about `item`, as halo.toml comments.
pub(super) fn comments(out: &mut String, notes: &Notes, item: &str) {
    for note in notes.get(item).into_iter().flatten() {
        line(out, format_args!("# {note}"));
    }
}

/// Quotes a word for keepalived when it holds spaces or quotes.
pub(super) fn word(s: &str) -> String {
    if s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == '#' || c == '!') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.to_string()
    }
}

/// A keepalived command: its words, and quoted as one when there are several.
pub(super) fn command(argv: &[String]) -> String {
    let joined: Vec<String> = argv.iter().map(|a| word(a)).collect();
    let text = joined.join(" ");
    if argv.len() > 1 { format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")) } else { text }
}

/// A keepalived block of one item a line, inside an instance or group; nothing when empty.
pub(super) fn block(out: &mut String, name: &str, items: impl Iterator<Item = String>) {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return;
    }
    line(out, format_args!("    {name} {{"));
    for item in items {
        line(out, format_args!("        {item}"));
    }
    line(out, format_args!("    }}"));
}

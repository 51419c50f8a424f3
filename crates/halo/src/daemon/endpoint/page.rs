//! The status page a browser gets at `/` (it asks for `text/html`): the daemon's state as one
//! server-rendered HTML document — no script, no external asset, a refresh every 2 seconds by a
//! meta tag — with this node, its VRRP instances (state, priority, holder), announcements,
//! frontends and their servers (UP, DOWN, DRAIN or MAINT, the last check's reason and latency,
//! connections, errors), and the most recent transitions. Every name and reason it prints is
//! escaped: a server named `<script>` is text.

use std::fmt::Write;

use crate::daemon::snapshot::StatusJson;

/// How often the page reloads itself, seconds.
pub const REFRESH_SECONDS: u32 = 2;
/// Transitions listed at most.
const RECENT: usize = 20;

/// Text made safe for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time (seconds since the Unix epoch) as UTC, to the second.
fn when(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

/// A state word in a span of its class (green, red, amber), escaped.
fn state(word: &str) -> String {
    let class = match word {
        "MASTER" | "UP" | "ANNOUNCED" | "listening" => "good",
        "FAULT" | "DOWN" | "NOT LISTENING" => "bad",
        _ => "between",
    };
    format!("<span class=\"{class}\">{}</span>", escape(word))
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border-bottom:1px solid #ddd;padding:.25em .8em;text-align:left}\
th{background:#f4f4f4}.good{color:#17803d;font-weight:600}.bad{color:#c62828;font-weight:600}\
.between{color:#b26a00;font-weight:600}.banner{background:#fff3cd;padding:.5em 1em;border:1px solid #e0c36a}";

/// The page for `status`.
pub fn page(status: &StatusJson) -> String {
    let mut out = String::new();
    let title = status.generation.as_ref().map_or_else(|| "halo".to_string(), |g| format!("halo {}", g.version));
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p>pid {}</p>\n",
        escape(&title),
        escape(&title),
        status.pid
    );
    if status.maintenance {
        out.push_str("<p class=\"banner\" id=\"maintenance\">This node is in maintenance: no VIP held, nothing announced (halo node maintenance off ends it).</p>\n");
    }
    instances(&mut out, status);
    announcements(&mut out, status);
    frontends(&mut out, status);
    transitions(&mut out, status);
    out.push_str("</body></html>\n");
    out
}

fn instances(out: &mut String, status: &StatusJson) {
    out.push_str("<h2>VRRP instances</h2>\n<table id=\"vrrp\"><tr><th>instance</th><th>state</th><th>priority</th><th>holder</th><th>interface</th><th>VRID</th><th>last change</th></tr>\n");
    for (name, i) in &status.vrrp {
        let holder = if i.state == "MASTER" { "this node" } else { "a peer (or none)" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{holder}</td><td>{}</td><td>{}</td><td>{} ({})</td></tr>",
            escape(name),
            state(&i.state),
            i.priority,
            escape(&i.interface),
            i.vrid,
            escape(&i.last_change),
            when(i.last_change_unix)
        );
    }
    out.push_str("</table>\n");
}

fn announcements(out: &mut String, status: &StatusJson) {
    if status.announce.is_empty() {
        return;
    }
    out.push_str("<h2>Announcements</h2>\n<table id=\"announce\"><tr><th>name</th><th>address</th><th>state</th><th>why</th></tr>\n");
    for (name, a) in &status.announce {
        let word = if a.announced { "ANNOUNCED" } else { "WITHDRAWN" };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            escape(&a.address),
            state(word),
            escape(&a.reason)
        );
    }
    out.push_str("</table>\n");
}

fn frontends(out: &mut String, status: &StatusJson) {
    out.push_str("<h2>Frontends</h2>\n");
    for f in &status.frontends {
        let listening = if f.listening { "listening" } else { "NOT LISTENING" };
        let _ = writeln!(
            out,
            "<h3>{} &rarr; {}: {}, {} open, {} total, {} refused, {} without a server</h3>",
            escape(&f.name),
            escape(&f.backend),
            state(listening),
            f.connections,
            f.total,
            f.refused,
            f.no_server
        );
        out.push_str("<table class=\"servers\"><tr><th>server</th><th>address</th><th>state</th><th>last check</th><th>latency</th><th>weight</th><th>open</th><th>total</th><th>connect errors</th></tr>\n");
        for s in &f.servers {
            let _ = writeln!(
                out,
                "<tr data-server=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ms</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&s.name),
                escape(&s.name),
                escape(&s.address),
                state(s.state),
                escape(&s.reason),
                s.check_latency_seconds * 1000.0,
                s.weight,
                s.connections,
                s.total,
                s.connect_errors
            );
        }
        out.push_str("</table>\n");
    }
}

/// Each subject's last transition, newest first.
fn transitions(out: &mut String, status: &StatusJson) {
    let mut recent: Vec<(u64, String, String)> = Vec::new();
    for (name, i) in &status.vrrp {
        recent.push((i.last_change_unix, format!("VRRP {name}"), format!("{} ({})", i.state, i.last_change)));
    }
    for f in &status.frontends {
        for s in &f.servers {
            recent.push((s.last_change_unix, format!("server {}/{}", f.backend, s.name), format!("{} ({})", s.state, s.reason)));
        }
    }
    recent.sort_by_key(|r| std::cmp::Reverse(r.0));
    out.push_str("<h2>Recent transitions</h2>\n<table id=\"transitions\"><tr><th>when</th><th>what</th><th>now</th></tr>\n");
    for (at, subject, now) in recent.into_iter().take(RECENT) {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", when(at), escape(&subject), escape(&now));
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(escape("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }
}

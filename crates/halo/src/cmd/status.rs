//! `halo status`: asks the running daemon's status endpoint (its unix socket when configured,
//! else its address; the token from the configuration) and prints a table (coloured on a
//! terminal), or the JSON as it is; `--watch` repeats every second.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use halo_client::{StatusClient, paint};

/// Fetches `/status` and prints it, once or every second until interrupted.
pub fn run(config: &Path, json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let client = StatusClient::from_config(&loaded.config.status)?;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    loop {
        let body = client.get("/status").with_context(|| format!("asking halo at {} (is it running?)", client.endpoint()));
        let text = match (&body, json) {
            (Ok(body), true) => body.clone(),
            (Ok(body), false) => {
                let value: serde_json::Value =
                    serde_json::from_str(body).context("the status endpoint answered something that is not JSON")?;
                table(&value, colour)
            }
            (Err(e), _) if watch => format!("{e:#}\n"),
            (Err(_), _) => return body.map(|_| ExitCode::SUCCESS),
        };
        if !watch {
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        if colour {
            // Home and clear, so the table redraws in place.
            print!("\x1b[H\x1b[2J");
        }
        print!("{}\n{text}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()));
        std::io::stdout().flush().context("writing to standard output")?;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The status as a table: the process, then one block per subject (VRRP instances, sync
/// groups, announced addresses, frontends and their servers), a line each.
fn table(status: &serde_json::Value, colour: bool) -> String {
    let mut lines = Vec::new();
    generation_lines(&mut lines, &status["generation"]);
    if status["maintenance"].as_bool() == Some(true) {
        lines.push(format!("node {}: no VIP held, nothing announced (halo node maintenance off ends it)", paint("MAINTENANCE", 0, colour)));
    }
    vrrp_lines(&mut lines, &status["vrrp"], colour);
    sync_group_lines(&mut lines, &status["sync_groups"], colour);
    announce_lines(&mut lines, &status["announce"], colour);
    frontend_lines(&mut lines, &status["frontends"], colour);
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// A JSON value as it reads: a string without its quotes, anything else as JSON.
fn text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Now, in milliseconds since the Unix epoch.
fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The process: version, pid, uptime, binary, and the process it took over from.
fn generation_lines(lines: &mut Vec<String>, generation: &serde_json::Value) {
    if !generation.is_object() {
        return;
    }
    let up = generation["started_unix_ms"].as_u64().map_or(0, |t| now_unix_ms().saturating_sub(t) / 1000);
    lines.push(format!(
        "halo {} pid {} up {}s, binary {}",
        text(&generation["version"]),
        generation["pid"],
        up,
        text(&generation["executable"])
    ));
    let previous = &generation["previous"];
    if previous.is_object() {
        lines.push(format!(
            "  took over from pid {} (version {}), which drains its connections",
            previous["pid"],
            text(&previous["version"])
        ));
    }
}

/// One line per VRRP instance, with its sync group and its last notify hook.
fn vrrp_lines(lines: &mut Vec<String>, vrrp: &serde_json::Value, colour: bool) {
    let Some(vrrp) = vrrp.as_object() else { return };
    for (name, i) in vrrp {
        lines.push(format!(
            "vrrp {name:<12} {} priority {:<3} {} id {}  last change: {}  adverts {} sent / {} received",
            paint(&text(&i["state"]), 7, colour),
            i["priority"],
            text(&i["interface"]),
            i["vrid"],
            text(&i["last_change"]),
            i["adverts_sent"],
            i["adverts_received"]
        ));
        if let Some(group) = i["sync_group"].as_str() {
            lines.push(format!("  in sync group {group}"));
        }
        if let Some(hook) = i["last_hook"].as_str().filter(|h| !h.is_empty()) {
            lines.push(format!("  last notify hook: {hook} ({} failed so far)", i["hook_failures"]));
        }
    }
}

/// One line per sync group: its state and members.
fn sync_group_lines(lines: &mut Vec<String>, groups: &serde_json::Value, colour: bool) {
    for (name, g) in groups.as_object().into_iter().flatten() {
        let members: Vec<String> = g["instances"].as_array().into_iter().flatten().map(text).collect();
        lines.push(format!(
            "sync group {name:<6} {} members {}  last change: {}",
            paint(&text(&g["state"]), 7, colour),
            members.join(", "),
            text(&g["last_change"])
        ));
    }
}

/// One line per announced address: announced or withdrawn, why, and for how long.
fn announce_lines(lines: &mut Vec<String>, announce: &serde_json::Value, colour: bool) {
    for (name, a) in announce.as_object().into_iter().flatten() {
        let state = if a["announced"].as_bool() == Some(true) { "ANNOUNCED" } else { "WITHDRAWN" };
        let now = now_unix_ms();
        let since = a["since_unix_ms"].as_u64().map_or_else(String::new, |t| format!("  for {}s", now.saturating_sub(t) / 1000));
        lines.push(format!("announce {name:<6} {} {}  {}{since}", paint(state, 9, colour), text(&a["address"]), text(&a["reason"])));
    }
}

/// One line per frontend, and one per server of its backend.
fn frontend_lines(lines: &mut Vec<String>, frontends: &serde_json::Value, colour: bool) {
    for f in frontends.as_array().into_iter().flatten() {
        let listening = if f["listening"].as_bool() == Some(true) { "listening" } else { "NOT LISTENING" };
        lines.push(format!(
            "frontend {:<10} {}, {} open, {} total, backend {}",
            text(&f["name"]),
            paint(listening, 0, colour),
            f["connections"],
            f["total"],
            text(&f["backend"])
        ));
        for s in f["servers"].as_array().into_iter().flatten() {
            let health = s["state"].as_str().unwrap_or(if s["healthy"].as_bool() == Some(true) { "UP" } else { "DOWN" });
            lines.push(format!(
                "  server {:<10} {:<21} {} {:<30} {} open, {} connect errors",
                text(&s["name"]),
                text(&s["address"]),
                paint(health, 5, colour),
                text(&s["reason"]),
                s["connections"],
                s["connect_errors"]
            ));
        }
    }
}

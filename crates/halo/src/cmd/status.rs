//! `halo status`: asks the running daemon's status endpoint (its unix socket when configured,
//! else its address; the token from the configuration) and prints a table (coloured on a
//! terminal), or the JSON as it is; `--watch` repeats every second.

use std::io::{IsTerminal, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Fetches `/status` and prints it, once or every second until interrupted.
pub fn run(config: &Path, json: bool, watch: bool) -> anyhow::Result<ExitCode> {
    let loaded = match super::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let status = &loaded.config.status;
    let token = match &status.token_file {
        Some(file) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("reading the status token {}", file.display()))?.trim().to_string())
        }
        None => None,
    };
    let endpoint = match &status.socket {
        Some(path) => Endpoint::Unix(path.clone()),
        None => Endpoint::Tcp(status.listen),
    };
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    loop {
        let body = get(&endpoint, "/status", token.as_deref()).with_context(|| format!("asking halo at {endpoint} (is it running?)"));
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

/// Where the endpoint is.
pub(crate) enum Endpoint {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "{address}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A plain HTTP/1.1 GET with a bounded wait; the body, or why not.
pub(crate) fn get(endpoint: &Endpoint, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: halo\r\n{auth}Connection: close\r\n\r\n");
    let mut answer = String::new();
    match endpoint {
        Endpoint::Tcp(address) => {
            let mut stream = TcpStream::connect_timeout(address, Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            stream.read_to_string(&mut answer)?;
        }
        Endpoint::Unix(socket) => {
            let mut stream = UnixStream::connect(socket)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            stream.read_to_string(&mut answer)?;
        }
    }
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    let code = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(code == "200", "the status endpoint answered {code}: {}", body.trim());
    // Bodies here are small and sent whole; a chunked one is unwrapped.
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(unchunk(body));
    }
    Ok(body.to_string())
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Wraps a state word in its terminal colour: green when serving, red when not, yellow between
/// (also used by the lab's live view).
pub(crate) fn paint(word: &str, width: usize, colour: bool) -> String {
    let padded = format!("{word:<width$}");
    let code = match word {
        "MASTER" | "UP" | "listening" | "yes" => "32",
        "FAULT" | "DOWN" | "NOT LISTENING" | "stopped" => "31",
        "BACKUP" | "INIT" => "33",
        _ => return padded,
    };
    if colour { format!("\x1b[{code}m{padded}\x1b[0m") } else { padded }
}

fn table(status: &serde_json::Value, colour: bool) -> String {
    let mut lines = Vec::new();
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    if let Some(vrrp) = status["vrrp"].as_object() {
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
            if let Some(hook) = i["last_hook"].as_str().filter(|h| !h.is_empty()) {
                lines.push(format!("  last notify hook: {hook} ({} failed so far)", i["hook_failures"]));
            }
        }
    }
    for f in status["frontends"].as_array().into_iter().flatten() {
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
            let health = if s["healthy"].as_bool() == Some(true) { "UP" } else { "DOWN" };
            lines.push(format!(
                "  server {:<10} {:<21} {} {:<30} {} open, {} connect errors",
                text(&s["name"]),
                text(&s["address"]),
                paint(health, 4, colour),
                text(&s["reason"]),
                s["connections"],
                s["connect_errors"]
            ));
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

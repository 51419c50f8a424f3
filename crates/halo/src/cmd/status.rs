//! `halo status`: asks the running daemon's status endpoint (address and token from the
//! configuration) and prints a table, or the JSON as it is.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Fetches `/status` and prints it.
pub fn run(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
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
    let body =
        get(status.listen, "/status", token.as_deref()).with_context(|| format!("asking halo at {} (is it running?)", status.listen))?;
    if json {
        print!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let value: serde_json::Value = serde_json::from_str(&body).context("the status endpoint answered something that is not JSON")?;
    print!("{}", table(&value));
    Ok(ExitCode::SUCCESS)
}

/// A plain HTTP/1.1 GET with a bounded wait; the body, or why not.
fn get(address: std::net::SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
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

fn table(status: &serde_json::Value) -> String {
    let mut lines = Vec::new();
    let text = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    if let Some(vrrp) = status["vrrp"].as_object() {
        for (name, i) in vrrp {
            lines.push(format!(
                "vrrp {name:<12} {:<7} priority {:<3} {} id {}  last change: {}  adverts {} sent / {} received",
                text(&i["state"]),
                i["priority"],
                text(&i["interface"]),
                i["vrid"],
                text(&i["last_change"]),
                i["adverts_sent"],
                i["adverts_received"]
            ));
        }
    }
    for f in status["frontends"].as_array().into_iter().flatten() {
        let listening = if f["listening"].as_bool() == Some(true) { "listening" } else { "NOT LISTENING" };
        lines.push(format!(
            "frontend {:<10} {listening}, {} open, {} total, backend {}",
            text(&f["name"]),
            f["connections"],
            f["total"],
            text(&f["backend"])
        ));
        for s in f["servers"].as_array().into_iter().flatten() {
            let health = if s["healthy"].as_bool() == Some(true) { "UP" } else { "DOWN" };
            lines.push(format!(
                "  server {:<10} {:<21} {health:<4} {:<30} {} open, {} connect errors",
                text(&s["name"]),
                text(&s["address"]),
                text(&s["reason"]),
                s["connections"],
                s["connect_errors"]
            ));
        }
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

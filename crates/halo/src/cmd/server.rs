//! `halo server drain|maint|ready|weight BACKEND/SERVER` and `halo node maintenance on|off`: one
//! command to the running daemon's status endpoint (`POST /servers/BACKEND/SERVER`, `POST
//! /node/maintenance`), found as `halo status` finds it; prints the daemon's JSON answer. Exit 0 when applied; 1 when refused (an unknown backend or server, a
//! weight out of range, no credentials) — nothing changed then; 2 when the daemon cannot be
//! asked.

use std::path::Path;
use std::process::ExitCode;

use halo_client::{StatusClient, StatusError};

use crate::cli::ServerOrder;

/// Sends the order, prints the answer.
pub fn run(config: &Path, order: ServerOrder) -> anyhow::Result<ExitCode> {
    let ((backend, server), body) = match order {
        ServerOrder::Drain { target } => (target, r#"{"state":"drain"}"#.to_string()),
        ServerOrder::Maint { target } => (target, r#"{"state":"maint"}"#.to_string()),
        ServerOrder::Ready { target } => (target, r#"{"state":"ready"}"#.to_string()),
        ServerOrder::Weight { target, weight } => {
            if weight > halo_lb::admin::MAX_WEIGHT {
                eprintln!("halo server: weight {weight} is out of range (0 to {}); nothing was sent", halo_lb::admin::MAX_WEIGHT);
                return Ok(ExitCode::from(crate::files::EXIT_INVALID));
            }
            (target, format!(r#"{{"weight":{weight}}}"#))
        }
    };
    send(config, &format!("/servers/{backend}/{server}"), &body)
}

/// `halo node maintenance on|off`.
pub fn maintenance(config: &Path, on: bool) -> anyhow::Result<ExitCode> {
    send(config, "/node/maintenance", &format!(r#"{{"on":{on}}}"#))
}

/// Posts one command to the daemon `config` names; prints its answer.
fn send(config: &Path, path: &str, body: &str) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let client = StatusClient::from_config(&loaded.config.status)?;
    match client.post(path, body) {
        Ok(answer) => {
            print!("{answer}");
            Ok(ExitCode::SUCCESS)
        }
        Err(StatusError::Status { status, body }) => {
            let said =
                serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["error"].as_str().map(str::to_string)).unwrap_or(body);
            eprintln!("halo: refused ({status}): {said}; nothing was changed");
            Ok(ExitCode::from(crate::files::EXIT_INVALID))
        }
        Err(e) => {
            eprintln!("halo: cannot ask halo at {} (is it running?): {e}", client.endpoint());
            Ok(ExitCode::from(2))
        }
    }
}

//! The status endpoint's commands — `POST /servers/BACKEND/SERVER` (what `halo server
//! drain|maint|ready|weight` sends) and `POST /node/maintenance` (`halo node maintenance
//! on|off`, body `{"on": true}`): who may send them, how they are read, and their way to the
//! daemon — a channel the run loop reads, which carries them out and answers.
//!
//! Who: on the unix socket (mode 0600: root) anyone who can connect, named by uid in the log;
//! on TCP only with the bearer token, so a listener without `[status] token_file` takes no
//! command (the loader already refuses a non-loopback listener without one). The body is JSON,
//! at most 4 KiB: `{"state": "drain" | "maint" | "ready"}` or `{"weight": 0..=256}`. One JSON
//! answer per command: the server's state and weight before and after, or `{"error": ...}`
//! with 400 (a bad body), 403, 404 (no such backend or server) or 503 (no answer from the daemon).

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

/// An operator's order for one server, on its way to the run loop.
pub struct ServerCommand {
    /// The backend.
    pub backend: String,
    /// The server.
    pub server: String,
    /// What to do.
    pub order: halo_lb::Order,
    /// Who asked: `uid N` (unix socket) or `token` (TCP).
    pub by: String,
    /// Not carried out after this: the endpoint has answered that nothing changed.
    pub deadline: std::time::Instant,
    /// The outcome, for the answer.
    pub reply: oneshot::Sender<Result<halo_lb::Ordered, halo_lb::OrderError>>,
}

/// What the endpoint sends the run loop.
pub enum Command {
    /// An order for one server.
    Server(ServerCommand),
    /// Node maintenance on or off; the answer is (now, before), or why the flag could not be kept.
    Maintenance {
        /// On or off.
        on: bool,
        /// Who asked.
        by: String,
        /// Not carried out after this (see [`ServerCommand::deadline`]).
        deadline: std::time::Instant,
        /// The outcome.
        reply: oneshot::Sender<Result<(bool, bool), String>>,
    },
}

/// Where the endpoint sends commands.
pub type Commands = mpsc::Sender<Command>;

/// The largest command body read.
const MAX_BODY: usize = 4096;
/// How long the endpoint waits for the run loop's answer (under the client's 5 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(4);
/// A command the run loop has not taken within this (it was busy: a reload, an upgrade) is
/// dropped there, a second before the endpoint gives up and says that nothing changed.
const TAKEN_WITHIN: Duration = Duration::from_secs(3);

fn busy() -> Response<Full<Bytes>> {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the daemon was busy (a reload, an upgrade) and did not take the command: nothing was changed; try again",
    )
}
/// Commands waiting for the run loop at most; past it a command is refused at once (a flood).
pub const QUEUE: usize = 16;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub enum Peer {
    /// The unix socket, with the connecting process's uid when the kernel said it.
    Unix(Option<u32>),
    /// TCP.
    Tcp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    state: Option<String>,
    weight: Option<u32>,
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    answer(status, serde_json::json!({ "error": message.into() }))
}

/// Who sent a command, as the log names them; `None` for TCP without a token.
fn sender(peer: &Peer, token_required: bool) -> Option<String> {
    match peer {
        Peer::Unix(uid) => Some(uid.map_or_else(|| "unix socket".to_string(), |uid| format!("uid {uid}"))),
        Peer::Tcp if token_required => Some("token".to_string()),
        Peer::Tcp => None,
    }
}

fn no_token() -> Response<Full<Bytes>> {
    error(StatusCode::FORBIDDEN, "commands over TCP need [status] token_file (or use the unix socket, [status] socket)")
}

/// The request's body, at most [`MAX_BODY`] bytes.
async fn body(request: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, format!("the body could not be read ({e}): at most {MAX_BODY} bytes"))),
    }
}

/// Reads, checks and forwards one `POST /node/maintenance`; the answer.
pub async fn maintenance_command(
    request: Request<Incoming>,
    peer: &Peer,
    token_required: bool,
    commands: &Commands,
) -> Response<Full<Bytes>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Maintenance {
        on: bool,
    }
    let Some(by) = sender(peer, token_required) else { return no_token() };
    let bytes = match body(request).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let on = match serde_json::from_slice::<Maintenance>(&bytes) {
        Ok(Maintenance { on }) => on,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("give {{\"on\": true}} or {{\"on\": false}}: {e}")),
    };
    let (reply, answered) = oneshot::channel();
    let deadline = std::time::Instant::now() + TAKEN_WITHIN;
    if commands.try_send(Command::Maintenance { on, by, deadline, reply }).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon has too many commands waiting: try again");
    }
    match tokio::time::timeout(ANSWER_WITHIN, answered).await {
        Ok(Ok(Ok((now, before)))) => answer(StatusCode::OK, serde_json::json!({ "maintenance": now, "maintenance_before": before })),
        Ok(Ok(Err(why))) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Ok(Err(_)) | Err(_) => busy(),
    }
}

/// Reads, checks and forwards one `POST /servers/BACKEND/SERVER`; the answer.
pub async fn server_command(request: Request<Incoming>, peer: &Peer, token_required: bool, commands: &Commands) -> Response<Full<Bytes>> {
    let Some(by) = sender(peer, token_required) else { return no_token() };
    let path = request.uri().path().to_string();
    let Some((backend, server)) = path
        .strip_prefix("/servers/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(b, s)| !b.is_empty() && !s.is_empty() && !s.contains('/'))
    else {
        return error(StatusCode::NOT_FOUND, "commands are POST /servers/BACKEND/SERVER");
    };
    let (backend, server) = (backend.to_string(), server.to_string());
    let bytes = match body(request).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let order = match serde_json::from_slice::<Body>(&bytes) {
        Ok(Body { state: Some(state), weight: None }) => match halo_lb::Admin::parse(&state) {
            Some(admin) => halo_lb::Order::State(admin),
            None => return error(StatusCode::BAD_REQUEST, format!("state {state:?} is none of ready, drain, maint")),
        },
        Ok(Body { state: None, weight: Some(weight) }) => halo_lb::Order::Weight(weight),
        Ok(_) => return error(StatusCode::BAD_REQUEST, "give one of {\"state\": \"ready|drain|maint\"} or {\"weight\": N}"),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not a command: {e}")),
    };
    let (reply, answered) = oneshot::channel();
    let deadline = std::time::Instant::now() + TAKEN_WITHIN;
    let command = ServerCommand { backend: backend.clone(), server: server.clone(), order, by, deadline, reply };
    if commands.try_send(Command::Server(command)).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the daemon has too many commands waiting: try again");
    }
    match tokio::time::timeout(ANSWER_WITHIN, answered).await {
        Ok(Ok(Ok(done))) => answer(
            StatusCode::OK,
            serde_json::json!({
                "backend": backend,
                "server": server,
                "state": done.admin.as_str(),
                "weight": done.weight,
                "state_before": done.admin_before.as_str(),
                "weight_before": done.weight_before,
            }),
        ),
        Ok(Ok(Err(refused))) => {
            let status = match refused {
                halo_lb::OrderError::Weight(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::NOT_FOUND,
            };
            error(status, refused.to_string())
        }
        Ok(Err(_)) | Err(_) => busy(),
    }
}

//! The client of a running daemon's status endpoint, as `[status]` describes it (its unix socket
//! when configured, else its TCP address; the bearer token from `token_file`), shared by the
//! `halo` commands that ask the daemon (`status`, `reload`, `upgrade`) and the lab.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use halo_config::Status;

/// How long one request may take, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest answer read: a status document of thousands of servers stays far below.
pub const MAX_BODY: usize = 16 << 20;

/// Where the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The TCP listener (`[status] listen`).
    Tcp(SocketAddr),
    /// The unix socket (`[status] socket`).
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(address) => write!(f, "{address}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a request to the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The token file named by the configuration could not be read.
    #[error("reading the status token {path}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client's runtime could not start.
    #[error("starting the status client")]
    Runtime(#[source] std::io::Error),
    /// The blocking client was called from inside an async runtime.
    #[error("the status client blocks: call it from a plain thread, not from async code")]
    InsideRuntime,
    /// Nothing answers at the endpoint.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The request took longer than [`REQUEST_TIMEOUT`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the answer was not HTTP.
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a path or token with bytes HTTP forbids).
    #[error("invalid request")]
    Request(#[from] hyper::http::Error),
    /// The answer was larger than [`MAX_BODY`] or broke off.
    #[error("reading the answer: {0}")]
    Body(String),
    /// The endpoint answered, but not 200.
    #[error("the status endpoint answered {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The answer's text.
        body: String,
    },
    /// The answer is not UTF-8 text.
    #[error("the status endpoint answered something that is not text")]
    NotText,
}

/// A client of one daemon's status endpoint. Blocking: each call runs one request on the
/// client's own single-threaded runtime, so it must not be used (or dropped) inside async code.
pub struct StatusClient {
    endpoint: Endpoint,
    token: Option<String>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for StatusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs and panics.
        f.debug_struct("StatusClient").field("endpoint", &self.endpoint).field("token", &self.token.as_ref().map(|_| "<redacted>")).finish()
    }
}

impl StatusClient {
    /// A client of `endpoint`, sending `token` as a bearer token when there is one.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Result<Self, StatusError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StatusError::Runtime)?;
        Ok(Self { endpoint, token, runtime })
    }

    /// The client of the daemon that runs with this `[status]`: its unix socket when it has
    /// one (no TCP port needed), else its address; the token read from `token_file`.
    pub fn from_config(status: &Status) -> Result<Self, StatusError> {
        let token = match &status.token_file {
            Some(path) => {
                Some(std::fs::read_to_string(path).map_err(|source| StatusError::Token { path: path.clone(), source })?.trim().to_string())
            }
            None => None,
        };
        let endpoint = match &status.socket {
            Some(path) => Endpoint::Unix(path.clone()),
            None => Endpoint::Tcp(status.listen),
        };
        Self::new(endpoint, token)
    }

    /// Where this client asks.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// GETs `path` (e.g. `/status`); the body of a 200 answer, else why not. Blocks for at most
    /// [`REQUEST_TIMEOUT`]; from inside an async runtime it refuses ([`StatusError::InsideRuntime`]).
    pub fn get(&self, path: &str) -> Result<String, StatusError> {
        self.request(hyper::Method::GET, path, None)
    }

    /// POSTs the JSON `body` to `path` (a command, e.g. `/servers/api/master01`); the body of a
    /// 200 answer, else why not (the daemon's JSON error in [`StatusError::Status`]).
    pub fn post(&self, path: &str, body: &str) -> Result<String, StatusError> {
        self.request(hyper::Method::POST, path, Some(body.to_string()))
    }

    fn request(&self, method: hyper::Method, path: &str, body: Option<String>) -> Result<String, StatusError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StatusError::InsideRuntime);
        }
        let exchange = async {
            let connect = async {
                match &self.endpoint {
                    Endpoint::Tcp(address) => tokio::net::TcpStream::connect(address).await.map(Stream::Tcp),
                    Endpoint::Unix(socket) => tokio::net::UnixStream::connect(socket).await.map(Stream::Unix),
                }
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| StatusError::Connect(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
                .map_err(StatusError::Connect)?;
            let request = Request { method, path, body, token: self.token.as_deref() };
            match stream {
                Stream::Tcp(stream) => exchange(stream, request).await,
                Stream::Unix(stream) => exchange(stream, request).await,
            }
        };
        self.runtime
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, exchange).await.map_err(|_| StatusError::Timeout(REQUEST_TIMEOUT))? })
    }
}

/// A connected stream of either kind.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// What one exchange asks.
struct Request<'a> {
    method: hyper::Method,
    path: &'a str,
    /// A JSON body (POST).
    body: Option<String>,
    token: Option<&'a str>,
}

/// One HTTP/1.1 request on a fresh connection. The connection is driven in the same future as
/// the request, so nothing outlives a timeout or an error.
async fn exchange<S>(stream: S, asked: Request<'_>) -> Result<String, StatusError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let mut request = hyper::Request::builder().method(asked.method).uri(asked.path).header(hyper::header::HOST, "halo");
    if let Some(token) = asked.token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if asked.body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(asked.body.unwrap_or_default())))?;
    let answer = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| StatusError::Body(e.to_string()))?.to_bytes();
        Ok::<_, StatusError>((status, body))
    };
    tokio::pin!(answer, connection);
    let (status, body) = tokio::select! {
        biased;
        answer = &mut answer => answer?,
        // The connection may end first (the server closes after answering): the answer is read
        // to its end all the same, or fails on its own.
        ended = &mut connection => {
            ended?;
            answer.await?
        }
    };
    if status != hyper::StatusCode::OK {
        return Err(StatusError::Status { status: status.as_u16(), body: String::from_utf8_lossy(&body).trim().to_string() });
    }
    String::from_utf8(body.to_vec()).map_err(|_| StatusError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_a_connect_error() {
        let socket = std::env::temp_dir().join(format!("halo-status-test-{}.sock", std::process::id()));
        let client = StatusClient::new(Endpoint::Unix(socket), None).expect("client");
        assert!(matches!(client.get("/status"), Err(StatusError::Connect(_))));
    }

    #[test]
    fn inside_async_code_it_refuses_instead_of_panicking() {
        let client = StatusClient::new(Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 9))), None).expect("client");
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let outcome = runtime.block_on(async { client.get("/status") });
        assert!(matches!(outcome, Err(StatusError::InsideRuntime)), "{outcome:?}");
        drop(runtime);
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let client = StatusClient::new(Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 9))), Some("s3cret".into())).expect("client");
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cret") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn a_non_200_answer_carries_its_code_and_text() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).expect("read");
            let request = String::from_utf8_lossy(&request[..n]).to_string();
            stream.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 14\r\n\r\nbad token\xe2\x80\x94 x").expect("write");
            request
        });
        let client = StatusClient::new(Endpoint::Tcp(address), Some("s3cret".into())).expect("client");
        match client.get("/status") {
            Err(StatusError::Status { status: 401, body }) => assert_eq!(body, "bad token— x"),
            other => panic!("{other:?}"),
        }
        let request = server.join().expect("server");
        assert!(request.contains("authorization: Bearer s3cret"), "{request}");
    }

    #[test]
    fn chunked_answers_are_read_whole_and_multibyte_text_is_kept() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).expect("read");
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"\xc3\r\n4\r\n\xa9\": \r\n2\r\n1}\r\n0\r\n\r\n")
                .expect("write");
        });
        let client = StatusClient::new(Endpoint::Tcp(address), None).expect("client");
        assert_eq!(client.get("/status").expect("answer"), "{\"é\": 1}");
        server.join().expect("server");
    }
}

//! The data path of one proxied connection: bytes both ways, each direction's FIN passed on as a
//! write shutdown of the other side (half-close), an idle timeout over both directions.
//!
//! On Linux the bytes move with splice(2) through a pipe (socket → pipe → socket, no copy into
//! user space). Pipes are taken from a small pool only while data is moving, so an idle
//! connection holds no pipe and no buffer; 10 000 idle connections cost sockets only. When
//! splice is refused (EINVAL on an unusual socket), the direction falls back to a copy through
//! a buffer that also exists only while data is moving.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per system call.
const CHUNK: usize = 64 * 1024;
/// Pipes kept for reuse; more are created (and closed after use) under load.
const POOL: usize = 64;

static PIPES: Mutex<Vec<(OwnedFd, OwnedFd)>> = Mutex::new(Vec::new());

fn take_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let pooled = PIPES.lock().map(|mut p| p.pop()).unwrap_or(None);
    match pooled {
        Some(pipe) => Ok(pipe),
        None => nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from),
    }
}

/// Returns an empty pipe to the pool (a pipe with bytes left in it is closed instead).
fn give_back(pipe: (OwnedFd, OwnedFd)) {
    if let Ok(mut pool) = PIPES.lock()
        && pool.len() < POOL
    {
        pool.push(pipe);
    }
}

/// How bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// splice(2) through a pipe, falling back to a copy if the kernel refuses.
    Splice,
    /// read/write through a user-space buffer.
    Copy,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides finished (FIN both ways).
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// A side failed (reset, write error): both were closed.
    Error,
}

/// What a relay did: how it ended and the bytes it moved each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// How it ended.
    pub ended: Ended,
    /// Client to server.
    pub up: u64,
    /// Server to client.
    pub down: u64,
}

/// Relays until both directions are done, one fails, or nothing moves for `idle`. Bytes are
/// added to `upstream` (client to server) and `downstream` as they pass.
pub async fn relay(
    client: TcpStream,
    server: TcpStream,
    idle: Duration,
    upstream: &AtomicU64,
    downstream: &AtomicU64,
    mode: Mode,
) -> Relayed {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let activity = Activity { start, last: &last };
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (up_count, down_count) = (Count { shared: upstream, own: &up }, Count { shared: downstream, own: &down });
    let both = async {
        tokio::try_join!(pump(&client, &server, &up_count, &activity, mode), pump(&server, &client, &down_count, &activity, mode))
    };
    let watchdog = async {
        loop {
            let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let ended = tokio::select! {
        result = both => if result.is_ok() { Ended::Closed } else { Ended::Error },
        () = watchdog => Ended::Idle,
    };
    Relayed { ended, up: up.load(Ordering::Relaxed), down: down.load(Ordering::Relaxed) }
}

/// Bytes of one direction: the server's counter (shared, live) and this connection's own.
struct Count<'a> {
    shared: &'a AtomicU64,
    own: &'a AtomicU64,
}

impl Count<'_> {
    fn add(&self, bytes: usize) {
        self.shared.fetch_add(bytes as u64, Ordering::Relaxed);
        self.own.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// The last time a byte moved, shared by both directions.
struct Activity<'a> {
    start: Instant,
    last: &'a AtomicU64,
}

impl Activity<'_> {
    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

async fn pump(from: &TcpStream, to: &TcpStream, counter: &Count<'_>, activity: &Activity<'_>, mode: Mode) -> io::Result<()> {
    if mode == Mode::Splice {
        match pump_splice(from, to, counter, activity).await {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => tracing::debug!("splice refused; copying"),
            other => return other,
        }
    }
    pump_copy(from, to, counter, activity).await
}

/// FIN from `from`: pass it on as a write shutdown of `to`, keep the other direction open.
fn pass_fin(to: &TcpStream) -> io::Result<()> {
    match SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

async fn pump_splice(from: &TcpStream, to: &TcpStream, counter: &Count<'_>, activity: &Activity<'_>) -> io::Result<()> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        from.readable().await?;
        let pipe = take_pipe()?;
        loop {
            let into_pipe = from.try_io(Interest::READABLE, || splice(from, None, &pipe.1, None, CHUNK, flags).map_err(io::Error::from));
            let mut in_pipe = match into_pipe {
                Ok(0) => {
                    give_back(pipe);
                    return pass_fin(to);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            counter.add(in_pipe);
            activity.touch();
            while in_pipe > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || splice(&pipe.0, None, to, None, in_pipe, flags).map_err(io::Error::from)) {
                    Ok(n) => in_pipe -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        give_back(pipe);
    }
}

async fn pump_copy(from: &TcpStream, to: &TcpStream, counter: &Count<'_>, activity: &Activity<'_>) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match from.try_read(&mut buf) {
                Ok(0) => return pass_fin(to),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            counter.add(n);
            activity.touch();
            let mut written = 0;
            while written < n {
                to.writable().await?;
                match to.try_write(&buf[written..n]) {
                    Ok(m) => written += m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

//! The data path of one proxied connection: bytes both ways, each direction's FIN passed on as a
//! write shutdown of the other side (half-close), an idle timeout over both directions, and a
//! buffer that exists only while data is moving, so that idle connections cost no buffer memory.
//! (A splice(2) path would save the copy; this is the portable one.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;

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

/// Relays until both directions are done, one fails, or nothing moves for `idle`. Bytes are
/// added to `upstream` (client to server) and `downstream` as they pass.
pub async fn relay(client: TcpStream, server: TcpStream, idle: Duration, upstream: &AtomicU64, downstream: &AtomicU64) -> Ended {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let both = async {
        tokio::try_join!(pump(client_read, server_write, upstream, &last, start), pump(server_read, client_write, downstream, &last, start))
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
    tokio::select! {
        result = both => if result.is_ok() { Ended::Closed } else { Ended::Error },
        () = watchdog => Ended::Idle,
    }
}

async fn pump(from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: &AtomicU64, last: &AtomicU64, start: Instant) -> std::io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => {
                    // FIN from this side: pass it on, keep the other direction open.
                    to.shutdown().await?;
                    return Ok(());
                }
                Ok(n) => {
                    to.write_all(&buf[..n]).await?;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

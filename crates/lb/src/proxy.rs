//! The data path of one proxied connection: bytes both ways, each direction's FIN passed on as a
//! write shutdown of the other side (half-close), an idle timeout over both directions.
//!
//! Each time a side becomes readable, its first bytes are read into a small buffer: most API
//! traffic (requests, watch events, handshakes) fits, and a read that returns less than the
//! buffer says the socket is drained, so the direction goes back to waiting at once — two system
//! calls a message, where splice needs three (in, out, and the read that finds nothing). When the
//! buffer fills, the rest moves with splice(2) through a pipe (socket → pipe → socket, no copy
//! into user space) until the socket is drained. Pipes are taken from a small pool only while
//! data is moving and buffers exist only while a message is handled, so an idle connection holds
//! neither (the buffer is one per runtime thread, used between two awaits, and only what the
//! other side cannot take at once is copied into an allocation); 10 000 idle connections cost
//! sockets only. When splice is refused (EINVAL on an
//! unusual socket), the direction copies through the buffer instead.
//!
//! A relay can be paused (`halo upgrade` hands its sockets to the new process): each direction
//! stops where it waits for its side to become readable, the one point where halo holds none of
//! its bytes (what was read has been written; a pipe has been emptied); bytes that arrive later
//! wait in the kernel for whoever relays next. The relay pauses once both directions are at rest
//! (paused so, or finished); a direction at rest while the other cannot get there (its reader
//! takes nothing) goes on relaying when the pause is called off.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::sys::socket::MsgFlags;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Bytes moved per splice(2) call.
const CHUNK: usize = 64 * 1024;
/// The buffer each readable side's first bytes are read into.
const SMALL: usize = 16 * 1024;
/// Pipes kept for reuse by each worker thread; more are created (and closed after use) under
/// load.
const POOL: usize = 16;

thread_local! {
    /// The thread's pipes for reuse: no lock is shared between threads for them. A relay may
    /// take a pipe on one thread and give it back on another; each pool stays within [`POOL`].
    static PIPES: std::cell::RefCell<Vec<(OwnedFd, OwnedFd)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn take_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    match PIPES.with_borrow_mut(Vec::pop) {
        Some(pipe) => Ok(pipe),
        None => nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from),
    }
}

/// Returns an empty pipe to the pool (a pipe with bytes left in it is closed instead).
fn give_back(pipe: (OwnedFd, OwnedFd)) {
    PIPES.with_borrow_mut(|pool| {
        if pool.len() < POOL {
            pool.push(pipe);
        }
    });
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
    /// Paused at a point where halo holds none of its bytes: the sockets may be handed over.
    Paused,
}

/// Whether relays are asked to pause (`halo upgrade`); a relay whose sender is gone runs on.
pub type Pause = watch::Receiver<bool>;

/// What a direction's pump came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// Its side's FIN was passed on.
    Finished,
    /// Paused, holding nothing.
    Paused,
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

/// Relays until both directions are done, one fails, nothing moves for `idle`, or `pause` asks
/// it to stop (then both directions have reached a point where halo holds none of their bytes).
/// Bytes are added to `upstream` (client to server) and `downstream` as they pass.
pub async fn relay(
    (client, server): (&TcpStream, &TcpStream),
    idle: Duration,
    (upstream, downstream): (&AtomicU64, &AtomicU64),
    mode: Mode,
    pause: &Pause,
) -> Relayed {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let activity = Activity { start, last: &last };
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let (up_count, down_count) = (Count { shared: upstream, own: &up }, Count { shared: downstream, own: &down });
    let at_rest = AtRest::new(0);
    // Whether each side (client, server) has been sent its FIN.
    let shut = [AtomicBool::new(false), AtomicBool::new(false)];
    let both = async {
        tokio::try_join!(
            pump((client, server), &up_count, &activity, mode, (pause.clone(), &at_rest), [&shut[0], &shut[1]]),
            pump((server, client), &down_count, &activity, mode, (pause.clone(), &at_rest), [&shut[1], &shut[0]])
        )
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
        result = both => match result {
            Ok((Pumped::Finished, Pumped::Finished)) => Ended::Closed,
            Ok(_) => Ended::Paused,
            Err(_) => Ended::Error,
        },
        () = watchdog => Ended::Idle,
    };
    Relayed { ended, up: up.load(Ordering::Relaxed), down: down.load(Ordering::Relaxed) }
}

/// Closes `socket` with a reset when it is dropped (SO_LINGER 0): a side that failed is passed
/// on as a failure.
pub(crate) fn abort(socket: &impl std::os::fd::AsFd) {
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
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

/// How many directions of a relay are at rest: finished, or paused where they hold no byte.
type AtRest = watch::Sender<u8>;

/// Waits until a pause is asked for (never, once nobody can ask).
async fn paused(pause: &mut Pause) {
    if pause.wait_for(|p| *p).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a direction at rest came to.
enum Rest {
    /// Both directions are at rest: the relay pauses.
    Paused,
    /// Its side has bytes again before the other direction came to rest: it relays them.
    Readable,
    /// The pause was called off.
    CalledOff,
}

/// A direction at rest while a pause is asked for, until both are (the relay pauses), its side
/// has bytes again (it relays them and comes back), or the pause is called off.
async fn rest_here(from: &TcpStream, at_rest: &AtRest, pause: &mut Pause) -> Rest {
    at_rest.send_modify(|n| *n += 1);
    let mut both = at_rest.subscribe();
    let mut called_off = async || {
        if pause.wait_for(|p| !*p).await.is_err() {
            // Nobody can call it off any more.
            std::future::pending::<()>().await;
        }
    };
    let rest = tokio::select! {
        biased;
        _ = both.wait_for(|n| *n >= 2) => return Rest::Paused,
        () = called_off() => Rest::CalledOff,
        readable = from.readable() => if readable.is_ok() { Rest::Readable } else { Rest::CalledOff },
    };
    at_rest.send_modify(|n| *n -= 1);
    rest
}

async fn pump(
    (from, to): (&TcpStream, &TcpStream),
    counter: &Count<'_>,
    activity: &Activity<'_>,
    mode: Mode,
    (mut pause, at_rest): (Pause, &AtRest),
    [from_shut, to_shut]: [&AtomicBool; 2],
) -> io::Result<Pumped> {
    let mut splice_works = mode == Mode::Splice;
    let finished = |to: &TcpStream| {
        // The end of a socket this side has not shut is a reset when TCP says closed: the reset
        // is passed on as one (its error may have gone to the other direction's write).
        if crate::kernel::sockinfo::was_reset(from, from_shut.load(Ordering::Acquire)) {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        // Passed here even when the other direction is over: the relay's caller may keep the
        // sockets open after it (a test, a handover), and the peer must see its FIN now.
        let passed = pass_fin(to);
        to_shut.store(true, Ordering::Release);
        at_rest.send_modify(|n| *n += 1);
        passed.map(|()| Pumped::Finished)
    };
    loop {
        // The one point where this direction holds no byte: a pause is taken here, first.
        tokio::select! {
            biased;
            () = paused(&mut pause) => match rest_here(from, at_rest, &mut pause).await {
                Rest::Paused => return Ok(Pumped::Paused),
                Rest::Readable => {}
                Rest::CalledOff => continue,
            },
            readable = from.readable() => readable?,
        }
        let (n, unwritten) = match pass_through_buffer(from, to) {
            Ok(Passed { read: 0, .. }) => return finished(to),
            Ok(passed) => (passed.read, passed.unwritten),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        counter.add(n);
        activity.touch();
        if !unwritten.is_empty() {
            write_all(to, &unwritten).await?;
        }
        if n < SMALL {
            continue;
        }
        // A full buffer: more is coming; move it without copying while the socket has bytes.
        if splice_works {
            match splice_until_drained(from, to, counter, activity).await {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    tracing::debug!("splice refused; copying");
                    splice_works = false;
                }
                Ok(Drained::Fin) => return finished(to),
                Ok(Drained::Empty) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// What one pass through the buffer did: the bytes read (0 at the peer's FIN) and those the
/// other side's socket did not take at once, to be written when it can.
struct Passed {
    read: usize,
    unwritten: Vec<u8>,
}

thread_local! {
    /// The buffer of `pass_through_buffer`, one per runtime thread: used between two awaits
    /// only, so no connection holds one, and no message costs an allocation.
    static BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; SMALL]);
}

/// Reads what `from` has (up to `SMALL` bytes) and writes it to `to` at once, without waiting:
/// what `to` cannot take now is returned as `unwritten`. WouldBlock when there was nothing.
fn pass_through_buffer(from: &TcpStream, to: &TcpStream) -> io::Result<Passed> {
    BUFFER.with_borrow_mut(|buf| {
        let n = match read_drained(from, buf)? {
            Read::Drained(n) => n,
            Read::Full => buf.len(),
            Read::End => return Ok(Passed { read: 0, unwritten: Vec::new() }),
            Read::Nothing => return Err(io::ErrorKind::WouldBlock.into()),
        };
        let written = match to.try_write(&buf[..n]) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        Ok(Passed { read: n, unwritten: buf[written..n].to_vec() })
    })
}

/// What one read of a readable side found.
enum Read {
    /// Fewer bytes than the buffer holds: the socket is drained, and its readiness was cleared
    /// so that the next wait is for new bytes.
    Drained(usize),
    /// The buffer is full: more may be waiting.
    Full,
    /// The peer's FIN.
    End,
    /// Nothing after all (the readiness was stale).
    Nothing,
}

/// Reads once into `buf`. A short read on a stream socket means its receive queue was empty at
/// that moment (one exception: TCP urgent data, where a read stops at the urgent mark; the bytes
/// after it wait for the next arrival or the idle timeout — only the sender's own connection is
/// held up, and the API's protocols never send urgent data), so the readiness is cleared then and there (reported to tokio as WouldBlock,
/// which clears only what it saw: bytes arriving meanwhile, and a FIN or a reset, keep the side
/// readable) — sparing the read that would only find nothing.
fn read_drained(from: &TcpStream, buf: &mut [u8]) -> io::Result<Read> {
    let mut short = 0;
    let result = from.try_io(Interest::READABLE, || match nix::sys::socket::recv(from.as_raw_fd(), buf, MsgFlags::empty()) {
        Ok(n) if n > 0 && n < buf.len() => {
            short = n;
            Err(io::ErrorKind::WouldBlock.into())
        }
        Ok(n) => Ok(n),
        Err(e) => Err(io::Error::from(e)),
    });
    match result {
        Ok(0) => Ok(Read::End),
        Ok(_) => Ok(Read::Full),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(if short > 0 { Read::Drained(short) } else { Read::Nothing }),
        Err(e) => Err(e),
    }
}

/// Writes all of `bytes`, waiting while the other side's socket buffer is full.
async fn write_all(to: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < bytes.len() {
        to.writable().await?;
        match to.try_write(&bytes[written..]) {
            Ok(m) => written += m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// FIN from `from`: pass it on as a write shutdown of `to`, keep the other direction open.
fn pass_fin(to: &TcpStream) -> io::Result<()> {
    match SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// How a splice run ended.
enum Drained {
    /// The socket had nothing more (its readiness cleared).
    Empty,
    /// The peer's FIN.
    Fin,
}

/// Splices from `from` to `to` until `from` has nothing more to give.
async fn splice_until_drained(from: &TcpStream, to: &TcpStream, counter: &Count<'_>, activity: &Activity<'_>) -> io::Result<Drained> {
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    let pipe = take_pipe()?;
    loop {
        let into_pipe = from.try_io(Interest::READABLE, || splice(from, None, &pipe.1, None, CHUNK, flags).map_err(io::Error::from));
        let in_pipe = match into_pipe {
            Ok(0) => {
                give_back(pipe);
                return Ok(Drained::Fin);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give_back(pipe);
                return Ok(Drained::Empty);
            }
            Err(e) => return Err(e),
        };
        counter.add(in_pipe);
        activity.touch();
        empty_pipe(&pipe, to, in_pipe, |out, to, n| splice(out, None, to, None, n, flags).map_err(io::Error::from)).await?;
    }
}

/// Moves the `in_pipe` bytes waiting in `pipe` to `to` with `splice_out`; should the kernel refuse
/// it (EINVAL), the bytes still in the pipe are read back and written, so that none is lost, and
/// the refusal is returned after them (the direction copies from then on).
async fn empty_pipe(
    pipe: &(OwnedFd, OwnedFd),
    to: &TcpStream,
    mut in_pipe: usize,
    splice_out: impl Fn(&OwnedFd, &TcpStream, usize) -> io::Result<usize>,
) -> io::Result<()> {
    while in_pipe > 0 {
        to.writable().await?;
        match to.try_io(Interest::WRITABLE, || splice_out(&pipe.0, to, in_pipe)) {
            Ok(n) => in_pipe -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                let mut left = vec![0u8; in_pipe];
                let mut got = 0;
                while got < in_pipe {
                    match nix::unistd::read(&pipe.0, &mut left[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(errno) => return Err(errno.into()),
                    }
                }
                write_all(to, &left[..got]).await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A splice out of the pipe that the kernel refuses halfway: the bytes still in the pipe
    /// reach the other side all the same, in order (they used to be dropped with the pipe).
    #[tokio::test]
    async fn bytes_left_in_the_pipe_when_splice_is_refused_are_delivered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let to = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (mut peer, _) = listener.accept().await.expect("accept");
        let pipe = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).expect("pipe");
        let message: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(nix::unistd::write(&pipe.1, &message).expect("into the pipe"), message.len());
        let calls = std::cell::Cell::new(0);
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        // The first call moves 1 000 bytes; the second is refused, as on a socket splice cannot serve.
        let refused_halfway = |out: &OwnedFd, to: &TcpStream, n: usize| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                splice(out, None, to, None, n.min(1000), flags).map_err(io::Error::from)
            } else {
                Err(io::Error::from_raw_os_error(nix::libc::EINVAL))
            }
        };
        let outcome = empty_pipe(&pipe, &to, message.len(), refused_halfway).await;
        assert_eq!(outcome.map_err(|e| e.raw_os_error()), Err(Some(nix::libc::EINVAL)), "the refusal is returned");
        drop(to);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.expect("read");
        assert_eq!(received.len(), message.len(), "bytes lost with the pipe");
        assert!(received == message, "bytes out of order");
    }
}

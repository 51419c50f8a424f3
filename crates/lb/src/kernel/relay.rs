//! One kernel-forwarded connection, from joining the map to its end: the kernel moves the bytes;
//! this waits for what needs halo — a side's FIN (passed on as a write shutdown of the other
//! side once the other side has taken every byte the kernel sent it), a reset (both closed), a
//! direction the program held (taken over in user space, in order), the idle timeout (from
//! `TCP_INFO`'s last receipt on either socket). Bytes are counted from what each socket was
//! written, at the end and every [`SAMPLE`] for the live counters.

use std::future::Future;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Flow;
use super::sockinfo;
use super::watch::{ERROR, HANGUP, HELD, Side, bit};
use crate::proxy::{Ended, Pause, Relayed};

/// How often the live byte counters are brought up to date.
const SAMPLE: Duration = Duration::from_secs(10);
/// The largest wait between two looks at a partner still taking the kernel's bytes.
const BARRIER_STEP: Duration = Duration::from_millis(20);
/// What a held direction reads at once.
const BUFFER: usize = 64 * 1024;
/// The most of a socket's own queue read at once (a receive buffer is smaller on any sane host).
const MOST_QUEUED: usize = 64 << 20;

/// Where a direction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The kernel moves its bytes.
    Kernel,
    /// Finishing (its FIN) or taken over in user space: a task runs.
    Moving,
    /// Its FIN was passed on.
    Done,
}

/// What woke the relay.
enum Woke {
    /// The watcher's events.
    Signalled(u32),
    /// A direction's task ended.
    Finished(Side, io::Result<TakenOver>),
    /// The time to look again (idle timeout, counters, the program's state).
    Looked,
}

/// How a direction's task ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TakenOver {
    /// Its FIN was passed on.
    Finished,
    /// The program has it again (only a program attached by an older process hands a held
    /// direction back: this release's keeps it in user space to its end, see bpf/forward.c).
    Back,
}

type Task<'a> = Pin<Box<dyn Future<Output = io::Result<TakenOver>> + Send + 'a>>;

/// How a kernel relay ended.
pub(crate) enum Outcome {
    /// The connection ended: how, and the bytes counted by this relay.
    Ended(Relayed),
    /// Paused for `halo upgrade` while the kernel moved every byte (halo holds none): the
    /// connection, to be handed over, and the bytes counted by this relay.
    Paused(Box<Flow>, (TcpStream, TcpStream), Relayed),
}

/// Relays `client` and `server`, joined to the kernel path as `flow`, until both directions
/// are done, one fails, nothing arrives for `idle`, or `pause` asks while the kernel moves both
/// directions. Bytes are added to `upstream` and `downstream` as they are sampled.
pub(crate) async fn relay(
    flow: Flow,
    (client, server): (TcpStream, TcpStream),
    idle: Duration,
    (upstream, downstream): (&AtomicU64, &AtomicU64),
    pause: &Pause,
) -> Outcome {
    let sockets = [&client, &server];
    let mut directions = [Direction::Kernel; 2];
    let mut tasks: [Option<Task<'_>>; 2] = [None, None];
    let start = flow.counted.each_ref().map(|c| c.load(Ordering::Relaxed));
    let mut pause = pause.clone();
    let mut pausable = true;
    if !flow.complete() {
        for side in [Side::Client, Side::Server] {
            tasks[side as usize] = Some(Box::pin(take_over(&flow, sockets, side)));
            directions[side as usize] = Direction::Moving;
        }
    }
    let ended = loop {
        if directions.iter().all(|d| *d == Direction::Done) {
            break Ended::Closed;
        }
        let wait = match next_look(sockets, idle) {
            Ok(Some(wait)) => wait.min(SAMPLE),
            Ok(None) => break Ended::Idle,
            Err(_) => break Ended::Error,
        };
        let [first, second] = &mut tasks;
        let kernel_only = directions == [Direction::Kernel; 2];
        let woke = tokio::select! {
            () = flow.signals.notify.notified() => Woke::Signalled(flow.signals.events.swap(0, Ordering::AcqRel)),
            asked = pause.wait_for(|p| *p), if kernel_only && pausable => match asked {
                Ok(_) => break Ended::Paused,
                Err(_) => {
                    // Nobody can ask any more.
                    pausable = false;
                    Woke::Signalled(0)
                }
            },
            result = run(first) => Woke::Finished(Side::Client, result),
            result = run(second) => Woke::Finished(Side::Server, result),
            () = tokio::time::sleep(wait) => Woke::Looked,
        };
        let needing = match needing(&flow, sockets, woke, &mut directions) {
            Ok(needing) => needing,
            Err(ended) => break ended,
        };
        for side in [Side::Client, Side::Server] {
            if needing[side as usize] && directions[side as usize] == Direction::Kernel {
                tasks[side as usize] = Some(Box::pin(take_over(&flow, sockets, side)));
                directions[side as usize] = Direction::Moving;
            }
        }
        count(&flow, sockets, directions, (upstream, downstream));
    };
    count(&flow, sockets, directions, (upstream, downstream));
    drop(tasks);
    if ended == Ended::Error {
        // A reset on one side is a reset on the other, not a FIN that could pass for the end
        // of a message.
        crate::proxy::abort(&client);
        crate::proxy::abort(&server);
    }
    let now = flow.counted.each_ref().map(|c| c.load(Ordering::Relaxed));
    let relayed = Relayed {
        ended,
        up: now[Side::Server as usize] - start[Side::Server as usize],
        down: now[Side::Client as usize] - start[Side::Client as usize],
    };
    match ended {
        Ended::Paused => Outcome::Paused(Box::new(flow), (client, server), relayed),
        _ => Outcome::Ended(relayed),
    }
}

/// What a wake-up asks for: the directions (by the side their bytes arrive on) that need a task
/// now, or the end of the relay (an error on a socket or in a task).
fn needing(flow: &Flow, sockets: [&TcpStream; 2], woke: Woke, directions: &mut [Direction; 2]) -> Result<[bool; 2], Ended> {
    match woke {
        Woke::Signalled(events) if events & (bit(ERROR, Side::Client) | bit(ERROR, Side::Server)) != 0 => {
            tracing::debug!(
                client = events & bit(ERROR, Side::Client) != 0,
                "a kernel-forwarded connection failed: reset or error on a socket"
            );
            Err(Ended::Error)
        }
        Woke::Signalled(events) => {
            Ok([Side::Client, Side::Server].map(|side| events & (bit(HANGUP, side) | bit(HELD, side)) != 0 || flow.state(side).held != 0))
        }
        Woke::Finished(side, Err(e)) => {
            tracing::debug!(?side, error = %e, "a kernel-forwarded connection failed");
            Err(Ended::Error)
        }
        Woke::Finished(side, Ok(TakenOver::Finished)) => {
            directions[side as usize] = Direction::Done;
            Ok([false; 2])
        }
        Woke::Finished(side, Ok(TakenOver::Back)) => {
            directions[side as usize] = Direction::Kernel;
            // Held again meanwhile, or its FIN came: looked at again at once.
            let mut again = [false; 2];
            again[side as usize] = flow.state(side).held != 0 || !sockinfo::tcp_info(sockets[side as usize]).is_ok_and(|i| i.established);
            Ok(again)
        }
        // A held direction whose word was lost (the ring was full) is found here.
        Woke::Looked => Ok([Side::Client, Side::Server].map(|side| flow.state(side).held != 0)),
    }
}

/// Runs a direction's task, if it has one (else waits forever); the slot is emptied when done.
async fn run(task: &mut Option<Task<'_>>) -> io::Result<TakenOver> {
    match task {
        Some(running) => {
            let result = running.await;
            *task = None;
            result
        }
        None => std::future::pending().await,
    }
}

/// How long until the idle timeout could pass, `None` when it has: the last byte either socket
/// received, as the kernel saw it.
fn next_look(sockets: [&TcpStream; 2], idle: Duration) -> io::Result<Option<Duration>> {
    let quiet = sockets.iter().map(|s| sockinfo::tcp_info(*s).map(|i| i.last_data_recv_ms)).collect::<io::Result<Vec<_>>>()?;
    let quiet = Duration::from_millis(u64::from(quiet.into_iter().min().unwrap_or(0)));
    Ok(idle.checked_sub(quiet).filter(|left| !left.is_zero()))
}

/// Brings the counters up to date: bytes written to each socket since it joined, its FIN not
/// counted.
fn count(flow: &Flow, sockets: [&TcpStream; 2], directions: [Direction; 2], shared: (&AtomicU64, &AtomicU64)) {
    // Bytes arriving on one side are written to the other.
    for (to, from, counter) in [(Side::Server, Side::Client, shared.0), (Side::Client, Side::Server, shared.1)] {
        let Ok(written) = flow.written_since(to, sockets[to as usize]) else { continue };
        let fin = u64::from(directions[from as usize] == Direction::Done);
        let bytes = written.saturating_sub(fin);
        let before = flow.counted[to as usize].fetch_max(bytes, Ordering::Relaxed);
        if bytes > before {
            counter.fetch_add(bytes - before, Ordering::Relaxed);
        }
    }
}

/// The other side.
fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    }
}

/// Waits until the partner of `side` has been written every byte the program sent it, and the
/// `copied` bytes user space wrote.
async fn partner_caught_up(flow: &Flow, sockets: [&TcpStream; 2], side: Side, copied: u64) -> io::Result<()> {
    let (from, to) = (sockets[side as usize], sockets[other(side) as usize]);
    let mut step = Duration::from_millis(1);
    loop {
        // Locks `from`: whatever the program was doing with its last segment is done.
        sockinfo::tcp_info(from)?;
        let state = flow.state(side);
        if flow.written_since(other(side), to)? >= state.redirected + copied {
            return Ok(());
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(BARRIER_STEP);
    }
}

/// A direction that needs halo — its side's FIN came, or the program held it — or one in user
/// space from the start (its partner could not join the map): what the program leaves with
/// `side`'s socket is copied until its FIN, passed on once every byte is read (at a FIN the
/// kernel may leave the last bytes in the socket's queue without showing them to the program:
/// they are read here too). Each read is written after every byte sent before it (by the
/// program or by this), and the program is told how many (a program attached by an older
/// process takes the direction back when nothing is left here; this release's does not). A socket in the map is read through the kernel's sockmap receive path,
/// which splice(2) does not see: this reads.
async fn take_over(flow: &Flow, sockets: [&TcpStream; 2], side: Side) -> io::Result<TakenOver> {
    let (from, to) = (registered(sockets[side as usize])?, registered(sockets[other(side) as usize])?);
    let mut buffer = vec![0u8; BUFFER];
    // What this direction's tasks have copied so far: the program and the barrier count all of it.
    let mut copied = flow.copied(side);
    let copied_before = copied;
    let mut step = Duration::from_millis(1);
    loop {
        // Back in the kernel's hands (an older process's program only): it took the direction
        // back (user space had written on all it was left), and no FIN is waiting for this task.
        let state = flow.state(side);
        if copied > copied_before && state.held == 0 && copied == state.passed && sockinfo::tcp_info(sockets[side as usize])?.established {
            return Ok(TakenOver::Back);
        }
        from.readable().await?;
        // Bytes still in the socket's own queue (the program has not seen them) are read whole,
        // skb by skb: the kernel would hand a half-read one to the program whole, and its first
        // half would go out twice (seen: one 64 KB segment twice at the end of a gigabyte).
        let queued = usize::try_from(sockinfo::unread(sockets[side as usize])?).unwrap_or(MOST_QUEUED).min(MOST_QUEUED);
        let want = if queued > 0 { queued } else { BUFFER };
        if buffer.len() < want {
            buffer.resize(want, 0);
        }
        let n = match from.try_read(&mut buffer[..want]) {
            Ok(0) => {
                if sockinfo::was_reset(sockets[side as usize], flow.shut[side as usize].load(Ordering::Acquire)) {
                    return Err(io::ErrorKind::ConnectionReset.into());
                }
                partner_caught_up(flow, sockets, side, copied).await?;
                if flow.all_read(side, sockets[side as usize], copied)? {
                    flow.shut[other(side) as usize].store(true, Ordering::Release);
                    return to.into_std().and_then(|s| s.shutdown(Shutdown::Write)).map(|()| TakenOver::Finished);
                }
                // The kernel's worker still moves the last bytes to where reads take them.
                tokio::time::sleep(step).await;
                step = (step * 2).min(BARRIER_STEP);
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        partner_caught_up(flow, sockets, side, copied).await?;
        let mut rest = &buffer[..n];
        while !rest.is_empty() {
            to.writable().await?;
            match to.try_write(rest) {
                Ok(m) => rest = &rest[m..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        copied += n as u64;
        flow.set_copied(side, copied)?;
    }
}

/// A second descriptor of `socket` that tokio waits on.
fn registered(socket: &TcpStream) -> io::Result<tokio::net::TcpStream> {
    let socket = socket.try_clone()?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(socket)
}

//! The running daemon's side of `halo upgrade`: start the new binary, offer it everything, hand
//! the VRRP instances over when it is ready, and, once it has committed, let go (guard, instances
//! not adopted, announcements, accepting, systemd's main pid), drain and exit. Before the commit
//! point every failure puts back what was handed over and the daemon goes on as it was.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use halo_config::{Config, LogFormat};
use tokio::sync::oneshot;

use super::message::{Channel, ChannelError, Message, Offer, PROTOCOL, ServerHealthJson};
use super::{READY_WITHIN, SERVING_WITHIN, STEP_WITHIN, adoption, connections};
use crate::daemon::vrrp_driver::{Adoption, Frozen, Start};
use crate::daemon::{Daemon, Signals, generation, process};

/// How an upgrade ended for the running daemon.
pub(crate) enum Outcome {
    /// The new process took over: this one lets go and drains.
    HandedOver(Box<HandedOver>),
    /// It did not, and why; nothing changed here.
    Refused(String),
}

/// A new process that has taken over.
pub(crate) struct HandedOver {
    /// The handover socket, kept open until this process exits: the new one sees it close then.
    channel: Arc<Channel>,
    /// Its pid.
    pid: u32,
    /// The process, to learn how it ended should it end before it serves.
    child: tokio::process::Child,
}

/// An instance handed over: its configuration and the state it was in.
type Handed = Vec<(halo_config::VrrpInstance, Frozen)>;

/// SIGUSR2: hands the daemon over to a new process from the binary on disk, or says why not.
pub(crate) async fn hand_over(daemon: &mut Daemon) -> Outcome {
    let executable = match generation::executable() {
        Ok(path) => path,
        Err(e) => return Outcome::Refused(format!("cannot tell which binary this is: {e}")),
    };
    tracing::info!(binary = %executable.display(), "upgrade: starting the new process");
    let (channel, theirs) = match super::message::pair() {
        Ok(pair) => pair,
        Err(e) => return Outcome::Refused(format!("cannot create the handover socket: {e}")),
    };
    let mut child = match spawn(&executable, daemon, theirs) {
        Ok(child) => child,
        Err(e) => return Outcome::Refused(format!("cannot start {}: {e}", executable.display())),
    };
    let channel = Arc::new(channel);
    match negotiate(daemon, &channel).await {
        Ok(pid) => {
            tracing::info!(pid, binary = %executable.display(), "upgrade: the new process has taken over");
            Outcome::HandedOver(Box::new(HandedOver { channel, pid, child }))
        }
        Err(why) => {
            let ended = end(&mut child, &channel).await;
            Outcome::Refused(format!("the new process ({}) {ended}: {why}", executable.display()))
        }
    }
}

/// Starts `halo run --upgrade-handover` from `executable` on the daemon's own configuration,
/// with the handover socket as its standard input; its output goes where this one's goes.
fn spawn(executable: &std::path::Path, daemon: &Daemon, socket: OwnedFd) -> std::io::Result<tokio::process::Child> {
    let format = match daemon.config.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    tokio::process::Command::new(executable)
        .arg("run")
        .arg("-c")
        .arg(&daemon.path)
        .arg("--pid-file")
        .arg(&daemon.pid_file)
        .args(["--log-format", format, "--upgrade-handover"])
        .stdin(std::process::Stdio::from(socket))
        .kill_on_drop(false)
        .spawn()
}

/// The steps up to the commit point; the new process's pid, or why it did not commit (what was
/// handed over is back in place then).
async fn negotiate(daemon: &mut Daemon, channel: &Arc<Channel>) -> Result<u32, String> {
    if let Err(e) = offer(daemon, channel) {
        // A new process that refused its configuration said why before it exited.
        return Err(match receive(channel, "ready", Duration::from_millis(500)).await {
            Err(why) if !why.starts_with("it ended") => why,
            _ => format!("it ended before it took the offer ({e})"),
        });
    }
    let adopt = match receive(channel, "ready", READY_WITHIN).await? {
        Message::Ready { adopt } => adopt,
        other => return Err(unexpected(other, "ready")),
    };
    let handed = match daemon.instances.hand_over(&adopt).await {
        Ok(handed) => handed,
        Err((why, partial)) => {
            resume(daemon, partial);
            return Err(why);
        }
    };
    let instances = handed.iter().map(|(config, frozen)| adoption::to_message(&config.name, frozen)).collect();
    let committed = match channel.send(&Message::Frozen { instances }, &[]) {
        Ok(()) => receive(channel, "committed", STEP_WITHIN).await,
        Err(e) => Err(format!("{e}")),
    };
    match committed {
        Ok(Message::Committed { pid }) => Ok(pid),
        Ok(other) => {
            resume(daemon, handed);
            Err(unexpected(other, "committed"))
        }
        Err(why) => {
            resume(daemon, handed);
            Err(why)
        }
    }
}

/// Sends the offer with the listening sockets attached.
fn offer(daemon: &Daemon, channel: &Channel) -> Result<(), String> {
    let listening = daemon.balancer.listening_sockets();
    let mut fds: Vec<BorrowedFd<'_>> = listening.iter().map(|(_, fd)| *fd).collect();
    fds.push(daemon.status_sockets.tcp.as_fd());
    if let Some(unix) = &daemon.status_sockets.unix {
        fds.push(unix.as_fd());
    }
    // The kernel data path's maps, its connections' sockets in them: they go on in the new
    // process without a byte leaving the kernel.
    let kernel = daemon.balancer.kernel_path();
    if let Some(path) = kernel {
        fds.extend(path.handover_fds());
    }
    let offer = Offer {
        protocol: PROTOCOL,
        pid: std::process::id(),
        version: generation::version(),
        listeners: listening.iter().map(|(address, _)| *address).collect(),
        status_unix: daemon.status_sockets.unix.is_some(),
        health: daemon.balancer.server_health().into_iter().map(ServerHealthJson::from).collect(),
        instances: adoption::offered(&daemon.config),
        kernel: kernel.map(|_| halo_lb::kernel::LAYOUT),
    };
    channel.send(&Message::Offer(offer), &fds).map_err(|e| format!("{e}"))
}

/// The next message, within `within`; a `failed` one is its reason as an error.
async fn receive(channel: &Arc<Channel>, expected: &'static str, within: Duration) -> Result<Message, String> {
    let channel = Arc::clone(channel);
    let received = tokio::task::spawn_blocking(move || channel.receive(expected, Some(within))).await;
    match received {
        Ok(Ok((Message::Failed { reason }, _))) => Err(reason),
        Ok(Ok((message, _))) => Ok(message),
        Ok(Err(ChannelError::Closed)) => Err(format!("it ended before it was {expected}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the handover task failed: {e}")),
    }
}

fn unexpected(got: Message, expected: &'static str) -> String {
    ChannelError::Unexpected { got: got.kind(), expected }.to_string()
}

/// Puts the instances handed over back in place, in the state they were in (a master stays
/// master: it advertises at once and keeps its VIPs).
fn resume(daemon: &mut Daemon, handed: Handed) {
    for (config, frozen) in handed {
        tracing::warn!(instance = %config.name, state = %frozen.handover.state, "upgrade abandoned: the instance resumes here");
        let (opened, _) = oneshot::channel();
        let (adopted, _) = oneshot::channel();
        let (handover, state) = oneshot::channel();
        if handover.send(frozen).is_err() {
            tracing::error!(instance = %config.name, "could not resume the instance");
            continue;
        }
        let start = Start::Adopt(Adoption { opened, handover: state, adopted });
        daemon.instances.start_as(&config, &daemon.config.trackers, &daemon.trackers, start);
    }
}

/// Ends a new process that did not commit: it is told so, and given a few seconds to exit
/// before it is killed. How it ended, for the message.
async fn end(child: &mut tokio::process::Child, channel: &Channel) -> String {
    if let Err(e) = channel.send(&Message::Failed { reason: "the running daemon abandoned the upgrade".to_string() }, &[]) {
        tracing::debug!(error = %e, "the new process did not hear that the upgrade was abandoned");
    }
    let pid = child.id().map_or_else(|| "?".to_string(), |p| p.to_string());
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => format!("pid {pid}, {status}"),
        Ok(Err(e)) => format!("pid {pid}, exit unknown: {e}"),
        Err(_) => {
            if let Err(e) = child.kill().await {
                tracing::warn!(pid, error = %e, "could not kill the new process");
            }
            format!("pid {pid}, killed after 5 s")
        }
    }
}

/// How the running daemon came out of a handover it committed to.
pub(crate) enum Released {
    /// The new process serves: this one drained and is done.
    Drained,
    /// The new process ended before it said it served: this one took everything back and
    /// serves on.
    Resumed(Box<Daemon>),
}

/// After the commit point: lets go of what the new process needs (the guard's VIPs, the
/// instances it did not adopt, the announcements) and waits for it to say it serves. Then tells
/// systemd which process is the service now and drains this one's connections (up to the
/// longest `drain_timeout`, or until SIGTERM/SIGINT). Should it end (or fall silent) before, this
/// one resumes: it has accepted all along, and takes back the instances and announcements.
pub(crate) async fn release(mut daemon: Daemon, handed: Box<HandedOver>, signals: &mut Signals) -> Released {
    let HandedOver { channel, pid: successor, mut child } = *handed;
    // Only now: the new process's guard holds the VIPs since before it committed.
    if let Some(guard) = &daemon.instances.guard {
        guard.forget_all();
    }
    // Instances the new process did not adopt stop as in a clean stop (priority 0): it starts
    // its own once released.
    daemon.instances.stop_all().await;
    daemon.announcers.hand_over().await;
    if let Err(e) = channel.send(&Message::Released {}, &[]) {
        tracing::warn!(error = %e, "the new process did not hear that this one let go: it starts its other instances in 60 s");
    }
    if let Err(why) = serving(&channel, &mut child, successor).await {
        resume_after_release(&mut daemon, why);
        return Released::Resumed(Box::new(daemon));
    }
    let Daemon { config, mut pid, balancer, stop_balancer, status, .. } = daemon;
    stop_balancer.send_replace(true);
    process::hand_over_to(successor);
    pid.disown();
    status.set_upgrade(true, format!("handed over to pid {successor}"));
    let sent = connections::send(&balancer, &channel).await;
    let left = balancer.open_connections();
    tracing::info!(handed = sent.handed, lost = sent.lost, left, "upgrade: established connections handed over");
    drain(&config, balancer, signals).await;
    tracing::info!(successor, "halo handed over and drained");
    // The socket closes as this process exits: the new one stops showing it as previous.
    drop(channel);
    Released::Drained
}

/// Waits for the new process to say it serves. Why it did not: it ended (how), said something
/// else, or was silent for [`SERVING_WITHIN`] (it is killed then: it must not serve beside the
/// daemon that resumes).
async fn serving(channel: &Arc<Channel>, child: &mut tokio::process::Child, pid: u32) -> Result<(), String> {
    let why = match receive(channel, "serving", SERVING_WITHIN).await {
        Ok(Message::Serving {}) => return Ok(()),
        Ok(other) => unexpected(other, "serving"),
        Err(why) => why,
    };
    let ended = match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("exit unknown: {e}"),
        Err(_) => match child.kill().await {
            Ok(()) => "killed: silent".to_string(),
            Err(e) => format!("could not be killed: {e}"),
        },
    };
    Err(format!("the new process (pid {pid}) took over but ended before it said it served ({ended}; {why}): halo resumed here"))
}

/// Takes back what was let go after the commit: every instance afresh (the state handed over
/// may be stale: a peer may hold the VIP, or the new process's guard may have removed it and sent
/// priority 0, so each listens for a master-down interval and, master again, adds and announces
/// its VIPs), and the announcements, none withdrawn first. The pid file is written again (the
/// new process may have written it as it said it served).
fn resume_after_release(daemon: &mut Daemon, why: String) {
    tracing::error!(reason = %why, "upgrade: the new process did not take over after all: resuming");
    for instance in &daemon.config.vrrp {
        daemon.instances.start(instance, &daemon.config.trackers, &daemon.trackers);
    }
    let verdicts = daemon.trackers.verdicts();
    daemon.announcers.resume(&daemon.config.announce, &daemon.config.trackers, &verdicts);
    daemon.pid.disown();
    daemon.pid = process::PidFile::write(&daemon.pid_file);
    daemon.status.set_upgrade(false, why);
}

/// Waits for the connections still open, up to the longest `drain_timeout`.
async fn drain(config: &Config, balancer: halo_lb::Balancer, signals: &mut Signals) {
    let limit = config.backends.iter().map(|b| b.drain_timeout).max().unwrap_or_default();
    tracing::info!(drain_timeout = ?limit, "no longer accepting: draining established connections");
    tokio::select! {
        left = balancer.drain(limit) => {
            if left > 0 {
                tracing::warn!(connections = left, "drain timeout: closing connections still open");
            }
        }
        _ = signals.term.recv() => tracing::warn!("SIGTERM while draining: closing the connections still open"),
        _ = signals.int.recv() => tracing::warn!("SIGINT while draining: closing the connections still open"),
    }
}

//! The new process's side of `halo upgrade` (`halo run --upgrade-handover`): take the offer,
//! build everything on the sockets handed over without accepting yet, adopt the VRRP instances
//! handed over, then accept, serve the status endpoint and commit; once the old process has let
//! go, engage the guard, start what was not adopted, say it serves and write the pid file. A failure before the
//! commit (or a commit that came after the old process gave up waiting) is sent to
//! the old process (which goes on as it was) and ends this one; instances already adopted stop
//! without a word and the guard forgets them first, so that nothing is withdrawn.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use halo_config::Config;
use halo_lb::kernel::InheritedPath;
use tokio::sync::{mpsc, oneshot, watch};

use super::message::{Channel, ChannelError, Message, Offer, PROTOCOL, TAKES_OVER_FROM};
use super::{STEP_WITHIN, adoption};
use crate::daemon::generation::{Generation, Previous};
use crate::daemon::instances::{Exit, Instances};
use crate::daemon::process::PidFile;
use crate::daemon::tracker::TrackerSet;
use crate::daemon::vrrp_driver::{Adoption, Frozen, Start};
use crate::daemon::vrrp_runtime::VrrpRuntime;
use crate::daemon::{Daemon, bgp_announce, exec, guard, serve_status, state};

/// How long the new process waits for the offer.
const OFFER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long it waits for the old process to let go before starting what it did not adopt.
const RELEASE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Takes over from the daemon at the other end of `channel`; the daemon, running, committed.
/// The VRRP side (instances, trackers, announcements, their netlink) runs on `vrrp`.
pub(crate) async fn take_over(
    path: &Path,
    pid_file: &Path,
    config: Config,
    channel: Channel,
    vrrp: &VrrpRuntime,
) -> anyhow::Result<Daemon> {
    let channel = Arc::new(channel);
    let (offer, fds) = match receive(&channel, "offer", OFFER_WITHIN).await {
        Ok((Message::Offer(offer), fds)) => (offer, fds),
        Ok((other, _)) => return Err(refuse(&channel, anyhow!(ChannelError::Unexpected { got: other.kind(), expected: "offer" }))),
        Err(e) => return Err(refuse(&channel, e)),
    };
    if !TAKES_OVER_FROM.contains(&offer.protocol) {
        let e = anyhow!("the running daemon speaks handover protocol {}, this binary {PROTOCOL}", offer.protocol);
        return Err(refuse(&channel, e));
    }
    let parts = match prepare(&config, &offer, fds, vrrp).await {
        Ok(parts) => parts,
        Err(e) => return Err(refuse(&channel, e)),
    };
    fault_here_when_told("offered").await;
    commit(path, pid_file, config, &offer, parts, &channel).await
}

/// Where the tests inject a crash or a stall (nothing outside a `test-hooks` build).
async fn fault_here_when_told(step: &str) {
    crate::daemon::test_hooks::upgrade_step(step, STEP_WITHIN + std::time::Duration::from_secs(2)).await;
}

/// Tells the old process why this one gives up; the error, to end with.
fn refuse(channel: &Channel, error: anyhow::Error) -> anyhow::Error {
    let reason = format!("{error:#}");
    tracing::error!(%reason, "upgrade: cannot take over; the running daemon goes on");
    if let Err(e) = channel.farewell(reason, super::FAREWELL_LINGER) {
        tracing::warn!(error = %e, "the running daemon did not hear why");
    }
    error
}

/// The next message within `within`; a `failed` one is an error with its reason.
async fn receive(channel: &Arc<Channel>, expected: &'static str, within: std::time::Duration) -> anyhow::Result<(Message, Vec<OwnedFd>)> {
    let channel = Arc::clone(channel);
    match tokio::task::spawn_blocking(move || channel.receive(expected, Some(within))).await? {
        Ok((Message::Failed { reason }, _)) => Err(GaveUp(reason).into()),
        Ok(received) => Ok(received),
        Err(e) => Err(e.into()),
    }
}

/// The running daemon gave the upgrade up (it said `failed`), and why: it runs on as it was.
#[derive(Debug, thiserror::Error)]
#[error("the running daemon gave up: {0}")]
struct GaveUp(String);

/// The status endpoint's listeners handed over: TCP, and unix when configured.
type StatusListeners = (tokio::net::TcpListener, Option<tokio::net::UnixListener>);

/// Everything built before the commit: running, not accepting, instances waiting to adopt.
struct Parts {
    balancer: halo_lb::Balancer,
    stop_balancer: watch::Sender<bool>,
    /// Opens the accept loops.
    open: watch::Sender<bool>,
    status: Arc<state::Shared>,
    status_listeners: StatusListeners,
    trackers: TrackerSet,
    instances: Instances,
    exited: mpsc::UnboundedReceiver<Exit>,
    /// The instances waiting to adopt, and the levers of each adoption.
    adopting: BTreeMap<String, Levers>,
    /// Node maintenance, as kept in its file.
    maintenance: watch::Sender<bool>,
}

/// The takeover's end of one instance's adoption.
struct Levers {
    opened: oneshot::Receiver<()>,
    handover: oneshot::Sender<Frozen>,
    adopted: oneshot::Receiver<()>,
}

/// Builds everything on the sockets handed over; the instances it adopts wait with their
/// sockets open.
async fn prepare(config: &Config, offer: &Offer, fds: Vec<OwnedFd>, vrrp: &VrrpRuntime) -> anyhow::Result<Parts> {
    let (listeners, status_listeners, kernel) = split(offer, fds)?;
    exec::check_script_user(config.node.script_user.as_deref())?;
    exec::set_script_user(config.node.script_user.clone());
    crate::daemon::status_token(config)?;
    let (netlink, links) = vrrp.open_netlink().await?;
    let (stop_balancer, balancer_stopped) = watch::channel(false);
    let (open, accepting) = watch::channel(false);
    let inherited = halo_lb::Inherited { listeners, accepting, kernel };
    let balancer = halo_lb::Balancer::start_inheriting(config, balancer_stopped, inherited).context("starting the balancer")?;
    let known: Vec<halo_lb::ServerHealth> = offer.health.iter().cloned().map(Into::into).collect();
    let servers = balancer.adopt_health(&known);
    let status = Arc::new(state::Shared::default());
    status.set_balancer(&balancer);
    let trackers = TrackerSet::start(&config.trackers, links.clone(), &balancer.frontends, vrrp.handle())?;
    let (exits, exited) = mpsc::unbounded_channel();
    // Held back until the old process has let go: until then its guard holds the VIPs.
    let guard = guard::Guard::start_held_back().map(Arc::new);
    let maintenance = crate::daemon::start_maintenance(config, &status);
    let mut instances = Instances::new(config, netlink, links, vrrp.handle(), Arc::clone(&status), exits, (guard, maintenance.subscribe()));
    let adopt = adoption::adoptable(config, &offer.instances);
    let mut adopting = BTreeMap::new();
    for instance in config.vrrp.iter().filter(|v| adopt.contains(&v.name)) {
        let (opened, opened_rx) = oneshot::channel();
        let (handover_tx, handover) = oneshot::channel();
        let (adopted, adopted_rx) = oneshot::channel();
        instances.start_as(instance, &config.trackers, &trackers, Start::Adopt(Adoption { opened, handover, adopted }));
        adopting.insert(instance.name.clone(), Levers { opened: opened_rx, handover: handover_tx, adopted: adopted_rx });
    }
    let mut parts = Parts { balancer, stop_balancer, open, status, status_listeners, trackers, instances, exited, adopting, maintenance };
    for (name, levers) in &mut parts.adopting {
        if tokio::time::timeout(STEP_WITHIN, &mut levers.opened).await.map_or(true, |opened| opened.is_err()) {
            return Err(anyhow!("VRRP instance {name} could not start: {}", instance_error(&mut parts.exited)));
        }
    }
    tracing::info!(from = offer.pid, servers, adopt = ?adopt, "upgrade: ready to take over");
    Ok(parts)
}

/// Why an instance task ended, if it said.
fn instance_error(exited: &mut mpsc::UnboundedReceiver<Exit>) -> String {
    match exited.try_recv() {
        Ok(Exit { outcome: Err(e), .. }) => format!("{e:#}"),
        _ => "see the log".to_string(),
    }
}

/// The descriptors of the offer: the balancer's listening sockets, then the status endpoint's,
/// then the kernel data path's maps (taken only when of this process's layout).
fn split(offer: &Offer, mut fds: Vec<OwnedFd>) -> anyhow::Result<(Vec<std::net::TcpListener>, StatusListeners, Option<InheritedPath>)> {
    let mut rest = fds.split_off(offer.listeners.len());
    let kernel = match offer.kernel {
        Some(layout) if rest.len() >= 4 => {
            let maps: [OwnedFd; 4] = rest.split_off(rest.len() - 4).try_into().map_err(|_| anyhow!("the kernel data path's maps"))?;
            if layout != halo_lb::kernel::LAYOUT {
                // Its connections are in those maps and could only go on in a process that works
                // them: refused, the running daemon keeps serving (restart to change layouts).
                return Err(anyhow!(
                    "the running daemon's kernel data path is of layout {layout}, this binary's of {}: restart halo instead of upgrading",
                    halo_lb::kernel::LAYOUT
                ));
            }
            Some(InheritedPath { maps })
        }
        _ => None,
    };
    let listeners = fds.into_iter().map(std::net::TcpListener::from).collect();
    let unix = if offer.status_unix { rest.pop() } else { None };
    let tcp = rest.pop().ok_or_else(|| anyhow!("the offer came without the status endpoint's socket"))?;
    let tcp = std::net::TcpListener::from(tcp);
    tcp.set_nonblocking(true).context("the status endpoint's socket")?;
    let tcp = tokio::net::TcpListener::from_std(tcp).context("the status endpoint's socket")?;
    let unix = unix
        .map(|fd| {
            let unix = std::os::unix::net::UnixListener::from(fd);
            unix.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(unix)
        })
        .transpose()
        .context("the status endpoint's unix socket")?;
    Ok((listeners, (tcp, unix), kernel))
}

/// Ready, adopt, accept, commit, then start the rest once released.
async fn commit(
    path: &Path,
    pid_file: &Path,
    config: Config,
    offer: &Offer,
    mut parts: Parts,
    channel: &Arc<Channel>,
) -> anyhow::Result<Daemon> {
    let adopt: Vec<String> = parts.adopting.keys().cloned().collect();
    if let Err(e) = adopt_instances(&mut parts, &adopt, channel).await {
        abandon(&mut parts.instances, &adopt).await;
        return Err(refuse(channel, e));
    }
    fault_here_when_told("adopted").await;
    parts.open.send_replace(true);
    let balancer_stopped = parts.stop_balancer.subscribe();
    let stop_balancer = parts.stop_balancer;
    let (status_sockets, commands) = serve_status(&config, &parts.status, parts.status_listeners, &balancer_stopped)?;
    let previous = Previous { pid: offer.pid, version: offer.version.clone() };
    parts.status.set_generation(Generation { previous: Some(previous), ..Generation::this_process() });
    if let Err(e) = channel.send(&Message::Committed { pid: std::process::id() }, &[]) {
        tracing::warn!(error = %e, "upgrade: the running daemon did not hear the commit; serving anyway");
    }
    tracing::info!(from = offer.pid, "upgrade: took over; waiting for the old process to let go");
    fault_here_when_told("committed").await;
    match receive(channel, "released", RELEASE_WITHIN).await {
        Ok((Message::Released {}, _)) => {}
        Ok((other, _)) => tracing::warn!(kind = other.kind(), "upgrade: expected released; going on"),
        // It stopped waiting before the commit came and resumed: this process gives up too, as
        // before the commit (nothing was withdrawn, the pid file is still the old one's).
        Err(e) if e.is::<GaveUp>() => {
            tracing::error!(error = %format!("{e:#}"), "upgrade: the commit came too late; the running daemon goes on");
            abandon(&mut parts.instances, &adopt).await;
            return Err(e);
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "upgrade: no word from the old process; going on"),
    }
    // The old guard has forgotten everything (or the old process is gone): this one takes over.
    if let Some(guard) = &parts.instances.guard {
        guard.engage();
    }
    let mut instances = parts.instances;
    for instance in config.vrrp.iter().filter(|v| !adopt.contains(&v.name)) {
        instances.start(instance, &config.trackers, &parts.trackers);
    }
    let announcers = bgp_announce::Announcers::start_adopting(
        &config.announce,
        &config.trackers,
        instances.netlink.clone(),
        &instances.runtime,
        (instances.guard.clone(), Arc::clone(&parts.status), parts.maintenance.subscribe()),
        &parts.trackers.verdicts(),
    );
    fault_here_when_told("released").await;
    if let Err(e) = channel.send(&Message::Serving {}, &[]) {
        tracing::warn!(error = %e, "upgrade: the old process did not hear that this one serves");
    }
    // Only now: until the old process stops waiting for it, `halo upgrade` must not take this one
    // for the daemon (and an upgrade it resumed from must not leave the pid file naming it).
    let pid = PidFile::write(pid_file);
    watch_previous(Arc::clone(channel), Arc::clone(&parts.status), offer.pid, parts.balancer.adopter());
    tracing::info!(from = offer.pid, version = %crate::daemon::generation::version(), adopted = adopt.len(), "halo running (upgraded)");
    Ok(Daemon {
        path: path.to_path_buf(),
        pid_file: pid_file.to_path_buf(),
        pid,
        config,
        balancer: parts.balancer,
        stop_balancer,
        status: parts.status,
        status_sockets,
        trackers: parts.trackers,
        instances,
        announcers,
        exited: parts.exited,
        commands,
        maintenance: parts.maintenance,
    })
}

/// Says ready, takes the states handed over and waits until every instance has carried out its
/// first actions (a master: advert sent, VIPs refreshed, guard armed).
async fn adopt_instances(parts: &mut Parts, adopt: &[String], channel: &Arc<Channel>) -> anyhow::Result<()> {
    channel.send(&Message::Ready { adopt: adopt.to_vec() }, &[])?;
    let frozen = match receive(channel, "frozen", STEP_WITHIN).await? {
        (Message::Frozen { instances }, _) => instances,
        (other, _) => return Err(ChannelError::Unexpected { got: other.kind(), expected: "frozen" }.into()),
    };
    let names: BTreeSet<&String> = frozen.iter().map(|f| &f.name).collect();
    if names != adopt.iter().collect() {
        return Err(anyhow!("the running daemon handed over {names:?}, not {adopt:?}"));
    }
    let mut waiting = Vec::new();
    for message in &frozen {
        let state = adoption::from_message(message).map_err(|e| anyhow!(ChannelError::Broken(e)))?;
        let Some(levers) = parts.adopting.remove(&message.name) else { continue };
        if levers.handover.send(state).is_err() {
            return Err(anyhow!("VRRP instance {} ended before it could adopt: {}", message.name, instance_error(&mut parts.exited)));
        }
        waiting.push((message.name.clone(), levers.adopted));
    }
    for (name, adopted) in waiting {
        if tokio::time::timeout(STEP_WITHIN, adopted).await.map_or(true, |a| a.is_err()) {
            return Err(anyhow!("VRRP instance {name} did not adopt its state: {}", instance_error(&mut parts.exited)));
        }
    }
    Ok(())
}

/// A takeover given up after instances adopted their state: they stop without a word and the
/// guard forgets them, so that the old process, resuming, finds its VIPs where they were.
async fn abandon(instances: &mut Instances, adopt: &[String]) {
    let running: Vec<String> = adopt.iter().filter(|n| instances.running.contains_key(*n)).cloned().collect();
    if let Err((why, _)) = instances.hand_over(&running).await {
        tracing::warn!(%why, "an adopted instance did not stop cleanly");
    }
    if let Some(guard) = &instances.guard {
        guard.forget_all();
    }
}

/// Relays on the connections the old process hands over, and shows it as `previous` until the
/// handover socket closes (it exited).
fn watch_previous(channel: Arc<Channel>, status: Arc<state::Shared>, pid: u32, adopter: halo_lb::Adopter) {
    let runtime = tokio::runtime::Handle::current();
    let watched = std::thread::Builder::new().name("upgrade-previous".to_string()).spawn(move || {
        let _in_runtime = runtime.enter();
        let mut adopted = 0;
        loop {
            match channel.receive("connections", None) {
                Ok((Message::Connections { connections }, fds)) => adopted += super::connections::adopt(&adopter, connections, fds),
                Ok((other, _)) => tracing::debug!(kind = other.kind(), "upgrade: the old process said more"),
                Err(ChannelError::Closed) => break,
                // One bad message (say, its descriptors refused: out of them) loses its own
                // connections, not the ones still to come.
                Err(ChannelError::Broken(e)) => tracing::warn!(error = %e, "upgrade: a message of the old process was broken"),
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade: the old process's socket failed");
                    break;
                }
            }
        }
        status.set_previous(None);
        tracing::info!(pid, adopted, "upgrade: the old process has exited");
    });
    if let Err(e) = watched {
        tracing::warn!(error = %e, "cannot watch the old process: the status shows it until halo restarts, and its connections stay with it");
    }
}

//! The daemon, what runs when you type `halo run`: the balancer, every VRRP instance and
//! tracker, the status endpoint and the guard, in one process. SIGHUP reloads all of it in place
//! (an invalid file changes nothing). SIGTERM or SIGINT: masters announce priority 0 and remove
//! their addresses (traffic moves to the peer at once), the listeners close, open connections
//! drain up to the drain timeout, and halo exits 0. SIGUSR2 (`halo upgrade`) hands everything
//! over to a new process started from the binary now on disk (see `upgrade`).
//!
//! The parts: `vrrp_driver` (one task per instance, driving `halo_vrrp`'s state machine, with
//! `router_config` its configuration), `sync_group` (instances that change state together),
//! `instances` (the set of them across reloads), `tracker` (health inputs that move priority),
//! `bgp_announce` (VIPs held for FRR to announce), `vip` (how a held address lives: its kernel
//! lifetime and the guard), `notify` and `exec` (hooks and scripts), `state` (what the daemon
//! knows: written by all of the above, read by the endpoint), `snapshot` and `endpoint` (the status
//! endpoint: JSON, Prometheus text; nothing imports it but this run loop), `guard` (the process
//! that removes the VIPs if this one dies), `process` (pid file, logging, systemd), `generation`
//! (version and binary of this process), `upgrade` (the handover to a successor), `test_hooks`
//! (faults the tests inject; empty outside a `test-hooks` build), `vrrp_runtime` (the thread the
//! instances, trackers and announcements run on, apart from the balancer's runtime).

pub mod bgp_announce;
mod endpoint;
pub mod exec;
pub mod generation;
pub mod guard;
mod instances;
pub mod maintenance;
mod memory;
pub mod notify;
pub mod process;
pub mod router_config;
mod snapshot;
pub mod state;
pub mod sync_group;
pub mod syslog;
mod test_hooks;
pub mod tracker;
pub mod upgrade;
pub mod vip;
pub mod vrrp_driver;
mod vrrp_runtime;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use halo_config::Config;
use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, watch};

use instances::{Instances, restarts};
use process::{PidFile, monotonic_usec, sd_notify};
use tracker::TrackerSet;
use vrrp_runtime::VrrpRuntime;

/// The signals the daemon acts on.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    /// Handlers first: the pid file exists already, and a SIGHUP (`halo reload`), SIGUSR2
    /// (`halo upgrade`) or SIGTERM that came before them would kill the process with the default
    /// action, skipping the cleanup.
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            usr2: signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?,
        })
    }
}

/// Everything a running daemon is made of.
pub(crate) struct Daemon {
    /// The configuration file, re-read on SIGHUP.
    path: PathBuf,
    /// Where the pid file is.
    pid_file: PathBuf,
    /// The pid file, removed at exit unless a successor took it over.
    pid: PidFile,
    /// The configuration in force.
    config: Config,
    balancer: halo_lb::Balancer,
    /// Stops the accept loops, the checks and the status endpoint.
    stop_balancer: watch::Sender<bool>,
    status: Arc<state::Shared>,
    /// The status endpoint's listening sockets, for a successor.
    status_sockets: StatusSockets,
    trackers: TrackerSet,
    instances: Instances,
    announcers: bgp_announce::Announcers,
    /// Instance tasks that ended.
    exited: mpsc::UnboundedReceiver<instances::Exit>,
    /// Operators' commands from the status endpoint.
    commands: mpsc::Receiver<endpoint::commands::Command>,
    /// Node maintenance, followed by the instances and announcements.
    maintenance: watch::Sender<bool>,
}

/// Duplicates of the status endpoint's listening sockets (TCP, and unix when configured): what
/// `halo upgrade` hands over with the balancer's.
pub(crate) struct StatusSockets {
    tcp: OwnedFd,
    unix: Option<OwnedFd>,
    /// The listeners' guards, whose token a reload replaces.
    guards: Vec<Arc<endpoint::Guarded>>,
}

/// How the serving loop ended.
enum Ended {
    /// A signal to stop.
    Stop(&'static str),
    /// A successor took over.
    HandedOver(Box<upgrade::HandedOver>),
}

/// Runs the daemon until SIGTERM or SIGINT (or an instance fails), or until it has handed over
/// to a successor (SIGUSR2) and drained; `path` is re-read on SIGHUP. With `handover`, the
/// socket of a running daemon, this process takes over from it instead of starting afresh.
pub async fn run(path: &Path, pid_file: &Path, config: Config, handover: Option<OwnedFd>) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    // The VRRP side runs on a thread of its own: the balancer's load cannot delay it.
    let vrrp = VrrpRuntime::start().await?;
    let mut daemon = match handover {
        None => start(path, pid_file, config, &vrrp).await?,
        Some(socket) => upgrade::take_over(path, pid_file, config, upgrade::message::Channel::new(socket), &vrrp).await?,
    };
    loop {
        match serve(daemon, &mut signals).await? {
            (stopped, Ended::Stop(signal)) => {
                shut_down(stopped).await;
                tracing::info!(signal, "halo stopped");
                break;
            }
            (handing, Ended::HandedOver(handed)) => match upgrade::release(handing, handed, &mut signals).await {
                upgrade::Released::Drained => break,
                upgrade::Released::Resumed(resumed) => daemon = *resumed,
            },
        }
    }
    vrrp.stop().await;
    Ok(())
}

/// A daemon started afresh: the balancer binds, the status endpoint serves, instances elect.
async fn start(path: &Path, pid_file: &Path, config: Config, vrrp: &VrrpRuntime) -> anyhow::Result<Daemon> {
    let pid = PidFile::write(pid_file);
    exec::check_script_user(config.node.script_user.as_deref())?;
    exec::set_script_user(config.node.script_user.clone());
    let (netlink, links) = vrrp.open_netlink().await?;
    let (stop_balancer, balancer_stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, balancer_stopped.clone()).context("starting the balancer")?;
    let status = Arc::new(state::Shared::default());
    status.set_generation(generation::Generation::this_process());
    status.set_balancer(&balancer);
    let listeners = bind_status(&config).await?;
    let (status_sockets, commands) = serve_status(&config, &status, listeners, &balancer_stopped)?;
    let trackers = TrackerSet::start(&config.trackers, links.clone(), &balancer.frontends, vrrp.handle())?;
    let (exits, exited) = mpsc::unbounded_channel();
    // The guard removes the VIPs held if this process is killed (a reload may add instances).
    let guard = guard::Guard::start().map(Arc::new);
    let maintenance = start_maintenance(&config, &status);
    let mut instances =
        Instances::new(&config, netlink, links, vrrp.handle(), Arc::clone(&status), exits, (guard, maintenance.subscribe()));
    for instance in &config.vrrp {
        instances.start(instance, &config.trackers, &trackers);
    }
    let announcers = bgp_announce::Announcers::start(
        &config.announce,
        &config.trackers,
        instances.netlink.clone(),
        &instances.runtime,
        (instances.guard.clone(), Arc::clone(&status), maintenance.subscribe()),
        &trackers.verdicts(),
    );
    tracing::info!(
        instances = config.vrrp.len(),
        announce = config.announce.len(),
        frontends = config.frontends.len(),
        trackers = config.trackers.len(),
        version = %generation::version(),
        "halo running"
    );
    sd_notify("READY=1");
    Ok(Daemon {
        path: path.to_path_buf(),
        pid_file: pid_file.to_path_buf(),
        pid,
        config,
        balancer,
        stop_balancer,
        status,
        status_sockets,
        trackers,
        instances,
        announcers,
        exited,
        commands,
        maintenance,
    })
}

/// The node's maintenance flag as kept in its file (said when on), for a daemon starting.
pub(crate) fn start_maintenance(config: &Config, status: &state::Shared) -> watch::Sender<bool> {
    let on = maintenance::read(config);
    if on {
        tracing::warn!(file = %maintenance::path(config).display(), "node in maintenance: no VIP held, nothing announced (halo node maintenance off ends it)");
    }
    status.set_maintenance(on);
    watch::Sender::new(on)
}

/// Serves until a signal stops the daemon, an instance fails, or a successor took over.
async fn serve(mut daemon: Daemon, signals: &mut Signals) -> anyhow::Result<(Daemon, Ended)> {
    // Once the start (or a reload) has settled, what it alone used goes back ([`memory`]).
    let mut release_at = Some(tokio::time::Instant::now() + MEMORY_RELEASE_AFTER);
    let ended = loop {
        tokio::select! {
            _ = signals.term.recv() => break Ended::Stop("SIGTERM"),
            _ = signals.int.recv() => break Ended::Stop("SIGINT"),
            _ = signals.hup.recv() => {
                reload_in_place(&mut daemon).await;
                release_at = Some(tokio::time::Instant::now() + MEMORY_RELEASE_AFTER);
            }
            () = sleep_until_some(release_at) => {
                release_at = None;
                // Off the runtime's threads: trimming walks the allocator's arenas.
                tokio::task::spawn_blocking(|| {
                    let released = memory::release();
                    tracing::debug!(code = released.code, heap = released.heap, "start-up memory given back");
                });
            }
            _ = signals.usr2.recv() => match upgrade::hand_over(&mut daemon).await {
                upgrade::Outcome::HandedOver(handed) => break Ended::HandedOver(handed),
                upgrade::Outcome::Refused(why) => {
                    tracing::error!(reason = %why, "upgrade refused: this process keeps running as it was");
                    daemon.status.set_upgrade(false, why);
                }
            },
            Some(command) = daemon.commands.recv() => obey(&daemon, command),
            Some(exit) = daemon.exited.recv() => {
                // An instance that ends by itself (not stopped by us) is an error: stop everything.
                if let Some(error) = daemon.instances.ended_on_its_own(exit) {
                    daemon.status.fail(format!("{error:#}"));
                    shut_down(daemon).await;
                    return Err(error);
                }
            }
        }
    };
    Ok((daemon, ended))
}

/// How long after a start or a reload halo gives back the memory only they used.
const MEMORY_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Sleeps until `at`; forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// An operator's command from the status endpoint: carried out, one line logged with who asked,
/// and answered.
fn obey(daemon: &Daemon, command: endpoint::commands::Command) {
    use endpoint::commands::Command;
    // Taken too late (the loop was busy): the endpoint has said nothing changed, so nothing does.
    let (Command::Server(endpoint::commands::ServerCommand { deadline, by, .. }) | Command::Maintenance { deadline, by, .. }) = &command;
    if std::time::Instant::now() > *deadline {
        tracing::warn!(by, "a command waited too long while the daemon was busy: dropped, as its answer said");
        return;
    }
    match command {
        Command::Server(command) => order_server(daemon, command),
        Command::Maintenance { on, by, reply, .. } => {
            let was = *daemon.maintenance.borrow();
            // Kept first: a flag that could not be written would not outlive a restart.
            let outcome = maintenance::write(&daemon.config, on).map(|()| {
                daemon.maintenance.send_replace(on);
                daemon.status.set_maintenance(on);
                (on, was)
            });
            match &outcome {
                Ok(_) if on => tracing::warn!(by, was, "node maintenance on: every VIP handed over, every announcement withdrawn"),
                Ok(_) => tracing::info!(by, was, "node maintenance off: back in service"),
                Err(e) => tracing::error!(by, error = %format!("{e:#}"), "node maintenance not changed: its file could not be written"),
            }
            let _ = reply.send(outcome.map_err(|e| format!("{e:#}")));
        }
    }
}

/// An operator's order for one server (`halo server ...`): applied to the balancer, one line
/// logged with who asked, and answered.
fn order_server(daemon: &Daemon, command: endpoint::commands::ServerCommand) {
    let endpoint::commands::ServerCommand { backend, server, order, by, reply, .. } = command;
    let outcome = daemon.balancer.order_server(&backend, &server, order);
    match &outcome {
        Ok(done) => tracing::info!(
            backend,
            server,
            state = done.admin.as_str(),
            was = done.admin_before.as_str(),
            weight = done.weight,
            weight_was = done.weight_before,
            by,
            "server state set at run time"
        ),
        Err(e) => tracing::warn!(backend, server, by, error = %e, "server command refused"),
    }
    // The endpoint may have given up waiting: nothing to tell then.
    let _ = reply.send(outcome);
}

/// SIGHUP: the file re-read and applied in place, or refused (logged, on the status endpoint).
async fn reload_in_place(daemon: &mut Daemon) {
    sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    match reload(&daemon.path, &daemon.config, &mut daemon.balancer, &mut daemon.trackers, &mut daemon.instances).await {
        Ok((new, token)) => {
            for guarded in &daemon.status_sockets.guards {
                guarded.set_token(token.clone());
            }
            // The maintenance flag follows its directory, so that a restart still finds it.
            if new.node.state_directory() != daemon.config.node.state_directory()
                && let Err(e) = maintenance::write(&new, *daemon.maintenance.borrow())
            {
                tracing::error!(error = %format!("{e:#}"), "node maintenance not kept in the new state directory: a restart would not know it");
            }
            daemon.announcers.reload(&new.announce, &new.trackers, &daemon.trackers.verdicts()).await;
            daemon.config = new;
            daemon.status.set_balancer(&daemon.balancer);
            daemon.status.set_reload(true, "applied".to_string());
        }
        Err(why) => {
            tracing::error!(reason = %why, "reload refused: the running configuration stays");
            daemon.status.set_reload(false, why);
        }
    }
    sd_notify("READY=1");
}

/// The status endpoint's listeners: its TCP address and, when configured, its unix socket.
async fn bind_status(config: &Config) -> anyhow::Result<(tokio::net::TcpListener, Option<tokio::net::UnixListener>)> {
    let tcp = endpoint::bind(config.status.listen).await?;
    let unix = config.status.socket.as_deref().map(endpoint::bind_unix).transpose()?;
    Ok((tcp, unix))
}

/// The status endpoint's token, when it has one; an empty token file is an error.
fn status_token(config: &Config) -> anyhow::Result<Option<String>> {
    let token = config.status.token().with_context(|| format!("reading the status token {:?}", config.status.token_file))?;
    if token.as_deref().is_some_and(str::is_empty) {
        anyhow::bail!("the status token file {:?} is empty: every request but /healthz would be refused", config.status.token_file);
    }
    if let Some(exposed) = crate::files::token_readable_by_others(&config.status) {
        tracing::warn!(file = %exposed.display(), "the status token is readable by others: chmod 600 it");
    }
    Ok(token)
}

/// Serves the status endpoint on `listeners` until the balancer stops; duplicates of the
/// sockets, for a successor, and the commands it receives, for the run loop.
fn serve_status(
    config: &Config,
    status: &Arc<state::Shared>,
    (tcp, unix): (tokio::net::TcpListener, Option<tokio::net::UnixListener>),
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<(StatusSockets, mpsc::Receiver<endpoint::commands::Command>)> {
    let token = status_token(config)?;
    let (commands, received) = mpsc::channel(endpoint::commands::QUEUE);
    let mut sockets = StatusSockets {
        tcp: tcp.as_fd().try_clone_to_owned().context("duplicating the status endpoint's socket")?,
        unix: unix.as_ref().map(|u| u.as_fd().try_clone_to_owned()).transpose().context("duplicating the status socket")?,
        guards: Vec::new(),
    };
    if let Some(unix) = unix {
        let guarded = endpoint::Guarded::new(token.clone(), commands.clone());
        sockets.guards.push(Arc::clone(&guarded));
        tokio::spawn(endpoint::serve(endpoint::Listener::Unix(unix), Arc::clone(status), guarded, stopped.clone()));
    }
    let guarded = endpoint::Guarded::new(token, commands);
    sockets.guards.push(Arc::clone(&guarded));
    tokio::spawn(endpoint::serve(endpoint::Listener::Tcp(tcp), Arc::clone(status), guarded, stopped.clone()));
    Ok((sockets, received))
}

/// Whatever ended us: VIPs first (peers take over), then announcements withdrawn (the routers
/// converge while we still accept), then stop accepting and drain, then the local routes go.
async fn shut_down(daemon: Daemon) {
    let Daemon { config, mut instances, mut announcers, balancer, stop_balancer, .. } = daemon;
    let config = &config;
    sd_notify("STOPPING=1");
    instances.stop_all().await;
    if announcers.withdraw_all().await {
        tokio::time::sleep(bgp_announce::WITHDRAW_SETTLE).await;
    }
    stop_balancer.send_replace(true);
    let drain = config.backends.iter().map(|b| b.drain_timeout).max().unwrap_or_default();
    let left = balancer.drain(drain).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain timeout: closing connections still open");
    }
    announcers.remove_routes().await;
    if let Some(socket) = &config.status.socket
        && let Err(e) = std::fs::remove_file(socket)
    {
        tracing::warn!(path = %socket.display(), error = %e, "status socket not removed");
    }
}

/// SIGHUP: the new file through the same loader; applied only if valid, and only the balancer
/// parts once they all bind. Returns the config now in force when something was applied.
async fn reload(
    path: &Path,
    current: &Config,
    balancer: &mut halo_lb::Balancer,
    trackers: &mut TrackerSet,
    instances: &mut Instances,
) -> Result<(Config, Option<String>), String> {
    let new = match halo_config::load_file(path) {
        Ok(loaded) => {
            // What the next start would refuse (a missing script, certificate, token) is refused now.
            let problems: Vec<String> =
                crate::files::host_file_problems(&loaded, true).iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
            if let Some(first) = problems.first() {
                problems.iter().for_each(|p| tracing::error!("{p}"));
                return Err(first.lines().next().unwrap_or_default().to_string());
            }
            loaded.config
        }
        Err(halo_config::LoadError::Invalid(diagnostics)) => {
            let errors: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
            for e in &errors {
                tracing::error!("{e}");
            }
            return Err(errors.first().map_or_else(|| "invalid configuration".to_string(), |e| e.lines().next().unwrap_or("").to_string()));
        }
        Err(e) => return Err(format!("{e:#}")),
    };
    exec::check_script_user(new.node.script_user.as_deref()).map_err(|e| format!("{e:#}"))?;
    // The token is read again (a rotation needs no restart); one that cannot be read stops the
    // reload as it would stop a start.
    let token = status_token(&new).map_err(|e| format!("{e:#}"))?;
    // The address stays the one bound at the start: a reload must not leave it open to all.
    if token.is_none() && !current.status.listen.ip().is_loopback() {
        return Err(format!(
            "the status endpoint listens on {} (until a restart) and the new file gives it no token: refused",
            current.status.listen
        ));
    }
    if (new.status.listen, &new.status.socket) != (current.status.listen, &current.status.socket) {
        tracing::warn!("[status] listen or socket changed: it takes effect at the next start (the endpoint keeps its address)");
    }
    match balancer.reload(&new) {
        Ok(changes) => {
            tracing::info!(?changes, "balancer reloaded");
            // Before trackers and instances restart: what they run, runs as the new user.
            exec::set_script_user(new.node.script_user.clone());
        }
        Err(e) => return Err(format!("{e:#}")),
    }
    if let Err(e) = trackers.reload(&new.trackers, &balancer.frontends) {
        tracing::error!(error = %e, "trackers not reloaded");
    }
    let restart = restarts(current, &new);
    for old in current.vrrp.iter().filter(|o| restart.contains(&o.name)) {
        tracing::warn!(instance = %old.name, "instance removed, changed on the wire or in a changed sync group: restarting it (a master hands over)");
        instances.stop(&old.name).await;
    }
    instances.regroup(&new);
    for instance in &new.vrrp {
        match instances.running.get(&instance.name) {
            Some(running) if running.config != *instance || current.trackers != new.trackers => {
                running.updates.send_replace((instance.clone(), new.trackers.clone()));
            }
            Some(_) => {}
            None => instances.start(instance, &new.trackers, trackers),
        }
        if let Some(running) = instances.running.get_mut(&instance.name) {
            running.config = instance.clone();
        }
    }
    tracing::info!("reloaded");
    Ok((new, token))
}

//! The daemon, what runs when you type `halo run`: the balancer, every VRRP instance and
//! tracker, the status endpoint and the guard, in one process. SIGHUP reloads all of it in place
//! (an invalid file changes nothing). SIGTERM or SIGINT: masters announce priority 0 and remove
//! their addresses (traffic moves to the peer at once), the listeners close, open connections
//! drain up to the drain timeout, and halo exits 0.
//!
//! The parts: `vrrp_driver` (one task per instance, driving `halo_vrrp`'s state machine),
//! `sync_group` (instances that change state together), `instances` (the set of them across
//! reloads), `tracker` (health inputs that move priority),
//! `notify` and `exec` (hooks and scripts), `status` and `metrics` (the endpoint), `guard` (the process that
//! removes the VIPs if this one dies), `process` (pid file, logging, systemd).

pub mod announce;
pub mod exec;
pub mod guard;
mod instances;
mod metrics;
pub mod notify;
pub mod process;
pub mod status;
pub mod sync_group;
pub mod tracker;
pub mod vrrp_driver;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use halo_config::Config;
use halo_hostnet::netlink::Netlink;
use tokio::sync::{mpsc, watch};

use instances::{Instances, restarts};
use process::{PidFile, monotonic_usec, sd_notify};
use tracker::TrackerSet;

/// Runs the daemon until SIGTERM or SIGINT (or an instance fails); `path` is re-read on SIGHUP.
pub async fn run(path: &Path, pid_file: &Path, mut config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: the pid file exists already, and a SIGHUP (`halo reload`) or SIGTERM that
    // came before them would kill the process with the default action, skipping the cleanup.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Removed when the daemon ends, whatever the outcome.
    let _pid = PidFile::write(pid_file);
    exec::check_script_user(config.node.script_user.as_deref())?;
    exec::set_script_user(config.node.script_user.clone());
    let netlink = Netlink::open()?;
    let (stop_balancer, balancer_stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, balancer_stopped.clone()).context("starting the balancer")?;
    let status = Arc::new(status::Shared::default());
    status.set_balancer(&balancer);
    serve_status(&config, &status, &balancer_stopped).await?;
    let links = halo_hostnet::netlink::watch_links().await?;
    let mut trackers = TrackerSet::start(&config.trackers, links.clone(), &balancer.frontends)?;
    let (exits, mut exited) = mpsc::unbounded_channel();
    // The guard removes the VIPs held if this process is killed (a reload may add instances).
    let guard = guard::Guard::start().map(Arc::new);
    let mut instances = Instances {
        running: BTreeMap::new(),
        netlink,
        links,
        status: Arc::clone(&status),
        exits,
        guard,
        next_generation: 0,
        groups: BTreeMap::new(),
    };
    instances.regroup(&config);
    for instance in &config.vrrp {
        instances.start(instance, &config.trackers, &trackers);
    }
    let mut announcers = announce::Announcers::start(
        &config.announce,
        &config.trackers,
        instances.netlink.clone(),
        instances.guard.clone(),
        Arc::clone(&status),
        &trackers.verdicts(),
    );
    tracing::info!(
        instances = config.vrrp.len(),
        announce = config.announce.len(),
        frontends = config.frontends.len(),
        trackers = config.trackers.len(),
        "halo running"
    );
    sd_notify("READY=1");
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Ok("SIGTERM"),
            _ = int.recv() => break Ok("SIGINT"),
            _ = hup.recv() => {
                sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                match reload(path, &config, &mut balancer, &mut trackers, &mut instances).await {
                    Ok(new) => {
                        announcers.reload(&new.announce, &new.trackers, &trackers.verdicts()).await;
                        config = new;
                        status.set_balancer(&balancer);
                        status.set_reload(true, "applied".to_string());
                    }
                    Err(why) => {
                        tracing::error!(reason = %why, "reload refused: the running configuration stays");
                        status.set_reload(false, why);
                    }
                }
                sd_notify("READY=1");
            }
            Some(exit) = exited.recv() => {
                // An instance that ends by itself (not stopped by us) is an error: stop everything.
                if let Some(error) = instances.ended_on_its_own(exit) {
                    status.fail(format!("{error:#}"));
                    break Err(error);
                }
            }
        }
    };
    shut_down(&config, instances, announcers, balancer, stop_balancer).await;
    let signal = outcome?;
    tracing::info!(signal, "halo stopped");
    Ok(())
}

/// The status endpoint on its TCP address and, when configured, its unix socket.
async fn serve_status(config: &Config, status: &Arc<status::Shared>, stopped: &watch::Receiver<bool>) -> anyhow::Result<()> {
    let token = config.status.token().with_context(|| format!("reading the status token {:?}", config.status.token_file))?;
    if token.as_deref().is_some_and(str::is_empty) {
        anyhow::bail!("the status token file {:?} is empty: every request but /healthz would be refused", config.status.token_file);
    }
    let listener = status::bind(config.status.listen).await?;
    if let Some(path) = &config.status.socket {
        let unix = status::bind_unix(path)?;
        tokio::spawn(status::serve(status::Listener::Unix(unix), Arc::clone(status), status::Guarded::new(token.clone()), stopped.clone()));
    }
    tokio::spawn(status::serve(status::Listener::Tcp(listener), Arc::clone(status), status::Guarded::new(token), stopped.clone()));
    Ok(())
}

/// Whatever ended us: VIPs first (peers take over), then announcements withdrawn (the routers
/// converge while we still accept), then stop accepting and drain, then the local routes go.
async fn shut_down(
    config: &Config,
    mut instances: Instances,
    mut announcers: announce::Announcers,
    balancer: halo_lb::Balancer,
    stop_balancer: watch::Sender<bool>,
) {
    sd_notify("STOPPING=1");
    instances.stop_all().await;
    if announcers.withdraw_all().await {
        tokio::time::sleep(announce::WITHDRAW_SETTLE).await;
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
) -> Result<Config, String> {
    let new = match halo_config::load_file(path) {
        Ok(loaded) => loaded.config,
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
    if new.status != current.status {
        tracing::warn!("[status] changed: it takes effect at the next start (the endpoint keeps its address and token)");
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
    Ok(new)
}

//! `halo run`: the daemon. Loads the config exactly as `halo check` does, then runs the
//! balancer, every VRRP instance and tracker. SIGHUP reloads all of it in place (an invalid
//! file changes nothing). SIGTERM or SIGINT: masters announce priority 0 and remove their
//! addresses (traffic moves to the peer at once), the listeners close, open connections drain up
//! to the drain timeout, and halo exits 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use halo_config::{Config, LogFormat, LogLevel, Tracker, VrrpInstance};
use halo_hostnet::netlink::Netlink;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::tracker::TrackerSet;

/// Runs the daemon in the foreground.
pub fn run(path: &Path, pid_file: &Path, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    let loaded = match super::load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    super::print_diagnostics(&loaded.warnings);
    let mut config = loaded.config;
    if let Some(format) = log_format {
        config.log.format = format;
    }
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")?;
    runtime.block_on(daemon(path, pid_file, config))?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon's pid file, removed when the daemon ends. A pid file that cannot be written is
/// logged, not fatal: it serves `halo reload` only (systemd sends SIGHUP by itself).
struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    fn write(path: &Path) -> Self {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| super::write_output(Some(path), &format!("{}\n", std::process::id())).map_err(std::io::Error::other));
        match written {
            Ok(()) => Self(Some(path.to_path_buf())),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "pid file not written: `halo reload` will not find this daemon");
                Self(None)
            }
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(path = %path.display(), error = %e, "pid file not removed");
        }
    }
}

fn init_logging(config: &Config) {
    let level = match config.log.level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HALO_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Tells systemd (Type=notify) what the daemon is doing, through $NOTIFY_SOCKET; nothing
/// happens outside systemd. A failure to notify is logged, never fatal.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &address)?;
        } else {
            socket.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}

fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
}

/// One running VRRP instance and the levers on it.
struct Running {
    config: VrrpInstance,
    stop: watch::Sender<bool>,
    updates: watch::Sender<(VrrpInstance, Vec<Tracker>)>,
    handle: tokio::task::JoinHandle<()>,
}

/// The running VRRP instances, reported to the main loop when one ends on its own.
struct Instances {
    running: BTreeMap<String, Running>,
    netlink: Netlink,
    links: halo_hostnet::netlink::LinkStates,
    status: Arc<crate::status::Shared>,
    exits: mpsc::UnboundedSender<(String, anyhow::Result<()>)>,
    guard: Option<Arc<crate::guard::Guard>>,
}

impl Instances {
    fn start(&mut self, instance: &VrrpInstance, trackers: &[Tracker], set: &TrackerSet) {
        let (stop, stopped) = watch::channel(false);
        let (updates, receiver) = watch::channel((instance.clone(), trackers.to_vec()));
        let span = tracing::info_span!("vrrp", instance = %instance.name, vrid = instance.virtual_router_id.get());
        let driver = crate::vrrp_driver::run(crate::vrrp_driver::Instance {
            config: instance.clone(),
            trackers: trackers.to_vec(),
            verdicts: set.verdicts(),
            shutdown: stopped,
            updates: receiver,
            netlink: self.netlink.clone(),
            links: self.links.clone(),
            status: Arc::clone(&self.status),
            guard: self.guard.clone(),
        });
        let (exits, name) = (self.exits.clone(), instance.name.clone());
        let handle = tokio::spawn(
            async move {
                let outcome = driver.await;
                if exits.send((name, outcome)).is_err() {
                    tracing::debug!("daemon gone before the instance");
                }
            }
            .instrument(span),
        );
        self.running.insert(instance.name.clone(), Running { config: instance.clone(), stop, updates, handle });
    }

    /// Stops one instance cleanly (priority 0, VIPs removed) and waits for it.
    async fn stop(&mut self, name: &str) {
        if let Some(running) = self.running.remove(name) {
            running.stop.send_replace(true);
            if let Err(e) = running.handle.await {
                tracing::error!(instance = name, error = %e, "instance task failed");
            }
        }
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for running in self.running.values() {
            running.stop.send_replace(true);
        }
        for name in names {
            self.stop(&name).await;
        }
    }
}

/// Whether a changed instance must be restarted (what identifies it on the wire or where it
/// runs) rather than updated in place.
fn needs_restart(old: &VrrpInstance, new: &VrrpInstance) -> bool {
    let family = |i: &VrrpInstance| i.virtual_addresses.first().map(|a| a.addr().is_ipv4());
    (
        &old.interface,
        old.virtual_router_id,
        old.version,
        old.advert_interval,
        &old.auth_password,
        old.unicast_source,
        &old.unicast_peers,
        old.checksum,
        old.virtual_mac,
        old.accept,
        family(old),
    ) != (
        &new.interface,
        new.virtual_router_id,
        new.version,
        new.advert_interval,
        &new.auth_password,
        new.unicast_source,
        &new.unicast_peers,
        new.checksum,
        new.virtual_mac,
        new.accept,
        family(new),
    )
}

async fn daemon(path: &Path, pid_file: &Path, mut config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Handlers first: the pid file exists already, and a SIGHUP (`halo reload`) or SIGTERM that
    // came before them would kill the process with the default action, skipping the cleanup.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Removed when the daemon ends, whatever the outcome.
    let _pid = PidFile::write(pid_file);
    let netlink = Netlink::open()?;
    let (stop_balancer, balancer_stopped) = watch::channel(false);
    let mut balancer = halo_lb::Balancer::start(&config, balancer_stopped.clone()).context("starting the balancer")?;
    let status = Arc::new(crate::status::Shared::default());
    status.set_balancer(&balancer);
    let token = match &config.status.token_file {
        Some(file) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("reading the status token {}", file.display()))?.trim().to_string())
        }
        None => None,
    };
    let listener = crate::status::bind(config.status.listen).await?;
    if let Some(path) = &config.status.socket {
        let unix = crate::status::bind_unix(path)?;
        tokio::spawn(crate::status::serve(
            crate::status::Listener::Unix(unix),
            Arc::clone(&status),
            token.clone(),
            balancer_stopped.clone(),
        ));
    }
    tokio::spawn(crate::status::serve(crate::status::Listener::Tcp(listener), Arc::clone(&status), token, balancer_stopped));
    let links = halo_hostnet::netlink::watch_links().await?;
    let mut trackers = TrackerSet::start(&config.trackers, links.clone(), &balancer.frontends)?;
    let (exits, mut exited) = mpsc::unbounded_channel();
    // The guard removes the VIPs held if this process is killed (a reload may add instances).
    let guard = crate::guard::Guard::start().map(Arc::new);
    let mut instances = Instances { running: BTreeMap::new(), netlink, links, status: Arc::clone(&status), exits, guard };
    for instance in &config.vrrp {
        instances.start(instance, &config.trackers, &trackers);
    }
    tracing::info!(instances = config.vrrp.len(), frontends = config.frontends.len(), trackers = config.trackers.len(), "halo running");
    sd_notify("READY=1");
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => break Ok("SIGTERM"),
            _ = int.recv() => break Ok("SIGINT"),
            _ = hup.recv() => {
                sd_notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                if let Some(new) = reload(path, &config, &mut balancer, &mut trackers, &mut instances).await {
                    config = new;
                    status.set_balancer(&balancer);
                }
                sd_notify("READY=1");
            }
            Some((name, ended)) = exited.recv() => {
                // An instance that ends by itself (not stopped by us) is an error: stop everything.
                if instances.running.contains_key(&name) {
                    instances.running.remove(&name);
                    break Err(ended.err().unwrap_or_else(|| anyhow::anyhow!("VRRP instance {name} stopped on its own")));
                }
            }
        }
    };
    // Whatever ended us: VIPs first (peers take over), then stop accepting and drain.
    sd_notify("STOPPING=1");
    instances.stop_all().await;
    stop_balancer.send_replace(true);
    let drain = config.backends.iter().map(|b| b.drain_timeout).max().unwrap_or_default();
    let left = balancer.drain(drain).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain timeout: closing connections still open");
    }
    if let Some(socket) = &config.status.socket
        && let Err(e) = std::fs::remove_file(socket)
    {
        tracing::warn!(path = %socket.display(), error = %e, "status socket not removed");
    }
    let signal = outcome?;
    tracing::info!(signal, "halo stopped");
    Ok(())
}

/// SIGHUP: the new file through the same loader; applied only if valid, and only the balancer
/// parts once they all bind. Returns the config now in force when something was applied.
async fn reload(
    path: &Path,
    current: &Config,
    balancer: &mut halo_lb::Balancer,
    trackers: &mut TrackerSet,
    instances: &mut Instances,
) -> Option<Config> {
    let new = match halo_config::load_file(path) {
        Ok(loaded) => loaded.config,
        Err(halo_config::LoadError::Invalid(diagnostics)) => {
            for d in diagnostics.iter().filter(|d| d.is_error()) {
                tracing::error!("{d}");
            }
            tracing::error!("reload refused: the running configuration stays");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "reload refused: the running configuration stays");
            return None;
        }
    };
    match balancer.reload(&new) {
        Ok(changes) => tracing::info!(?changes, "balancer reloaded"),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload refused: the running configuration stays");
            return None;
        }
    }
    if let Err(e) = trackers.reload(&new.trackers, &balancer.frontends) {
        tracing::error!(error = %e, "trackers not reloaded");
    }
    for old in &current.vrrp {
        let kept = new.vrrp.iter().find(|n| n.name == old.name);
        if kept.is_none_or(|n| needs_restart(old, n)) {
            tracing::warn!(instance = %old.name, "instance removed or changed on the wire: restarting it (a master hands over)");
            instances.stop(&old.name).await;
        }
    }
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
    Some(new)
}

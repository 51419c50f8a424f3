//! `halo run`: the daemon. Loads the config exactly as `halo check` does, then runs the
//! balancer, every VRRP instance and tracker until SIGTERM or SIGINT: masters then announce
//! priority 0 and remove their addresses (traffic moves to the peer at once), the listeners
//! close, open connections drain up to the drain timeout, and halo exits 0.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use halo_config::{Config, LogFormat, LogLevel};
use tokio::sync::watch;
use tracing::Instrument;

/// Runs the daemon in the foreground.
pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match super::load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    super::print_diagnostics(&loaded.warnings);
    let config = loaded.config;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the runtime")?;
    runtime.block_on(daemon(config))?;
    Ok(ExitCode::SUCCESS)
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

async fn daemon(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let netlink = halo_hostnet::netlink::Netlink::open()?;
    let (stop, stopped) = watch::channel(false);
    let (stop_balancer, balancer_stopped) = watch::channel(false);
    let balancer = halo_lb::Balancer::start(&config, balancer_stopped).context("starting the balancer")?;
    let verdicts = crate::tracker::spawn_all(&config.trackers, Some(netlink.clone()), &balancer.frontends)?;
    let mut tasks = tokio::task::JoinSet::new();
    for instance in &config.vrrp {
        let span = tracing::info_span!("vrrp", instance = %instance.name, vrid = instance.virtual_router_id.get());
        let driver = crate::vrrp_driver::run(crate::vrrp_driver::Instance {
            config: instance.clone(),
            trackers: config.trackers.clone(),
            verdicts: verdicts.clone(),
            shutdown: stopped.clone(),
            netlink: netlink.clone(),
        });
        tasks.spawn(driver.instrument(span));
    }
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tracing::info!(instances = config.vrrp.len(), frontends = config.frontends.len(), trackers = config.trackers.len(), "halo running");
    let outcome = tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
        Some(done) = tasks.join_next() => Err(match done {
            Ok(Ok(())) => anyhow::anyhow!("a VRRP instance stopped on its own"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("a VRRP instance panicked: {e}"),
        }),
    };
    // Whatever ended us, every instance still running announces its stop and removes its VIPs.
    if stop.send(true).is_err() {
        tracing::debug!("no instance left to stop");
    }
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "instance stopped with an error");
        }
    }
    // The VIPs are gone (peers took over); now stop accepting and let open connections finish.
    if stop_balancer.send(true).is_err() {
        tracing::debug!("balancer already stopped");
    }
    let drain = config.backends.iter().map(|b| b.drain_timeout).max().unwrap_or_default();
    let left = balancer.drain(drain).await;
    if left > 0 {
        tracing::warn!(connections = left, "drain timeout: closing connections still open");
    }
    let signal = outcome?;
    tracing::info!(signal, "halo stopped");
    Ok(())
}

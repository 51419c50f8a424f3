//! The daemon process's housekeeping: its pid file, its logging, and what it tells systemd.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use halo_config::{Config, LogFormat, LogLevel};

/// The daemon's pid file, removed when the daemon ends. A pid file that cannot be written is
/// logged, not fatal: it serves `halo reload` only (systemd sends SIGHUP by itself).
pub struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    /// Writes this process's pid to `path` (logged when it cannot be written).
    pub fn write(path: &Path) -> Self {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| crate::files::write_output(Some(path), &format!("{}\n", std::process::id())).map_err(std::io::Error::other));
        match written {
            Ok(()) => Self(Some(path.to_path_buf())),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "pid file not written: `halo reload` will not find this daemon");
                Self(None)
            }
        }
    }
}

impl PidFile {
    /// Leaves the file to the process that took over (it wrote its own pid in it): it is not
    /// removed at exit.
    pub fn disown(&mut self) {
        self.0 = None;
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

/// Logs to standard error at the configured level, as text or JSON. `HALO_LOG` overrides the
/// level with `target=level` directives (`info`, `warn,halo_lb=debug`): a plain target filter,
/// without the regular-expression engine of an env filter (smaller, less memory).
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match config.log.level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let configured = Targets::new().with_default(level);
    let filter = match std::env::var("HALO_LOG") {
        Ok(directives) => directives.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("halo: HALO_LOG={directives:?} is not a filter ({e}); using the configured level");
            configured
        }),
        Err(_) => configured,
    };
    match &config.log.target {
        halo_config::LogTarget::Stderr => {
            let ansi = std::io::stderr().is_terminal();
            let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
            match config.log.format {
                LogFormat::Json => tracing_subscriber::registry().with(layer.json()).with(filter).init(),
                LogFormat::Text => tracing_subscriber::registry().with(layer).with(filter).init(),
            }
        }
        // The datagram's header has the time: the line does without its own.
        halo_config::LogTarget::Syslog { socket, facility } => {
            let writer = super::syslog::Syslog::new(socket.clone(), *facility);
            let layer = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false).without_time();
            match config.log.format {
                LogFormat::Json => tracing_subscriber::registry().with(layer.json()).with(filter).init(),
                LogFormat::Text => tracing_subscriber::registry().with(layer).with(filter).init(),
            }
        }
    }
}

/// Set once this process is no longer the service's main process (it handed over).
static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// Tells systemd (Type=notify) what the daemon is doing, through $NOTIFY_SOCKET (a path, or an
/// abstract socket when it starts with `@`); nothing happens outside systemd. Written here, not
/// taken from the sd-notify crate: its 0.4 sender reads an `@` name as a relative path, and a
/// `Type=notify` unit under a manager that hands out abstract sockets would never hear READY=1. A failure to notify is logged, never fatal. A process that handed
/// over to another says nothing more: the service is the new one's (a STOPPING=1 from a draining
/// process would stop the service, with `NotifyAccess=all`).
pub fn sd_notify(state: &str) {
    if HANDED_OVER.load(Ordering::Relaxed) {
        return;
    }
    send_notification(state);
}

/// The last word of a process that handed over: `MAINPID=` of its successor (which it may
/// send under `NotifyAccess=main`, being the main process still) and `READY=1`; after it,
/// [`sd_notify`] says nothing.
pub fn hand_over_to(pid: u32) {
    if !HANDED_OVER.swap(true, Ordering::Relaxed) {
        send_notification(&format!("MAINPID={pid}\nREADY=1"));
    }
}

fn send_notification(state: &str) {
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

/// CLOCK_MONOTONIC in microseconds, as systemd's `MONOTONIC_USEC=` wants it.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
}

/// Raises the soft limit on open descriptors to the hard limit: outside systemd (whose unit sets
/// its own) the soft limit is often 1024, about 500 proxied connections, and the status endpoint,
/// checks and hooks share it with the balancer.
pub fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-descriptor limit to the hard limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-descriptor limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-descriptor limit"),
    }
}

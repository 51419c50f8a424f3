//! `halo run`: loads the config exactly as `halo check` does, starts logging and the runtime, and
//! hands over to the daemon (`crate::daemon`). With `--upgrade-handover` (started by a running
//! daemon for `halo upgrade`), its standard input is the handover socket: a configuration that
//! does not load is sent back as the reason the upgrade fails.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use halo_config::LogFormat;

/// Runs the daemon in the foreground.
pub fn run(path: &Path, pid_file: &Path, log_format: Option<LogFormat>, upgrade_handover: bool) -> anyhow::Result<ExitCode> {
    let handover = if upgrade_handover { Some(handover_socket()?) } else { None };
    let loaded = match handover.as_ref() {
        None => match crate::files::load(path)? {
            Ok(loaded) => loaded,
            Err(code) => return Ok(code),
        },
        Some(socket) => match load_or_refuse(path, socket) {
            Ok(loaded) => loaded,
            Err(code) => return Ok(code),
        },
    };
    crate::files::print_diagnostics(&loaded.warnings);
    if let Err(code) = host_files_present(path, &loaded, handover.as_ref()) {
        return Ok(code);
    }
    let mut config = loaded.config;
    if let Some(format) = log_format {
        config.log.format = format;
    }
    crate::daemon::process::init_logging(&config);
    crate::daemon::process::raise_descriptor_limit();
    // One worker per available core unless the file says otherwise.
    let threads = config.node.worker_threads.map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()), |n| n as usize);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().context("starting the runtime")?;
    runtime.block_on(crate::daemon::run(path, pid_file, config, handover))?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses to start when a file halo.toml names, and halo needs, is missing here (each said
/// with its place; a running daemon that asked for an upgrade hears why).
fn host_files_present(path: &Path, loaded: &halo_config::Loaded, handover: Option<&std::os::fd::OwnedFd>) -> Result<(), ExitCode> {
    let missing = crate::files::host_file_problems(loaded, true);
    crate::files::print_diagnostics(&missing);
    let errors: Vec<String> = missing.iter().filter(|d| d.is_error()).map(ToString::to_string).collect();
    if errors.is_empty() {
        return Ok(());
    }
    let reason = format!("{}: {} file(s) it names are missing; nothing was started", path.display(), errors.len());
    eprintln!("halo: error: {reason}");
    if let Some(socket) = handover {
        tell_the_running_daemon(socket, format!("{reason}: {}", errors.join("; ")));
    }
    Err(ExitCode::from(2))
}

/// The handover socket, on standard input; standard input becomes /dev/null (scripts and hooks
/// must not inherit the socket).
fn handover_socket() -> anyhow::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsFd;
    let socket = std::io::stdin().as_fd().try_clone_to_owned().context("the handover socket (standard input)")?;
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("replacing standard input")?;
    Ok(socket)
}

/// Loads the configuration; when it does not load, tells the running daemon why (the
/// diagnostics, as printed) and returns the exit code.
fn load_or_refuse(path: &Path, socket: &std::os::fd::OwnedFd) -> Result<halo_config::Loaded, ExitCode> {
    let (reason, code) = match halo_config::load_file(path) {
        Ok(loaded) => return Ok(loaded),
        Err(halo_config::LoadError::Invalid(diagnostics)) => {
            crate::files::print_diagnostics(&diagnostics);
            let errors: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string()).collect();
            (format!("{}: {} error(s): {}", path.display(), errors.len(), errors.join("; ")), crate::files::EXIT_INVALID)
        }
        Err(e) => {
            let reason = format!("{:#}", anyhow::Error::from(e));
            eprintln!("halo: error: {reason}");
            (reason, 2)
        }
    };
    tell_the_running_daemon(socket, reason);
    Err(ExitCode::from(code))
}

/// Tells the daemon that started this one for an upgrade why it will not take over.
fn tell_the_running_daemon(socket: &std::os::fd::OwnedFd, reason: String) {
    let socket = socket.try_clone().map(crate::daemon::upgrade::message::Channel::new);
    let told = socket
        .map_err(anyhow::Error::from)
        .and_then(|channel| channel.farewell(reason, crate::daemon::upgrade::FAREWELL_LINGER).map_err(anyhow::Error::from));
    if let Err(e) = told {
        eprintln!("halo: the running daemon did not hear why: {e:#}");
    }
}

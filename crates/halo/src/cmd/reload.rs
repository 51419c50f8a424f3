//! `halo reload`: validates the file with the daemon's loader, then sends SIGHUP to the daemon
//! named by the pid file. A file with errors is never sent: the daemon keeps what it runs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Checks, then signals.
pub fn run(config: &Path, pid_file: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(config)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    crate::files::print_diagnostics(&loaded.warnings);
    let text =
        std::fs::read_to_string(pid_file).with_context(|| format!("cannot read the pid file {} (is halo running?)", pid_file.display()))?;
    let pid: i32 = text.trim().parse().with_context(|| format!("{} does not hold a process id", pid_file.display()))?;
    kill(Pid::from_raw(pid), Signal::SIGHUP).with_context(|| format!("cannot signal halo (pid {pid} from {})", pid_file.display()))?;
    eprintln!("halo reload: {} is valid; asked halo (pid {pid}) to apply it", config.display());
    Ok(ExitCode::SUCCESS)
}

//! `halo run`: loads the config exactly as `halo check` does, starts logging and the runtime, and
//! hands over to the daemon (`crate::daemon`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use halo_config::LogFormat;

/// Runs the daemon in the foreground.
pub fn run(path: &Path, pid_file: &Path, log_format: Option<LogFormat>) -> anyhow::Result<ExitCode> {
    let loaded = match crate::files::load(path)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    crate::files::print_diagnostics(&loaded.warnings);
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
    runtime.block_on(crate::daemon::run(path, pid_file, config))?;
    Ok(ExitCode::SUCCESS)
}

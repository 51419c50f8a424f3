//! The halo binary: parses the command line, runs one subcommand, maps the outcome to an exit
//! code (0 ok, 1 invalid input, 2 unreadable/unwritable file or bad usage).

mod cli;
mod cmd;
mod daemon;
mod files;
mod host;

use std::process::ExitCode;

use clap::Parser;

/// Completions and the man page, from the same clap definitions the parser uses.
fn generate(what: cli::Generated) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut command = cli::Cli::command();
    let mut out = std::io::stdout();
    let shell = match what {
        cli::Generated::Bash => Shell::Bash,
        cli::Generated::Zsh => Shell::Zsh,
        cli::Generated::Fish => Shell::Fish,
        cli::Generated::Man => {
            clap_mangen::Man::new(command).render(&mut out)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    clap_complete::generate(shell, &mut command, "halo", &mut out);
    Ok(ExitCode::SUCCESS)
}

/// `halo lab` and its parts, from the `halo-lab` crate.
#[cfg(feature = "lab")]
fn lab(action: Option<cli::LabAction>, mode: cli::LabMode, keep: bool, report: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    match action {
        None => {
            let halo = std::env::current_exe().context("finding the halo binary")?;
            let mode = match mode {
                cli::LabMode::Vrrp => halo_lab::Mode::Vrrp,
                cli::LabMode::Bgp => halo_lab::Mode::Bgp,
            };
            halo_lab::run(&halo_lab::Options { mode, keep, report, halo })
        }
        Some(cli::LabAction::Down) => halo_lab::down(),
        Some(cli::LabAction::Apiserver { name, listen, dir }) => halo_lab::apiserver::run(&name, listen, &dir).map(|()| ExitCode::SUCCESS),
        Some(cli::LabAction::Client { target, dir, period_ms }) => {
            halo_lab::client::run(target, &dir, std::time::Duration::from_millis(period_ms)).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let outcome = match cli.command {
        cli::Command::Run { config, pid_file, log_format, upgrade_handover } => {
            let log_format = log_format.map(|f| match f {
                cli::LogFormatArg::Text => halo_config::LogFormat::Text,
                cli::LogFormatArg::Json => halo_config::LogFormat::Json,
            });
            cmd::run::run(&config, &pid_file, log_format, upgrade_handover)
        }
        cli::Command::Reload { config, pid_file } => cmd::reload::run(&config, &pid_file),
        cli::Command::Upgrade { config, pid_file, timeout } => {
            cmd::upgrade::run(&config, &pid_file, std::time::Duration::from_secs(timeout))
        }
        cli::Command::Check { config } => cmd::check::run(&config),
        cli::Command::Status { config, json, watch } => cmd::status::run(&config, json, watch),
        cli::Command::Server { order, config } => cmd::server::run(&config, order),
        cli::Command::Node { action: cli::NodeAction::Maintenance { state }, config } => cmd::server::maintenance(&config, state == "on"),
        cli::Command::Import { haproxy, keepalived, check_script, output, strict, config_id } => {
            cmd::import::run(&cmd::import::Inputs { haproxy, keepalived, check_script, output, strict, config_id })
        }
        cli::Command::Render { artefact, config, output, format, interface, image } => {
            cmd::render::run(artefact, &config, output.as_deref(), format, interface.as_deref(), image.as_deref())
        }
        cli::Command::Host { action } => host::run(action),
        cli::Command::Generate { what } => generate(what),
        #[cfg(feature = "lab")]
        cli::Command::Lab { action, mode, keep, report } => lab(action, mode, keep, report),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("halo: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

//! The command line: clap derive types; every `///` here is the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where `halo run` writes its process id unless told otherwise.
pub const DEFAULT_PID_FILE: &str = "/run/halo.pid";

/// halo: one highly available endpoint for a multi-master Kubernetes control plane.
///
/// Exit codes: 0 success; 1 the input has errors (each printed as file:line:col);
/// 2 a file could not be read or written, or the command line is wrong.
#[derive(Debug, Parser)]
#[command(name = "halo", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: VRRP instances and trackers, until SIGTERM or SIGINT (root or CAP_NET_ADMIN +
    /// CAP_NET_RAW). Log level: `[log]` in the config, or the HALO_LOG environment variable.
    Run {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// Where the daemon writes its process id (for `halo reload`); removed at exit.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_PID_FILE)]
        pid_file: PathBuf,
    },
    /// Validate the configuration, then ask the running daemon to apply it (SIGHUP). Nothing is
    /// sent when the file has errors.
    Reload {
        /// The configuration file the daemon runs with.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// The daemon's pid file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_PID_FILE)]
        pid_file: PathBuf,
    },
    /// Show the running daemon's state (VRRP instances, frontends, servers) from its status
    /// endpoint, as found in the configuration.
    Status {
        /// The configuration file the daemon runs with (for the endpoint's address and token).
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// Print the endpoint's JSON as it is.
        #[arg(long)]
        json: bool,
        /// Redraw every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Validate a halo.toml: print every problem with file:line:col, or a summary of what would run.
    Check {
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
    },
    /// Turn a classic haproxy.cfg and/or keepalived.conf into an equivalent, commented halo.toml.
    Import {
        /// haproxy configuration (frontends, backends, health checks).
        #[arg(long, value_name = "FILE", required_unless_present = "keepalived")]
        haproxy: Option<PathBuf>,
        /// keepalived configuration (VRRP instances, track scripts).
        #[arg(long, value_name = "FILE")]
        keepalived: Option<PathBuf>,
        /// The track script that checks the local haproxy (check_apiserver.sh): it becomes
        /// halo's built-in balancer tracker.
        #[arg(long, value_name = "FILE")]
        check_script: Option<PathBuf>,
        /// Write the result here (atomically) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Treat every directive that cannot be mapped as an error.
        #[arg(long)]
        strict: bool,
    },
    /// Emit a classic artefact from a halo.toml, for hosts that keep the classic stack.
    Render {
        /// Which artefact.
        artefact: Artefact,
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// Write the result here (atomically) instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Build a throwaway cluster in network namespaces (switch, three TLS API-server stand-ins,
    /// three balancer hosts running `halo run`, a client), play a failure scenario through it and
    /// judge it (root). Exit 0 when every step behaved, 1 when one did not, 2 when the lab could
    /// not be built. It always cleans up, also on Ctrl-C, unless `--keep`.
    Lab {
        /// `down` removes a lab left running; the others are the lab's own parts.
        #[command(subcommand)]
        action: Option<LabAction>,
        /// Leave the lab running afterwards, with a cheat sheet for exploring it.
        #[arg(long)]
        keep: bool,
        /// Also write the measured timeline as JSON to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

/// `halo lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Remove a lab left running (its namespaces, processes and files).
    Down,
    /// An API-server stand-in (started by the lab inside its namespace).
    #[command(hide = true)]
    Apiserver {
        /// Its name (certificate and log file names).
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// The lab directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// The lab's client (started by the lab inside its namespace).
    #[command(hide = true)]
    Client {
        /// The VIP and port.
        #[arg(long)]
        target: std::net::SocketAddr,
        /// The lab directory.
        #[arg(long)]
        dir: PathBuf,
        /// Milliseconds between requests.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        period_ms: u64,
    },
}

/// Artefacts `halo render` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Artefact {
    /// haproxy.cfg with real HTTPS health checks and long tunnel timeouts.
    Haproxy,
    /// keepalived.conf with the VRRP instances and track scripts.
    Keepalived,
    /// check_apiserver.sh, fixed (right VIP, curl --fail).
    CheckScript,
    /// /etc/sysctl.d drop-in for a balancer host.
    Sysctl,
    /// A hardened systemd unit running halo (Type=notify, reload, capabilities, VIP cleanup).
    Systemd,
    /// A Kubernetes static-pod manifest running halo (host network, liveness on /healthz).
    StaticPod,
}

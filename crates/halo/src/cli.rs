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

//! The command line: clap derive types; every `///` here is the help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where `halo run` writes its process id unless told otherwise.
pub const DEFAULT_PID_FILE: &str = "/run/halo/halo.pid";

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
        /// Log format, over `[log] format` of the config: text (journald-friendly lines) or json.
        #[arg(long, value_enum, value_name = "FORMAT")]
        log_format: Option<LogFormatArg>,
        /// Take over from the running daemon whose handover socket is standard input (what
        /// `halo upgrade` makes the running daemon start; not for hand use).
        #[arg(long, hide = true)]
        upgrade_handover: bool,
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
    /// Hand the running daemon over to the binary now on disk (after a package upgrade):
    /// listeners, VIPs and established connections survive. The file is checked first (nothing
    /// is sent when it has errors); the daemon (SIGUSR2) starts the new binary, which checks the
    /// file again and takes over, or the daemon keeps running and this says why (exit 1).
    Upgrade {
        /// The configuration file the daemon runs with.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// The daemon's pid file.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_PID_FILE)]
        pid_file: PathBuf,
        /// How long to wait for the daemon's word, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
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
    /// Set a server's state at run time, with haproxy's runtime-API meanings, through the running
    /// daemon's status endpoint (its unix socket, or its address with the token); the daemon's
    /// answer is printed as JSON. Kept across `halo reload` and `halo upgrade`, not across a restart.
    Server {
        /// What to do.
        #[command(subcommand)]
        order: ServerOrder,
        /// The configuration file the daemon runs with (for the endpoint's address and token).
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml", global = true)]
        config: PathBuf,
    },
    /// This node as a whole (`halo node maintenance on|off`).
    Node {
        /// What to do.
        #[command(subcommand)]
        action: NodeAction,
        /// The configuration file the daemon runs with (for the endpoint's address and token).
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml", global = true)]
        config: PathBuf,
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
        /// The host keepalived's `@host` lines are read for (keepalived's -i); the short host
        /// name by default.
        #[arg(long, value_name = "HOST")]
        config_id: Option<String>,
    },
    /// Emit a classic artefact from a halo.toml, for hosts that keep the classic stack.
    Render {
        /// Which artefact.
        artefact: Artefact,
        /// The configuration file.
        #[arg(short, long, value_name = "FILE", default_value = "/etc/halo/halo.toml")]
        config: PathBuf,
        /// Write the result here (atomically) instead of standard output; for `network`, a
        /// directory the files are written under (as under /).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// For `network`: etcnet, networkd or nm.
        #[arg(long, value_enum)]
        format: Option<Persist>,
        /// For `network`: the LAN NIC (default: the one carrying the default route).
        #[arg(long, value_name = "NAME")]
        interface: Option<String>,
        /// For `static-pod` and `quadlet`: the image to run, when not scripts/image.sh's
        /// (localhost/halo:VERSION): one of your own, with a script_user or tools added.
        #[arg(long, value_name = "REFERENCE", value_parser = image_reference)]
        image: Option<String>,
    },
    /// Shell completions or the man page, for packaging (written to standard output).
    #[command(hide = true)]
    Generate {
        /// What to generate.
        #[arg(value_enum)]
        what: Generated,
    },
    /// Check (`check`) or prepare (`apply`) this host: bridge with the LAN NIC enslaved and the
    /// host's addresses on it, bridge-nf-call sysctls as the role needs.
    Host {
        /// What to do.
        #[command(subcommand)]
        action: HostAction,
    },
    /// Build a throwaway cluster in network namespaces (switch, three TLS API-server stand-ins,
    /// three balancer hosts running `halo run`, a client), play a failure scenario through it and
    /// judge it (root). Exit 0 when every step behaved, 1 when one did not, 2 when the lab could
    /// not be built. It always cleans up, also on Ctrl-C, unless `--keep`.
    #[cfg(feature = "lab")]
    Lab {
        /// `down` removes a lab left running; the others are the lab's own parts.
        #[command(subcommand)]
        action: Option<LabAction>,
        /// The scenario: the balancers float the VIP by VRRP on one LAN, or announce it by BGP
        /// through FRR to a router that spreads connections over them (needs FRR installed).
        #[arg(long, value_enum, default_value = "vrrp")]
        mode: LabMode,
        /// Leave the lab running afterwards, with a cheat sheet for exploring it.
        #[arg(long)]
        keep: bool,
        /// Also write the measured timeline as JSON to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
}

/// `halo run --log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// Readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Packaging artefacts `halo generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// bash completion.
    Bash,
    /// zsh completion.
    Zsh,
    /// fish completion.
    Fish,
    /// The man page, halo(1), in roff.
    Man,
}

/// What a host is for; the bridge-nf-call sysctls differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The libvirt host of the guide: bridge-nf-call-* = 0 (or br_netfilter not loaded).
    Hypervisor,
    /// A dedicated balancer host: like the hypervisor.
    Lb,
    /// A Kubernetes node: bridge-nf-call-* = 1 with br_netfilter loaded, ip_forward = 1.
    Node,
}

impl Role {
    /// As written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hypervisor => "hypervisor",
            Self::Lb => "lb",
            Self::Node => "node",
        }
    }
}

/// Persistent network configuration formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Persist {
    /// ALT Linux etcnet (/etc/net/ifaces).
    Etcnet,
    /// systemd-networkd (/etc/systemd/network).
    Networkd,
    /// NetworkManager (a script of nmcli commands).
    Nm,
}

impl From<Persist> for halo_config::render::NetworkFormat {
    fn from(persist: Persist) -> Self {
        match persist {
            Persist::Etcnet => Self::Etcnet,
            Persist::Networkd => Self::Networkd,
            Persist::Nm => Self::Nm,
        }
    }
}

/// `halo host` subcommands.
#[derive(Debug, Subcommand)]
pub enum HostAction {
    /// Readiness report: one line per check, OK / WARN / FAIL with what to do. Exit 0 when
    /// nothing FAILs, 1 otherwise.
    Check {
        /// Which host, which interfaces.
        #[command(flatten)]
        target: HostTarget,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// FRR's vty socket directory, when FRR runs with one elsewhere than its default.
        #[arg(long, value_name = "DIR")]
        frr_vty_socket: Option<PathBuf>,
    },
    /// Prepare the host: sysctls (now and in /etc/sysctl.d/99-halo.conf) and the bridge with the
    /// NIC's addresses, routes and MAC. Idempotent; rolled back exactly if a step fails.
    Apply {
        /// Which host, which interfaces.
        #[command(flatten)]
        target: HostTarget,
        /// Print the plan as commands; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also write the network configuration that survives a reboot.
        #[arg(long, value_enum)]
        persist: Option<Persist>,
        /// Write files under this directory instead of / (for images and tests).
        #[arg(long, value_name = "DIR")]
        root: Option<PathBuf>,
    },
}

/// What `halo host check` and `apply` act on.
#[derive(Debug, clap::Args)]
pub struct HostTarget {
    /// What the host is for.
    #[arg(long, value_enum, default_value = "hypervisor")]
    pub role: Role,
    /// A halo.toml: its VRRP interface names the bridge; `check` also checks its VIPs (subnet,
    /// ARP probe), ports and conflicts.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The LAN NIC (default: the one carrying the default route).
    #[arg(long, value_name = "NAME")]
    pub interface: Option<String>,
    /// The bridge (default: the config's VRRP interface, else br0).
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
}

/// `halo lab --mode`.
#[cfg(feature = "lab")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabMode {
    /// VRRP among three balancers on one LAN.
    Vrrp,
    /// BGP announcements through FRR to a router, ECMP over three balancers.
    Bgp,
}

/// `halo lab` subcommands.
#[cfg(feature = "lab")]
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

/// An operator's order for one server (`halo server ...`).
#[derive(Debug, Subcommand)]
pub enum ServerOrder {
    /// No new connections; established ones run on; checks go on (haproxy: state drain).
    Drain {
        /// BACKEND/SERVER
        #[arg(value_parser = server_target)]
        target: (String, String),
    },
    /// No new connections and no checks: shown as MAINT (haproxy: state maint).
    Maint {
        /// BACKEND/SERVER
        #[arg(value_parser = server_target)]
        target: (String, String),
    },
    /// Back to health-checked service (haproxy: state ready); from MAINT, checked first.
    Ready {
        /// BACKEND/SERVER
        #[arg(value_parser = server_target)]
        target: (String, String),
    },
    /// The weight in effect, 0 to 256 (0: no new connections), until a restart.
    Weight {
        /// BACKEND/SERVER
        #[arg(value_parser = server_target)]
        target: (String, String),
        /// The weight.
        weight: u32,
    },
}

/// What `halo node` does.
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Node maintenance: `on` hands every VIP over at once (a priority-0 advert) and stays
    /// backup, withdraws every announcement, lets established connections run on; `off` returns
    /// to service. Kept in `[node] state_directory`: it outlives reloads, upgrades and restarts.
    Maintenance {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// `BACKEND/SERVER`.
fn server_target(text: &str) -> Result<(String, String), String> {
    match text.split_once('/') {
        Some((backend, server)) if !backend.is_empty() && !server.is_empty() && !server.contains('/') => {
            Ok((backend.to_string(), server.to_string()))
        }
        _ => Err(format!("{text:?} is not BACKEND/SERVER (like apiserver/master01)")),
    }
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
    /// The hardened systemd unit the package installs, the same for every config.
    Systemd,
    /// A Kubernetes static pod running halo's image, with the mounts and capabilities this config needs.
    StaticPod,
    /// A podman Quadlet unit running halo's image on an ostree host (ALT Container OS, Fedora CoreOS).
    Quadlet,
    /// The bridge as persistent network configuration (needs --format), from this host's NIC.
    Network,
    /// FRR's configuration for the addresses announced by BGP ([[announce]], [bgp]).
    Frr,
}

/// An image reference as podman and containerd take it: no white space, control character, quote
/// or `%` (it is written into YAML and unit files).
fn image_reference(text: &str) -> Result<String, String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '%')) {
        return Err(format!("{text:?} is not an image reference (like localhost/halo:0.1.0)"));
    }
    Ok(text.to_string())
}

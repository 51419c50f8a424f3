//! `halo host check` and `halo host apply`: the guide's host preparation (bridge `br0` with the
//! LAN NIC enslaved, bridge-nf-call sysctls), checked per role and applied safely — planned as
//! the commands a person would type, executed over netlink, rolled back exactly when a step
//! fails, idempotent. Which NIC and bridge: `--interface` / `--bridge`, else the configured VRRP
//! interface as the bridge, else `br0`; the NIC is the one carrying the default route (or the
//! bridge's port once bridged).

mod check;
mod frr;
mod plan;
mod sysctl;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use halo_config::Config;
use halo_hostnet::bridge::Snapshot;
use halo_hostnet::netlink::Netlink;

pub use crate::cli::HostAction;

/// What the host commands act on.
#[derive(Debug, Clone)]
pub struct Target {
    /// The LAN NIC.
    pub nic: String,
    /// The bridge.
    pub bridge: String,
}

/// Resolves NIC and bridge from the arguments, the config and the routing table.
pub fn resolve(snapshot: &Snapshot, interface: Option<&str>, bridge: Option<&str>, config: Option<&Config>) -> anyhow::Result<Target> {
    let configured = config.and_then(|c| c.node.interface.clone().or_else(|| c.vrrp.first().map(|v| v.interface.clone())));
    let bridge = bridge.map(str::to_string).or(configured).unwrap_or_else(|| "br0".to_string());
    let nic = match interface {
        Some(nic) => nic.to_string(),
        None => {
            let route = snapshot.default_route().context("no IPv4 default route: name the LAN interface with --interface")?;
            let link = snapshot.link_by_index(route.index).context("the default route's interface vanished")?;
            if link.name == bridge {
                let port = snapshot.links.iter().find(|l| l.master == Some(link.index) && !l.is_bridge);
                port.map(|p| p.name.clone())
                    .with_context(|| format!("{bridge} carries the default route but has no port: name the NIC with --interface"))?
            } else {
                link.name.clone()
            }
        }
    };
    if nic == bridge {
        bail!("the NIC and the bridge are both {nic}: name them with --interface and --bridge");
    }
    Ok(Target { nic, bridge })
}

/// Loads the optional config (the daemon's loader); errors are printed as `halo check` does.
fn load(config: Option<&Path>) -> anyhow::Result<Result<Option<Config>, ExitCode>> {
    match config {
        None => Ok(Ok(None)),
        Some(path) => Ok(crate::files::load(path)?.map(|loaded| Some(loaded.config))),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

/// Runs a `halo host` subcommand.
pub fn run(action: HostAction) -> anyhow::Result<ExitCode> {
    let (HostAction::Check { target, .. } | HostAction::Apply { target, .. }) = &action;
    let config = match load(target.config.as_deref())? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let (interface, bridge) = (target.interface.as_deref(), target.bridge.as_deref());
    match &action {
        HostAction::Check { target, json, frr_vty_socket } => {
            runtime()?.block_on(check::run(target.role, config.as_ref(), interface, bridge, *json, frr_vty_socket.as_deref()))
        }
        HostAction::Apply { target, dry_run, persist, root } => {
            let options = plan::Options {
                role: target.role,
                persist: *persist,
                root: root.clone().unwrap_or_else(|| PathBuf::from("/")),
                dry_run: *dry_run,
            };
            runtime()?.block_on(plan::apply(&options, config.as_ref(), interface, bridge))
        }
    }
}

/// The facts `halo render network` renders: from the live host.
pub fn network_facts(
    config: Option<&Config>,
    interface: Option<&str>,
    bridge: Option<&str>,
) -> anyhow::Result<halo_config::render::NetworkFacts> {
    runtime()?.block_on(async {
        let netlink = Netlink::open()?;
        let snapshot = netlink.snapshot().await?;
        let target = resolve(&snapshot, interface, bridge, config)?;
        plan::facts(&snapshot, &target)
    })
}

/// Where a file lands under `--root`.
pub fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

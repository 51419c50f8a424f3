//! `halo host apply`: the plan (what differs from a prepared host, as the commands a person
//! would type), its execution over netlink and /proc/sys, and the exact rollback of every step
//! already done when one fails. Files are written last, so a failed apply leaves none.
//!
//! The bridge order keeps the host reachable: the bridge is created down with the NIC's MAC,
//! brought up, given copies of the NIC's addresses, then the NIC is enslaved (from here frames
//! reach the bridge, which already answers for the addresses), routes are pointed at the bridge,
//! and only then are the addresses deleted from the NIC.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use halo_config::Config;
use halo_config::render::{NetworkFacts, NetworkFormat, mac_text};
use halo_hostnet::bridge::{AddressFacts, RouteFacts, Snapshot};
use halo_hostnet::netlink::Netlink;

use super::sysctl::{self, DROP_IN};
use super::{Target, resolve};
use crate::cli::{Persist, Role};

/// Set to N, apply fails after N steps (to prove the rollback); a testing hook, documented.
pub const FAIL_AFTER_ENV: &str = "HALO_HOST_APPLY_FAIL_AFTER";

/// How apply runs.
pub struct Options {
    /// The host's role.
    pub role: Role,
    /// Also write persistent network configuration.
    pub persist: Option<Persist>,
    /// Files are written under this directory (`/` normally).
    pub root: PathBuf,
    /// Print the plan only.
    pub dry_run: bool,
}

/// One change.
#[derive(Debug, Clone)]
enum Step {
    Modprobe,
    Sysctl { key: String, value: String, old: Option<String> },
    CreateBridge { name: String, mac: Vec<u8> },
    SetMac { name: String, mac: Vec<u8>, old: Vec<u8> },
    SetUp { name: String },
    CopyAddress { address: AddressFacts, to: String },
    Enslave { port: String, bridge: String, old_master: Option<u32> },
    PointRoute { route: RouteFacts, to: String },
    DeleteAddress { address: AddressFacts, from: String },
    WriteFile { path: PathBuf, content: String, old: Option<String> },
}

impl Step {
    /// The command a person would type.
    fn command(&self) -> String {
        match self {
            Self::Modprobe => "modprobe br_netfilter".to_string(),
            Self::Sysctl { key, value, .. } => format!("sysctl -w {key}={value}"),
            Self::CreateBridge { name, mac } => {
                format!("ip link add {name} address {} type bridge stp_state 0 forward_delay 0", mac_text(mac))
            }
            Self::SetMac { name, mac, .. } => format!("ip link set {name} address {}", mac_text(mac)),
            Self::SetUp { name } => format!("ip link set {name} up"),
            Self::CopyAddress { address, to } => format!("ip addr add {}/{} dev {to}", address.address, address.prefix),
            Self::Enslave { port, bridge, .. } => format!("ip link set {port} master {bridge}"),
            Self::PointRoute { route, to } => {
                let (destination, prefix) = route.destination;
                let destination = if prefix == 0 { "default".to_string() } else { format!("{destination}/{prefix}") };
                let via = route.gateway.map_or(String::new(), |g| format!(" via {g}"));
                let metric = route.metric.map_or(String::new(), |m| format!(" metric {m}"));
                format!("ip route replace {destination}{via} dev {to}{metric}")
            }
            Self::DeleteAddress { address, from } => format!("ip addr del {}/{} dev {from}", address.address, address.prefix),
            Self::WriteFile { path, content, .. } => format!("cat > {} <<'EOF'\n{}EOF", path.display(), content),
        }
    }

    async fn run(&self, netlink: &Netlink) -> anyhow::Result<()> {
        match self {
            Self::Modprobe => {
                let status = std::process::Command::new("modprobe").arg("br_netfilter").status().context("running modprobe")?;
                anyhow::ensure!(status.success(), "modprobe br_netfilter failed");
            }
            Self::Sysctl { key, value, .. } => halo_hostnet::sysctl::write(key, value)?,
            Self::CreateBridge { name, mac } => drop(netlink.create_bridge(name, mac).await?),
            Self::SetMac { name, mac, .. } => netlink.set_mac(netlink.link(name).await?.index, mac).await?,
            Self::SetUp { name } => netlink.set_link_up(netlink.link(name).await?.index, true).await?,
            Self::CopyAddress { address, to } => netlink.copy_address(address, netlink.link(to).await?.index).await?,
            Self::Enslave { port, bridge, .. } => {
                netlink.set_master(netlink.link(port).await?.index, Some(netlink.link(bridge).await?.index)).await?;
            }
            Self::PointRoute { route, to } => netlink.point_route(route, netlink.link(to).await?.index).await?,
            Self::DeleteAddress { address, from } => netlink.delete_address(address, netlink.link(from).await?.index).await?,
            Self::WriteFile { path, content, .. } => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                crate::files::write_output(Some(path), content)?;
            }
        }
        Ok(())
    }

    /// Undoes the step (it ran).
    async fn undo(&self, netlink: &Netlink) -> anyhow::Result<()> {
        match self {
            // A loaded module stays: unloading it could break whoever started using it.
            Self::Modprobe => {}
            Self::Sysctl { key, old, .. } => {
                if let Some(old) = old {
                    halo_hostnet::sysctl::write(key, old)?;
                }
            }
            Self::CreateBridge { name, .. } => netlink.delete_link_index(netlink.link(name).await?.index).await?,
            Self::SetMac { name, old, .. } => netlink.set_mac(netlink.link(name).await?.index, old).await?,
            Self::SetUp { name } => netlink.set_link_up(netlink.link(name).await?.index, false).await?,
            Self::CopyAddress { address, to } => netlink.delete_address(address, netlink.link(to).await?.index).await?,
            Self::Enslave { port, old_master, .. } => netlink.set_master(netlink.link(port).await?.index, *old_master).await?,
            Self::PointRoute { route, .. } => netlink.point_route(route, route.index).await?,
            Self::DeleteAddress { address, .. } => netlink.copy_address(address, address.index).await?,
            Self::WriteFile { path, old, .. } => match old {
                Some(old) => crate::files::write_output(Some(path), old)?,
                None => std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?,
            },
        }
        Ok(())
    }
}

/// The persistent network facts for `target` (from the NIC before bridging, from the bridge after).
pub fn facts(snapshot: &Snapshot, target: &Target) -> anyhow::Result<NetworkFacts> {
    let nic = snapshot.link(&target.nic).with_context(|| format!("no interface {}", target.nic))?;
    let mac: [u8; 6] = nic.mac.as_slice().try_into().with_context(|| format!("{} has no Ethernet MAC", target.nic))?;
    let mut indexes = vec![nic.index];
    indexes.extend(snapshot.link(&target.bridge).map(|b| b.index));
    let addresses: Vec<(IpAddr, u8)> = indexes.iter().flat_map(|i| snapshot.addresses_of(*i)).map(|a| (a.address, a.prefix)).collect();
    let mut unique = Vec::new();
    for address in addresses {
        if !unique.contains(&address) {
            unique.push(address);
        }
    }
    let mut gateways: Vec<IpAddr> = Vec::new();
    for route in indexes.iter().flat_map(|i| snapshot.routes_of(*i)) {
        if route.destination.1 == 0
            && let Some(gateway) = route.gateway
            && !gateways.iter().any(|g| g.is_ipv4() == gateway.is_ipv4())
        {
            gateways.push(gateway);
        }
    }
    Ok(NetworkFacts { bridge: target.bridge.clone(), nic: target.nic.clone(), mac, addresses: unique, gateways })
}

/// The steps that make the host prepared; empty when it is.
fn plan(snapshot: &Snapshot, target: &Target, options: &Options) -> anyhow::Result<Vec<Step>> {
    let mut steps = Vec::new();
    let wants = sysctl::wants(options.role);
    let mut settings = Vec::new();
    for want in &wants {
        let current = halo_hostnet::sysctl::read(want.key)?;
        if current.is_none() && !want.absent_ok && want.key.starts_with("net.bridge.") && !steps.iter().any(|s| matches!(s, Step::Modprobe))
        {
            steps.push(Step::Modprobe);
        }
        if current.as_deref() != Some(want.value) && (current.is_some() || !want.absent_ok) {
            steps.push(Step::Sysctl { key: want.key.to_string(), value: want.value.to_string(), old: current });
        }
        settings.push((want.key, want.value));
    }

    let nic = snapshot.link(&target.nic).with_context(|| format!("no interface {} (name the LAN NIC with --interface)", target.nic))?;
    if nic.mac.len() != 6 {
        bail!("{} has no Ethernet MAC: it cannot be a bridge port", nic.name);
    }
    let bridge = snapshot.link(&target.bridge);
    match bridge {
        None => steps.push(Step::CreateBridge { name: target.bridge.clone(), mac: nic.mac.clone() }),
        Some(b) if !b.is_bridge => bail!("{} exists and is not a bridge; choose another name with --bridge", b.name),
        Some(b) if b.mac != nic.mac => steps.push(Step::SetMac { name: b.name.clone(), mac: nic.mac.clone(), old: b.mac.clone() }),
        Some(_) => {}
    }
    if bridge.is_none_or(|b| !b.up) {
        steps.push(Step::SetUp { name: target.bridge.clone() });
    }
    let on_bridge: Vec<(IpAddr, u8)> =
        bridge.map(|b| snapshot.addresses_of(b.index).iter().map(|a| (a.address, a.prefix)).collect()).unwrap_or_default();
    let nic_addresses = snapshot.addresses_of(nic.index);
    for address in &nic_addresses {
        if !on_bridge.contains(&(address.address, address.prefix)) {
            steps.push(Step::CopyAddress { address: (*address).clone(), to: target.bridge.clone() });
        }
    }
    if bridge.is_none_or(|b| nic.master != Some(b.index)) {
        steps.push(Step::Enslave { port: nic.name.clone(), bridge: target.bridge.clone(), old_master: nic.master });
    }
    for route in snapshot.routes_of(nic.index) {
        steps.push(Step::PointRoute { route: route.clone(), to: target.bridge.clone() });
    }
    // Secondaries first: deleting a primary IPv4 address takes its secondaries with it.
    for address in nic_addresses.iter().rev() {
        steps.push(Step::DeleteAddress { address: (*address).clone(), from: nic.name.clone() });
    }

    let drop_in = super::under_root(&options.root, DROP_IN);
    let old = std::fs::read_to_string(&drop_in).ok();
    let content = sysctl::merge(
        old.as_deref().unwrap_or(""),
        &settings,
        &format!("# Written by `halo host apply --role {}`.\n", options.role.name()),
    );
    if old.as_deref() != Some(content.as_str()) {
        steps.push(Step::WriteFile { path: drop_in, content, old });
    }
    if let Some(persist) = options.persist {
        let facts = facts(snapshot, target)?;
        for (path, content) in halo_config::render::network(&facts, NetworkFormat::from(persist)) {
            let path = super::under_root(&options.root, &path);
            let old = std::fs::read_to_string(&path).ok();
            if old.as_deref() != Some(content.as_str()) {
                steps.push(Step::WriteFile { path, content, old });
            }
        }
    }
    Ok(steps)
}

/// Prints the plan, or applies it with rollback.
pub async fn apply(options: &Options, config: Option<&Config>, interface: Option<&str>, bridge: Option<&str>) -> anyhow::Result<ExitCode> {
    let netlink = Netlink::open()?;
    let before = netlink.snapshot().await?;
    let target = resolve(&before, interface, bridge, config)?;
    let steps = plan(&before, &target, options)?;
    if steps.is_empty() {
        println!(
            "nothing to do: {} is a port of {}, which holds the host's addresses, and the role's settings are in place",
            target.nic, target.bridge
        );
        return Ok(ExitCode::SUCCESS);
    }
    if options.dry_run {
        println!("# halo host apply --role {}: {} step(s), nothing changed (--dry-run)", options.role.name(), steps.len());
        for step in &steps {
            println!("{}", step.command());
        }
        return Ok(ExitCode::SUCCESS);
    }
    for address in before.addresses_of(before.link(&target.nic).map_or(0, |l| l.index)) {
        if address.dynamic {
            eprintln!(
                "halo host: warning: {}/{} on {} has a lease: the DHCP client must run on {} from now on (see --persist)",
                address.address, address.prefix, target.nic, target.bridge
            );
        }
    }
    let fail_after: Option<usize> = std::env::var(FAIL_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    let mut done: Vec<&Step> = Vec::new();
    let mut failure = None;
    for (i, step) in steps.iter().enumerate() {
        if fail_after == Some(i) {
            failure = Some(anyhow::anyhow!("failure injected before step {} ({FAIL_AFTER_ENV}={i})", i + 1));
            break;
        }
        println!("{}", step.command());
        match step.run(&netlink).await {
            Ok(()) => done.push(step),
            Err(e) => {
                failure = Some(e.context(format!("step {} failed: {}", i + 1, step.command())));
                break;
            }
        }
    }
    let Some(failure) = failure else {
        println!("done: {} step(s) applied", steps.len());
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("halo host: error: {failure:#}");
    eprintln!("halo host: rolling back {} step(s)", done.len());
    let mut undo_errors = Vec::new();
    for step in done.iter().rev() {
        if let Err(e) = step.undo(&netlink).await {
            undo_errors.push(format!("undoing `{}`: {e:#}", step.command()));
        }
    }
    let after = netlink.snapshot().await?;
    let (was, is) = (before.essentials(), after.essentials());
    if undo_errors.is_empty() && was == is {
        eprintln!("halo host: rolled back: links, addresses and routes are as they were");
        return Ok(ExitCode::from(1));
    }
    for e in &undo_errors {
        eprintln!("halo host: error: {e}");
    }
    for line in was.iter().filter(|l| !is.contains(l)) {
        eprintln!("halo host: lost: {line}");
    }
    for line in is.iter().filter(|l| !was.contains(l)) {
        eprintln!("halo host: left: {line}");
    }
    bail!("the rollback did not restore the previous state; fix the lines above by hand")
}

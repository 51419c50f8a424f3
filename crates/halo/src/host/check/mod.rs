//! `halo host check`: a readiness report, one line per check (OK / WARN / FAIL, what was found,
//! what to do), as text or JSON. Exit 0 when nothing FAILs, 1 otherwise. The checks are written
//! by subject: the bridge, the kernel parameters, the VIPs, the frontend ports, a keepalived
//! running here, and (for hosts that announce by BGP) FRR.

mod bridge;
mod keepalived;
mod port;
mod processes;
mod report;
mod sysctl;
mod vip;

use std::net::IpAddr;
use std::process::ExitCode;

use halo_config::Config;
use halo_hostnet::bridge::Snapshot;
use halo_hostnet::netlink::Netlink;
use ipnet::IpNet;

use self::processes::processes_here;
use self::report::Report;
use super::verdict::Verdict;
use super::{Target, resolve};
use crate::cli::Role;

/// Runs every check and prints the report.
pub async fn run(
    role: Role,
    config: Option<&Config>,
    interface: Option<&str>,
    bridge: Option<&str>,
    json: bool,
    frr_vty_socket: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let netlink = Netlink::open()?;
    let snapshot = netlink.snapshot().await?;
    let mut report = Report::default();
    if let Some(config) = config {
        let held: Vec<IpAddr> = snapshot.addresses.iter().map(|a| a.address).collect();
        for (check, status, found, fix) in super::frr::checks(config, &held, frr_vty_socket) {
            report.add(check, status, found, fix);
        }
    }
    // A balancer that only announces by BGP is routed: no bridge, no VIP on a LAN.
    let routed = config.is_some_and(|c| c.vrrp.is_empty() && !c.announce.is_empty()) && interface.is_none() && bridge.is_none();
    if let (true, Some(config)) = (routed, config) {
        report.ok("LAN interface", "routed balancer: its addresses are announced by BGP, no bridge or shared segment needed");
        let others = processes_here(&["haproxy", "keepalived", "halo"]);
        port::port_checks(&mut report, config, &others);
    } else {
        match resolve(&snapshot, interface, bridge, config) {
            Ok(target) => {
                bridge::bridge_checks(&mut report, &snapshot, &target);
                if let Some(config) = config {
                    config_checks(&mut report, &snapshot, &target, config, &netlink).await;
                }
            }
            Err(e) => report.add("LAN interface", Verdict::Fail, format!("{e:#}"), "name it with --interface"),
        }
        sysctl::sysctl_checks(&mut report, role);
    }
    for (manager, pid) in processes_here(&["NetworkManager", "systemd-network"]) {
        let (name, persist) = if manager == "NetworkManager" { ("NetworkManager", "nm") } else { ("systemd-networkd", "networkd") };
        report.add(
            "network manager",
            Verdict::Warn,
            format!("{name} runs here (pid {pid}) and may undo changes made behind its back"),
            format!("halo host apply --persist {persist}, and let {name} apply it"),
        );
    }
    report.print(json, role)?;
    Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The checks of what the configuration asks of this host: its VIPs, its frontend ports, and
/// no keepalived running its virtual routers.
async fn config_checks(report: &mut Report, snapshot: &Snapshot, target: &Target, config: &Config, netlink: &Netlink) {
    let Some(lan) = vip::lan_link(snapshot, target) else { return };
    let subnets = vip::lan_subnets(snapshot, target, lan);
    let held: Vec<IpAddr> = snapshot.addresses.iter().map(|a| a.address).collect();
    for address in config.vrrp.iter().flat_map(|instance| &instance.virtual_addresses).map(IpNet::addr) {
        vip::vip_subnet_check(report, address, &subnets, &lan.name);
        vip::vip_in_use_check(report, address, &held, &lan.name, netlink).await;
    }
    let others = processes_here(&["haproxy", "keepalived", "halo"]);
    port::port_checks(report, config, &others);
    report.ok(
        "binding the VIP",
        "halo binds with IP_FREEBIND: a backup listens before it holds the VIP (haproxy would need net.ipv4.ip_nonlocal_bind = 1)",
    );
    for (name, pid) in others.iter().filter(|(n, _)| n == "keepalived") {
        keepalived::keepalived_check(report, config, name, *pid, keepalived::keepalived_vrids(*pid));
    }
}

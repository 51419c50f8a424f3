//! `halo host check`: a readiness report, one line per check (OK / WARN / FAIL, what was found,
//! what to do), as text or JSON. Exit 0 when nothing FAILs, 1 otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use halo_config::Config;
use halo_hostnet::bridge::{LinkFacts, Snapshot};
use halo_hostnet::netlink::Netlink;
use ipnet::IpNet;
use serde::Serialize;

use super::sysctl;
use super::{Target, resolve};
use crate::cli::Role;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Works, but worth a look.
    Warn,
    /// Not ready.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: String,
    /// The verdict.
    pub status: Verdict,
    /// What was found.
    pub found: String,
    /// What to do (empty when OK).
    pub fix: String,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, check: impl Into<String>, status: Verdict, found: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Finding { check: check.into(), status, found: found.into(), fix: fix.into() });
    }
    fn ok(&mut self, check: impl Into<String>, found: impl Into<String>) {
        self.add(check, Verdict::Ok, found, "");
    }
}

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
        for frontend in &config.frontends {
            for bind in &frontend.binds {
                port_check(&mut report, *bind, &frontend.name, try_bind(*bind), &others);
            }
        }
    } else {
        match resolve(&snapshot, interface, bridge, config) {
            Ok(target) => {
                bridge_checks(&mut report, &snapshot, &target);
                if let Some(config) = config {
                    config_checks(&mut report, &snapshot, &target, config, &netlink).await;
                }
            }
            Err(e) => report.add("LAN interface", Verdict::Fail, format!("{e:#}"), "name it with --interface"),
        }
        sysctl_checks(&mut report, role);
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
    let failed = report.0.iter().any(|f| f.status == Verdict::Fail);
    if json {
        println!("{}", serde_json::to_string_pretty(&report.0)?);
    } else {
        for f in &report.0 {
            let status = match f.status {
                Verdict::Ok => "OK",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            println!("{status:<4}  {}: {}", f.check, f.found);
            if !f.fix.is_empty() {
                println!("      -> {}", f.fix);
            }
        }
        let count = |v: Verdict| report.0.iter().filter(|f| f.status == v).count();
        println!("{} OK, {} WARN, {} FAIL (role {})", count(Verdict::Ok), count(Verdict::Warn), count(Verdict::Fail), role.name());
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn bridge_checks(report: &mut Report, snapshot: &Snapshot, target: &Target) {
    let apply = "halo host apply (see the plan with --dry-run)";
    let Some(nic) = snapshot.link(&target.nic) else {
        report.add("LAN interface", Verdict::Fail, format!("no interface {}", target.nic), "name it with --interface");
        return;
    };
    let bridge = snapshot.link(&target.bridge);
    match bridge {
        None => report.add("bridge", Verdict::Fail, format!("{} does not exist", target.bridge), apply),
        Some(b) if !b.is_bridge => {
            report.add("bridge", Verdict::Fail, format!("{} exists but is not a bridge", b.name), "choose another name with --bridge")
        }
        Some(b) if !b.up => {
            report.add("bridge", Verdict::Fail, format!("{} exists but is down", b.name), format!("ip link set {} up", b.name))
        }
        Some(b) => report.ok("bridge", format!("{} exists and is up", b.name)),
    }
    let Some(bridge) = bridge.filter(|b| b.is_bridge) else { return };
    if nic.master == Some(bridge.index) {
        report.ok("LAN interface", format!("{} is a port of {}", nic.name, bridge.name));
    } else {
        report.add("LAN interface", Verdict::Fail, format!("{} is not a port of {}", nic.name, bridge.name), apply);
    }
    let on_nic = snapshot.addresses_of(nic.index);
    let on_bridge = snapshot.addresses_of(bridge.index);
    let list =
        |a: &[&halo_hostnet::bridge::AddressFacts]| a.iter().map(|a| format!("{}/{}", a.address, a.prefix)).collect::<Vec<_>>().join(", ");
    if !on_nic.is_empty() {
        report.add("host address", Verdict::Fail, format!("{} is on {}, not on {}", list(&on_nic), nic.name, bridge.name), apply);
    } else if on_bridge.is_empty() {
        report.add(
            "host address",
            Verdict::Fail,
            format!("neither {} nor {} has an address", nic.name, bridge.name),
            "give the bridge the host's address",
        );
    } else {
        report.ok("host address", format!("{} on {}", list(&on_bridge), bridge.name));
    }
    match snapshot.default_route() {
        Some(route) if route.index == bridge.index => {
            report.ok("default route", format!("via {} on {}", route.gateway.map_or("-".into(), |g| g.to_string()), bridge.name))
        }
        Some(route) => {
            let dev = snapshot.link_by_index(route.index).map_or("?".to_string(), |l| l.name.clone());
            report.add("default route", Verdict::Fail, format!("goes via {dev}, not {}", bridge.name), apply);
        }
        None => report.add("default route", Verdict::Warn, "there is no IPv4 default route", "add one via the bridge if the host needs it"),
    }
    if bridge.mac != nic.mac {
        report.add(
            "bridge MAC",
            Verdict::Warn,
            format!("{} has a MAC of its own, not {}'s", bridge.name, nic.name),
            "pin it (halo host apply): otherwise it changes as ports come and go, and ARP caches and DHCP leases go stale",
        );
    } else {
        report.ok("bridge MAC", format!("{} uses {}'s MAC", bridge.name, nic.name));
    }
}

fn sysctl_checks(report: &mut Report, role: Role) {
    let files = sysctl::boot_order(std::path::Path::new("/"));
    for want in sysctl::wants(role) {
        let check = want.key.to_string();
        match halo_hostnet::sysctl::read(want.key) {
            Ok(None) if want.absent_ok => report.ok(check, "absent: br_netfilter is not loaded, so bridged frames skip netfilter anyway"),
            Ok(None) if want.key.starts_with("net.bridge.") => {
                report.add(
                    check,
                    Verdict::Fail,
                    "absent: br_netfilter is not loaded",
                    format!("modprobe br_netfilter, then halo host apply --role {}", role.name()),
                );
            }
            Ok(None) => report.add(check, Verdict::Fail, "absent", "this kernel lacks the key"),
            Ok(Some(value)) if value == want.value => report.ok(check, format!("{value} ({})", want.why)),
            Ok(Some(value)) => report.add(
                check,
                Verdict::Fail,
                format!("{value}, the role {} needs {}: {}", role.name(), want.value, want.why),
                format!("halo host apply --role {}", role.name()),
            ),
            Err(e) => report.add(check, Verdict::Fail, format!("{e:#}"), ""),
        }
        if let Some((file, value)) = sysctl::last_setting(&files, want.key)
            && value != want.value
        {
            report.add(
                format!("{} at boot", want.key),
                Verdict::Warn,
                format!("{} sets it to {value} and is read last", file.display()),
                format!("change that line (halo host apply writes {} and leaves other files alone)", sysctl::DROP_IN),
            );
        }
    }
    if role != Role::Node
        && let Ok(Some(forward)) = halo_hostnet::sysctl::read("net.ipv4.ip_forward")
    {
        let why = match role {
            Role::Lb => "a balancer proxies connections, it does not route packets",
            _ => "bridged guests need no routing; libvirt's NAT networks turn it on themselves",
        };
        report.ok("net.ipv4.ip_forward", format!("{forward} (not required: {why})"));
    }
}

/// The checks of what the configuration asks of this host: its VIPs, its frontend ports, and
/// no keepalived running its virtual routers.
async fn config_checks(report: &mut Report, snapshot: &Snapshot, target: &Target, config: &Config, netlink: &Netlink) {
    let Some(lan) = lan_link(snapshot, target) else { return };
    let subnets = lan_subnets(snapshot, target, lan);
    let held: Vec<IpAddr> = snapshot.addresses.iter().map(|a| a.address).collect();
    for address in config.vrrp.iter().flat_map(|instance| &instance.virtual_addresses).map(IpNet::addr) {
        vip_subnet_check(report, address, &subnets, &lan.name);
        vip_in_use_check(report, address, &held, &lan.name, netlink).await;
    }
    let others = processes_here(&["haproxy", "keepalived", "halo"]);
    for frontend in &config.frontends {
        for bind in &frontend.binds {
            port_check(report, *bind, &frontend.name, try_bind(*bind), &others);
        }
    }
    report.ok(
        "binding the VIP",
        "halo binds with IP_FREEBIND: a backup listens before it holds the VIP (haproxy would need net.ipv4.ip_nonlocal_bind = 1)",
    );
    for (name, pid) in others.iter().filter(|(n, _)| n == "keepalived") {
        keepalived_check(report, config, name, *pid, keepalived_vrids(*pid));
    }
}

/// The link the VIPs live on: the bridge when it is one, else the NIC.
fn lan_link<'s>(snapshot: &'s Snapshot, target: &Target) -> Option<&'s LinkFacts> {
    snapshot.link(&target.bridge).filter(|b| b.is_bridge).or_else(|| snapshot.link(&target.nic))
}

/// The subnets of the LAN: those of the LAN link's addresses and of the NIC's.
fn lan_subnets(snapshot: &Snapshot, target: &Target, lan: &LinkFacts) -> Vec<IpNet> {
    snapshot
        .addresses_of(lan.index)
        .iter()
        .chain(snapshot.link(&target.nic).map(|n| snapshot.addresses_of(n.index)).unwrap_or_default().iter())
        .filter_map(|a| IpNet::new(a.address, a.prefix).ok())
        .collect()
}

/// A VIP must be an address of the LAN's subnet.
fn vip_subnet_check(report: &mut Report, address: IpAddr, subnets: &[IpNet], lan: &str) {
    let check = format!("VIP {address}");
    if !subnets.iter().any(|net| net.contains(&address)) {
        let nets = subnets.iter().map(|n| n.trunc().to_string()).collect::<Vec<_>>().join(", ");
        report.add(check, Verdict::Fail, format!("not in the subnet of {lan} ({nets})"), "pick a free address of the LAN");
    } else {
        report.ok(check, format!("in the subnet of {lan}"));
    }
}

/// A VIP must not be held by another host: one ARP probe on the LAN, unless this host holds it
/// or it is IPv6.
async fn vip_in_use_check(report: &mut Report, address: IpAddr, held: &[IpAddr], lan: &str, netlink: &Netlink) {
    let check = format!("VIP {address} in use");
    let v4 = match needs_probe(address, held) {
        Ok(v4) => v4,
        Err(why) => return report.ok(check, why),
    };
    let link = match netlink.link(lan).await {
        Ok(link) => link,
        Err(e) => return report.add(check, Verdict::Warn, format!("not probed: {e}"), ""),
    };
    match halo_hostnet::arp_probe::probe(&link, v4, Duration::from_secs(1)) {
        Ok(Some(mac)) => report.add(
            check,
            Verdict::Fail,
            format!("answered ARP from {} on {lan}", halo_config::render::mac_text(&mac)),
            "another host holds it: pick a free address, or stop whatever holds it",
        ),
        Ok(None) => report.ok(check, format!("no answer to an ARP probe on {lan} (1 s)")),
        Err(e) => report.add(check, Verdict::Warn, format!("not probed: {e}"), ""),
    }
}

/// The IPv4 address to probe, or why a VIP needs no probe.
fn needs_probe(address: IpAddr, held: &[IpAddr]) -> Result<Ipv4Addr, &'static str> {
    if held.contains(&address) {
        return Err("held by this host");
    }
    match address {
        IpAddr::V4(v4) => Ok(v4),
        IpAddr::V6(_) => Err("IPv6: not probed (duplicate address detection covers it)"),
    }
}

/// A frontend address must be free, from the outcome of binding it; when it is taken, the
/// balancers running here are named.
fn port_check(report: &mut Report, bind: SocketAddr, frontend: &str, bound: std::io::Result<()>, others: &[(String, u32)]) {
    let check = format!("port {bind}");
    match bound {
        Ok(()) => report.ok(check, format!("free (frontend {frontend})")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && others.iter().any(|(n, _)| n == "halo") => {
            report.add(check, Verdict::Warn, "in use, and halo runs here: probably this configuration's daemon", "")
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let who = others.iter().map(|(name, pid)| format!("{name} (pid {pid})")).collect::<Vec<_>>().join(", ");
            let found = if who.is_empty() { "in use".to_string() } else { format!("in use; running here: {who}") };
            report.add(check, Verdict::Fail, found, "stop whatever listens there (haproxy of the classic stack?) before halo run");
        }
        Err(e) => report.add(check, Verdict::Fail, format!("cannot bind: {e}"), ""),
    }
}

/// A keepalived running here must not run one of the configured virtual routers (the same
/// VRID on the same interface); `vrids` are the ones it runs.
fn keepalived_check(report: &mut Report, config: &Config, name: &str, pid: u32, vrids: Vec<(String, u8)>) {
    let same: Vec<(String, u8)> = vrids
        .into_iter()
        .filter(|(interface, vrid)| config.vrrp.iter().any(|v| v.interface == *interface && v.virtual_router_id.get() == *vrid))
        .collect();
    if same.is_empty() {
        report.add(
            format!("{name} (pid {pid})"),
            Verdict::Warn,
            "keepalived runs here, on other virtual routers",
            "make sure it does not manage the same VIP",
        );
    } else {
        let list = same.iter().map(|(i, v)| format!("VRID {v} on {i}")).collect::<Vec<_>>().join(", ");
        report.add(
            format!("{name} (pid {pid})"),
            Verdict::Fail,
            format!("keepalived runs {list}, as halo would"),
            "stop keepalived before halo run (halo import converts its configuration)",
        );
    }
}

/// Whether a frontend address could be bound now (with IP_FREEBIND, as the balancer does).
fn try_bind(address: SocketAddr) -> std::io::Result<()> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if address.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&address.into())?;
    socket.listen(1)
}

/// Processes with these names in this network namespace: (name, pid).
fn processes_here(names: &[&str]) -> Vec<(String, u32)> {
    let ours = std::fs::read_link("/proc/self/ns/net").ok();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?.trim().to_string();
            let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            (names.contains(&comm.as_str()) && netns == ours).then_some((comm, pid))
        })
        .collect();
    found.sort();
    found
}

/// (interface, VRID) of the instances of a running keepalived: its configuration file (`-f`,
/// `--use-file`, else /etc/keepalived/keepalived.conf) read through halo's importer.
fn keepalived_vrids(pid: u32) -> Vec<(String, u8)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
    let mut file = "/etc/keepalived/keepalived.conf".to_string();
    for (i, arg) in args.iter().enumerate() {
        if let Some(value) = arg.strip_prefix("--use-file=") {
            file = value.to_string();
        } else if (arg == "-f" || arg == "--use-file")
            && let Some(value) = args.get(i + 1)
        {
            file = value.clone();
        }
    }
    let path = match std::path::Path::new(&file) {
        p if p.is_absolute() => p.to_path_buf(),
        p => std::path::PathBuf::from(format!("/proc/{pid}/cwd")).join(p),
    };
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    use halo_config::import;
    let file = path.display().to_string();
    let imported = import::import(
        &import::Inputs {
            haproxy: None,
            keepalived: Some(import::Source { file: &file, text: &text }),
            check_script: None,
            config_id: None,
            strict: false,
        },
        &import::FsResolver { root: path.parent().map_or_else(|| std::path::PathBuf::from("/"), std::path::Path::to_path_buf) },
    );
    imported.config.vrrp.iter().map(|v| (v.interface.clone(), v.virtual_router_id.get())).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Error, ErrorKind};

    use super::*;

    const CONFIG: &str = r#"
[[vrrp]]
name = "VI_1"
interface = "br0"
virtual_router_id = 51
priority = 101
virtual_addresses = ["10.9.0.100/24"]
"#;

    fn config() -> Config {
        halo_config::load_str("halo.toml", CONFIG).unwrap().config
    }

    /// The one finding a check made, as (check, verdict, found, fix).
    fn only(report: Report) -> (String, Verdict, String, String) {
        let [f] = <[Finding; 1]>::try_from(report.0).unwrap();
        (f.check, f.status, f.found, f.fix)
    }

    fn subnets() -> Vec<IpNet> {
        vec!["10.9.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()]
    }

    fn port(bound: std::io::Result<()>, others: &[(String, u32)]) -> (String, Verdict, String, String) {
        let mut report = Report::default();
        port_check(&mut report, "10.9.0.100:8443".parse().unwrap(), "apiserver", bound, others);
        only(report)
    }

    fn in_use() -> std::io::Result<()> {
        Err(Error::from(ErrorKind::AddrInUse))
    }

    fn keepalived(vrids: &[(&str, u8)]) -> (String, Verdict, String, String) {
        let mut report = Report::default();
        let vrids = vrids.iter().map(|(i, v)| (i.to_string(), *v)).collect();
        keepalived_check(&mut report, &config(), "keepalived", 42, vrids);
        only(report)
    }

    #[test]
    fn a_vip_in_a_subnet_of_the_lan_is_ok() {
        let mut report = Report::default();
        vip_subnet_check(&mut report, "10.9.0.100".parse().unwrap(), &subnets(), "br0");
        assert_eq!(only(report), ("VIP 10.9.0.100".into(), Verdict::Ok, "in the subnet of br0".into(), String::new()));
    }

    #[test]
    fn a_vip_outside_the_lan_fails_and_lists_its_subnets() {
        let mut report = Report::default();
        vip_subnet_check(&mut report, "10.8.0.100".parse().unwrap(), &subnets(), "br0");
        let (check, status, found, fix) = only(report);
        assert_eq!((check.as_str(), status), ("VIP 10.8.0.100", Verdict::Fail));
        assert_eq!(found, "not in the subnet of br0 (10.9.0.0/24, fd00::/64)");
        assert_eq!(fix, "pick a free address of the LAN");
    }

    #[test]
    fn a_vip_held_by_this_host_is_not_probed() {
        let vip: IpAddr = "10.9.0.100".parse().unwrap();
        assert_eq!(needs_probe(vip, &[vip]), Err("held by this host"));
    }

    #[test]
    fn an_ipv6_vip_is_not_probed() {
        assert_eq!(needs_probe("fd00::100".parse().unwrap(), &[]), Err("IPv6: not probed (duplicate address detection covers it)"));
    }

    #[test]
    fn an_ipv4_vip_held_elsewhere_or_nowhere_is_probed() {
        let held = ["10.9.0.2".parse().unwrap()];
        assert_eq!(needs_probe("10.9.0.100".parse().unwrap(), &held), Ok(Ipv4Addr::new(10, 9, 0, 100)));
    }

    #[test]
    fn a_free_port_is_ok_and_names_its_frontend() {
        assert_eq!(port(Ok(()), &[]), ("port 10.9.0.100:8443".into(), Verdict::Ok, "free (frontend apiserver)".into(), String::new()));
    }

    #[test]
    fn a_port_in_use_while_halo_runs_here_is_only_a_warning() {
        let others = [("haproxy".to_string(), 7), ("halo".to_string(), 8)];
        let (_, status, found, _) = port(in_use(), &others);
        assert_eq!((status, found.as_str()), (Verdict::Warn, "in use, and halo runs here: probably this configuration's daemon"));
    }

    #[test]
    fn a_port_in_use_fails_and_names_the_balancers_running_here() {
        let others = [("haproxy".to_string(), 7), ("keepalived".to_string(), 9)];
        let (_, status, found, fix) = port(in_use(), &others);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "in use; running here: haproxy (pid 7), keepalived (pid 9)"));
        assert_eq!(fix, "stop whatever listens there (haproxy of the classic stack?) before halo run");
    }

    #[test]
    fn a_port_in_use_by_an_unknown_process_fails() {
        let (_, status, found, _) = port(in_use(), &[]);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "in use"));
    }

    #[test]
    fn a_port_that_cannot_be_bound_fails_with_the_reason() {
        let (_, status, found, _) = port(Err(Error::new(ErrorKind::PermissionDenied, "denied")), &[]);
        assert_eq!((status, found.as_str()), (Verdict::Fail, "cannot bind: denied"));
    }

    #[test]
    fn keepalived_running_a_configured_virtual_router_fails() {
        let (check, status, found, fix) = keepalived(&[("br0", 7), ("br0", 51)]);
        assert_eq!((check.as_str(), status), ("keepalived (pid 42)", Verdict::Fail));
        assert_eq!(found, "keepalived runs VRID 51 on br0, as halo would");
        assert_eq!(fix, "stop keepalived before halo run (halo import converts its configuration)");
    }

    #[test]
    fn keepalived_on_other_virtual_routers_is_a_warning() {
        let (check, status, found, _) = keepalived(&[("br0", 7), ("eth1", 51)]);
        assert_eq!((check.as_str(), status), ("keepalived (pid 42)", Verdict::Warn));
        assert_eq!(found, "keepalived runs here, on other virtual routers");
    }
}

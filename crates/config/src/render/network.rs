//! The host's bridge made persistent: facts about the LAN side (NIC, its MAC, addresses, default
//! gateways) -> files for ALT's etcnet, systemd-networkd, or NetworkManager (`nmcli` commands).
//! Pure: `halo render network` and `halo host apply --persist` gather the facts.

use std::net::IpAddr;

use super::write::line;

/// What the persistent configuration describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    /// The bridge (`br0`).
    pub bridge: String,
    /// The LAN NIC enslaved to it.
    pub nic: String,
    /// The NIC's MAC, pinned on the bridge.
    pub mac: [u8; 6],
    /// Host addresses, to live on the bridge.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Default gateways (at most one per family).
    pub gateways: Vec<IpAddr>,
}

/// The formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFormat {
    /// ALT Linux etcnet: `/etc/net/ifaces/<name>/...`.
    Etcnet,
    /// systemd-networkd: `/etc/systemd/network/*.netdev|*.network`.
    Networkd,
    /// NetworkManager: a script of `nmcli` commands.
    Nm,
}

/// One file to write: absolute path and content.
pub type NetworkFile = (String, String);

/// A MAC as `52:54:00:12:34:56`.
pub fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The files for `format`.
pub fn network(facts: &NetworkFacts, format: NetworkFormat) -> Vec<NetworkFile> {
    match format {
        NetworkFormat::Etcnet => etcnet(facts),
        NetworkFormat::Networkd => networkd(facts),
        NetworkFormat::Nm => nm(facts),
    }
}

const HEADER: &str = "# Rendered by halo (`halo render network` / `halo host apply --persist`).";

fn etcnet(f: &NetworkFacts) -> Vec<NetworkFile> {
    let dir = |name: &str| format!("/etc/net/ifaces/{name}");
    let v4: Vec<&(IpAddr, u8)> = f.addresses.iter().filter(|(a, _)| a.is_ipv4()).collect();
    let v6: Vec<&(IpAddr, u8)> = f.addresses.iter().filter(|(a, _)| a.is_ipv6()).collect();
    let mut options = String::new();
    line(&mut options, format_args!("{HEADER}"));
    line(&mut options, format_args!("# The LAN bridge: {} enslaved, the host's addresses here, STP off.", f.nic));
    line(&mut options, format_args!("TYPE=bri\nHOST='{}'\nBOOTPROTO=static\nONBOOT=yes", f.nic));
    line(&mut options, format_args!("CONFIG_IPV4={}", if v4.is_empty() { "no" } else { "yes" }));
    line(&mut options, format_args!("CONFIG_IPV6={}", if v6.is_empty() { "no" } else { "yes" }));
    let mut files = vec![(format!("{}/options", dir(&f.bridge)), options)];
    let mut brctl = String::new();
    line(&mut brctl, format_args!("stp AUTO off\nsetfd AUTO 0"));
    files.push((format!("{}/brctl", dir(&f.bridge)), brctl));
    // The bridge keeps the NIC's MAC (ARP caches and DHCP leases stay valid).
    files.push((format!("{}/iplink", dir(&f.bridge)), format!("address {}\n", mac_text(&f.mac))));
    for (family, list) in [("ipv4", &v4), ("ipv6", &v6)] {
        if !list.is_empty() {
            let text: String = list.iter().map(|(a, p)| format!("{a}/{p}\n")).collect();
            files.push((format!("{}/{family}address", dir(&f.bridge)), text));
        }
        let routes: String =
            f.gateways.iter().filter(|g| g.is_ipv4() == (family == "ipv4")).map(|g| format!("default via {g}\n")).collect();
        if !routes.is_empty() {
            files.push((format!("{}/{family}route", dir(&f.bridge)), routes));
        }
    }
    let mut nic = String::new();
    line(&mut nic, format_args!("{HEADER}"));
    line(&mut nic, format_args!("# A port of {}: no address of its own.", f.bridge));
    line(&mut nic, format_args!("TYPE=eth\nBOOTPROTO=static\nONBOOT=yes\nCONFIG_IPV4=no\nCONFIG_IPV6=no"));
    files.push((format!("{}/options", dir(&f.nic)), nic));
    files
}

fn networkd(f: &NetworkFacts) -> Vec<NetworkFile> {
    let dir = "/etc/systemd/network";
    let mut netdev = String::new();
    line(&mut netdev, format_args!("{HEADER}"));
    line(&mut netdev, format_args!("[NetDev]\nName={}\nKind=bridge\nMACAddress={}", f.bridge, mac_text(&f.mac)));
    line(&mut netdev, format_args!("\n[Bridge]\nSTP=no\nForwardDelaySec=0"));
    let mut bridge = String::new();
    line(&mut bridge, format_args!("{HEADER}"));
    line(&mut bridge, format_args!("[Match]\nName={}\n\n[Network]", f.bridge));
    for (address, prefix) in &f.addresses {
        line(&mut bridge, format_args!("Address={address}/{prefix}"));
    }
    for gateway in &f.gateways {
        line(&mut bridge, format_args!("Gateway={gateway}"));
    }
    let mut port = String::new();
    line(&mut port, format_args!("{HEADER}"));
    line(&mut port, format_args!("[Match]\nName={}\nMACAddress={}\n\n[Network]\nBridge={}", f.nic, mac_text(&f.mac), f.bridge));
    vec![
        (format!("{dir}/{}.netdev", f.bridge), netdev),
        (format!("{dir}/{}.network", f.bridge), bridge),
        (format!("{dir}/{}.network", f.nic), port),
    ]
}

fn nm(f: &NetworkFacts) -> Vec<NetworkFile> {
    let mut script = String::new();
    line(&mut script, format_args!("#!/bin/sh\n{HEADER}"));
    line(&mut script, format_args!("# NetworkManager: bridge {} with {} as its port; run once as root.", f.bridge, f.nic));
    line(&mut script, format_args!("set -e"));
    let v4: Vec<String> = f.addresses.iter().filter(|(a, _)| a.is_ipv4()).map(|(a, p)| format!("{a}/{p}")).collect();
    let v6: Vec<String> = f.addresses.iter().filter(|(a, _)| a.is_ipv6()).map(|(a, p)| format!("{a}/{p}")).collect();
    let mut add = format!(
        "nmcli connection add type bridge con-name {b} ifname {b} bridge.stp no bridge.forward-delay 0 bridge.mac-address {mac}",
        b = f.bridge,
        mac = mac_text(&f.mac)
    );
    for (family, list) in [("ipv4", &v4), ("ipv6", &v6)] {
        if list.is_empty() {
            add.push_str(&format!(" {family}.method {}", if family == "ipv4" { "disabled" } else { "ignore" }));
        } else {
            add.push_str(&format!(" {family}.method manual {family}.addresses {}", list.join(",")));
            if let Some(g) = f.gateways.iter().find(|g| g.is_ipv4() == (family == "ipv4")) {
                add.push_str(&format!(" {family}.gateway {g}"));
            }
        }
    }
    line(&mut script, format_args!("{add}"));
    line(
        &mut script,
        format_args!(
            "nmcli connection add type ethernet con-name {b}-port-{n} ifname {n} slave-type bridge master {b}",
            b = f.bridge,
            n = f.nic
        ),
    );
    line(&mut script, format_args!("nmcli connection up {}", f.bridge));
    vec![(format!("/etc/halo/network/nm-{}.sh", f.bridge), script)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NetworkFacts {
        NetworkFacts {
            bridge: "br0".into(),
            nic: "eth0".into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            addresses: vec![("10.150.0.4".parse().expect("ip"), 24)],
            gateways: vec!["10.150.0.1".parse().expect("ip")],
        }
    }

    #[test]
    fn networkd_pins_the_mac_and_moves_the_address() {
        let files = network(&facts(), NetworkFormat::Networkd);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/etc/systemd/network/br0.netdev", "/etc/systemd/network/br0.network", "/etc/systemd/network/eth0.network"]);
        assert!(files[0].1.contains("MACAddress=52:54:00:12:34:56") && files[0].1.contains("STP=no"));
        assert!(files[1].1.contains("Address=10.150.0.4/24\nGateway=10.150.0.1\n"));
        assert!(files[2].1.contains("Bridge=br0") && !files[2].1.contains("\nAddress="));
    }

    #[test]
    fn nm_is_one_script_of_nmcli_commands() {
        let files = network(&facts(), NetworkFormat::Nm);
        assert_eq!(files.len(), 1);
        assert!(files[0].1.contains("ipv4.method manual ipv4.addresses 10.150.0.4/24 ipv4.gateway 10.150.0.1 ipv6.method ignore"));
        assert!(files[0].1.contains("slave-type bridge master br0"));
    }
}

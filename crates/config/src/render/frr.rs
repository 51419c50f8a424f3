//! The FRR configuration of a balancer that announces addresses by BGP: prefix lists and a
//! route-map limited to halo's `[[announce]]` addresses, the redistribution of connected routes
//! through it (halo adds an address to announce it, removes it to withdraw), the neighbours of
//! `[bgp]` with a BFD profile, and, as comments, what the upstream router needs.

use super::Rendered;
use super::write::line;
use ipnet::IpNet;

use crate::model::Config;

/// BFD: 100 ms intervals, 3 missed packets, so a dead balancer is gone within about 300 ms.
const BFD_INTERVAL_MS: u32 = 100;
const BFD_MULTIPLIER: u32 = 3;

/// `frr.conf` for this host. Without `[bgp]` the text says what is missing, and a loss says so.
pub fn frr(config: &Config) -> Rendered {
    let mut out = String::new();
    let mut losses = Vec::new();
    line(&mut out, format_args!("! FRR configuration written by `halo render frr` for the addresses halo announces."));
    line(&mut out, format_args!("! halo adds an [[announce]] address to its interface while its trackers pass and removes it"));
    line(&mut out, format_args!("! otherwise; zebra sees a connected route, bgpd redistributes it through HALO-ANNOUNCE."));
    line(&mut out, format_args!("frr defaults datacenter"));
    prefix_lists(&mut out, config);
    let Some(bgp) = &config.bgp else {
        losses.push("no [bgp] section: the BGP process and neighbours are left out".to_string());
        return Rendered { text: out, losses };
    };
    if bgp.neighbors.iter().any(|n| n.bfd) {
        line(
            &mut out,
            format_args!(
                "bfd\n profile halo\n  detect-multiplier {BFD_MULTIPLIER}\n  receive-interval {BFD_INTERVAL_MS}\n  transmit-interval {BFD_INTERVAL_MS}\n exit\nexit\n!"
            ),
        );
    }
    line(&mut out, format_args!("router bgp {}", bgp.asn));
    if let Some(id) = bgp.router_id {
        line(&mut out, format_args!(" bgp router-id {id}"));
    }
    // Each neighbour is activated in its own family only: an IPv6 session carries no IPv4
    // routes, and the other way round.
    line(&mut out, format_args!(" no bgp default ipv4-unicast"));
    // Fast (re)connection after a restart; the hold time matters only without BFD.
    line(&mut out, format_args!(" timers bgp 3 9"));
    for n in &bgp.neighbors {
        line(&mut out, format_args!(" neighbor {} remote-as {}", n.address, n.asn));
        line(&mut out, format_args!(" neighbor {} timers connect 2", n.address));
        if n.bfd {
            line(&mut out, format_args!(" neighbor {} bfd profile halo", n.address));
        }
    }
    for (family, v4) in [("ipv4", true), ("ipv6", false)] {
        let neighbors: Vec<_> = bgp.neighbors.iter().filter(|n| n.address.is_ipv4() == v4).collect();
        let announced = config.announce.iter().any(|a| a.address.addr().is_ipv4() == v4);
        if !announced {
            continue;
        }
        if neighbors.is_empty() {
            losses.push(format!("{family} addresses are announced but no [bgp] neighbour is {family}: they reach no router"));
            continue;
        }
        line(&mut out, format_args!(" address-family {family} unicast"));
        line(&mut out, format_args!("  redistribute connected route-map HALO-ANNOUNCE"));
        for n in neighbors {
            line(&mut out, format_args!("  neighbor {} activate", n.address));
            line(&mut out, format_args!("  neighbor {} route-map HALO-ANNOUNCE out", n.address));
            // A balancer needs no routes from the fabric to announce its own addresses.
            line(&mut out, format_args!("  neighbor {} route-map HALO-NOTHING in", n.address));
        }
        line(&mut out, format_args!(" exit-address-family"));
    }
    line(&mut out, format_args!("exit\n!"));
    upstream_hints(&mut out, config);
    Rendered { text: out, losses }
}

fn prefix_lists(out: &mut String, config: &Config) {
    for (i, a) in config.announce.iter().enumerate() {
        let (list, net) = match a.address {
            IpNet::V4(_) => ("ip prefix-list HALO-V4", a.address),
            IpNet::V6(_) => ("ipv6 prefix-list HALO-V6", a.address),
        };
        line(out, format_args!("{list} seq {} permit {net}", (i + 1) * 10));
    }
    let v4 = config.announce.iter().any(|a| a.address.addr().is_ipv4());
    let v6 = config.announce.iter().any(|a| a.address.addr().is_ipv6());
    if v4 {
        line(out, format_args!("route-map HALO-ANNOUNCE permit 10\n match ip address prefix-list HALO-V4\nexit"));
    }
    if v6 {
        line(out, format_args!("route-map HALO-ANNOUNCE permit 20\n match ipv6 address prefix-list HALO-V6\nexit"));
    }
    line(out, format_args!("route-map HALO-ANNOUNCE deny 100\nexit\nroute-map HALO-NOTHING deny 10\nexit\n!"));
}

/// What the upstream router needs, as comments: ECMP over the balancers, L4 hashing, BFD.
fn upstream_hints(out: &mut String, config: &Config) {
    let asn = config.bgp.as_ref().map_or(0, |b| b.asn);
    line(out, format_args!("! On the upstream router (FRR syntax), for every balancer:"));
    line(
        out,
        format_args!("!   router bgp <its asn>\n!    neighbor <balancer> remote-as {asn}\n!    neighbor <balancer> bfd profile halo"),
    );
    line(out, format_args!("!    bgp bestpath as-path multipath-relax   ! when the balancers are in different ASes"));
    line(
        out,
        format_args!(
            "!    address-family ipv4 unicast (and ipv6 unicast)\n!     maximum-paths 16        ! ECMP over all balancers (maximum-paths ibgp 16 for iBGP)"
        ),
    );
    line(
        out,
        format_args!("!   sysctl net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1   ! hash on ports too (L4)"),
    );
    line(out, format_args!("!   a resilient next-hop group keeps the other balancers' flows in place when one withdraws"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::load_str("t.toml", text).expect("valid").config
    }

    const BASE: &str = "[[tracker]]\nname = \"lb\"\nkind = \"balancer\"\nfrontend = \"api\"\n\n[[frontend]]\nname = \"api\"\nbind = [\"0.0.0.0:8443\"]\nbackend = \"api\"\n\n[[backend]]\nname = \"api\"\n[[backend.server]]\nname = \"m1\"\naddress = \"10.1.0.11:6443\"\n\n[[announce]]\nname = \"api\"\naddress = \"10.0.0.100/32\"\ntrack = [\"lb\"]\n\n[[announce]]\nname = \"api6\"\naddress = \"fd00::100\"\ntrack = [\"lb\"]\n";

    #[test]
    fn only_halos_addresses_are_announced_to_each_neighbour_with_bfd() {
        let text = format!(
            "{BASE}\n[bgp]\nasn = 65001\nrouter_id = \"172.31.1.11\"\n[[bgp.neighbor]]\naddress = \"172.31.1.1\"\nasn = 65000\n[[bgp.neighbor]]\naddress = \"fd31::1\"\nasn = 65000\nbfd = false\n"
        );
        let r = frr(&config(&text));
        assert!(r.losses.is_empty(), "{:?}", r.losses);
        for expected in [
            "ip prefix-list HALO-V4 seq 10 permit 10.0.0.100/32",
            "ipv6 prefix-list HALO-V6 seq 20 permit fd00::100/128",
            "router bgp 65001",
            " bgp router-id 172.31.1.11",
            " neighbor 172.31.1.1 remote-as 65000",
            " neighbor 172.31.1.1 bfd profile halo",
            "  redistribute connected route-map HALO-ANNOUNCE",
            "  neighbor 172.31.1.1 route-map HALO-ANNOUNCE out",
            "  neighbor fd31::1 route-map HALO-ANNOUNCE out",
            "  receive-interval 100",
        ] {
            assert!(r.text.lines().any(|l| l == expected), "missing {expected:?} in\n{}", r.text);
        }
        assert!(!r.text.contains("neighbor fd31::1 bfd"), "{}", r.text);
    }

    #[test]
    fn an_announced_family_without_a_neighbour_of_it_is_a_loss_and_sessions_carry_their_own_family() {
        let text = format!("{BASE}\n[bgp]\nasn = 65001\n[[bgp.neighbor]]\naddress = \"172.31.1.1\"\nasn = 65000\n");
        let r = frr(&config(&text));
        assert!(r.losses.iter().any(|l| l.starts_with("ipv6 addresses are announced but no [bgp] neighbour is ipv6")), "{:?}", r.losses);
        assert!(r.text.lines().any(|l| l == " no bgp default ipv4-unicast"), "{}", r.text);
    }

    #[test]
    fn without_bgp_the_policy_alone_is_written_and_the_loss_said() {
        let r = frr(&config(BASE));
        assert!(r.text.contains("route-map HALO-ANNOUNCE permit 10"));
        assert!(!r.text.contains("router bgp"));
        assert_eq!(r.losses.len(), 1);
    }
}

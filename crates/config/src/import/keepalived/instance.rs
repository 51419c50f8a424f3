//! One `vrrp_instance` block -> a VRRP instance, with the trackers it defines on the way
//! (`track_interface`) and the weights it overrides (`track_script`).

use std::net::IpAddr;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

use super::parse::Node;
use super::{Globals, argv, integer, seconds};
use crate::import::Sink;
use crate::model::{ChecksumMode, Gratuitous, InitialState, Notify, Tracker, TrackerKind, VrrpInstance};
use crate::validate::parse_virtual_address;

pub(super) fn vrrp_instance(node: &Node, g: &Globals, trackers: &mut Vec<Tracker>, sink: &mut Sink) -> Option<VrrpInstance> {
    let name = node.arg(1).to_string();
    let mut i = Partial { version: g.version, gratuitous: g.gratuitous.clone(), priority: 100, ..Partial::default() };
    for c in node.children() {
        instance_directive(&name, c, &mut i, trackers, sink);
    }
    let version = Version::new(i.version).map_err(|e| sink.error(&node.file, node.line, e.to_string(), "")).ok()?;
    let Some(vrid) = i.vrid else {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no virtual_router_id"), "");
        return None;
    };
    let Some(interface) = i.interface.clone() else {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no interface"), "");
        return None;
    };
    let advert = i.advert.unwrap_or(Duration::from_secs(1));
    let advert_interval = AdvertInterval::new(version, advert)
        .map_err(|e| sink.error(&node.file, i.advert_line.unwrap_or(node.line), e.to_string(), ""))
        .ok()?;
    let priority = Priority::new(i.priority).map_err(|e| sink.error(&node.file, node.line, e.to_string(), "")).ok()?;
    if i.addresses.is_empty() {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no virtual_ipaddress"), "");
        return None;
    }
    if i.auth.is_some() && version == Version::V3 {
        sink.error(&node.file, node.line, "authentication with VRRP version 3 (keepalived ignores it)", "");
        return None;
    }
    Some(VrrpInstance {
        name,
        interface,
        virtual_router_id: vrid,
        priority,
        version,
        advert_interval,
        preempt: i.preempt,
        preempt_delay: i.preempt_delay,
        initial_state: i.state,
        virtual_addresses: i.addresses,
        auth_password: i.auth,
        unicast_source: i.unicast_source,
        unicast_peers: i.unicast_peers,
        gratuitous: i.gratuitous,
        checksum: i.checksum,
        virtual_mac: i.vmac,
        accept: i.accept,
        track: i.track,
        notify: i.notify,
    })
}

/// An instance while its directives are read.
#[derive(Debug)]
struct Partial {
    version: i64,
    vrid: Option<Vrid>,
    interface: Option<String>,
    priority: i64,
    advert: Option<Duration>,
    advert_line: Option<usize>,
    preempt: bool,
    preempt_delay: Duration,
    state: InitialState,
    addresses: Vec<ipnet::IpNet>,
    auth: Option<String>,
    unicast_source: Option<IpAddr>,
    unicast_peers: Vec<IpAddr>,
    gratuitous: Gratuitous,
    checksum: ChecksumMode,
    vmac: bool,
    accept: bool,
    track: Vec<String>,
    notify: Notify,
}

impl Default for Partial {
    fn default() -> Self {
        Self {
            version: 2,
            vrid: None,
            interface: None,
            priority: 100,
            advert: None,
            advert_line: None,
            preempt: true,
            preempt_delay: Duration::ZERO,
            state: InitialState::Backup,
            addresses: Vec::new(),
            auth: None,
            unicast_source: None,
            unicast_peers: Vec::new(),
            gratuitous: Gratuitous::default(),
            checksum: ChecksumMode::PseudoHeader,
            vmac: false,
            accept: true,
            track: Vec::new(),
            notify: Notify::default(),
        }
    }
}

fn instance_directive(name: &str, c: &Node, i: &mut Partial, trackers: &mut Vec<Tracker>, sink: &mut Sink) {
    let (file, line) = (c.file.as_str(), c.line);
    match c.keyword() {
        "state" => match c.arg(1) {
            "MASTER" => i.state = InitialState::Master,
            "BACKUP" => i.state = InitialState::Backup,
            other => sink.error(file, line, format!("unknown state `{other}`"), "MASTER or BACKUP"),
        },
        "interface" => i.interface = Some(c.arg(1).to_string()),
        "virtual_router_id" => {
            i.vrid = integer(c, 1, sink).and_then(|v| Vrid::new(v).map_err(|e| sink.error(file, line, e.to_string(), "")).ok())
        }
        "priority" => i.priority = integer(c, 1, sink).unwrap_or(100),
        "advert_int" => (i.advert, i.advert_line) = (seconds(c, 1, sink), Some(line)),
        "version" => i.version = integer(c, 1, sink).unwrap_or(i.version),
        "native_ipv6" => i.version = 3,
        "nopreempt" => i.preempt = false,
        "preempt" => i.preempt = true,
        "preempt_delay" => i.preempt_delay = seconds(c, 1, sink).unwrap_or_default(),
        "authentication" => authentication(c, i, sink),
        "virtual_ipaddress" => virtual_ipaddress(c, i, sink),
        "unicast_src_ip" => i.unicast_source = address(c, c.arg(1), sink),
        "unicast_peer" => {
            for p in c.children() {
                if p.words.len() > 1 {
                    sink.unmapped(&p.file, p.line, &p.words[1..].join(" "), "halo checks the TTL of unicast adverts itself");
                }
                i.unicast_peers.extend(address(p, p.keyword(), sink));
            }
        }
        "track_script" => track_script(name, c, i, trackers, sink),
        "track_interface" => track_interface(c, i, trackers, sink),
        "track_file" => {
            for t in c.children() {
                i.track.push(t.keyword().to_string());
            }
        }
        "notify_master" => i.notify.master = argv(c, 1, sink),
        "notify_backup" => i.notify.backup = argv(c, 1, sink),
        "notify_fault" => i.notify.fault = argv(c, 1, sink),
        "notify_stop" => i.notify.stop = argv(c, 1, sink),
        "notify" => i.notify.change = argv(c, 1, sink),
        "garp_master_delay" => i.gratuitous.delay = seconds(c, 1, sink).unwrap_or(i.gratuitous.delay),
        "garp_master_repeat" => i.gratuitous.repeat = integer(c, 1, sink).map_or(i.gratuitous.repeat, |r| r.clamp(1, 100) as u32),
        "garp_master_refresh" => i.gratuitous.refresh = seconds(c, 1, sink).filter(|d| !d.is_zero()),
        "garp_master_refresh_repeat" => i.gratuitous.refresh_repeat = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 100) as u32),
        "use_vmac" => {
            i.vmac = true;
            if c.words.len() > 1 {
                sink.warn(file, line, "use_vmac: the interface name and MAC are chosen by halo (vrrp.<id>, 00-00-5E-00-01-<id>)", "");
            }
        }
        "vmac_xmit_base" => {}
        "accept" => i.accept = true,
        "no_accept" => i.accept = false,
        "old_unicast_checksum" => i.checksum = ChecksumMode::AsV2,
        other => sink.unmapped(file, line, other, ""),
    }
}

fn address(node: &Node, text: &str, sink: &mut Sink) -> Option<IpAddr> {
    let value = text.parse().ok();
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{text}` is not an IP address"), "");
    }
    value
}

fn authentication(c: &Node, i: &mut Partial, sink: &mut Sink) {
    let mut kind = None;
    for a in c.children() {
        match a.keyword() {
            "auth_type" => kind = Some((a.arg(1).to_string(), a.line)),
            "auth_pass" => i.auth = Some(a.arg(1).chars().take(8).collect()),
            other => sink.unmapped(&a.file, a.line, other, ""),
        }
    }
    match kind {
        Some((k, line)) if k == "PASS" => sink.warn(
            &c.file,
            line,
            "auth_type PASS sends the password in clear text in every advert: it stops accidents, not attacks",
            "imported as auth_password (VRRPv2); VRRPv3 drops authentication altogether (RFC 5798 §9)",
        ),
        Some((k, line)) => {
            sink.error(
                &c.file,
                line,
                format!("auth_type {k} is not supported"),
                "halo supports PASS (VRRPv2) only; AH was removed from VRRPv3",
            );
            i.auth = None;
        }
        None => sink.error(&c.file, c.line, "authentication without auth_type", ""),
    }
}

/// `ADDR[/PREFIX] [brd X] [dev IF] [label L] [scope S]` per line.
fn virtual_ipaddress(c: &Node, i: &mut Partial, sink: &mut Sink) {
    for a in c.children() {
        let net = parse_virtual_address(a.keyword());
        match net {
            Some(net) => i.addresses.push(net),
            None => sink.error(&a.file, a.line, format!("`{}` is not an address", a.keyword()), ""),
        }
        // The broadcast address halo (and the kernel) derive from the prefix.
        let derived = match net {
            Some(ipnet::IpNet::V4(v4)) if v4.prefix_len() < 31 => Some(v4.broadcast().to_string()),
            _ => None,
        };
        let mut rest = a.words.iter().skip(1);
        while let Some(option) = rest.next() {
            let value = rest.next().map_or("", String::as_str);
            match option.as_str() {
                "dev" if Some(value) == i.interface.as_deref() => {}
                "brd" if Some(value) == derived.as_deref() || value == "+" => {}
                other => sink.unmapped(
                    &a.file,
                    a.line,
                    &format!("virtual_ipaddress option {other} {value}"),
                    "halo adds the address to the instance's interface",
                ),
            }
        }
    }
}

fn track_script(instance: &str, c: &Node, i: &mut Partial, trackers: &mut [Tracker], sink: &mut Sink) {
    for t in c.children() {
        let name = t.keyword();
        i.track.push(name.to_string());
        if t.arg(1) == "weight" {
            let weight = integer(t, 2, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32);
            match trackers.iter_mut().find(|tr| tr.name == name) {
                Some(tracker) => {
                    if tracker.weight != weight {
                        sink.warn(
                            &t.file,
                            t.line,
                            format!("vrrp_instance `{instance}` overrides the weight of `{name}`"),
                            "halo keeps one weight per tracker: the override is applied to the tracker",
                        );
                    }
                    tracker.weight = weight;
                }
                None => sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), ""),
            }
        } else if !trackers.iter().any(|tr| tr.name == name) {
            sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), "");
        }
    }
}

fn track_interface(c: &Node, i: &mut Partial, trackers: &mut Vec<Tracker>, sink: &mut Sink) {
    for t in c.children() {
        let interface = t.keyword().to_string();
        if i.interface.as_deref() == Some(interface.as_str()) {
            sink.warn(
                &t.file,
                t.line,
                format!("track_interface {interface} is the instance's own interface: keepalived ignores it, and so does the import"),
                "the instance goes to FAULT when its own link is down",
            );
            continue;
        }
        let weight = if t.arg(1) == "weight" { integer(t, 2, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32) } else { None };
        let name = format!("link-{interface}");
        if !trackers.iter().any(|tr| tr.name == name) {
            trackers.push(Tracker { name: name.clone(), weight, fall: 1, rise: 1, kind: TrackerKind::Interface { interface } });
        }
        i.track.push(name);
    }
}

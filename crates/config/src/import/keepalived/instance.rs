//! One `vrrp_instance` block -> a VRRP instance, with the trackers it defines on the way
//! (`track_interface`) and the weights it overrides (`track_script`).

use std::net::IpAddr;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};

use super::parse::Node;
use super::{Globals, KeepalivedImport, argv, integer, link_tracker, seconds};
use crate::import::Sink;
use crate::import::lines::Resolver;
use crate::model::{ChecksumMode, Gratuitous, InitialState, Notify, Tracker, VrrpInstance};
use crate::validate::parse_virtual_address;

pub(super) fn vrrp_instance(
    node: &Node,
    g: &Globals,
    out: &mut KeepalivedImport,
    (resolver, drops_weights): (&dyn Resolver, bool),
    sink: &mut Sink,
) -> Option<VrrpInstance> {
    let name = node.arg(1).to_string();
    let mut i = Partial { version: g.version, gratuitous: g.gratuitous.clone(), priority: 100, ..Partial::default() };
    let mut context = Context { trackers: &mut out.trackers, disabled: &out.disabled_scripts, resolver, drops_weights };
    for c in node.children() {
        instance_directive(&name, c, &mut i, &mut context, sink);
    }
    address_families(&name, node, &mut i, sink);
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
    run_time_corrections(&name, node, &mut i, &out.trackers, sink);
    if i.addresses.is_empty() {
        sink.error(&node.file, node.line, format!("vrrp_instance `{name}` has no virtual_ipaddress"), "");
        return None;
    }
    if i.auth.is_some() && version == Version::V3 {
        sink.warn(
            &node.file,
            node.line,
            format!("vrrp_instance `{name}`: authentication with VRRP version 3 is ignored by keepalived, and not imported"),
            "VRRPv3 has no authentication (RFC 5798 §9)",
        );
        i.auth = None;
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
        excluded_addresses: i.excluded,
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
    /// Lines of the virtual addresses, in the same order.
    address_lines: Vec<usize>,
    excluded: Vec<ipnet::IpNet>,
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
            address_lines: Vec::new(),
            excluded: Vec::new(),
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

/// What an instance's directives read and extend besides the instance.
struct Context<'a> {
    trackers: &'a mut Vec<Tracker>,
    /// Scripts keepalived disables: tracking them is skipped.
    disabled: &'a [String],
    resolver: &'a dyn Resolver,
    /// A member of a sync group without tracking weight: keepalived ignores its weighted
    /// trackers (the sync group import drops them, with a warning), so their weights are not
    /// applied to the shared trackers.
    drops_weights: bool,
}

/// One directive of a `vrrp_instance` block, into the instance being read.
fn instance_directive(name: &str, c: &Node, i: &mut Partial, cx: &mut Context<'_>, sink: &mut Sink) {
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
        "virtual_ipaddress_excluded" => excluded_addresses(c, i, sink),
        "unicast_src_ip" => i.unicast_source = address(c, c.arg(1), sink),
        "unicast_peer" => unicast_peers(c, i, sink),
        "mcast_src_ip" => multicast_source(c, sink),
        "track_script" => track_script(name, c, i, cx, sink),
        "track_interface" => track_interface(c, i, cx.trackers, sink),
        "track_process" => track_process(name, c, i, cx.trackers, sink),
        "track_file" => i.track.extend(c.children().iter().map(|t| t.keyword().to_string())),
        "notify_master" => i.notify.master = argv(c, 1, cx.resolver, sink),
        "notify_backup" => i.notify.backup = argv(c, 1, cx.resolver, sink),
        "notify_fault" => i.notify.fault = argv(c, 1, cx.resolver, sink),
        "notify_stop" => i.notify.stop = argv(c, 1, cx.resolver, sink),
        "notify" => i.notify.change = argv(c, 1, cx.resolver, sink),
        "garp_master_delay" => i.gratuitous.delay = seconds(c, 1, sink).unwrap_or(i.gratuitous.delay),
        "garp_master_repeat" => i.gratuitous.repeat = integer(c, 1, sink).map_or(i.gratuitous.repeat, |r| r.clamp(1, 100) as u32),
        "garp_master_refresh" => i.gratuitous.refresh = seconds(c, 1, sink).filter(|d| !d.is_zero()),
        "garp_master_refresh_repeat" => i.gratuitous.refresh_repeat = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 100) as u32),
        "use_vmac" => use_vmac(c, i, sink),
        "vmac_xmit_base" => {}
        "accept" => i.accept = true,
        "no_accept" => i.accept = false,
        "old_unicast_checksum" => i.checksum = ChecksumMode::AsV2,
        other => sink.unmapped(file, line, other, ""),
    }
}

/// `virtual_ipaddress_excluded`: addresses held while master but not listed in adverts.
fn excluded_addresses(c: &Node, i: &mut Partial, sink: &mut Sink) {
    for a in c.children() {
        match parse_virtual_address(a.keyword()) {
            Some(net) => i.excluded.push(net),
            None => sink.error(&a.file, a.line, format!("`{}` is not an address", a.keyword()), ""),
        }
    }
}

/// `unicast_peer`: the other routers' addresses; what follows an address on its line is not
/// imported.
fn unicast_peers(c: &Node, i: &mut Partial, sink: &mut Sink) {
    for p in c.children() {
        if p.words.len() > 1 {
            sink.unmapped(&p.file, p.line, &p.words[1..].join(" "), "halo checks the TTL of unicast adverts itself");
        }
        i.unicast_peers.extend(address(p, p.keyword(), sink));
    }
}

/// `mcast_src_ip`: not imported, with a warning (halo sends from the interface's address).
fn multicast_source(c: &Node, sink: &mut Sink) {
    sink.warn(
        &c.file,
        c.line,
        format!("`mcast_src_ip {}` is not imported: halo sends multicast adverts from the interface's primary address", c.arg(1)),
        "peers accept adverts from any source on the segment; the address matters only for unicast (unicast_src_ip)",
    );
}

/// `track_process`: tracked when the process check was imported as a tracker, otherwise left
/// out with a warning.
fn track_process(name: &str, c: &Node, i: &mut Partial, trackers: &[Tracker], sink: &mut Sink) {
    for t in c.children() {
        if trackers.iter().any(|tr| tr.name == t.keyword()) {
            i.track.push(t.keyword().to_string());
        } else {
            sink.warn(
                &t.file,
                t.line,
                format!("vrrp_instance `{name}` tracks the process check `{}`, which is not imported: not tracked", t.keyword()),
                "",
            );
        }
    }
}

/// `use_vmac`: the virtual MAC; an interface name or MAC given with it is halo's to choose.
fn use_vmac(c: &Node, i: &mut Partial, sink: &mut Sink) {
    i.vmac = true;
    if c.words.len() > 1 {
        sink.warn(&c.file, c.line, "use_vmac: the interface name and MAC are chosen by halo (vrrp.<id>, 00-00-5E-00-01-<id>)", "");
    }
}

/// An address; keepalived also takes one written with a prefix (`192.168.0.91/24`), whose
/// prefix means nothing there: dropped with a warning.
fn address(node: &Node, text: &str, sink: &mut Sink) -> Option<IpAddr> {
    if let Some((bare, prefix)) = text.split_once('/')
        && let Ok(addr) = bare.parse::<IpAddr>()
    {
        sink.warn(
            &node.file,
            node.line,
            format!("`{text}`: the prefix /{prefix} of a unicast address means nothing; imported as {addr}"),
            "",
        );
        return Some(addr);
    }
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
            "auth_pass" => i.auth = Some(auth_pass(a, sink)),
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
            Some(net) => {
                i.addresses.push(net);
                i.address_lines.push(a.line);
            }
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

fn track_script(instance: &str, c: &Node, i: &mut Partial, cx: &mut Context<'_>, sink: &mut Sink) {
    let trackers = &mut *cx.trackers;
    for t in c.children() {
        let name = t.keyword();
        if cx.disabled.iter().any(|d| d == name) {
            sink.warn(&t.file, t.line, format!("vrrp_instance `{instance}` tracks `{name}`, which keepalived disables: not tracked"), "");
            continue;
        }
        i.track.push(name.to_string());
        if t.arg(1) == "weight" && cx.drops_weights {
            if !trackers.iter().any(|tr| tr.name == name) {
                sink.error(&t.file, t.line, format!("track_script `{name}` is not defined"), "");
            }
        } else if t.arg(1) == "weight" {
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
        i.track.push(link_tracker(trackers, &interface, weight));
    }
}

/// keepalived sends the first 8 bytes of `auth_pass` (any bytes, UTF-8 included) and ignores the
/// rest: halo keeps the same bytes so that the two interoperate. A cut inside a multi-byte
/// character cannot be a text value: the cut then falls before that character, with a warning.
fn auth_pass(a: &Node, sink: &mut Sink) -> String {
    let pass = a.arg(1);
    if pass.len() <= 8 {
        return pass.to_string();
    }
    let mut end = 8;
    while !pass.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &pass[..end];
    if end == 8 {
        sink.warn(&a.file, a.line, format!("auth_pass is {} bytes: keepalived sends the first 8, and so does halo", pass.len()), "");
    } else {
        sink.warn(
            &a.file,
            a.line,
            format!("auth_pass is {} bytes and its 8th byte is inside a character: halo keeps {end} bytes, keepalived sends 8", pass.len()),
            "peers compare the bytes: choose a password of at most 8 bytes (ASCII) on every router",
        );
    }
    kept.to_string()
}

/// One family per instance, as keepalived requires; IPv6 addresses need VRRPv3, so a version 2
/// instance with IPv6 addresses runs as version 3, as keepalived runs it.
fn address_families(name: &str, node: &Node, i: &mut Partial, sink: &mut Sink) {
    let Some(first) = i.addresses.first().copied() else { return };
    for (net, line) in i.addresses.iter().zip(i.address_lines.iter().copied().chain(std::iter::repeat(node.line))) {
        if net.addr().is_ipv4() != first.addr().is_ipv4() {
            sink.error(
                &node.file,
                line,
                format!("vrrp_instance `{name}`: {net} is not of the family of its first address (keepalived refuses it, and ignores it when it runs)"),
                "put it in virtual_ipaddress_excluded (held, not advertised), or in a second instance for that family",
            );
        }
    }
    if first.addr().is_ipv6() && i.vmac {
        sink.warn(
            &node.file,
            node.line,
            format!("vrrp_instance `{name}`: use_vmac is not imported for an IPv6 instance: it runs on {} itself", i.interface.as_deref().unwrap_or("its interface")),
            "halo cannot yet send IPv6 adverts from a virtual-MAC interface; neighbours learn the new master from its unsolicited neighbour advertisements",
        );
        i.vmac = false;
    }
    if first.addr().is_ipv6() && i.version == 2 {
        sink.warn(
            &node.file,
            node.line,
            format!("vrrp_instance `{name}` has IPv6 addresses: VRRPv2 carries IPv4 only, so it runs as version 3"),
            "keepalived runs such an instance as version 3 too",
        );
        i.version = 3;
    }
}

/// What keepalived changes when it runs a file whose `--config-test` complains: `nopreempt`
/// with `state MASTER` still preempts, and an address owner (priority 255) ignores tracker
/// weights. halo imports what keepalived runs, and says so.
fn run_time_corrections(name: &str, node: &Node, i: &mut Partial, trackers: &[Tracker], sink: &mut Sink) {
    if !i.preempt && i.state == InitialState::Master {
        sink.warn(
            &node.file,
            node.line,
            format!("vrrp_instance `{name}`: `nopreempt` with `state MASTER`: keepalived ignores nopreempt then (its config test says so); imported with preemption"),
            "for a node that never takes the VIP back, write `state BACKUP` with `nopreempt` on every node",
        );
        i.preempt = true;
    }
    if i.priority == 255 {
        let weighted: Vec<String> =
            i.track.iter().filter(|t| trackers.iter().any(|tr| &tr.name == *t && tr.weight.is_some())).cloned().collect();
        if !weighted.is_empty() {
            sink.warn(
                &node.file,
                node.line,
                format!(
                    "vrrp_instance `{name}` has priority 255 (address owner): keepalived ignores the weights of {}; not tracked",
                    weighted.join(", ")
                ),
                "give it a priority below 255 for the trackers to move the VIP",
            );
            i.track.retain(|t| !weighted.contains(t));
        }
    }
}

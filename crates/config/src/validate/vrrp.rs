//! Validation of the VRRP side: `[[vrrp]]` instances and the `[[tracker]]`s they reference.

use std::net::IpAddr;
use std::time::Duration;

use halo_vrrp::{AdvertInterval, Priority, Version, Vrid};
use ipnet::IpNet;

use super::{choice, command, count_or, duration_or, interface_name, ip, positive_duration_or, unique_names};
use crate::defaults as d;
use crate::diag::{Hint, Report};
use crate::model::{ChecksumMode, Gratuitous, InitialState, Notify, Tracker, TrackerKind, VrrpInstance};
use crate::raw::{RawBackend, RawFrontend, RawGratuitous, RawNotify, RawTracker, RawVrrp, Text};

pub(super) fn instances(
    report: &mut Report<'_>,
    raw: &[RawVrrp],
    default_interface: Option<&str>,
    trackers: &[RawTracker],
) -> Option<Vec<VrrpInstance>> {
    unique_names(report, "vrrp instance", raw.iter().map(|v| &v.name));
    let mut out = Some(Vec::new());
    let mut seen: Vec<(String, u8, bool, &Text)> = Vec::new();
    let mut vips_seen: Vec<(IpAddr, &str)> = Vec::new();
    let mut vmacs_seen: Vec<(u8, &Text)> = Vec::new();
    for v in raw {
        let instance = instance(report, v, default_interface, trackers);
        if let Some(i) = &instance {
            if i.virtual_mac && i.virtual_addresses.first().is_some_and(|a| matches!(a, IpNet::V6(_))) {
                let span = v.virtual_mac.as_ref().map_or(v.name.span(), |f| f.span());
                report
                    .error(span, format!("vrrp `{}`: virtual_mac is for IPv4 instances; an IPv6 instance cannot advertise from it", i.name))
                    .hint("its adverts leave from the interface's link-local address, which the virtual-MAC interface lacks: drop virtual_mac here (IPv6 neighbours learn the new master from its unsolicited neighbour advertisements)");
            }
            if i.virtual_mac {
                let vrid = i.virtual_router_id.get();
                if let Some((_, other)) = vmacs_seen.iter().find(|(id, _)| *id == vrid) {
                    report
                        .error(
                            v.virtual_router_id.span(),
                            format!("vrrp `{}` and `{}` would both put their virtual MAC on vrrp.{vrid}", i.name, other.get_ref()),
                        )
                        .hint("instances with virtual_mac need distinct virtual_router_ids (the interface is named after it)");
                }
                vmacs_seen.push((vrid, &v.name));
            }
            let ipv4 = i.virtual_addresses.first().is_none_or(|a| matches!(a, IpNet::V4(_)));
            let key = (i.interface.clone(), i.virtual_router_id.get(), ipv4);
            if let Some((_, _, _, other)) = seen.iter().find(|(a, b, c, _)| (a, b, c) == (&key.0, &key.1, &key.2)) {
                report
                    .error(
                        v.virtual_router_id.span(),
                        format!("vrrp `{}` uses virtual_router_id {} on {} like `{}`", i.name, key.1, key.0, other.get_ref()),
                    )
                    .hint("each virtual router on an interface needs its own id (per address family)");
            }
            seen.push((key.0, key.1, key.2, &v.name));
            let excluded = i.excluded_addresses.iter().zip(v.excluded_addresses.iter().flatten());
            for (net, text) in i.virtual_addresses.iter().zip(v.virtual_addresses.get_ref()).chain(excluded) {
                if let Some((_, owner)) = vips_seen.iter().find(|(a, _)| *a == net.addr()) {
                    report
                        .error(text.span(), format!("virtual address {} is also carried by vrrp `{owner}`", net.addr()))
                        .hint("an address floats with one instance only");
                }
                vips_seen.push((net.addr(), v.name.get_ref()));
            }
        }
        out = out.zip(instance).map(|(mut all, i)| {
            all.push(i);
            all
        });
    }
    out
}

fn instance(report: &mut Report<'_>, v: &RawVrrp, default_interface: Option<&str>, trackers: &[RawTracker]) -> Option<VrrpInstance> {
    let name = v.name.get_ref();
    let interface = match (&v.interface, default_interface) {
        (Some(i), _) => interface_name(report, i, "interface"),
        (None, Some(i)) => Some(i.to_string()),
        (None, None) => {
            report.error(v.name.span(), format!("vrrp `{name}` names no interface")).hint("set `interface` here or `interface` in [node]");
            None
        }
    };
    let vrid = Vrid::new(*v.virtual_router_id.get_ref()).map_err(|e| report.error(v.virtual_router_id.span(), e.to_string())).ok();
    let priority = Priority::new(*v.priority.get_ref())
        .map_err(|e| {
            report
                .error(v.priority.span(), e.to_string())
                .hint("0 is sent only to announce a clean stop; 255 means this host owns the address")
        })
        .ok();
    let version = match &v.version {
        Some(n) => Version::new(*n.get_ref()).map_err(|e| report.error(n.span(), e.to_string())).ok(),
        None => Version::new(d::VRRP_VERSION).ok(),
    };
    let advert_interval = advert_interval(report, v, version);
    let addresses = virtual_addresses(report, v, version);
    let excluded = v.excluded_addresses.iter().flatten().map(|t| virtual_address(report, t)).collect::<Option<Vec<IpNet>>>();
    let family_v4 = addresses.as_ref().and_then(|a| a.first()).map(|a| matches!(a, IpNet::V4(_)));
    let auth_password = auth(report, v, version);
    let checksum = match &v.checksum {
        Some(c) => {
            let mode = choice(report, c, "checksum", &[("pseudo-header", ChecksumMode::PseudoHeader), ("as-v2", ChecksumMode::AsV2)]);
            if version == Some(Version::V2) || family_v4 == Some(false) {
                report.warning(c.span(), "checksum applies only to VRRPv3 over IPv4; it has no effect here");
            }
            mode
        }
        None => Some(ChecksumMode::default()),
    };
    let (unicast_source, unicast_peers) = unicast(report, v, family_v4);
    let preempt = v.preempt.as_ref().is_none_or(|p| *p.get_ref());
    let preempt_delay = duration_or(report, &v.preempt_delay, "preempt_delay", Duration::ZERO);
    if let (false, Some(delay)) = (preempt, &v.preempt_delay) {
        report.warning(delay.span(), "preempt_delay has no effect with preempt = false");
    }
    let initial_state = match &v.initial_state {
        Some(s) => choice(report, s, "initial_state", &[("backup", InitialState::Backup), ("master", InitialState::Master)]),
        None => Some(InitialState::Backup),
    };
    if let (Some(InitialState::Master), false, Some(s)) = (initial_state, preempt, &v.initial_state) {
        report
            .warning(
                s.span(),
                "initial_state = \"master\" with preempt = false: this router may take the VIP back from a live master at start",
            )
            .hint("with preempt = false, start as \"backup\"");
    }
    let track = track(report, v, interface.as_deref(), trackers);
    Some(VrrpInstance {
        name: name.clone(),
        interface: interface?,
        virtual_router_id: vrid?,
        priority: priority?,
        version: version?,
        advert_interval: advert_interval?,
        preempt,
        preempt_delay: preempt_delay?,
        initial_state: initial_state?,
        virtual_addresses: addresses?,
        excluded_addresses: excluded?,
        auth_password: auth_password?,
        unicast_source: unicast_source?,
        unicast_peers: unicast_peers?,
        gratuitous: gratuitous(report, v.gratuitous.as_ref())?,
        checksum: checksum?,
        virtual_mac: v.virtual_mac.as_ref().is_some_and(|f| *f.get_ref()),
        accept: v.accept.as_ref().is_none_or(|f| *f.get_ref()),
        track: track?,
        notify: notify(report, v.notify.as_ref())?,
    })
}

fn advert_interval(report: &mut Report<'_>, v: &RawVrrp, version: Option<Version>) -> Option<AdvertInterval> {
    let interval = duration_or(report, &v.advert_interval, "advert_interval", d::ADVERT_INTERVAL)?;
    let version = version?;
    match AdvertInterval::new(version, interval) {
        Ok(i) => Some(i),
        Err(e) => {
            let span = v.advert_interval.as_ref().map_or(v.name.span(), |t| t.span());
            let hint = match version {
                Version::V2 => "VRRPv2 carries whole seconds; for sub-second adverts use version = 3",
                Version::V3 => "VRRPv3 carries centiseconds: 10ms..40950ms in steps of 10ms",
            };
            report.error(span, e.to_string()).hint(hint);
            None
        }
    }
}

fn virtual_addresses(report: &mut Report<'_>, v: &RawVrrp, version: Option<Version>) -> Option<Vec<IpNet>> {
    let list = v.virtual_addresses.get_ref();
    if list.is_empty() {
        report
            .error(v.virtual_addresses.span(), format!("vrrp `{}` has no virtual address", v.name.get_ref()))
            .hint("virtual_addresses = [\"10.0.0.100/24\"]");
        return None;
    }
    let mut out = Some(Vec::new());
    for text in list {
        let parsed = virtual_address(report, text);
        if let (Some(net), Some(first)) = (&parsed, out.as_ref().and_then(|o: &Vec<IpNet>| o.first()))
            && matches!(net, IpNet::V4(_)) != matches!(first, IpNet::V4(_))
        {
            report
                .error(text.span(), "IPv4 and IPv6 virtual addresses in one instance")
                .hint("VRRP runs per address family: put the IPv6 addresses in a second [[vrrp]] (it may reuse the id)");
        }
        if let (Some(IpNet::V6(_)), Some(Version::V2)) = (&parsed, version) {
            report.error(text.span(), "VRRPv2 carries IPv4 addresses only").hint("use version = 3 for IPv6");
        }
        out = out.zip(parsed).map(|(mut o, n)| {
            o.push(n);
            o
        });
    }
    out
}

/// `10.0.0.1/24`, `fd00::1/64`, or a bare address (a host route: /32 or /128, as keepalived).
pub(crate) fn parse_virtual_address(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn virtual_address(report: &mut Report<'_>, text: &Text) -> Option<IpNet> {
    let Some(net) = parse_virtual_address(text.get_ref()) else {
        report
            .error(text.span(), format!("`{}` is not an address with an optional prefix", text.get_ref()))
            .hint("like \"10.150.0.170/24\" or \"fd00::170/64\"");
        return None;
    };
    let a = net.addr();
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() || matches!(a, IpAddr::V4(v4) if v4.is_broadcast()) {
        report.error(text.span(), format!("{a} cannot be a virtual address")).hint("use a unicast address of the interface's subnet");
        return None;
    }
    Some(net)
}

fn auth(report: &mut Report<'_>, v: &RawVrrp, version: Option<Version>) -> Option<Option<String>> {
    let Some(password) = &v.auth_password else {
        return Some(None);
    };
    let length = password.get_ref().len();
    if version == Some(Version::V3) {
        report
            .error(password.span(), "auth_password with VRRPv3: version 3 has no authentication (RFC 5798 §9)")
            .hint("remove it, or use version = 2 to talk to routers that require it");
        return None;
    }
    // Any 1..=8 bytes, as keepalived takes them (UTF-8 included: `£6nj7^5` is 8 bytes); a
    // control character is no word keepalived could read.
    if length == 0 || length > 8 {
        // The length only: a secret is never echoed.
        report
            .error(password.span(), format!("auth_password must be 1..=8 bytes, got {} bytes", length))
            .hint("VRRPv2 PASS authentication carries 8 bytes");
        return None;
    }
    if password.get_ref().chars().any(char::is_control) {
        report
            .error(password.span(), "auth_password holds a control character")
            .hint("keepalived reads a password as one word of printable characters");
        return None;
    }
    report
        .warning(password.span(), "auth_password is sent in clear text in every advert: it prevents accidents, not attacks")
        .hint("anyone on the LAN can read it; isolate the VRRP segment instead");
    Some(Some(password.get_ref().clone()))
}

type Unicast = (Option<Option<IpAddr>>, Option<Vec<IpAddr>>);

fn unicast(report: &mut Report<'_>, v: &RawVrrp, family_v4: Option<bool>) -> Unicast {
    let same_family = |report: &mut Report<'_>, text: &Text, key: &str| -> Option<IpAddr> {
        let addr = ip(report, text, key)?;
        if family_v4.is_some_and(|v4| v4 != addr.is_ipv4()) {
            report.error(text.span(), format!("{key} {addr} is not of the virtual addresses' family"));
            return None;
        }
        Some(addr)
    };
    let source = match &v.unicast_source {
        Some(t) => same_family(report, t, "unicast_source").map(Some),
        None => Some(None),
    };
    let mut peers = Some(Vec::new());
    for p in v.unicast_peers.iter().flatten() {
        let addr = same_family(report, p, "unicast_peers");
        peers = peers.zip(addr).map(|(mut all, a)| {
            all.push(a);
            all
        });
    }
    if let (Some(t), true) = (&v.unicast_source, v.unicast_peers.as_ref().is_none_or(Vec::is_empty)) {
        report
            .error(t.span(), "unicast_source without unicast_peers")
            .hint("list the other routers in unicast_peers, or remove unicast_source for multicast");
    }
    (source, peers)
}

fn gratuitous(report: &mut Report<'_>, raw: Option<&RawGratuitous>) -> Option<Gratuitous> {
    let default = Gratuitous::default();
    let Some(g) = raw else { return Some(default) };
    let refresh = duration_or(report, &g.refresh, "gratuitous.refresh", Duration::ZERO);
    Some(Gratuitous {
        delay: duration_or(report, &g.delay, "gratuitous.delay", default.delay)?,
        repeat: count_or(report, &g.repeat, "gratuitous.repeat", 1..=100, default.repeat)?,
        refresh: refresh.map(|r| (!r.is_zero()).then_some(r))?,
        refresh_repeat: count_or(report, &g.refresh_repeat, "gratuitous.refresh_repeat", 1..=100, default.refresh_repeat)?,
    })
}

pub(super) fn notify(report: &mut Report<'_>, raw: Option<&RawNotify>) -> Option<Notify> {
    let default = Notify::default();
    let Some(n) = raw else { return Some(default) };
    let mut hook = |argv: &Option<toml::Spanned<Vec<Text>>>, key: &str| match argv {
        Some(a) => command(report, a, key).map(Some),
        None => Some(None),
    };
    let (master, backup, fault) = (hook(&n.master, "notify.master"), hook(&n.backup, "notify.backup"), hook(&n.fault, "notify.fault"));
    let (stop, change) = (hook(&n.stop, "notify.stop"), hook(&n.change, "notify.change"));
    Some(Notify {
        master: master?,
        backup: backup?,
        fault: fault?,
        stop: stop?,
        change: change?,
        timeout: positive_duration_or(report, &n.timeout, "notify.timeout", default.timeout)?,
    })
}

fn track(report: &mut Report<'_>, v: &RawVrrp, interface: Option<&str>, trackers: &[RawTracker]) -> Option<Vec<String>> {
    let mut out = Some(Vec::new());
    for name in v.track.iter().flatten() {
        let tracker = trackers.iter().find(|t| t.name.get_ref() == name.get_ref());
        let own = tracker.and_then(|t| t.interface.as_ref()).is_some_and(|i| Some(i.get_ref().as_str()) == interface);
        if own && tracker.is_some_and(|t| t.kind.get_ref() == "interface") {
            report
                .warning(
                    name.span(),
                    format!("vrrp `{}` tracks its own interface: it goes to FAULT when that link is down anyway", v.name.get_ref()),
                )
                .hint("track other links (uplinks) with an interface tracker; keepalived refuses this one");
        }
        if !trackers.iter().any(|t| t.name.get_ref() == name.get_ref()) {
            let known: Vec<&str> = trackers.iter().map(|t| t.name.get_ref().as_str()).collect();
            report.error(name.span(), format!("vrrp `{}` tracks unknown tracker `{}`", v.name.get_ref(), name.get_ref())).hint(
                if known.is_empty() {
                    "define it in a [[tracker]] table".to_string()
                } else {
                    format!("known trackers: {}", known.join(", "))
                },
            );
            out = None;
        } else if let Some(o) = &mut out {
            o.push(name.get_ref().clone());
        }
    }
    out
}

pub(super) fn trackers(
    report: &mut Report<'_>,
    raw: &[RawTracker],
    frontends: &[RawFrontend],
    backends: &[RawBackend],
) -> Option<Vec<Tracker>> {
    unique_names(report, "tracker", raw.iter().map(|t| &t.name));
    let mut out = Some(Vec::new());
    for t in raw {
        let parsed = tracker(report, t, frontends, backends);
        out = out.zip(parsed).map(|(mut all, t)| {
            all.push(t);
            all
        });
    }
    out
}

/// The keys each kind takes, beyond name/kind/weight/fall/rise.
const KIND_KEYS: [(&str, &[&str]); 4] = [
    ("balancer", &["frontend", "min_healthy", "interval"]),
    ("script", &["command", "interval", "timeout"]),
    ("interface", &["interface"]),
    ("file", &["path"]),
];

fn tracker(report: &mut Report<'_>, t: &RawTracker, frontends: &[RawFrontend], backends: &[RawBackend]) -> Option<Tracker> {
    let kind_name = t.kind.get_ref().as_str();
    let Some((_, allowed)) = KIND_KEYS.iter().find(|(k, _)| *k == kind_name) else {
        report.error(t.kind.span(), format!("unknown tracker kind `{kind_name}`")).hint("one of: balancer, script, interface, file");
        return None;
    };
    let present = [
        ("frontend", t.frontend.as_ref().map(|v| v.span())),
        ("min_healthy", t.min_healthy.as_ref().map(|v| v.span())),
        ("interval", t.interval.as_ref().map(|v| v.span())),
        ("command", t.command.as_ref().map(|v| v.span())),
        ("timeout", t.timeout.as_ref().map(|v| v.span())),
        ("interface", t.interface.as_ref().map(|v| v.span())),
        ("path", t.path.as_ref().map(|v| v.span())),
    ];
    let mut misplaced = false;
    for (key, span) in present {
        if let (Some(span), false) = (span, allowed.contains(&key)) {
            report
                .error(span, format!("`{key}` is not a key of a `{kind_name}` tracker"))
                .hint(format!("a `{kind_name}` tracker takes: {}", allowed.join(", ")));
            misplaced = true;
        }
    }
    let weight = match &t.weight {
        Some(w) if (-254..=254).contains(w.get_ref()) && *w.get_ref() != 0 => Some(Some(*w.get_ref() as i32)),
        Some(w) => {
            report
                .error(w.span(), format!("tracker weight must be -254..=254 and not 0, got {}", w.get_ref()))
                .hint("leave weight out to put the instance into FAULT while the tracker fails");
            None
        }
        None => Some(None),
    };
    let (fall, rise) = if kind_name == "interface" {
        // It follows the link's state: given fall and rise are warned about and not kept.
        for (key, value) in [("fall", &t.fall), ("rise", &t.rise)] {
            if let Some(value) = value {
                report
                    .warning(
                        value.span(),
                        format!("`{key}` does not apply to an `interface` tracker: it follows the link's state as it changes"),
                    )
                    .hint("leave it out");
            }
        }
        (Some(d::TRACKER_FALL), Some(d::TRACKER_RISE))
    } else {
        (count_or(report, &t.fall, "fall", 1..=1000, d::TRACKER_FALL), count_or(report, &t.rise, "rise", 1..=1000, d::TRACKER_RISE))
    };
    let kind = match kind_name {
        "balancer" => balancer(report, t, frontends, backends),
        "script" => script(report, t),
        "interface" => required(report, t, &t.interface, "interface")
            .and(t.interface.as_ref())
            .and_then(|i| interface_name(report, i, "interface"))
            .map(|interface| TrackerKind::Interface { interface }),
        _ => required(report, t, &t.path, "path").map(|p| TrackerKind::File { path: p.into() }),
    };
    if misplaced {
        return None;
    }
    Some(Tracker { name: t.name.get_ref().clone(), weight: weight?, fall: fall?, rise: rise?, kind: kind? })
}

fn required<'a>(report: &mut Report<'_>, t: &RawTracker, value: &'a Option<Text>, key: &str) -> Option<&'a String> {
    if value.is_none() {
        report.error(t.kind.span(), format!("a `{}` tracker needs `{key}`", t.kind.get_ref()));
    }
    value.as_ref().map(|v| v.get_ref())
}

fn balancer(report: &mut Report<'_>, t: &RawTracker, frontends: &[RawFrontend], backends: &[RawBackend]) -> Option<TrackerKind> {
    let frontend = required(report, t, &t.frontend, "frontend")?;
    let Some(f) = frontends.iter().find(|f| f.name.get_ref() == frontend) else {
        let span = t.frontend.as_ref().map_or(t.name.span(), |f| f.span());
        report
            .error(span, format!("tracker `{}` names unknown frontend `{frontend}`", t.name.get_ref()))
            .hint("the balancer tracker watches a [[frontend]] of this file");
        return None;
    };
    let servers = backends.iter().find(|b| b.name.get_ref() == f.backend.get_ref()).map(|b| b.server.get_ref().len());
    let min_healthy = count_or(report, &t.min_healthy, "min_healthy", 1..=10_000, d::MIN_HEALTHY)?;
    if let (Some(n), Some(m)) = (servers, &t.min_healthy)
        && min_healthy as usize > n
    {
        report.error(
            m.span(),
            format!("min_healthy {min_healthy} but backend `{}` has {n} servers: the tracker could never pass", f.backend.get_ref()),
        );
        return None;
    }
    let interval = positive_duration_or(report, &t.interval, "interval", d::BALANCER_TRACKER_INTERVAL)?;
    Some(TrackerKind::Balancer { frontend: frontend.clone(), min_healthy, interval })
}

fn script(report: &mut Report<'_>, t: &RawTracker) -> Option<TrackerKind> {
    let Some(argv) = &t.command else {
        report.error(t.kind.span(), "a `script` tracker needs `command`").hint("command = [\"/usr/local/bin/check\"]");
        return None;
    };
    let command = command(report, argv, "command");
    let interval = positive_duration_or(report, &t.interval, "interval", d::SCRIPT_INTERVAL);
    let timeout = positive_duration_or(report, &t.timeout, "timeout", d::SCRIPT_TIMEOUT);
    if let (Some(i), Some(to), Some(raw)) = (interval, timeout, &t.timeout)
        && to > i
    {
        report.warning(raw.span(), "timeout is longer than interval: runs will overlap the schedule and be skipped");
    }
    Some(TrackerKind::Script { command: command?, interval: interval?, timeout: timeout? })
}

/// Trackers no instance tracks (`also_tracked`: names tracked elsewhere, by sync groups).
pub(super) fn unused_trackers(report: &mut Report<'_>, trackers: &[RawTracker], vrrp: &[RawVrrp], also_tracked: &[&str]) {
    for t in trackers {
        let used = vrrp.iter().flat_map(|v| v.track.iter().flatten()).any(|n| n.get_ref() == t.name.get_ref())
            || also_tracked.contains(&t.name.get_ref().as_str());
        if !used {
            report
                .warning(t.name.span(), format!("tracker `{}` is not tracked by any vrrp instance", t.name.get_ref()))
                .hint("add its name to a [[vrrp]] `track` list, or remove it");
        }
    }
}

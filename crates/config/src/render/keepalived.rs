//! Config -> keepalived.conf: the VRRP instances with their trackers as keepalived expresses
//! them (the balancer tracker becomes a `vrrp_script` running the rendered check script).

use super::Rendered;
use super::check_script::CHECK_SCRIPT_PATH;
use super::write::{block, ceil_secs, command, keepalived_seconds, line, word};
use crate::model::{ChecksumMode, Config, InitialState, Tracker, TrackerKind, VrrpInstance};

/// Renders every instance and the trackers they use.
pub fn keepalived(config: &Config) -> Rendered {
    let mut out = String::new();
    let mut losses = Vec::new();
    line(&mut out, format_args!("! keepalived.conf rendered by `halo render keepalived`; edit halo.toml, not this file."));
    line(&mut out, format_args!("global_defs {{"));
    if let Some(name) = &config.node.name {
        line(&mut out, format_args!("    router_id {}", word(name)));
    }
    let user = config.node.script_user.as_deref().unwrap_or("root");
    line(&mut out, format_args!("    enable_script_security\n    script_user {}\n}}\n", word(user)));
    for t in &config.trackers {
        tracker(&mut out, t, &mut losses);
    }
    for v in &config.vrrp {
        instance(&mut out, v, config, &mut losses);
    }
    for g in &config.sync_groups {
        super::sync_group::keepalived(&mut out, g, config, &mut losses);
    }
    Rendered { text: out, losses }
}

fn tracker(out: &mut String, t: &Tracker, losses: &mut Vec<String>) {
    let (script, interval, timeout) = match &t.kind {
        TrackerKind::Balancer { interval, min_healthy, .. } => {
            if *min_healthy > 1 {
                losses.push(format!("tracker {}: min_healthy {min_healthy} cannot be checked by the script (it sees one answer)", t.name));
            }
            (CHECK_SCRIPT_PATH.to_string(), *interval, None)
        }
        TrackerKind::Script { command: argv, interval, timeout } => (command(argv), *interval, Some(*timeout)),
        TrackerKind::Interface { .. } => return,
        TrackerKind::File { path } => {
            line(out, format_args!("vrrp_track_file {} {{\n    file {}", t.name, word(&path.display().to_string())));
            line(out, format_args!("    weight {}\n}}\n", t.weight.unwrap_or(1)));
            return;
        }
    };
    if interval.subsec_nanos() != 0 {
        losses.push(format!(
            "tracker {}: keepalived runs scripts every whole second; interval {} becomes {}s",
            t.name,
            humantime::format_duration(interval),
            ceil_secs(interval)
        ));
    }
    line(out, format_args!("vrrp_script {} {{\n    script {script}\n    interval {}", t.name, ceil_secs(interval)));
    if let Some(timeout) = timeout {
        line(out, format_args!("    timeout {}", ceil_secs(timeout)));
    }
    if let Some(w) = t.weight {
        line(out, format_args!("    weight {w}"));
    }
    line(out, format_args!("    fall {}\n    rise {}\n}}\n", t.fall, t.rise));
}

/// One `vrrp_instance` block.
fn instance(out: &mut String, v: &VrrpInstance, config: &Config, losses: &mut Vec<String>) {
    router(out, v, losses);
    let weighted = v.track.iter().any(|t| config.tracker(t).is_some_and(|t| t.weight.is_some()));
    if v.priority.get() == 255 && weighted {
        losses.push(format!("vrrp {}: keepalived ignores tracker weights of an address owner (priority 255)", v.name));
    }
    virtual_addresses(out, v);
    unicast(out, v, losses);
    tracking(out, v, config, losses);
    gratuitous(out, v);
    notify(out, v, losses);
    line(out, format_args!("}}\n"));
}

/// The instance header and the router's own settings: state, id, priority, timing, preemption,
/// accept mode and authentication.
fn router(out: &mut String, v: &VrrpInstance, losses: &mut Vec<String>) {
    // keepalived clears `nopreempt` next to `state MASTER`: such an instance is written BACKUP.
    let master = v.initial_state == InitialState::Master && v.preempt;
    if v.initial_state == InitialState::Master && !v.preempt {
        losses.push(format!("vrrp {}: keepalived ignores nopreempt with state MASTER: written as state BACKUP", v.name));
    }
    let state = if master { "MASTER" } else { "BACKUP" };
    line(out, format_args!("vrrp_instance {} {{\n    state {state}\n    interface {}", v.name, v.interface));
    line(out, format_args!("    virtual_router_id {}\n    priority {}\n    version {}", v.virtual_router_id, v.priority, v.version));
    line(out, format_args!("    advert_int {}", keepalived_seconds(v.advert_interval.as_duration())));
    if !v.preempt {
        line(out, format_args!("    nopreempt"));
    }
    if !v.preempt_delay.is_zero() {
        line(out, format_args!("    preempt_delay {}", keepalived_seconds(v.preempt_delay)));
    }
    line(out, format_args!("    {}", if v.accept { "accept" } else { "no_accept" }));
    if let Some(password) = &v.auth_password {
        line(out, format_args!("    authentication {{\n        auth_type PASS\n        auth_pass {}\n    }}", word(password)));
    }
}

fn virtual_addresses(out: &mut String, v: &VrrpInstance) {
    line(out, format_args!("    virtual_ipaddress {{"));
    for a in &v.virtual_addresses {
        line(out, format_args!("        {a}"));
    }
    line(out, format_args!("    }}"));
    if !v.excluded_addresses.is_empty() {
        line(out, format_args!("    virtual_ipaddress_excluded {{"));
        for a in &v.excluded_addresses {
            line(out, format_args!("        {a}"));
        }
        line(out, format_args!("    }}"));
    }
}

/// Unicast source and peers, and the checksum mode (keepalived offers the v2-style one only in
/// unicast).
fn unicast(out: &mut String, v: &VrrpInstance, losses: &mut Vec<String>) {
    if let Some(source) = v.unicast_source {
        line(out, format_args!("    unicast_src_ip {source}"));
    }
    block(out, "unicast_peer", v.unicast_peers.iter().map(ToString::to_string));
    if v.checksum == ChecksumMode::AsV2 {
        if v.unicast_peers.is_empty() {
            losses.push(format!("vrrp {}: keepalived always includes the pseudo-header in multicast VRRPv3 checksums", v.name));
        } else {
            line(out, format_args!("    old_unicast_checksum"));
        }
    }
}

/// The trackers of the instance, by keepalived's kinds: scripts (the balancer tracker is one),
/// interfaces other than the instance's own, and files.
fn tracking(out: &mut String, v: &VrrpInstance, config: &Config, losses: &mut Vec<String>) {
    let tracked: Vec<&Tracker> = v.track.iter().filter_map(|n| config.tracker(n)).collect();
    let scripts: Vec<&&Tracker> =
        tracked.iter().filter(|t| matches!(t.kind, TrackerKind::Balancer { .. } | TrackerKind::Script { .. })).collect();
    block(out, "track_script", scripts.iter().map(|t| t.name.clone()));
    for t in &tracked {
        if matches!(&t.kind, TrackerKind::Interface { interface } if *interface == v.interface) {
            losses.push(format!(
                "vrrp {}: keepalived always tracks its own interface {} (FAULT when down) and refuses tracker `{}`",
                v.name, v.interface, t.name
            ));
        }
    }
    let interfaces = tracked.iter().filter_map(|t| match &t.kind {
        TrackerKind::Interface { interface } if *interface == v.interface => None,
        TrackerKind::Interface { interface } => Some(match t.weight {
            Some(w) => format!("{interface} weight {w}"),
            None => interface.clone(),
        }),
        _ => None,
    });
    block(out, "track_interface", interfaces);
    let files = tracked.iter().filter(|t| matches!(t.kind, TrackerKind::File { .. })).map(|t| t.name.clone());
    block(out, "track_file", files);
}

/// Gratuitous ARP / NA timing, and the virtual MAC.
fn gratuitous(out: &mut String, v: &VrrpInstance) {
    let g = &v.gratuitous;
    line(out, format_args!("    garp_master_delay {}\n    garp_master_repeat {}", keepalived_seconds(g.delay), g.repeat));
    line(
        out,
        format_args!(
            "    garp_master_refresh {}\n    garp_master_refresh_repeat {}",
            g.refresh.map_or("0".to_string(), keepalived_seconds),
            g.refresh_repeat
        ),
    );
    if v.virtual_mac {
        line(out, format_args!("    use_vmac"));
        if !v.unicast_peers.is_empty() {
            // Unicast adverts must leave from the base interface, not the macvlan.
            line(out, format_args!("    vmac_xmit_base"));
        }
    }
}

/// The notify hooks (keepalived has no timeout for them).
fn notify(out: &mut String, v: &VrrpInstance, losses: &mut Vec<String>) {
    let n = &v.notify;
    let hooks = [
        ("notify_master", &n.master),
        ("notify_backup", &n.backup),
        ("notify_fault", &n.fault),
        ("notify_stop", &n.stop),
        ("notify", &n.change),
    ];
    for (key, argv) in hooks {
        if let Some(argv) = argv {
            line(out, format_args!("    {key} {}", command(argv)));
        }
    }
    if n.timeout != crate::model::Notify::default().timeout {
        losses.push(format!("vrrp {}: keepalived has no notify timeout", v.name));
    }
}

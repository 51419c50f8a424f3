//! keepalived.conf -> VRRP instances and trackers. The file is read into a tree of blocks
//! (`parse`), then global_defs, vrrp_script and track_file blocks are mapped here and each
//! vrrp_instance in `instance`.

mod command;
mod instance;
mod parse;
mod sync_group;
mod virtual_server;

use std::time::Duration;

use self::instance::vrrp_instance;
use self::parse::Node;
use super::check_script::ScriptFacts;
use super::lines::{Resolver, keepalived_seconds};
use super::{Sink, Source};
use crate::defaults as d;
use crate::model::{Frontend, Gratuitous, SyncGroup, Tracker, TrackerKind, VrrpInstance};

/// What the keepalived side contributes to the config.
#[derive(Debug, Default)]
pub(super) struct KeepalivedImport {
    pub router_id: Option<String>,
    /// `script_user` of `global_defs`: the user scripts run as.
    pub script_user: Option<String>,
    pub instances: Vec<VrrpInstance>,
    pub trackers: Vec<Tracker>,
    /// Scripts keepalived would disable (their program is not found): instances skip them.
    pub disabled_scripts: Vec<String>,
    /// LVS virtual servers, as frontends and backends.
    pub frontends: Vec<Frontend>,
    /// Their real servers.
    pub backends: Vec<crate::model::Backend>,
    /// `vrrp_sync_group`s.
    pub sync_groups: Vec<SyncGroup>,
}

/// Global defaults that instances inherit.
#[derive(Debug, Clone)]
struct Globals {
    version: i64,
    gratuitous: Gratuitous,
}

pub(super) fn import(
    src: Source<'_>,
    resolver: &dyn Resolver,
    script: Option<&ScriptFacts>,
    frontends: &[Frontend],
    config_id: Option<&str>,
    sink: &mut Sink,
) -> KeepalivedImport {
    let nodes = parse::read(src, resolver, config_id, sink);
    let mut out = KeepalivedImport::default();
    // keepalived's default protocol version is 2; halo's is 3, so the import says 2 explicitly.
    let mut globals = Globals { version: 2, gratuitous: Gratuitous::default() };
    for node in nodes.iter().filter(|n| n.keyword() == "global_defs") {
        global_defs(node, &mut out, &mut globals, sink);
    }
    for node in &nodes {
        match node.keyword() {
            "global_defs" | "vrrp_instance" | "vrrp_sync_group" => {}
            "vrrp_script" => match vrrp_script(node, script, frontends, resolver, sink) {
                Script::Tracker(t) => out.trackers.push(t),
                Script::Disabled(name) => out.disabled_scripts.push(name),
                Script::Invalid => {}
            },
            "vrrp_track_file" | "track_file" => out.trackers.extend(track_file(node, sink)),
            "vrrp_track_process" => out.trackers.extend(track_process(node, frontends, sink)),
            "virtual_server" => {
                if let Some((frontend, backend)) = virtual_server::virtual_server(node, sink) {
                    out.frontends.push(frontend);
                    out.backends.push(backend);
                }
            }
            other => sink.unmapped(&node.file, node.line, other, ""),
        }
    }
    let weights_dropped = sync_group::weights_dropped(&nodes);
    for node in nodes.iter().filter(|n| n.keyword() == "vrrp_instance") {
        let drops_weights = weights_dropped.iter().any(|m| m == node.arg(1));
        if let Some(instance) = vrrp_instance(node, &globals, &mut out, (resolver, drops_weights), sink) {
            out.instances.push(instance);
        }
    }
    out.sync_groups = sync_group::sync_groups(&nodes, &mut out.instances, &mut out.trackers, resolver, sink);
    mastership_warnings(&out, &nodes, sink);
    out
}

fn global_defs(node: &Node, out: &mut KeepalivedImport, g: &mut Globals, sink: &mut Sink) {
    for c in node.children() {
        match c.keyword() {
            "router_id" => out.router_id = Some(c.arg(1).to_string()),
            "vrrp_version" => g.version = c.arg(1).parse().unwrap_or(2),
            "vrrp_garp_master_delay" => g.gratuitous.delay = seconds(c, 1, sink).unwrap_or(g.gratuitous.delay),
            "vrrp_garp_master_repeat" => g.gratuitous.repeat = c.arg(1).parse().unwrap_or(g.gratuitous.repeat),
            "vrrp_garp_master_refresh" => g.gratuitous.refresh = seconds(c, 1, sink).filter(|d| !d.is_zero()),
            "vrrp_garp_master_refresh_repeat" => g.gratuitous.refresh_repeat = c.arg(1).parse().unwrap_or(1),
            "vrrp_garp_interval" | "vrrp_gna_interval" => match seconds(c, 1, sink) {
                Some(d) if d.is_zero() => sink.error(
                    &c.file,
                    c.line,
                    format!("`{}` 0: keepalived refuses it", c.keyword()),
                    "a pause between packets, at least 0.000001 (seconds)",
                ),
                Some(_) => sink.unmapped(&c.file, c.line, c.keyword(), "halo sends the packets of a burst back to back"),
                None => {}
            },
            // halo always refuses scripts that others could modify (as enable_script_security).
            "enable_script_security" => {}
            "script_user" if c.arg(1).is_empty() => sink.warn(&c.file, c.line, "`script_user` without a user: scripts run as root", ""),
            "script_user" => {
                if !c.arg(2).is_empty() {
                    sink.warn(&c.file, c.line, "`script_user` group: halo runs scripts with the user's own group", "");
                }
                // root is halo's default: left unset.
                out.script_user = Some(c.arg(1).to_string()).filter(|u| u != "root");
            }
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
}

fn seconds(node: &Node, i: usize, sink: &mut Sink) -> Option<Duration> {
    let value = keepalived_seconds(node.arg(i));
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{}` needs seconds, got `{}`", node.keyword(), node.arg(i)), "");
    }
    value
}

fn integer(node: &Node, i: usize, sink: &mut Sink) -> Option<i64> {
    let value = node.arg(i).parse().ok();
    if value.is_none() {
        sink.error(&node.file, node.line, format!("`{}` needs a number, got `{}`", node.keyword(), node.arg(i)), "");
    }
    value
}

/// The name of a tracker of `interface`'s link with `weight`, made if there is none yet. The
/// first is `link-<interface>`; a line that weighs the same interface differently gets its own
/// (`link-<interface>-fault` unweighted, `link-<interface>-weight<N>`), since halo keeps one
/// weight per tracker and keepalived weighs each line on its own.
fn link_tracker(trackers: &mut Vec<Tracker>, interface: &str, weight: Option<i32>) -> String {
    let base = format!("link-{interface}");
    let of_link = |t: &Tracker| matches!(&t.kind, TrackerKind::Interface { interface: i } if i == interface);
    if let Some(same) = trackers.iter().find(|t| of_link(t) && t.weight == weight && t.name.starts_with(&base)) {
        return same.name.clone();
    }
    let name = if !trackers.iter().any(|t| t.name == base) {
        base
    } else {
        match weight {
            None => format!("{base}-fault"),
            Some(w) => format!("{base}-weight{w}"),
        }
    };
    if !trackers.iter().any(|t| t.name == name) {
        let kind = TrackerKind::Interface { interface: interface.to_string() };
        // It follows the link as it changes: fall and rise do not apply (halo's defaults stand).
        trackers.push(Tracker { name: name.clone(), weight, fall: d::TRACKER_FALL, rise: d::TRACKER_RISE, kind });
    }
    name
}

/// A command of a `notify*` line: its argument vector, or `None` (with a warning) when keepalived
/// would not find the program, or when it only asks whether haproxy is alive (no hook does).
fn argv(node: &Node, i: usize, resolver: &dyn Resolver, sink: &mut Sink) -> Option<Vec<String>> {
    match command::read(node, i, resolver, false, sink)? {
        command::Command::Run(argv) => Some(argv),
        command::Command::BalancerAlive(_) => None,
        command::Command::NotFound(program) => {
            sink.warn(
                &node.file,
                node.line,
                format!("`{}` runs `{program}`, which is not found in PATH: keepalived would fail to run it; not imported", node.keyword()),
                "write the program's full path",
            );
            None
        }
    }
}

/// What a `vrrp_script` block becomes.
enum Script {
    Tracker(Tracker),
    /// keepalived disables a script whose program it cannot find: the name, for the instances.
    Disabled(String),
    Invalid,
}

/// The settings of a `vrrp_script` block.
struct ScriptSettings {
    command: Option<command::Command>,
    interval: Duration,
    timeout: Option<Duration>,
    weight: Option<i64>,
    fall: u32,
    rise: u32,
    timing_line: usize,
}

fn script_settings(node: &Node, resolver: &dyn Resolver, balancer_known: bool, sink: &mut Sink) -> Option<ScriptSettings> {
    let mut s = ScriptSettings {
        command: None,
        interval: Duration::from_secs(1),
        timeout: None,
        weight: None,
        fall: 1,
        rise: 1,
        timing_line: node.line,
    };
    let mut valid = true;
    for c in node.children() {
        match c.keyword() {
            "script" => s.command = command::read(c, 1, resolver, balancer_known, sink),
            "interval" => (s.interval, s.timing_line) = (seconds(c, 1, sink).unwrap_or(s.interval), c.line),
            "timeout" => s.timeout = seconds(c, 1, sink),
            "weight" => {
                s.weight = integer(c, 1, sink).filter(|w| *w != 0);
                if c.arg(2) == "reverse" {
                    sink.error(
                        &c.file,
                        c.line,
                        "`weight ... reverse` (priority that moves the other way when the script fails) has no halo equivalent",
                        "halo lowers priority on failure (negative weight) or raises it on success (positive weight)",
                    );
                    valid = false;
                }
            }
            "fall" => (s.fall, s.timing_line) = (integer(c, 1, sink).map_or(1, |f| f.clamp(1, 999) as u32), c.line),
            "rise" => s.rise = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 999) as u32),
            "user" => sink.warn(&c.file, c.line, "`user` is not imported: halo runs trackers as `node.script_user` (or root)", ""),
            "init_fail" => {}
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    valid.then_some(s)
}

fn vrrp_script(node: &Node, script: Option<&ScriptFacts>, frontends: &[Frontend], resolver: &dyn Resolver, sink: &mut Sink) -> Script {
    let name = node.arg(1).to_string();
    let Some(s) = script_settings(node, resolver, !frontends.is_empty(), sink) else {
        return Script::Invalid;
    };
    let (interval, fall, rise) = (s.interval, s.fall, s.rise);
    let weight = s.weight.map(|w| w.clamp(-254, 254) as i32);
    let detection = interval * fall;
    if detection >= Duration::from_secs(5) {
        sink.warn(
            &node.file,
            s.timing_line,
            format!(
                "vrrp_script `{name}`: interval {} × fall {fall} = {}: a dead balancer keeps the VIP that long",
                humantime::format_duration(interval),
                humantime::format_duration(detection)
            ),
            "halo's built-in balancer tracker defaults to 200ms × 2",
        );
    }
    let command = match s.command {
        None => {
            sink.error(&node.file, node.line, format!("vrrp_script `{name}` has no `script`"), "");
            return Script::Invalid;
        }
        Some(command::Command::NotFound(program)) => {
            sink.warn(
                &node.file,
                node.line,
                format!(
                    "vrrp_script `{name}` runs `{program}`, which is not in PATH: keepalived disables such a script, and it is not imported"
                ),
                "install the program or write its full path; the instances that track it are imported without it",
            );
            return Script::Disabled(name);
        }
        Some(command::Command::BalancerAlive(words)) => {
            let frontend = frontends.first().map(|f| f.name.clone()).unwrap_or_default();
            balancer_note(&name, &words.join(" "), detection, sink);
            let kind = TrackerKind::Balancer { frontend, min_healthy: d::MIN_HEALTHY, interval };
            return Script::Tracker(Tracker { name, weight, fall, rise, kind });
        }
        Some(command::Command::Run(argv)) => argv,
    };
    let timeout = s.timeout.unwrap_or(interval);
    let facts = script.filter(|s| std::path::Path::new(&command[0]).file_name() == Some(std::ffi::OsStr::new(&s.file_name)));
    let kind = match facts.and_then(|s| s.frontend_for(frontends)).or_else(|| facts.and(frontends.first().map(|f| f.name.clone()))) {
        Some(frontend) => {
            balancer_note(&name, &command[0], detection, sink);
            TrackerKind::Balancer { frontend, min_healthy: d::MIN_HEALTHY, interval }
        }
        None => {
            if facts.is_some() {
                sink.warn(
                    &node.file,
                    node.line,
                    format!("vrrp_script `{name}` is the check script, but no haproxy frontend was imported for it to track"),
                    "pass --haproxy too; imported as a script tracker",
                );
            } else if command[0].contains("check_apiserver") || command[0].contains("check_haproxy") {
                sink.warn(
                    &node.file,
                    node.line,
                    format!("vrrp_script `{name}` looks like the balancer check script; imported as a script tracker that runs it"),
                    "pass it with --check-script (and --haproxy) to replace it by halo's built-in balancer tracker",
                );
            }
            TrackerKind::Script { command, interval, timeout }
        }
    };
    Script::Tracker(Tracker { name, weight, fall, rise, kind })
}

/// The comment above a tracker that replaced a check of the local balancer.
fn balancer_note(name: &str, what: &str, detection: Duration, sink: &mut Sink) {
    sink.note(
        format!("tracker {name}"),
        format!("Replaces `{what}`: it asked whether the local balancer is alive, which the built-in balancer tracker checks directly (no process, no shell)."),
    );
    if detection >= Duration::from_secs(5) {
        sink.note(
            format!("tracker {name}"),
            "interval/fall/rise are the script's; delete them for halo's defaults (200ms × 2).".to_string(),
        );
    }
}

/// `vrrp_track_process NAME { process haproxy; weight W }`: whether haproxy runs, which is
/// whether the local balancer is alive: the built-in balancer tracker, when there is one to
/// track. Any other process has no halo equivalent.
fn track_process(node: &Node, frontends: &[Frontend], sink: &mut Sink) -> Option<Tracker> {
    let name = node.arg(1).to_string();
    let (mut process, mut weight) = (None, None);
    for c in node.children() {
        match c.keyword() {
            "process" => process = Some(c.arg(1).to_string()),
            "weight" => weight = integer(c, 1, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32),
            "delay" | "quorum" | "quorum_max" | "fork_delay" | "terminate_delay" | "full_command" | "param_match" => {}
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    let frontend = frontends.first().map(|f| f.name.clone());
    match (process.as_deref(), frontend) {
        (Some("haproxy"), Some(frontend)) => {
            balancer_note(&name, "process haproxy", Duration::ZERO, sink);
            let kind = TrackerKind::Balancer { frontend, min_healthy: d::MIN_HEALTHY, interval: d::BALANCER_TRACKER_INTERVAL };
            Some(Tracker { name, weight, fall: d::TRACKER_FALL, rise: d::TRACKER_RISE, kind })
        }
        _ => {
            sink.unmapped(
                &node.file,
                node.line,
                &format!("vrrp_track_process {name}"),
                "halo tracks the local balancer itself (with --haproxy), not processes by name",
            );
            None
        }
    }
}

fn track_file(node: &Node, sink: &mut Sink) -> Option<Tracker> {
    let name = node.arg(1).to_string();
    let (mut path, mut weight) = (None, Some(1));
    for c in node.children() {
        match c.keyword() {
            "file" => path = Some(c.arg(1).to_string()),
            "weight" => weight = integer(c, 1, sink).filter(|w| *w != 0).map(|w| w.clamp(-254, 254) as i32),
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    let Some(path) = path else {
        sink.error(&node.file, node.line, format!("track_file `{name}` has no `file`"), "");
        return None;
    };
    Some(Tracker { name, weight, fall: 1, rise: 1, kind: TrackerKind::File { path: path.into() } })
}

/// A negative weight moves the VIP only to a peer whose priority lies between the degraded and
/// the base priority; say so when no known peer lies there.
fn mastership_warnings(out: &KeepalivedImport, nodes: &[Node], sink: &mut Sink) {
    for instance in &out.instances {
        let peers: Vec<u8> = out
            .instances
            .iter()
            .filter(|o| o.virtual_router_id == instance.virtual_router_id && o.name != instance.name)
            .map(|o| o.priority.get())
            .collect();
        let node = nodes.iter().find(|n| n.keyword() == "vrrp_instance" && n.arg(1) == instance.name);
        let (file, line) = node.map_or(("", 0), |n| (n.file.as_str(), n.line));
        for tracker in out.trackers.iter().filter(|t| instance.track.contains(&t.name)) {
            let Some(weight) = tracker.weight.filter(|w| *w < 0) else {
                continue;
            };
            let base = i32::from(instance.priority.get());
            let degraded = (base + weight).max(1);
            let window = degraded + 1..=base;
            let moves = peers.iter().any(|p| window.contains(&i32::from(*p)));
            if !moves && (!peers.is_empty() || -weight < 10) {
                sink.warn(
                    file,
                    line,
                    format!(
                        "vrrp_instance `{}`: a failing `{}` takes priority {base} to {degraded}; the VIP moves only to a backup with priority {}..={base}{}",
                        instance.name,
                        tracker.name,
                        degraded + 1,
                        if peers.is_empty() { " (no backup's priority is known here)".to_string() } else { format!(", and the known peers have {peers:?}") }
                    ),
                    format!("give `{}` a weight larger than the gap to the backups, like -50", tracker.name),
                );
            }
        }
    }
}

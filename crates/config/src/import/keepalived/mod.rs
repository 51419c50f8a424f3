//! keepalived.conf -> VRRP instances and trackers. The file is read into a tree of blocks
//! (`parse`), then global_defs, vrrp_script and track_file blocks are mapped here and each
//! vrrp_instance in `instance`.

mod instance;
mod parse;

use std::time::Duration;

use self::instance::vrrp_instance;
use self::parse::Node;
use super::check_script::ScriptFacts;
use super::lines::{Resolver, keepalived_seconds, words};
use super::{Sink, Source};
use crate::defaults as d;
use crate::model::{Frontend, Gratuitous, Tracker, TrackerKind, VrrpInstance};

/// What the keepalived side contributes to the config.
#[derive(Debug, Default)]
pub(super) struct KeepalivedImport {
    pub router_id: Option<String>,
    /// `script_user` of `global_defs`: the user scripts run as.
    pub script_user: Option<String>,
    pub instances: Vec<VrrpInstance>,
    pub trackers: Vec<Tracker>,
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
    sink: &mut Sink,
) -> KeepalivedImport {
    let nodes = parse::read(src, resolver, sink);
    let mut out = KeepalivedImport::default();
    // keepalived's default protocol version is 2; halo's is 3, so the import says 2 explicitly.
    let mut globals = Globals { version: 2, gratuitous: Gratuitous::default() };
    for node in nodes.iter().filter(|n| n.keyword() == "global_defs") {
        global_defs(node, &mut out, &mut globals, sink);
    }
    for node in &nodes {
        match node.keyword() {
            "global_defs" | "vrrp_instance" => {}
            "vrrp_script" => out.trackers.extend(vrrp_script(node, script, frontends, sink)),
            "vrrp_track_file" | "track_file" => out.trackers.extend(track_file(node, sink)),
            "vrrp_sync_group" => {
                sink.unmapped(&node.file, node.line, "vrrp_sync_group", "halo has no sync groups: each instance fails over on its own")
            }
            other => sink.unmapped(&node.file, node.line, other, ""),
        }
    }
    for node in nodes.iter().filter(|n| n.keyword() == "vrrp_instance") {
        if let Some(instance) = vrrp_instance(node, &globals, &mut out.trackers, sink) {
            out.instances.push(instance);
        }
    }
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

/// keepalived script strings are split like a shell would (quotes, escapes), then run directly.
fn argv(node: &Node, i: usize, sink: &mut Sink) -> Option<Vec<String>> {
    let text = node.words.get(i..).map(|w| w.join(" ")).unwrap_or_default();
    let Some(argv) = words(&text, &[]).filter(|a| !a.is_empty()) else {
        sink.error(&node.file, node.line, format!("`{}` needs a command", node.keyword()), "");
        return None;
    };
    if !argv[0].starts_with('/') {
        sink.error(
            &node.file,
            node.line,
            format!("`{}` runs `{}`, not an absolute path", node.keyword(), argv[0]),
            "halo runs commands without a shell or PATH search: write the program's full path",
        );
        return None;
    }
    Some(argv)
}

fn vrrp_script(node: &Node, script: Option<&ScriptFacts>, frontends: &[Frontend], sink: &mut Sink) -> Option<Tracker> {
    let name = node.arg(1).to_string();
    let (mut command, mut interval, mut timeout, mut weight, mut fall, mut rise) = (None, Duration::from_secs(1), None, None, 1u32, 1u32);
    let mut timing_line = node.line;
    for c in node.children() {
        match c.keyword() {
            "script" => command = argv(c, 1, sink),
            "interval" => (interval, timing_line) = (seconds(c, 1, sink).unwrap_or(interval), c.line),
            "timeout" => timeout = seconds(c, 1, sink),
            "weight" => {
                weight = integer(c, 1, sink).filter(|w| *w != 0);
                if c.arg(2) == "reverse" {
                    sink.unmapped(&c.file, c.line, "weight ... reverse", "");
                }
            }
            "fall" => (fall, timing_line) = (integer(c, 1, sink).map_or(1, |f| f.clamp(1, 999) as u32), c.line),
            "rise" => rise = integer(c, 1, sink).map_or(1, |r| r.clamp(1, 999) as u32),
            "user" => sink.warn(&c.file, c.line, "`user` is not imported: halo runs trackers as itself", ""),
            other => sink.unmapped(&c.file, c.line, other, ""),
        }
    }
    let command = command?;
    let weight = weight.map(|w| w.clamp(-254, 254) as i32);
    let detection = interval * fall;
    if detection >= Duration::from_secs(5) {
        sink.warn(
            &node.file,
            timing_line,
            format!(
                "vrrp_script `{name}`: interval {} × fall {fall} = {}: a dead balancer keeps the VIP that long",
                humantime::format_duration(interval),
                humantime::format_duration(detection)
            ),
            "halo's built-in balancer tracker defaults to 200ms × 2",
        );
    }
    let is_balancer = script.is_some_and(|s| std::path::Path::new(&command[0]).file_name() == Some(std::ffi::OsStr::new(&s.file_name)));
    let kind = if is_balancer {
        let frontend = script.and_then(|s| s.frontend_for(frontends)).or_else(|| frontends.first().map(|f| f.name.clone()));
        match frontend {
            Some(frontend) => {
                sink.note(
                    format!("tracker {name}"),
                    format!(
                        "Replaces {}: the built-in balancer tracker checks the local frontend directly (no curl, no shell).",
                        command[0]
                    ),
                );
                if detection >= Duration::from_secs(5) {
                    sink.note(
                        format!("tracker {name}"),
                        "interval/fall/rise are the script's; delete them for halo's defaults (200ms × 2).".to_string(),
                    );
                }
                TrackerKind::Balancer { frontend, min_healthy: d::MIN_HEALTHY, interval }
            }
            None => {
                sink.warn(
                    &node.file,
                    node.line,
                    format!("vrrp_script `{name}` is the check script, but no haproxy frontend was imported for it to track"),
                    "pass --haproxy too; imported as a script tracker",
                );
                TrackerKind::Script { command, interval, timeout: timeout.unwrap_or(interval) }
            }
        }
    } else {
        if script.is_none() && command[0].contains("check_apiserver") {
            sink.warn(
                &node.file,
                node.line,
                format!("vrrp_script `{name}` looks like the balancer check script"),
                "pass it with --check-script to replace it by halo's built-in balancer tracker",
            );
        }
        TrackerKind::Script { command, interval, timeout: timeout.unwrap_or(interval) }
    };
    Some(Tracker { name, weight, fall, rise, kind })
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
